"""Joint training, the upper bound: all seen data, a head re-initialised every experience."""

from __future__ import annotations

import math

import strategies
from benchmarks import engine


def recording_run(blob_tensors, scenario, training):
    """engine.run for joint; per experience: the head right after `expand`, after training,
    the classes in the experience's data, and the classes seen by `loss`."""
    strategy = strategies.create("joint")
    record = {"expanded": [], "trained": [], "experience_classes": [], "loss_classes": []}
    before_experience, after_experience, loss = (
        strategy.before_experience,
        strategy.after_experience,
        strategy.loss,
    )

    def recording_before(head, experience):
        # Called right after `expand`, before the first minibatch.
        record["expanded"].append((head.weight.detach().clone(), head.bias.detach().clone()))
        record["loss_classes"].append(set())
        before_experience(head, experience)

    def recording_loss(logits, targets, features, head):
        record["loss_classes"][-1].update(targets.tolist())
        return loss(logits, targets, features, head)

    def recording_after(head, experience):
        after_experience(head, experience)
        record["trained"].append((head.weight.detach().clone(), head.bias.detach().clone()))
        record["experience_classes"].append(set(experience.targets.unique().tolist()))

    strategy.before_experience = recording_before
    strategy.loss = recording_loss
    strategy.after_experience = recording_after
    result = engine.run(strategy, *blob_tensors, scenario, training, bias=True, seed=0)
    return result, record


def test_joint_is_perfect_on_separable_blobs(blob_tensors, scenario_2_2, training):
    # Class c is a blob of spread 0.3 around 3·e_c: linearly separable with a wide margin,
    # so i.i.d. training on all seen data classifies every seen test sample.
    result, _ = recording_run(blob_tensors, scenario_2_2, training)
    for index, row in enumerate(result.accuracy_matrix):
        assert row[: index + 1] == [1.0] * (index + 1), f"row {index}: {row}"


def test_joint_trains_on_all_seen_data(blob_tensors, scenario_2_2, training):
    _, record = recording_run(blob_tensors, scenario_2_2, training)
    # Experience i brings classes 2i, 2i + 1; joint sees every class up to them.
    expected = [set(range(2)), set(range(4)), set(range(6))]
    assert record["experience_classes"] == expected
    assert record["loss_classes"] == expected


def test_joint_reinitialises_the_head_every_experience(blob_tensors, scenario_2_2, training):
    _, record = recording_run(blob_tensors, scenario_2_2, training)
    bound = 1 / math.sqrt(16)  # fresh rows are U(-1/√d, 1/√d), d = 16
    for index, (weight, bias) in enumerate(record["expanded"]):
        assert weight.shape[0] == 2 * (index + 1)
        # Every row, old classes included, is a fresh draw with a zero bias.
        assert weight.abs().max() <= bound
        assert (bias == 0).all()
    for index in (1, 2):
        old_rows = 2 * index
        trained_weight, trained_bias = record["trained"][index - 1]
        expanded_weight, _ = record["expanded"][index]
        assert not (expanded_weight[:old_rows] == trained_weight).any()
        # Training does leave the init range and move the biases, so the checks above bite.
        assert trained_weight.abs().max() > bound
        assert (trained_bias != 0).all()
