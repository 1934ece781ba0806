"""The cosine-normalised head (LUCIR, Hou et al., CVPR 2019): logits by hand, invariance to
row norms, the learned scale, and every gradient-trained strategy running on it."""

from __future__ import annotations

import math

import pytest
import torch

import strategies
from benchmarks import engine, run
from benchmarks.errors import UsageError
from strategies.base import CosineHead, Experience, HyperparameterError, make_head
from strategies.ewc import autograd_fisher, empirical_fisher


def cosine_head(weight: torch.Tensor) -> CosineHead:
    head = CosineHead(weight.shape[1])
    head.append_rows(weight)
    return head


def test_logits_are_the_scale_times_the_cosine_by_hand():
    head = cosine_head(torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]))
    with torch.no_grad():
        head.scale.fill_(4.0)
    # x = (1, 1): cos with (1, 0) and (0, 1) is 1/√2, with (−1, 0) it is −1/√2.
    expected = 4.0 * torch.tensor([[1, 1, -1]]) / math.sqrt(2)
    torch.testing.assert_close(head(torch.tensor([[1.0, 1.0]])), expected)


def test_row_norms_do_not_change_the_logits():
    # The norm bias towards new classes cannot arise: rescaling a row changes nothing.
    weight = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    features = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    scaled = weight * torch.tensor([[1.0], [10.0], [0.1], [3.0]])
    torch.testing.assert_close(cosine_head(weight)(features), cosine_head(scaled)(features))


@pytest.mark.bad_input
def test_a_cosine_head_has_no_bias():
    with pytest.raises(HyperparameterError, match="no bias.*head.bias = false"):
        make_head("cosine", 4, bias=True)
    with pytest.raises(HyperparameterError, match="head.kind = 'conv'.*'linear', 'cosine'"):
        make_head("conv", 4, bias=False)


def test_the_scale_is_learned_and_reset_by_joint(blob_tensors, scenario_2_2, training):
    heads = []
    joint = strategies.create("joint")
    after = joint.after_experience
    joint.after_experience = lambda head, experience: (after(head, experience), heads.append(head))
    engine.run(joint, *blob_tensors, scenario_2_2, training, False, 0, head_kind="cosine")
    assert isinstance(heads[-1], CosineHead)
    assert heads[-1].scale.item() > 1.5  # σ grows to sharpen the softmax on separable blobs
    joint.expand(heads[-1], 2)
    assert heads[-1].scale.item() == 1.0


GRADIENT_TRAINED_ON_COSINE = [
    name
    for name in strategies.list_strategies()
    if strategies.get_strategy(name).trains_head
    and "cosine" in strategies.get_strategy(name).head_kinds
]


# Every strategy at its defaults (EWC's λ = 500 is stable here; λ = 5000 is not: see the
# test below).
@pytest.mark.parametrize("name", GRADIENT_TRAINED_ON_COSINE)
def test_every_gradient_trained_strategy_runs_on_a_cosine_head(
    name, blob_tensors, scenario_2_2, training
):
    def train():
        strategy = strategies.create(name)
        return engine.run(strategy, *blob_tensors, scenario_2_2, training, False, 0, "cosine")

    result = train()
    for index, row in enumerate(result.accuracy_matrix):
        assert row[index] > 1 / (2 * (index + 1)), f"{name}: R[{index}][{index}] = {row[index]}"
    assert train().accuracy_matrix == result.accuracy_matrix


