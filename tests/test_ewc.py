"""EWC (Kirkpatrick et al., PNAS 2017) on the head: the Fisher by hand and by autograd, the
penalty of Eq. 3 in both modes against a direct sum, and λ = 0 reproducing naive."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

import strategies
from benchmarks import engine
from strategies.base import Experience, Head, HyperparameterError
from strategies.ewc import EWC, EWCConfig, empirical_fisher


def make_head(weight: torch.Tensor, bias: torch.Tensor | None) -> Head:
    head = Head(weight.shape[1], bias=bias is not None)
    head.append_rows(weight, bias)
    return head


def test_fisher_on_a_two_sample_toy_by_hand():
    # Zero weights and biases (ln 3, 0): for every x the logits are (ln 3, 0), p = (3/4, 1/4).
    head = make_head(torch.zeros(2, 2), torch.tensor([math.log(3.0), 0.0]))
    features = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    targets = torch.tensor([0, 1])
    # ∂(−log p_y)/∂z = p − e_y:
    #   sample 0 (y = 0): (3/4 − 1, 1/4) = (−1/4, 1/4), squared (1/16, 1/16)
    #   sample 1 (y = 1): (3/4, 1/4 − 1) = (3/4, −3/4), squared (9/16, 9/16)
    # The weight gradient is (p − e_y) xᵀ, so its square is (p − e_y)² (x²)ᵀ; x² = (1, 4), (4, 1):
    #   sample 0: each row (1/16, 4/16);  sample 1: each row (36/16, 9/16)
    #   mean: each row (37/32, 13/32).  Bias: mean of (1/16, 9/16) = 5/16 for each class.
    expected_weight = torch.tensor([[37 / 32, 13 / 32], [37 / 32, 13 / 32]])
    expected_bias = torch.tensor([5 / 16, 5 / 16])
    fisher = empirical_fisher(head, features, targets)
    torch.testing.assert_close(fisher["weight"], expected_weight)
    torch.testing.assert_close(fisher["bias"], expected_bias)


@pytest.mark.parametrize("bias", [True, False])
def test_fisher_equals_mean_squared_per_sample_gradient(bias):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 4, generator=generator)
    head = make_head(weight, torch.randn(5, generator=generator) if bias else None)
    features = torch.randn(12, 4, generator=generator)
    targets = torch.randint(0, 5, (12,), generator=generator)

    # Independent: per-sample gradients of −log p(y | x) by autograd, squared and averaged.
    parameters = {name: value.detach() for name, value in head.named_parameters()}

    def sample_loss(parameters, x, y):
        logits = functional_call(head, parameters, (x[None],))  # (1, classes)
        return F.cross_entropy(logits, y[None])

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))(parameters, features, targets)
    fisher = empirical_fisher(head, features, targets)
    assert fisher.keys() == per_sample.keys()
    for name, gradients in per_sample.items():
        torch.testing.assert_close(fisher[name], gradients.square().mean(dim=0))


def random_experience(generator, index, num_old, num_seen, dim=3, samples=8) -> Experience:
    features = torch.randn(samples, dim, generator=generator)
    targets = torch.arange(num_old, num_seen).repeat(samples // (num_seen - num_old))
    return Experience(index, num_old, num_seen, features, targets)


def finish_experience(strategy, head, experience):
    """Run the strategy's hooks for one experience; return (F_k, θ_k) captured independently."""
    strategy.before_experience(head, experience)
    fisher = empirical_fisher(head, experience.features, experience.targets)
    anchor = {name: value.detach().clone() for name, value in head.named_parameters()}
    strategy.after_experience(head, experience)
    return fisher, anchor


