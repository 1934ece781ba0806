"""`[head] loss = "sigmoid"`: one-vs-rest binary cross-entropy over the seen classes in place
of the softmax cross-entropy. The loss against torch's BCE and the formula by hand, every
strategy that accepts it, one SGD step of the engine against a step computed independently,
the batched-seeds path, EWC's Fisher under the Bernoulli likelihood, the record and run id,
and the refusals."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_bad_input import FAST, arrays, assert_refused, assert_runs, bench

import strategies
from benchmarks import engine, run
from benchmarks.scenario import Scenario
from strategies.base import Head, classification_loss, initial_rows, one_vs_rest_bce
from strategies.ewc import empirical_fisher


def by_hand(logits, targets, columns, weights=None):
    """−Σ_c [y_c log σ(z_c) + (1 − y_c) log(1 − σ(z_c))] per sample, (weighted) mean, in
    float64; y_c = 1 when the sample's class is `columns[c]`."""
    z = logits.double()
    y = (targets[:, None] == torch.tensor(columns)[None, :]).double()
    p = torch.sigmoid(z)
    per_sample = -(y * p.log() + (1 - y) * (1 - p).log()).sum(dim=1)
    if weights is None:
        return per_sample.mean()
    w = weights.double()[targets]
    return (w * per_sample).sum() / w.sum()


def sample_batch(classes=5, batch=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(batch, classes, generator=generator)
    targets = torch.randint(0, classes, (batch,), generator=generator)
    return logits, targets


def test_bce_over_seen_classes_matches_torch_and_the_formula():
    logits, targets = sample_batch()
    loss = classification_loss(logits, targets, loss="sigmoid")
    one_hot = F.one_hot(targets, 5).float()
    torch_sum = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="sum") / 12
    assert torch.allclose(loss, torch_sum, rtol=1e-6, atol=0)
    assert abs(loss.item() - by_hand(logits, targets, range(5)).item()) < 1e-5 * loss.item()


def test_bce_over_new_classes_makes_old_targets_negatives_for_every_new_unit():
    logits, targets = sample_batch()
    loss = classification_loss(logits, targets, num_old=3, scope="new", loss="sigmoid")
    expected = by_hand(logits[:, 3:], targets, [3, 4])
    assert abs(loss.item() - expected.item()) < 1e-5 * expected.item()


def test_class_weights_give_a_weighted_mean_of_samples():
    logits, targets = sample_batch()
    weights = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25])
    loss = one_vs_rest_bce(logits, targets, class_weights=weights)
    expected = by_hand(logits, targets, range(5), weights)
    assert abs(loss.item() - expected.item()) < 1e-5 * expected.item()


def sigmoid_strategies():
    """(name, hyperparameters) of every strategy that accepts the sigmoid head."""
    names = run.strategies_with_loss("sigmoid")
    return [(name, {}) for name in names] + [("fetril", {"classifier": "sgd"})]


def test_the_accepted_strategies_are_the_gradient_trained_ones_without_softmax_maths():
    assert {name for name, _ in sigmoid_strategies()} == {
        "naive",
        "replay",
        "seq_star",
        "joint",
        "gdumb",
        "ewc",
        "mas",
        "si",
        "fetril",
        "new_label_detector",
    }


@pytest.mark.parametrize("name, hyperparameters", sigmoid_strategies())
def test_every_accepting_strategy_trains_with_the_bce(name, hyperparameters):
    # Fresh, before any experience: no penalty and no detectors, so the loss is the BCE.
    strategy = strategies.create(name, hyperparameters)
    strategy.head_loss = "sigmoid"
    logits, targets = sample_batch()
    head = Head(3)
    head.append_rows(torch.zeros(5, 3))
    loss = strategy.loss(logits, targets, torch.zeros(12, 3), head)
    expected = by_hand(logits, targets, range(5))
    assert abs(loss.item() - expected.item()) < 1e-5 * expected.item()


def head_after_one_experience(blob_tensors, training, head_loss):
    """engine.run of naive on all six blob classes in one experience; the trained head."""
    strategy = strategies.create("naive")
    heads = []
    after = strategy.after_experience

    def recording(head, experience):
        after(head, experience)
        heads.append(head)

    strategy.after_experience = recording
    scenario = Scenario(list(range(6)), 6, 1)
    engine.run(strategy, *blob_tensors, scenario, training, True, 0, head_loss=head_loss)
    return heads[0]


def test_one_engine_step_is_the_bce_gradient_step(blob_tensors, training):
    features, targets = blob_tensors[0], blob_tensors[1]
    n = len(targets)
    training = {**training, "momentum": 0.0, "batch_size": n, "epochs": 1}
    head = head_after_one_experience(blob_tensors, training, "sigmoid")
    # Independently: the engine seeds the global generator with the run's seed and draws
    # the initial rows from it; biases start at 0. One full-batch step of plain SGD.
    torch.manual_seed(0)
    weight = initial_rows(6, features.shape[1]).double().requires_grad_()
    bias = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    logits = features.double() @ weight.T + bias
    loss = F.binary_cross_entropy_with_logits(
        logits, F.one_hot(targets, 6).double(), reduction="sum"
    )
    (loss / n).backward()
    lr = training["lr"]
    expected_weight, expected_bias = weight - lr * weight.grad, bias - lr * bias.grad
    # float32 sums n terms |σ − y| |x| ≤ max|x| each: error ≤ lr · n · ε · max|x|.
    tolerance = lr * n * torch.finfo(torch.float32).eps * features.abs().max().item()
    assert (head.weight.double() - expected_weight).abs().max() <= tolerance
    assert (head.bias.double() - expected_bias).abs().max() <= tolerance
    softmax = head_after_one_experience(blob_tensors, training, "softmax")
    assert (softmax.weight.double() - expected_weight).abs().max() > 100 * tolerance