@pytest.mark.bad_input
def test_ewc_at_a_stiff_lambda_is_stopped_on_a_cosine_head(blob_tensors, scenario_2_2, training):
    # The shared scale σ gathers Fisher from every sample. Once the penalty's largest
    # curvature λ·F passes SGD's limit lr · curvature < 2 (1 + β) = 3.8 (momentum β), the
    # stability check stops the run before that experience trains, naming the largest
    # stable λ = 3.8 / (lr · max F) from the Fisher the strategy holds at that moment.
    # λ = 5000 (FACIL's value, EWC's default before it was chosen from the text benchmarks).
    ewc = strategies.create("ewc", {"lambda": 5000.0})
    with pytest.raises(engine.TrainingDiverged, match=r"before experience 2\)$") as caught:
        engine.run(ewc, *blob_tensors, scenario_2_2, training, False, 0, "cosine")
    largest = max(float(ewc.importance_weight.max()), float(ewc.importance_scale.max()))
    limit = 2 * (1 + training["momentum"])
    assert training["lr"] * ewc.config.lambda_ * largest > limit
    assert f"strategies.ewc.lambda < {limit / (training['lr'] * largest):.3g}" in str(caught.value)
    # Without the check the run goes on and its loss explodes, as the curvature says.
    ewc = strategies.create("ewc", {"lambda": 5000.0})
    ewc.stability_error = lambda learning_rate, momentum: None
    result = engine.run(ewc, *blob_tensors, scenario_2_2, training, False, 0, "cosine")
    assert result.train_loss[-1] > 1e6


def test_the_list_covers_the_strategies_the_readme_names():
    assert {"naive", "ewc", "lwf", "joint", "replay", "bic"} <= set(GRADIENT_TRAINED_ON_COSINE)
    assert "weight_aligning" not in GRADIENT_TRAINED_ON_COSINE


@pytest.mark.bad_input
def test_weight_aligning_on_a_cosine_head_is_refused_in_one_line(config_file):
    message = "weight_aligning is defined for a linear head, not head.kind = 'cosine'"
    overrides = ["head.kind=cosine", "head.bias=false"]
    with pytest.raises(UsageError, match=message):
        run.plan(str(config_file), overrides, ["wa"])
    with pytest.raises(UsageError, match="set head.bias = false"):
        run.plan(str(config_file), ["head.kind=cosine"], ["naive"])
    run.plan(str(config_file), overrides, ["naive"])  # accepted


def test_autograd_fisher_equals_the_closed_form_on_a_linear_head():
    head = make_head("linear", 3, bias=True)
    generator = torch.Generator().manual_seed(0)
    head.append_rows(torch.randn(4, 3, generator=generator), torch.randn(4, generator=generator))
    features = torch.randn(50, 3, generator=generator)
    targets = torch.randint(0, 4, (50,), generator=generator)
    closed, autograd = (
        empirical_fisher(head, features, targets),
        autograd_fisher(head, features, targets, chunk=16),
    )
    assert closed.keys() == autograd.keys() == {"weight", "bias"}
    for name in closed:
        torch.testing.assert_close(autograd[name], closed[name])


def test_ewc_penalises_the_scale_of_a_cosine_head():
    head = cosine_head(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    features, targets = torch.tensor([[1.0, 0.5], [0.2, 1.0]]), torch.tensor([0, 1])
    ewc = strategies.create("ewc")
    ewc.after_experience(head, Experience(0, 0, 2, features, targets))
    assert ewc.importance_scale.dim() == 0 and ewc.importance_scale.item() > 0
    assert ewc.penalty(head).item() == pytest.approx(0.0, abs=1e-12)  # at the anchor
    with torch.no_grad():
        head.scale.add_(1.0)
    # Only σ moved, by 1: the penalty is its Fisher entry times 1².
    assert ewc.penalty(head).item() == pytest.approx(ewc.importance_scale.item(), rel=1e-6)


def test_distillation_snapshot_of_a_cosine_head_is_the_head_before_training():
    head = cosine_head(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    with torch.no_grad():
        head.scale.fill_(3.0)
    features = torch.tensor([[1.0, 2.0], [2.0, -1.0]])
    expected = head(features).detach()
    lwf = strategies.create("lwf", {"ce_scope": "seen"})
    head.append_rows(torch.tensor([[1.0, 1.0]]))
    lwf.before_experience(head, Experience(1, 2, 3, features, torch.tensor([2, 2])))
    with torch.no_grad():
        head.scale.fill_(7.0)  # training moves σ; the snapshot keeps the old one
    torch.testing.assert_close(lwf.old_logits(features, head), expected)
