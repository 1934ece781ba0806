"""MAS (Aljundi et al., ECCV 2018) on the head: Ω of Eq. 10 by hand on a 2-sample toy and by
per-sample autograd, the penalty's factor λ (not λ/2), the stability limit at curvature 2λΩ,
and λ = 0 reproducing naive."""

from __future__ import annotations

import pytest
import torch

import strategies
from benchmarks import engine
from strategies.base import Head
from strategies.ewc import per_sample_mean
from strategies.mas import output_sensitivity


def toy_head() -> Head:
    head = Head(2)
    head.append_rows(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0.5, -1.0]))
    return head


TOY_FEATURES = torch.tensor([[1.0, 2.0], [-1.0, 1.0]])


def test_importance_on_a_two_sample_toy_by_hand():
    # z = W x + b: sample 1 (1, 2) ↦ (1.5, 3); sample 2 (−1, 1) ↦ (−0.5, 1).
    # ∂‖z‖²/∂W_cj = 2 z_c x_j:  sample 1 [[3, 6], [6, 12]], sample 2 [[1, −1], [−2, 2]];
    # means of the absolute values [[2, 3.5], [4, 7]].  ∂‖z‖²/∂b = 2 z: (3, 6), (−1, 2) ↦ (2, 4).
    importance = output_sensitivity(toy_head(), TOY_FEATURES)
    torch.testing.assert_close(importance["weight"], torch.tensor([[2.0, 3.5], [4.0, 7.0]]))
    torch.testing.assert_close(importance["bias"], torch.tensor([2.0, 4.0]))


def test_closed_form_equals_per_sample_autograd():
    generator = torch.Generator().manual_seed(0)
    head = Head(5)
    head.append_rows(torch.randn(4, 5, generator=generator), torch.randn(4, generator=generator))
    features = torch.randn(30, 5, generator=generator)
    targets = torch.zeros(30, dtype=torch.long)
    by_autograd = per_sample_mean(
        head, features, targets, lambda logits, _: logits.square().sum(), torch.Tensor.abs
    )
    for name, value in output_sensitivity(head, features).items():
        torch.testing.assert_close(value, by_autograd[name], rtol=1e-5, atol=1e-6)


def test_penalty_is_lambda_times_the_weighted_squared_distance():
    strategy = strategies.create("mas", {"lambda": 3.0})
    head = toy_head()
    strategy.importance_weight = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    strategy.anchor_weight = torch.zeros(2, 2)
    logits, targets = head(TOY_FEATURES), torch.tensor([0, 1])
    cross_entropy = torch.nn.functional.cross_entropy(logits, targets)
    # Σ Ω (θ − 0)²: 2·1² + 0·0² + 1·0² + 1·2² = 6; times λ = 3 (Eq. 3 has no 1/2): 18.
    loss = strategy.loss(logits, targets, TOY_FEATURES, head)
    torch.testing.assert_close(loss - cross_entropy, torch.tensor(18.0))


@pytest.mark.bad_input
def test_stability_limit_uses_the_curvature_two_lambda_omega():
    # Curvature of λ Ω (θ − μ)² is 2λΩ: λ = 10, Ω = 0.5, lr 0.1 gives 1 < 3.8 (stable);
    # λ = 40 gives 4 > 3.8, and the largest stable λ is 3.8 / (0.1 · 2 · 0.5) = 38.
    for lam, stable in ((10.0, True), (40.0, False)):
        strategy = strategies.create("mas", {"lambda": lam})
        strategy.importance_weight = torch.tensor([[0.5]])
        message = strategy.stability_error(0.1, 0.9)
        assert (message is None) == stable
    assert "strategies.mas.lambda < 38" in message


def test_importance_accumulates_and_the_anchor_moves(blob_tensors, scenario_2_2, training):
    strategy = strategies.create("mas", {"lambda": 0.01})
    taken = []
    importance = strategy.importance

    def record(head, experience):
        new = importance(head, experience)
        taken.append((new["weight"].clone(), head.weight.detach().clone()))
        return new

    strategy.importance = record
    engine.run(strategy, *blob_tensors, scenario_2_2, training, True, seed=0)
    total = torch.zeros_like(taken[-1][0])
    for new, _ in taken:  # the authors' accumulation: Ω ← Ω + Ω_new, rows padded with 0
        total[: len(new)] += new
    torch.testing.assert_close(strategy.importance_weight, total)
    assert torch.equal(strategy.anchor_weight, taken[-1][1])


@pytest.mark.parametrize("hyperparameters", [{"lambda": 0.0}])
def test_lambda_zero_reproduces_naive_exactly(
    hyperparameters, blob_tensors, scenario_2_2, training
):
    def run(name, config):
        strategy = strategies.create(name, config)
        return engine.run(strategy, *blob_tensors, scenario_2_2, training, bias=True, seed=0)

    naive, mas = run("naive", {}), run("mas", hyperparameters)
    assert mas.accuracy_matrix == naive.accuracy_matrix
    assert mas.train_loss == naive.train_loss
    assert mas.weight_norms == naive.weight_norms
    assert run("mas", {"lambda": 0.01}).train_loss != naive.train_loss