def test_batched_seeds_train_with_the_bce_too(blob_tensors, scenario_2_2, training):
    def losses(head_loss, batched):
        if batched:
            instances = [strategies.create("naive") for _ in range(2)]
            results = engine.run_seeds(
                instances, *blob_tensors, scenario_2_2, training, True, [0, 1], head_loss=head_loss
            )
        else:
            results = [
                engine.run(
                    strategies.create("naive"),
                    *blob_tensors,
                    scenario_2_2,
                    training,
                    True,
                    seed,
                    head_loss=head_loss,
                )
                for seed in (0, 1)
            ]
        return torch.tensor([r.train_loss for r in results], dtype=torch.float64)

    batched, one_by_one = losses("sigmoid", True), losses("sigmoid", False)
    # vmap may sum in another order (tests/test_engine_seeds.py derives its bounds); a
    # relative 1e-4 is far below the gap to the softmax's losses checked next.
    assert torch.allclose(batched, one_by_one, rtol=1e-4, atol=0)
    assert (batched - losses("softmax", True)).abs().min() > 1e-2


def test_ewc_fisher_under_the_sigmoid_likelihood(blob_tensors):
    features, targets = blob_tensors[0][::12], blob_tensors[1][::12]  # 20 samples
    head = Head(features.shape[1])
    torch.manual_seed(1)
    head.append_rows(initial_rows(6, features.shape[1]), 0.1 * torch.randn(6))
    fisher = empirical_fisher(head, features, targets, "sigmoid")
    # Independently: autograd of each sample's BCE, squared, averaged.
    squares = {"weight": torch.zeros_like(head.weight), "bias": torch.zeros_like(head.bias)}
    for x, y in zip(features, targets, strict=True):
        loss = F.binary_cross_entropy_with_logits(
            head(x[None]), F.one_hot(y[None], 6).float(), reduction="sum"
        )
        grads = torch.autograd.grad(loss, [head.weight, head.bias])
        squares["weight"] += grads[0].square()
        squares["bias"] += grads[1].square()
    for name in ("weight", "bias"):
        assert torch.allclose(fisher[name], squares[name] / len(targets), rtol=1e-5, atol=1e-9)


SIGMOID = ["--set", "head.loss=sigmoid"]


def test_the_record_says_sigmoid_and_the_run_id_covers_it(tmp_path, capsys):
    config = bench(tmp_path, arrays())
    assert_runs(capsys, ["run", config, *FAST, *SIGMOID], tmp_path / "sigmoid")
    assert_runs(capsys, ["run", config, *FAST], tmp_path / "softmax")
    (sigmoid,) = [json.loads(p.read_text()) for p in (tmp_path / "sigmoid/runs").glob("*.json")]
    (softmax,) = [json.loads(p.read_text()) for p in (tmp_path / "softmax/runs").glob("*.json")]
    assert sigmoid["config"]["head"]["loss"] == "sigmoid"
    # A key added after records existed is left out at the value earlier runs had, so their
    # records and the new ones group as one configuration in reports.
    assert "loss" not in softmax["config"]["head"]
    assert sigmoid["run_id"] != softmax["run_id"]
    assert sigmoid["accuracy_matrix"] != softmax["accuracy_matrix"] or (
        sigmoid["train_loss"] != softmax["train_loss"]
    )
    # A softmax run keeps the id it had before the key existed: the same config without it.
    plan = run.plan(str(config), ["training.epochs=1"], ["naive"])
    with_key, _ = run.run_identity(plan, "naive", 0)
    del plan.config["head"]["loss"]
    without_key, _ = run.run_identity(plan, "naive", 0)
    assert with_key == without_key == softmax["run_id"]


REFUSED = ["lwf", "weight_aligning", "bic", "ncm", "slda", "ridge", "fecam", "fetril"]


@pytest.mark.parametrize("name", REFUSED)
@pytest.mark.bad_input
def test_sigmoid_with_a_strategy_it_is_not_defined_for(name, tmp_path, capsys):
    config = bench(tmp_path, arrays())
    line = assert_refused(
        capsys,
        ["run", config, "--strategy", name, *SIGMOID],
        tmp_path / "out",
        f"head.loss = 'sigmoid' is not defined for {name}",
        "accepted with it: naive, ewc, joint, replay, seq_star",
    )
    assert "new_label_detector" in line


@pytest.mark.bad_input
def test_an_unknown_head_loss_is_refused(tmp_path, capsys):
    config = bench(tmp_path, arrays())
    assert_refused(
        capsys,
        ["run", config, *FAST, "--set", "head.loss=logistic"],
        tmp_path / "out",
        "head.loss = 'logistic' is not accepted; use one of ['softmax', 'sigmoid']",
    )
