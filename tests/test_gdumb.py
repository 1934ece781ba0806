"""GDumb (Prabhu et al., ECCV 2020): the greedy class-balanced sampler by hand, the memory's
class counts through the engine by hand, and GDumb with a memory that holds everything
trains exactly as `joint` (a head re-initialised and trained on all seen data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import strategies
from benchmarks import engine
from strategies.base import HyperparameterError
from strategies.gdumb import greedy_class_balanced


def test_sampler_by_hand():
    # k = 4, stream 0 0 0 1 1 2. The first four fill the memory: {0: 3, 1: 1}. The second 1
    # has 1 < 4/2 stored: a random 0 leaves, {0: 2, 1: 2}. The 2 has 0 < 4/3: classes 0 and
    # 1 tie as largest, the first (0) gives up a sample: {0: 1, 1: 2, 2: 1}.
    torch.manual_seed(0)
    kept = greedy_class_balanced([], [0, 0, 0, 1, 1, 2], 4)
    assert [len(members) for members in kept] == [1, 2, 1]
    assert kept[0][0] in (0, 1, 2) and kept[1:] == [[3, 4], [5]]
    # A new experience brings 3 3 to the memory {0, 1, 1, 2}: the first 3 has 0 < 4/4 and
    # class 1 (largest) gives up one of its two; the second 3 has 1 ≥ 4/4 and is dropped.
    kept = greedy_class_balanced([0, 1, 1, 2], [3, 3], 4)
    assert kept[0] == [0] and kept[1] in ([1], [2]) and kept[2:] == [[3], [4]]


def test_sampler_balances_long_streams_and_never_overflows():
    generator = np.random.RandomState(0)
    torch.manual_seed(0)
    stored: list[int] = []
    for classes in ([0, 1, 2], [3, 4], [5, 6, 7, 8]):
        stream = generator.permutation(np.repeat(classes, 50)).tolist()
        kept = greedy_class_balanced(stored, stream, 37)
        counts = [len(members) for members in kept]
        assert sum(counts) == 37 and max(counts) - min(counts) <= 1
        everything = stored + stream
        stored = [everything[p] for members in kept for p in members]
        assert all(everything[p] == c for c, members in enumerate(kept) for p in members)


def test_memory_counts_through_the_engine_by_hand(blob_tensors, scenario_2_2, training):
    # 40 blobs per class, stored sorted by class, k = 30. Experience 1: class 0 fills the
    # memory, then each 1 evicts a 0 until 15 ≥ 30/2: [15, 15]. Experience 2: the 2s evict
    # from the largest until 10 ≥ 30/3 ([10, 10, 10]), the 3s until 8 ≥ 30/4: [7, 7, 8, 8].
    # Experience 3: [6] * 5 after the 4s, [5] * 6 after the 5s.
    strategy = strategies.create("gdumb", {"capacity": 30})
    counts = []
    training_set = strategy.training_set

    def record(experience):
        features, targets = training_set(experience)
        counts.append(torch.bincount(targets).tolist())
        return features, targets

    strategy.training_set = record
    result = engine.run(strategy, *blob_tensors, scenario_2_2, training, True, seed=0)
    assert counts == [[15, 15], [7, 7, 8, 8], [5] * 6]
    assert all(row[index] > 0.5 for index, row in enumerate(result.accuracy_matrix))


def test_a_memory_that_holds_everything_is_joint(blob_tensors, scenario_2_2, training):
    # The blobs are stored sorted by class, so the memory (sorted by class, each class in
    # arrival order) is exactly joint's training set, in the same order.
    assert torch.equal(blob_tensors[1], blob_tensors[1].sort().values)
    runs = [
        engine.run(strategies.create(name, config), *blob_tensors, scenario_2_2, training, True, 0)
        for name, config in (("gdumb", {"capacity": 10_000}), ("joint", {}))
    ]
    assert runs[0].accuracy_matrix == runs[1].accuracy_matrix
    assert runs[0].weight_norms == runs[1].weight_norms
    assert runs[0].train_loss == runs[1].train_loss


@pytest.mark.bad_input
def test_capacity_below_the_number_of_classes_is_refused():
    with pytest.raises(HyperparameterError, match="use capacity >= 6"):
        strategies.create("gdumb", {"capacity": 5}).validate([2, 2, 2])
    with pytest.raises(HyperparameterError, match="strategies.gdumb.capacity"):
        strategies.create("gdumb", {"capacity": 0})
