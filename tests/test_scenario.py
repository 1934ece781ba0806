"""Class orders, experience boundaries and label remapping."""

import numpy as np
import pytest

from benchmarks.errors import UsageError
from benchmarks.scenario import Scenario, resolve_class_order


def test_seed_1993_is_the_pycil_facil_order():
    # numpy.random.seed(1993); numpy.random.permutation(100) starts [68, 56, 78, 8, ...]
    # (the order of PyCIL, PILOT and FACIL's cifar100_icarl; see shared/REFERENCE.md).
    order = resolve_class_order("seed:1993", 100)
    assert order[:4] == [68, 56, 78, 8]
    assert sorted(order) == list(range(100))


def test_identity_and_explicit_orders():
    assert resolve_class_order("identity", 4) == [0, 1, 2, 3]
    assert resolve_class_order([2, 0, 3, 1], 4) == [2, 0, 3, 1]


@pytest.mark.parametrize(
    "spec, message",
    [
        ([0, 1, 1, 3], "repeated [1]"),
        ([0, 1, 2], "missing [3]"),
        ([0, 1, 2, 7], "not classes [7]"),
        ("seed:x", "N must be an integer"),
        ("random", "is not accepted"),
        ([0, 1, 2, "3"], "integer class ids"),
    ],
)
@pytest.mark.bad_input
def test_bad_orders_name_the_problem(spec, message):
    with pytest.raises(UsageError) as error:
        resolve_class_order(spec, 4)
    assert message in str(error.value)


def test_boundaries_and_sizes_of_b5_inc1_on_ten_classes():
    scenario = Scenario(list(range(10)), 5, 1)
    assert scenario.boundaries == [0, 5, 6, 7, 8, 9, 10]
    assert scenario.experience_sizes == [5, 1, 1, 1, 1, 1]
    assert scenario.num_experiences == 6


def test_remap_numbers_classes_in_arrival_order():
    scenario = Scenario([2, 0, 3, 1], 2, 2)
    # class 2 arrives first -> 0, class 0 -> 1, class 3 -> 2, class 1 -> 3.
    assert scenario.remap(np.array([0, 1, 2, 3])).tolist() == [1, 3, 0, 2]
    assert scenario.original_classes(1) == [3, 1]


@pytest.mark.bad_input
def test_increment_that_does_not_cover_the_classes_lists_the_divisors():
    with pytest.raises(UsageError) as error:
        Scenario(list(range(10)), 4, 4)
    # 10 - 4 = 6 remaining classes: increments 1, 2, 3 or 6 cover them.
    assert "increment must be one of [1, 2, 3, 6]" in str(error.value)


@pytest.mark.bad_input
def test_a_first_experience_of_one_class_is_refused():
    with pytest.raises(UsageError, match="initial_classes = 1"):
        Scenario(list(range(4)), 1, 1)


def test_named_order_icarl1993_is_numpy_seed_1993_on_100_classes():
    numpy_order = np.random.RandomState(1993).permutation(100).tolist()
    assert resolve_class_order("icarl1993", 100) == numpy_order
    assert numpy_order[:4] == [68, 56, 78, 8]


def test_named_order_podnet_is_the_explicit_icarl_list():
    order = resolve_class_order("podnet", 100)
    # PODNet's iCIFAR100.class_order (inclearn/lib/data/datasets.py) begins and ends so.
    assert order[:10] == [87, 0, 52, 58, 44, 91, 68, 97, 51, 15]
    assert order[-5:] == [55, 54, 26, 35, 39]
    assert sorted(order) == list(range(100))
    assert order != resolve_class_order("icarl1993", 100)


@pytest.mark.bad_input
def test_named_order_on_a_dataset_of_another_size_is_refused():
    with pytest.raises(UsageError, match="'podnet' orders 100 classes .* this dataset has 10"):
        resolve_class_order("podnet", 10)
