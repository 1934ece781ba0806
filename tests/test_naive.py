"""Naive fine-tuning, the lower bound: it trains on the current experience's data only."""

from __future__ import annotations

import strategies
from benchmarks import engine


def test_naive_trains_only_on_the_current_experience(blob_tensors, scenario_2_2, training):
    strategy = strategies.create("naive")
    loss_classes, experience_classes = [], []
    loss, before_experience = strategy.loss, strategy.before_experience

    def recording_before(head, experience):
        loss_classes.append(set())
        experience_classes.append(set(experience.targets.unique().tolist()))
        before_experience(head, experience)

    def recording_loss(logits, targets, features, head):
        loss_classes[-1].update(targets.tolist())
        assert logits.shape[1] == head.num_classes  # scored over all seen classes
        return loss(logits, targets, features, head)

    strategy.before_experience = recording_before
    strategy.loss = recording_loss
    engine.run(strategy, *blob_tensors, scenario_2_2, training, bias=True, seed=0)
    # scenario_2_2: experience i brings classes 2i and 2i + 1, and only those are trained on.
    expected = [{0, 1}, {2, 3}, {4, 5}]
    assert experience_classes == expected
    assert loss_classes == expected
