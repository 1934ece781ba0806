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
    experience_of_class = torch.tensor([0, 0, 1])
    correct, aware, share, norms = engine.evaluate(
        strategies.create("naive"), head, features, targets, experience, 2, 3, 2,
        experience_of_class,
    )  # fmt: skip
    assert correct == [2.0, 2.0]
    # Among its own experience's classes {0, 1}, the second sample's scores are (0, 0): the
    # tie goes to class 0, right; experience 1 has the single class 2: 3 of 3, 2 of 2.
    assert aware == [3.0, 2.0]
    assert share == pytest.approx(3 / 5)  # predictions 2, 2, 2 land on the newest class
    assert norms == pytest.approx([1.0, 1.0, 1.0])


def test_cosine_schedule_follows_the_closed_form(blob_tensors, training, monkeypatch):
    recorded = []

    class RecordingSGD(engine.HeadSGD):
        def step(self):
            recorded.append(self.lr)
            return super().step()

    monkeypatch.setattr(engine, "HeadSGD", RecordingSGD)
    training = dict(training, schedule="cosine", epochs=2, batch_size=80)
    scenario = Scenario(list(range(6)), 6, 1)  # one experience: 240 samples, 3 steps per epoch
    engine.run(strategies.create("naive"), *blob_tensors, scenario, training, True, 0)
    steps = 6
    expected = [0.5 * 0.1 * (1 + math.cos(math.pi * k / steps)) for k in range(steps)]
    assert recorded == pytest.approx(expected)


@pytest.mark.parametrize("momentum, weight_decay", [(0.9, 0.0), (0.0, 0.0), (0.9, 5e-4)])
def test_head_sgd_is_torch_sgd_bit_for_bit(momentum, weight_decay):
    # torch.optim.SGD is the reference: same operations, so the same bits after every step,
    # through a changing lr (the cosine schedule) and a parameter left without a gradient.
    generator = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 4, generator=generator), torch.randn(5, generator=generator)]
    features = torch.randn(7, 4, generator=generator)
    targets = torch.randint(0, 5, (7,), generator=generator)
    ours = [t.clone().requires_grad_() for t in start] + [torch.zeros(3, requires_grad=True)]
    theirs = [t.clone().requires_grad_() for t in start] + [torch.zeros(3, requires_grad=True)]
    head_sgd = engine.HeadSGD(ours, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    torch_sgd = torch.optim.SGD(theirs, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    for step in range(6):
        for optimizer, (weight, bias, _) in ((head_sgd, ours), (torch_sgd, theirs)):
            if isinstance(optimizer, engine.HeadSGD):
                optimizer.lr = 0.1 / (1 + step)
            else:
                optimizer.param_groups[0]["lr"] = 0.1 / (1 + step)
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(features @ weight.T + bias, targets)
            loss.backward()
            optimizer.step()
        for mine, reference in zip(ours, theirs, strict=True):
            assert torch.equal(mine, reference), step
    assert torch.equal(ours[2], torch.zeros(3))  # no gradient: untouched


def test_a_run_with_torch_sgd_gives_the_same_record(blob_tensors, training, monkeypatch):
    # The whole engine, its SGD swapped for torch.optim.SGD: every number is the same.
    def run():
        return engine.run(
            strategies.create("ewc", {"lambda": 100.0}),
            *blob_tensors,
            Scenario(list(range(6)), 2, 2),
            dict(training, epochs=2, weight_decay=1e-4),
            True,
            0,
        )

    ours = run()
    monkeypatch.setattr(
        engine,
        "HeadSGD",
        lambda parameters, lr, momentum, weight_decay: torch.optim.SGD(
            parameters, lr=lr, momentum=momentum, weight_decay=weight_decay
        ),
    )
    reference = run()
    assert ours.accuracy_matrix == reference.accuracy_matrix
    assert ours.weight_norms == reference.weight_norms
    assert ours.train_loss == reference.train_loss


@pytest.mark.bad_input
def test_a_diverging_loss_is_reported_with_the_experience(blob_tensors, training):
    training = dict(training, lr=1e38, momentum=0.0)
    with pytest.raises(
        engine.TrainingDiverged,
        match="(the loss became nan|the head's weights overflowed) in experience [0-9].*"
        "lower training.lr",
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


def test_balanced_class_weights_by_hand():
    # Counts (3, 1, 0) over 4 samples and C = 2 classes present: w = 4 / (2 · n_c).
    targets = torch.tensor([0, 0, 0, 1])
    weights = engine.class_weights(targets, 3, {"class_weighting": "balanced"})
    torch.testing.assert_close(weights, torch.tensor([2 / 3, 2.0, 0.0]))
    assert engine.class_weights(targets, 3, {"class_weighting": "none"}) is None


def test_weighted_cross_entropy_gives_each_class_the_same_total_weight():
    # Three samples of class 0 with equal logits (loss ln 2 each) and one of class 1 with
    # logits (2, 0) (loss ln(e² + 1) − 0).
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    targets = torch.tensor([0, 0, 0, 1])
    weights = engine.class_weights(targets, 2, {"class_weighting": "balanced"})
    naive = strategies.create("naive")
    naive.class_weights = weights
    # Weighted mean: (3 · 2/3 · ln 2 + 2 · ln(1 + e²)) / (3 · 2/3 + 2) = mean of the class means.
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    value = naive.loss(logits, targets, torch.zeros(4, 1), Head(1))
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_class_balanced_sampling_draws_every_class_as_often_as_the_largest():
    targets = torch.tensor([0] * 5 + [1] * 2 + [2] * 3)
    order = engine.epoch_order(targets, "class_balanced", torch.Generator().manual_seed(0))
    assert torch.bincount(targets[order]).tolist() == [5, 5, 5]
    uses = torch.bincount(order, minlength=10)
    assert uses[:5].tolist() == [1] * 5  # the largest class: each sample once
    assert sorted(uses[5:7].tolist()) == [2, 3]  # 5 draws from 2 samples: 2 + 2, one more
    assert sorted(uses[7:].tolist()) == [1, 2, 2]  # 5 draws from 3 samples
    uniform = engine.epoch_order(targets, "uniform", torch.Generator().manual_seed(0))
    assert sorted(uniform.tolist()) == list(range(10))


def test_imbalance_options_reach_the_loss_and_the_loop(blob_tensors, training):
    # Experience 1 of a replay run trains on 40 + 40 new samples and 4 + 4 exemplars.
    scenario = Scenario(list(range(4)), 2, 2)
    seen = {}
    naive = strategies.create("naive", {"memory_size": 4, "memory_budget": "per_class"})
    loss = naive.loss

    def recording(logits, targets, features, head):
        seen.setdefault(head.num_classes, (naive.class_weights, []))[1].append(targets)
        return loss(logits, targets, features, head)

    naive.loss = recording
    options = dict(training, epochs=1, class_weighting="balanced", sampling="class_balanced")
    keep = blob_tensors[1] < 4
    test_keep = blob_tensors[3] < 4
    tensors = (blob_tensors[0][keep], blob_tensors[1][keep])
    tensors += (blob_tensors[2][test_keep], blob_tensors[3][test_keep])
    engine.run(naive, *tensors, scenario, options, True, 0)
    weights, batches = seen[4]
    # w = 88 / (4 · n_c): 0.55 for the new classes, 5.5 for the exemplar classes.
    torch.testing.assert_close(weights, torch.tensor([5.5, 5.5, 0.55, 0.55]))
    # Oversampling: one epoch draws every class 40 times.
    assert torch.bincount(torch.cat(batches)).tolist() == [40, 40, 40, 40]
