"""The training engine: evaluation rows, the lr schedule, divergence, determinism."""

import math

import pytest
import torch

import strategies
from benchmarks import engine
from benchmarks.scenario import Scenario
from strategies import Head


def test_evaluate_counts_correct_predictions_per_experience_over_all_seen_classes():
    # Three classes, experiences {0, 1} and {2}; the head scores class c by feature c.
    head = Head(3, bias=False)
    head.append_rows(torch.eye(3))
    features = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1], [0, 0, 2]])
    targets = torch.tensor([0, 0, 1, 2, 2])
    # Predictions: 0, 2, 1, 2, 2 -> experience 0 has 2 of 3 right, experience 1 has 2 of 2.
    experience = torch.tensor([0, 0, 0, 1, 1])
    correct, share, norms = engine.evaluate(
        strategies.create("naive"), head, features, targets, experience, 2, 3, 2
    )
    assert correct == [2.0, 2.0]
    assert share == pytest.approx(3 / 5)  # predictions 2, 2, 2 land on the newest class
    assert norms == pytest.approx([1.0, 1.0, 1.0])


def test_cosine_schedule_follows_the_closed_form(blob_tensors, training, monkeypatch):
    recorded = []

    class RecordingSGD(torch.optim.SGD):
        def step(self, closure=None):
            recorded.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "SGD", RecordingSGD)
    training = dict(training, schedule="cosine", epochs=2, batch_size=80)
    scenario = Scenario(list(range(6)), 6, 1)  # one experience: 240 samples, 3 steps per epoch
    engine.run(strategies.create("naive"), *blob_tensors, scenario, training, True, 0)
    steps = 6
    expected = [0.5 * 0.1 * (1 + math.cos(math.pi * k / steps)) for k in range(steps)]
    assert recorded == pytest.approx(expected)


def test_a_diverging_loss_is_reported_with_the_experience(blob_tensors, training):
    training = dict(training, lr=1e38, momentum=0.0)
    with pytest.raises(
        engine.TrainingDiverged, match="the loss became nan in experience [0-9].*lower training.lr"
    ):
        engine.run(
            strategies.create("naive"),
            *blob_tensors,
            Scenario(list(range(6)), 2, 2),
            training,
            True,
            0,
        )


def test_same_seed_same_bytes_other_seed_other_matrix(blob_tensors, training, scenario_2_2):
    def matrix(seed):
        training_noisy = dict(training, epochs=1, lr=0.01)
        return engine.run(
            strategies.create("naive"), *blob_tensors, scenario_2_2, training_noisy, True, seed
        )

    first, again = matrix(0), matrix(0)
    assert first.accuracy_matrix == again.accuracy_matrix
    assert first.train_loss == again.train_loss
    assert first.weight_norms != matrix(1).weight_norms
