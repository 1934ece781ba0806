"""Metrics on hand-made accuracy matrices whose values can be checked by eye."""

import math

import pytest

from reports.metrics import (
    accuracy_seen,
    all_metrics,
    average_incremental_accuracy,
    backward_transfer,
    final_average_accuracy,
    forgetting,
)

# R[i][j]: accuracy on experience j after training experience i.
R = [
    [0.9, None, None],
    [0.6, 0.8, None],
    [0.5, 0.7, 0.9],
]
# An old experience that improves before it drops: Chaudhry's max differs from R[j, j].
R_RISE = [
    [0.5, None, None],
    [0.9, 0.8, None],
    [0.6, 0.8, 0.7],
]


def test_final_average_accuracy_is_the_mean_of_the_last_row():
    assert final_average_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.9) / 3)


def test_final_average_accuracy_weighs_experiences_by_test_samples():
    # 100 samples at 50%, 50 at 70%, 50 at 90%: (50 + 35 + 45) / 200 correct.
    assert final_average_accuracy(R, counts=[100, 50, 50]) == pytest.approx(130 / 200)


def test_accuracy_seen_and_average_incremental_accuracy():
    # A_0 = 0.9, A_1 = (0.6 + 0.8) / 2 = 0.7, A_2 = 0.7.
    assert accuracy_seen(R) == pytest.approx([0.9, 0.7, 0.7])
    assert average_incremental_accuracy(R) == pytest.approx((0.9 + 0.7 + 0.7) / 3)


def test_forgetting_is_the_drop_from_the_best_earlier_value():
    # j=0: max(0.9, 0.6) - 0.5 = 0.4; j=1: 0.8 - 0.7 = 0.1; mean 0.25.
    assert forgetting(R) == pytest.approx(0.25)
    # j=0: max(0.5, 0.9) - 0.6 = 0.3; j=1: 0.8 - 0.8 = 0; mean 0.15.
    assert forgetting(R_RISE) == pytest.approx(0.15)


def test_backward_transfer_compares_with_the_accuracy_just_after_learning():
    # ((0.5 - 0.9) + (0.7 - 0.8)) / 2.
    assert backward_transfer(R) == pytest.approx(-0.25)
    # ((0.6 - 0.5) + (0.8 - 0.8)) / 2: positive although Chaudhry's forgetting is 0.15.
    assert backward_transfer(R_RISE) == pytest.approx(0.05)


def test_two_experience_matrix_from_continuum_style_example():
    matrix = [[1.0, None], [0.5, 0.0]]
    assert backward_transfer(matrix) == pytest.approx(-0.5)
    assert forgetting(matrix) == pytest.approx(0.5)


def test_a_single_experience_has_no_forgetting_defined():
    metrics = all_metrics([[0.8]])
    assert metrics["final_accuracy"] == pytest.approx(0.8)
    assert math.isnan(metrics["forgetting"]) and math.isnan(metrics["bwt"])


@pytest.mark.parametrize(
    "matrix, message",
    [([[0.5, None], [None, 0.5]], "missing entry"), ([[0.5, 0.5]], "square"), ([], "square")],
)
@pytest.mark.bad_input
def test_malformed_matrices_are_refused(matrix, message):
    with pytest.raises(ValueError, match=message):
        forgetting(matrix)
