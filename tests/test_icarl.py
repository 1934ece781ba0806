"""iCaRL (Rebuffi et al., CVPR 2017): Algorithm 3's loss against a hand value and an
independent float64 computation, the frozen snapshot as the old classes' targets,
Algorithm 1's nearest mean of exemplars by hand, bad input, and a run of the digits demo
through `headbench`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import strategies
from benchmarks import engine
from benchmarks.cli import main
from strategies.base import Experience, Head, HyperparameterError
from strategies.icarl import icarl_loss


def independent_bce(logits, targets, old_probabilities, weights=None):
    """−Σ_y [t log σ(z) + (1 − t) log(1 − σ(z))] per sample, in float64, from the formula."""
    z = logits.double()
    soft = torch.zeros_like(z)
    soft[torch.arange(len(targets)), targets] = 1.0
    soft[:, : old_probabilities.shape[1]] = old_probabilities.double()
    p = 1 / (1 + torch.exp(-z))
    per_sample = -(soft * torch.log(p) + (1 - soft) * torch.log(1 - p)).sum(dim=1)
    if weights is None:
        return per_sample.mean()
    return (weights * per_sample).sum() / weights.sum()


def test_loss_at_zero_logits_is_seen_times_log_2():
    # σ(0) = 1/2: every target t gives −(t + 1 − t)·log(1/2) = log 2 per class, whatever t.
    logits = torch.zeros(3, 5)
    old = torch.tensor([[0.9, 0.1], [0.2, 0.3], [0.5, 0.5]])
    loss = icarl_loss(logits, torch.tensor([2, 4, 0]), old)
    assert loss.item() == pytest.approx(5 * math.log(2), rel=1e-6)


def test_loss_equals_the_formula_computed_independently():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, generator=generator)
    old = torch.rand(4, 2, generator=generator)
    targets = torch.tensor([2, 4, 0, 3])  # sample 2 is an exemplar of old class 0
    expected = independent_bce(logits, targets, old)
    assert icarl_loss(logits, targets, old).item() == pytest.approx(expected.item(), rel=1e-6)
    # And as torch's own BCE: summed over the classes, averaged over the samples.
    soft = torch.cat([old, torch.nn.functional.one_hot(targets, 5).float()[:, 2:]], dim=1)
    torch_value = torch.nn.functional.binary_cross_entropy_with_logits(logits, soft) * 5
    assert icarl_loss(logits, targets, old).item() == pytest.approx(torch_value.item(), rel=1e-6)
    # Class weights: the weighted mean over samples.
    class_weights = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0])
    weighted = independent_bce(logits, targets, old, class_weights[targets].double())
    value = icarl_loss(logits, targets, old, class_weights).item()
    assert value == pytest.approx(weighted.item(), rel=1e-6)


def test_an_old_class_label_is_not_used_only_the_snapshots_outputs():
    # Algorithm 3: on old classes every sample's target is q; an exemplar's own label enters
    # only as "not one of the new classes".
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 4, generator=generator)
    old = torch.rand(1, 2, generator=generator)
    as_class_0 = icarl_loss(logits, torch.tensor([0]), old)
    as_class_1 = icarl_loss(logits, torch.tensor([1]), old)
    assert torch.equal(as_class_0, as_class_1)
    assert not torch.equal(as_class_0, icarl_loss(logits, torch.tensor([2]), old))


def test_old_targets_come_from_the_frozen_snapshot_and_carry_no_gradient():
    torch.manual_seed(0)
    strategy = strategies.create("icarl", {"memory_size": 10})
    head = Head(3)
    strategy.expand(head, 2)
    snapshot = (head.weight.detach().clone(), head.bias.detach().clone())
    strategy.expand(head, 1)
    features = torch.randn(4, 3)
    targets = torch.tensor([2, 2, 0, 1])
    strategy.before_experience(head, Experience(1, 2, 3, features, targets))
    # Training moves the head away from the snapshot; the targets must not move with it.
    with torch.no_grad():
        head.weight.add_(1.0)
        head.bias.sub_(0.5)
    logits = head(features)
    loss = strategy.loss(logits, targets, features, head)
    q = torch.sigmoid(features @ snapshot[0].T + snapshot[1])  # the old head, by hand
    expected = independent_bce(logits.detach(), targets, q)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # Gradient: that of the BCE with the targets held constant (q is a constant).
    loss.backward()
    soft = torch.cat([q, torch.tensor([[1.0], [1.0], [0.0], [0.0]])], dim=1)
    by_hand = (torch.sigmoid(logits.detach()) - soft).T @ features / len(features)
    assert torch.allclose(head.weight.grad, by_hand, atol=1e-6)


def memory_experience(features, targets, num_old, num_seen):
    return Experience(0, num_old, num_seen, torch.tensor(features), torch.tensor(targets))


def test_nearest_mean_of_exemplars_by_hand():
    # Class 0: (3, 4) and (1, 0), normalised (0.6, 0.8) and (1, 0): mean (0.8, 0.4),
    # renormalised (2, 1)/√5. Class 1: (0, 2) → (0, 1). The memory keeps everything.
    strategy = strategies.create("icarl", {"memory_size": 10})
    head = Head(2)
    strategy.expand(head, 2)
    experience = memory_experience([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], [0, 0, 1], 0, 2)
    strategy.training_set(experience)
    strategy.update_memory(experience)
    assert torch.allclose(strategy.means[0], torch.tensor([2.0, 1.0]) / math.sqrt(5))
    assert torch.allclose(strategy.means[1], torch.tensor([0.0, 1.0]))
    # A test feature (1, 1) → (1, 1)/√2: distances to both means by hand.
    x = 1 / math.sqrt(2)
    to_0 = math.hypot(x - 2 / math.sqrt(5), x - 1 / math.sqrt(5))
    to_1 = math.hypot(x, x - 1)
    scores = strategy.predict(head, torch.tensor([[1.0, 1.0], [5.0, 0.0]]))
    assert scores[0].tolist() == pytest.approx([-to_0, -to_1], rel=1e-6)
    assert scores.argmax(dim=1).tolist() == [0, 0]


def test_means_are_of_the_exemplars_not_of_all_training_data():
    # One exemplar per class (K = 2). Class 0: (1, 0), (0, 1), (5, 1); normalised mean
    # (0.660, 0.399); herding's first pick is the nearest normalised feature to it,
    # (5, 1)/√26 at distance 0.379 (against 0.524 and 0.893). The mean of all three,
    # renormalised, would be (0.856, 0.517).
    strategy = strategies.create("icarl", {"memory_size": 2})
    head = Head(2)
    strategy.expand(head, 2)
    features = [[1.0, 0.0], [0.0, 1.0], [5.0, 1.0], [0.0, 3.0]]
    experience = memory_experience(features, [0, 0, 0, 1], 0, 2)
    strategy.training_set(experience)
    strategy.update_memory(experience)
    assert torch.allclose(strategy.means[0], torch.tensor([5.0, 1.0]) / math.sqrt(26))


def test_head_classifier_is_the_heads_argmax():
    strategy = strategies.create("icarl", {"classifier": "head"})
    head = Head(3)
    strategy.expand(head, 4)
    features = torch.randn(5, 3)
    assert torch.equal(strategy.predict(head, features), head(features))
    assert strategies.get_strategy("icarl").paper_name(strategy.config)[0] == "iCaRL-CNN"


def test_nme_is_the_same_for_every_seed_the_head_is_not(blob_tensors, scenario_2_2, training):
    # With a frozen backbone, herding and the exemplar means do not depend on the seed.
    results = []
    for seed in (0, 1):
        for classifier in ("nme", "head"):
            strategy = strategies.create("icarl", {"memory_size": 12, "classifier": classifier})
            results.append(engine.run(strategy, *blob_tensors, scenario_2_2, training, True, seed))
    nme_0, head_0, nme_1, head_1 = results
    assert nme_0.accuracy_matrix == nme_1.accuracy_matrix
    assert head_0.weight_norms != head_1.weight_norms


@pytest.mark.parametrize(
    "hyperparameters, message",
    [
        ({"memory_size": 0}, "strategies.icarl.memory_size = 0 must be >= 1"),
        ({"classifier": "svm"}, "'nme' | 'head'"),
    ],
)
@pytest.mark.bad_input
def test_bad_hyperparameters_are_refused(hyperparameters, message):
    with pytest.raises(HyperparameterError, match=message):
        strategies.create("icarl", hyperparameters)


@pytest.mark.bad_input
def test_a_memory_smaller_than_the_classes_is_refused(scenario_2_2):
    strategy = strategies.create("icarl", {"memory_size": 5})
    with pytest.raises(HyperparameterError, match="use memory_size >= 6"):
        strategy.validate(scenario_2_2.experience_sizes)


TINY_DIGITS = ["--seeds", "0", "--set", "training.epochs=1", "--set", "backbone.epochs=1"]
TINY_DIGITS += ["--set", "backbone.width=4", "--quiet", "--device", "cpu"]


def test_the_digits_demo_runs_icarl_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv = ["run", "digits_b5_inc1", "--strategy", "icarl", "--out", str(out), *TINY_DIGITS]
    code = main([*argv, "--set", "strategies.icarl.memory_size=200"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (record,) = [json.loads(path.read_text()) for path in (out / "runs").glob("*.json")]
    assert record["strategy"] == "icarl"
    assert record["config"]["strategies"]["icarl"]["classifier"] == "nme"
    assert record["config"]["strategies"]["icarl"]["memory_size"] == 200
    assert record["display_name"] == "iCaRL"
    matrix = record["accuracy_matrix"]
    assert len(matrix) == 6 and all(value is not None for value in matrix[-1])
    assert "iCaRL" in captured.out


@pytest.mark.bad_input
def test_bad_input_through_the_cli_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for setting, words in [
        ('strategies.icarl.classifier="svm"', "'nme' | 'head'"),
        ("strategies.icarl.memory_size=5", "use memory_size >= 10"),
    ]:
        out = tmp_path / "out"
        argv = ["run", "digits_b5_inc1", "--strategy", "icarl", "--out", str(out), *TINY_DIGITS]
        code = main([*argv, "--set", setting])
        captured = capsys.readouterr()
        assert code == 2
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], captured.err
        assert "Traceback" not in captured.err
        assert not Path(out / "runs").exists() or not list((out / "runs").iterdir())