def move(head, generator, scale=0.5):
    """Change every parameter, as training the next experience would."""
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def test_penalty_is_zero_at_the_anchor_after_the_first_experience():
    generator = torch.Generator().manual_seed(0)
    head = make_head(torch.randn(2, 3, generator=generator), torch.randn(2, generator=generator))
    strategy = EWC(EWCConfig(lambda_=10.0))
    first = random_experience(generator, 0, 0, 2)
    fisher, anchor = finish_experience(strategy, head, first)
    assert strategy.penalty(head).item() == 0.0

    # Away from the anchor: loss − CE = λ/2 · Σ F (θ − θ*)² (Eq. 3), with F, θ* captured above.
    move(head, generator)
    features, targets = first.features, first.targets
    logits = head(features)
    direct = sum((fisher[n] * (p - anchor[n]).square()).sum() for n, p in head.named_parameters())
    loss = strategy.loss(logits, targets, features, head)
    expected = F.cross_entropy(logits, targets) + 10.0 / 2 * direct
    assert direct.item() > 0
    torch.testing.assert_close(loss, expected)


def penalty_and_gradients(head, penalty_function):
    """The value of penalty_function(head) and its gradient wrt each head parameter."""
    head.zero_grad()
    value = penalty_function(head)
    value.backward()
    return value.detach(), {name: p.grad.clone() for name, p in head.named_parameters()}


@pytest.mark.parametrize("num_experiences", [2, 3])
def test_separate_penalty_equals_the_sum_over_finished_experiences(num_experiences):
    generator = torch.Generator().manual_seed(1)
    head = make_head(torch.randn(2, 3, generator=generator), torch.randn(2, generator=generator))
    strategy = EWC(EWCConfig(mode="separate"))
    captured = []  # (F_k, θ_k) per finished experience
    for index in range(num_experiences):
        if index > 0:
            head.append_rows(torch.randn(2, 3, generator=generator))
            move(head, generator)
        experience = random_experience(generator, index, 2 * index, 2 * index + 2)
        captured.append(finish_experience(strategy, head, experience))

    move(head, generator, scale=1.0)  # a random θ, away from every anchor

    def direct(head):
        # Σ_k F_k (θ − θ_k)² over the rows that existed when F_k was taken.
        total = 0
        for fisher, anchor in captured:
            for name, parameter in head.named_parameters():
                rows = anchor[name].shape[0]
                total = total + (fisher[name] * (parameter[:rows] - anchor[name]).square()).sum()
        return total

    expected_value, expected_gradients = penalty_and_gradients(head, direct)
    value, gradients = penalty_and_gradients(head, strategy.penalty)
    torch.testing.assert_close(value, expected_value, rtol=1e-5, atol=1e-5)
    for name in expected_gradients:
        torch.testing.assert_close(gradients[name], expected_gradients[name])


def test_online_importance_is_decayed_old_plus_new_anchored_at_the_latest():
    generator = torch.Generator().manual_seed(2)
    head = make_head(torch.randn(2, 3, generator=generator), torch.randn(2, generator=generator))
    strategy = EWC(EWCConfig(mode="online", gamma=0.5))
    old_fisher, _ = finish_experience(strategy, head, random_experience(generator, 0, 0, 2))
    head.append_rows(torch.randn(2, 3, generator=generator))
    move(head, generator)
    new_fisher, anchor = finish_experience(strategy, head, random_experience(generator, 1, 2, 4))

    # F ← γ·F_old + F_new, F_old padded with zero rows for the two classes it never saw.
    padded_weight = torch.cat([old_fisher["weight"], torch.zeros(2, 3)])
    padded_bias = torch.cat([old_fisher["bias"], torch.zeros(2)])
    torch.testing.assert_close(
        strategy.importance_weight, 0.5 * padded_weight + new_fisher["weight"]
    )
    torch.testing.assert_close(strategy.importance_bias, 0.5 * padded_bias + new_fisher["bias"])
    assert torch.equal(strategy.anchor_weight, anchor["weight"])
    assert torch.equal(strategy.anchor_bias, anchor["bias"])

    # The penalty is that one quadratic, with no constant: 0 at the latest parameters.
    assert strategy.penalty(head).item() == 0.0
    move(head, generator)
    expected = (strategy.importance_weight * (head.weight - anchor["weight"]).square()).sum() + (
        strategy.importance_bias * (head.bias - anchor["bias"]).square()
    ).sum()
    torch.testing.assert_close(strategy.penalty(head), expected)


