"""The exemplar memory (iCaRL, CVPR 2017): herding by hand and against a plain numpy
version, the budget's shrinking by prefix, BiC's held-out slice, and the replay flag."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import strategies
from benchmarks import engine
from strategies.base import Experience, HyperparameterError
from strategies.memory import ExemplarMemory, herding_order


def numpy_herding(features: np.ndarray, count: int) -> list[int]:
    """iCaRL Algorithm 4 written out with loops: normalise, then greedily pick the sample
    that brings the running mean of the picks closest to the class mean."""
    normalised = features / np.linalg.norm(features, axis=1, keepdims=True)
    mean = normalised.mean(axis=0)
    picked: list[int] = []
    for k in range(1, count + 1):
        best, best_distance = None, math.inf
        for index in range(len(features)):
            if index in picked:
                continue
            candidate = (normalised[picked].sum(axis=0) + normalised[index]) / k
            distance = np.linalg.norm(mean - candidate)
            if distance < best_distance:
                best, best_distance = index, distance
        picked.append(best)
    return picked


def test_herding_on_three_points_by_hand():
    # Normalised: a = (1, 0), b = (0, 1), c = (1, 1)/√2; mean μ = ((1 + 1/√2)/3) (1, 1).
    # k = 1: ‖μ − c‖ = √2 · (1/√2 − 0.569) = 0.195 beats ‖μ − a‖ = ‖μ − b‖ = 0.714: c first.
    # k = 2: (c + a)/2 and (c + b)/2 are mirror images, equally far from μ: the first index, a.
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert herding_order(features, 3).tolist() == [2, 0, 1]


def test_herding_matches_a_plain_numpy_implementation():
    generator = np.random.RandomState(0)
    features = np.abs(generator.randn(60, 8)).astype(np.float32) + 0.1
    expected = numpy_herding(features.astype(np.float64), 15)
    assert herding_order(torch.from_numpy(features), 15).tolist() == expected


def test_herding_stops_at_the_class_size():
    assert sorted(herding_order(torch.rand(4, 3) + 0.1, 10).tolist()) == [0, 1, 2, 3]


def experience(index: int, num_old: int, num_seen: int, per_class: int, dim: int = 4):
    """`per_class` samples of each class num_old..num_seen-1; sample i of class c is the
    vector (c, i + 1, 1, 1), so stored rows can be traced back by hand."""
    targets = torch.arange(num_old, num_seen).repeat_interleave(per_class)
    position = torch.arange(per_class).repeat(num_seen - num_old)
    features = torch.ones(len(targets), dim)
    features[:, 0], features[:, 1] = targets.float(), position.float() + 1
    return Experience(index, num_old, num_seen, features, targets)


def step(memory: ExemplarMemory, exp: Experience) -> tuple[torch.Tensor, torch.Tensor]:
    features, targets = memory.training_set(exp)
    memory.update(exp)
    return features, targets


def test_total_budget_shrinks_each_class_to_its_first_exemplars():
    # K = 12: 6 per class after 2 classes, 3 after 4, 2 after 6 (iCaRL: m = K / t).
    torch.manual_seed(0)
    memory = ExemplarMemory(12, "total", "random")
    step(memory, experience(0, 0, 2, per_class=10))
    assert torch.bincount(memory.targets).tolist() == [6, 6]
    first_order = memory.features[memory.targets == 0, 1].tolist()

    step(memory, experience(1, 2, 4, per_class=10))
    assert torch.bincount(memory.targets).tolist() == [3, 3, 3, 3]
    # Algorithm 5: shrinking keeps the first m of each class, in their order of priority.
    assert memory.features[memory.targets == 0, 1].tolist() == first_order[:3]

    step(memory, experience(2, 4, 6, per_class=10))
    assert torch.bincount(memory.targets).tolist() == [2] * 6
    assert memory.features[memory.targets == 0, 1].tolist() == first_order[:2]
    # Every stored row is a real sample of its class (feature 0 holds the class id).
    assert torch.equal(memory.features[:, 0], memory.targets.float())


def test_an_experience_trains_with_the_previous_budget_and_shrinks_after():
    """iCaRL's Algorithm 2 (and PyCIL, FACIL): train on the memory as the last experience
    left it, then shrink. K = 20 in total, classes arriving 2, 1, 1, 10 samples each:
    experience 2 trains on 10 new + 2 × 10 stored (K/2 per class, not K/3 = 6), then keeps
    6 of each of its 3 classes; experience 3 trains on 10 + 3 × 6, then keeps 5 of each of 4."""
    torch.manual_seed(0)
    memory = ExemplarMemory(20, "total", "random")
    sizes = []
    for index, (old, seen) in enumerate([(0, 2), (2, 3), (3, 4)]):
        features, targets = step(memory, experience(index, old, seen, per_class=10))
        sizes.append((len(targets), torch.bincount(memory.targets).tolist()))
    assert sizes == [(20, [10, 10]), (30, [6, 6, 6]), (28, [5, 5, 5, 5])]


def test_per_class_budget_keeps_the_same_count_whatever_the_number_of_classes():
    memory = ExemplarMemory(3, "per_class", "herding")
    for index, (old, seen) in enumerate([(0, 2), (2, 4), (4, 6)]):
        step(memory, experience(index, old, seen, per_class=10))
        assert torch.bincount(memory.targets).tolist() == [3] * seen


def test_training_set_is_the_new_data_followed_by_the_memory():
    memory = ExemplarMemory(4, "per_class", "herding")
    step(memory, experience(0, 0, 2, per_class=10))
    new = experience(1, 2, 4, per_class=10)
    features, targets = memory.training_set(new)
    assert torch.equal(features[:20], new.features)
    assert torch.equal(targets, torch.cat([new.targets, torch.tensor([0] * 4 + [1] * 4)]))


def test_held_out_slice_is_never_trained_on_and_stays_balanced():
    # BiC's 9:1 split with 10 per class: 1 held out and 9 stored for training per class.
    torch.manual_seed(0)
    memory = ExemplarMemory(10, "per_class", "herding", holdout=0.1)
    exp = experience(0, 0, 2, per_class=30)
    features, targets = memory.training_set(exp)
    assert len(targets) == 58  # 30 + 30 samples, one of each class held out
    assert torch.bincount(memory.held_out_targets).tolist() == [1, 1]
    # A held-out row is not in the training set, nor among the exemplars stored after it.
    memory.update(exp)
    for row in memory.held_out_features:
        assert not (features == row).all(dim=1).any()
        assert not (memory.features == row).all(dim=1).any()
    assert torch.bincount(memory.targets).tolist() == [9, 9]


@pytest.mark.bad_input
def test_validate_refuses_a_memory_with_no_exemplar_per_class():
    with pytest.raises(HyperparameterError, match=r"memory_size = 5 \(total\).*>= 10"):
        ExemplarMemory(5, "total").validate("replay", [4, 2, 2, 2])
    with pytest.raises(HyperparameterError, match=r"memory_size = 1 \(per_class\).*>= 2"):
        ExemplarMemory(1, "per_class", holdout=0.1).validate("bic", [2, 2])
    ExemplarMemory(10, "total").validate("replay", [4, 2, 2, 2])  # one each: accepted


@pytest.mark.bad_input
def test_lwf_with_replay_refuses_cross_entropy_over_new_classes_only():
    lwf = strategies.create("lwf", {"memory_size": 100})
    with pytest.raises(HyperparameterError, match="ce_scope='new' cannot score replayed"):
        lwf.validate([2, 2, 2])
    strategies.create("lwf", {"memory_size": 100, "ce_scope": "seen"}).validate([2, 2, 2])


def test_replay_is_naive_with_the_flag_on(blob_tensors, scenario_2_2, training):
    # The registered `replay` adds nothing to naive but a default memory of 2000.
    flag = {"memory_size": 6, "memory_selection": "random"}
    replay = engine.run(
        strategies.create("replay", flag), *blob_tensors, scenario_2_2, training, True, 0
    )
    naive = engine.run(
        strategies.create("naive", flag), *blob_tensors, scenario_2_2, training, True, 0
    )
    assert replay.accuracy_matrix == naive.accuracy_matrix
    assert replay.train_loss == naive.train_loss


@pytest.mark.parametrize("name", ["naive", "weight_aligning", "lwf", "ewc"])
def test_the_flag_puts_old_classes_in_every_later_training_set(name, blob_tensors, scenario_2_2):
    strategy = strategies.create(name, {"memory_size": 4, "memory_budget": "per_class"})
    train_features, train_targets = blob_tensors[0], blob_tensors[1]
    seen = []
    for index, (old, new) in enumerate([(0, 2), (2, 4), (4, 6)]):
        chosen = (train_targets >= old) & (train_targets < new)
        exp = Experience(index, old, new, train_features[chosen], train_targets[chosen])
        _, targets = strategy.training_set(exp)
        seen.append(torch.bincount(targets, minlength=6).tolist())
        strategy.update_memory(exp)
    # 40 training samples per class; 4 exemplars of each earlier class.
    assert seen == [[40, 40, 0, 0, 0, 0], [4, 4, 40, 40, 0, 0], [4, 4, 4, 4, 40, 40]]