@pytest.mark.parametrize("mode", ["separate", "online"])
def test_rows_added_after_the_fisher_get_no_penalty(mode):
    generator = torch.Generator().manual_seed(3)
    head = make_head(torch.randn(2, 3, generator=generator), torch.randn(2, generator=generator))
    strategy = EWC(EWCConfig(mode=mode))
    finish_experience(strategy, head, random_experience(generator, 0, 0, 2))
    head.append_rows(torch.randn(2, 3, generator=generator))
    move(head, generator)

    _, gradients = penalty_and_gradients(head, strategy.penalty)
    assert torch.equal(gradients["weight"][2:], torch.zeros(2, 3))
    assert torch.equal(gradients["bias"][2:], torch.zeros(2))
    # The old rows moved away from their anchor, so they do feel the penalty.
    assert gradients["weight"][:2].abs().sum() > 0


def test_lambda_zero_reproduces_naive_exactly(blob_tensors, scenario_2_2, training):
    def run(name, hyperparameters):
        strategy = strategies.create(name, hyperparameters)
        return engine.run(strategy, *blob_tensors, scenario_2_2, training, bias=True, seed=0)

    naive = run("naive", {})
    ewc = run("ewc", {"lambda": 0.0})
    assert ewc.accuracy_matrix == naive.accuracy_matrix
    # The matrix saturates on the blobs, so compare the losses and row norms too.
    assert ewc.train_loss == naive.train_loss
    assert ewc.weight_norms == naive.weight_norms
    # With the default λ the penalty does act here, so the comparison above can fail.
    assert run("ewc", {}).train_loss != naive.train_loss


@pytest.mark.bad_input
def test_new_class_scope_refuses_a_single_class_experience():
    strategy = strategies.create("ewc", {"ce_scope": "new"})
    with pytest.raises(HyperparameterError, match="zero gradient"):
        strategy.validate([2, 1])
    strategy.validate([2, 2])  # two new classes: a real softmax, accepted
    strategies.create("ewc", {"ce_scope": "seen"}).validate([2, 1])


@pytest.mark.bad_input
def test_stability_check_names_the_largest_stable_lambda():
    """Curvature of λ/2·A(θ − μ)² is λ·A. With max A = 0.5, lr 0.1, momentum 0.9 the
    limit 2(1 + 0.9) = 3.8 is passed at λ = 100 (0.1·100·0.5 = 5) and not at λ = 50 (2.5);
    the largest stable λ is 3.8 / (0.1·0.5) = 76."""
    importance = torch.tensor([[0.1, 0.5], [0.0, 0.2]])
    stiff = strategies.create("ewc", {"lambda": 100.0, "ce_scope": "seen"})
    stiff.importance_weight = importance
    message = stiff.stability_error(0.1, 0.9)
    assert message is not None
    assert "= 5 passes SGD's stability limit 2(1 + momentum) = 3.8" in message
    assert "strategies.ewc.lambda < 76" in message
    calm = strategies.create("ewc", {"lambda": 50.0, "ce_scope": "seen"})
    calm.importance_weight = importance
    assert calm.stability_error(0.1, 0.9) is None
    assert strategies.create("ewc", {}).stability_error(0.1, 0.9) is None  # no Fisher yet
    # Cross-entropy over the new classes only never moves the old rows off their anchor,
    # where the penalty's gradient is 0: the unstable curvature is never excited.
    latent = strategies.create("ewc", {"lambda": 100.0, "ce_scope": "new"})
    latent.importance_weight = importance
    assert latent.stability_error(0.1, 0.9) is None


@pytest.mark.bad_input
def test_a_run_past_the_limit_stops_before_training_the_experience(
    blob_tensors, scenario_2_2, training
):
    """λ = 1e12 on the blobs, cross-entropy over all seen classes: the first experience's
    Fisher makes lr·λ·max F enormous, so the run stops as diverged before experience 1
    trains, with the check's message."""
    with pytest.raises(engine.TrainingDiverged, match=r"before experience 1\)$") as caught:
        engine.run(
            strategies.create("ewc", {"lambda": 1e12, "ce_scope": "seen"}),
            *blob_tensors,
            scenario_2_2,
            training,
            True,
            0,
        )
    assert "passes SGD's stability limit" in str(caught.value)
