"""SI (Zenke et al., ICML 2017) on the head: the path integral and damping by hand over
hand-made steps, the penalty's own gradient taken out of the step's gradient, the code's
relu, one SGD step on a 2-sample toy against an autograd gradient, and c = 0 reproducing
naive."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import strategies
from benchmarks import engine
from benchmarks.scenario import Scenario
from strategies.base import Experience, Head, HyperparameterError


def step(strategy, head: Head, weight: float, bias: float, weight_grad: float, bias_grad: float):
    """What the engine does for one step: the gradient in `.grad`, the updated values, then
    `after_step`."""
    head.weight.grad = torch.tensor([[weight_grad]])
    head.bias.grad = torch.tensor([bias_grad])
    with torch.no_grad():
        head.weight.fill_(weight)
        head.bias.fill_(bias)
    strategy.after_step(head)


def test_path_integral_damping_and_relu_by_hand():
    strategy = strategies.create("si")  # c = 0.1, ξ = 1e-3
    head = Head(1)
    head.append_rows(torch.zeros(1, 1))
    experience = Experience(0, 0, 1, torch.zeros(1, 1), torch.zeros(1, dtype=torch.long))
    strategy.before_experience(head, experience)
    # Weight: g = 2 while 0 → −0.2, then g = −1 while −0.2 → −0.1: ω = 2·0.2 + 1·0.1 = 0.5,
    # total change −0.1, Ω = 0.5 / (0.01 + 0.001). Bias: g = 1 while 0 → −0.1 → −0.3:
    # ω = 0.1 + 0.2 = 0.3, Ω = 0.3 / (0.09 + 0.001).
    step(strategy, head, -0.2, -0.1, 2.0, 1.0)
    step(strategy, head, -0.1, -0.3, -1.0, 1.0)
    strategy.after_experience(head, experience)
    omega_weight, omega_bias = 0.5 / 0.011, 0.3 / 0.091
    torch.testing.assert_close(strategy.importance_weight, torch.tensor([[omega_weight]]))
    torch.testing.assert_close(strategy.importance_bias, torch.tensor([omega_bias]))
    torch.testing.assert_close(strategy.anchor_weight, torch.tensor([[-0.1]]))

    # Second experience. Step 1 starts at the anchor (penalty gradient 0): g = 3 while
    # −0.1 → 0, ω = −0.3. Step 2 starts at 0, where the penalty's gradient is
    # 2·c·Ω·(0 − (−0.1)) = 0.02·Ω: the unregularised gradient is 1 − 0.02·Ω while 0 → −0.05,
    # ω += (1 − 0.02·Ω)·0.05. Total change 0.05: the increment ω / (0.0025 + 0.001) is below
    # −Ω, so the code's relu(Ω + increment) sets the weight's importance to 0. The bias does
    # not move and has no gradient: its importance stays.
    experience = Experience(1, 1, 1, torch.zeros(1, 1), torch.zeros(1, dtype=torch.long))
    strategy.before_experience(head, experience)
    step(strategy, head, 0.0, -0.3, 3.0, 0.0)
    penalty_gradient = 2 * 0.1 * omega_weight * 0.1
    step(strategy, head, -0.05, -0.3, 1.0, 0.0)
    omega = -0.3 + (1.0 - penalty_gradient) * 0.05
    increment = omega / (0.05**2 + 1e-3)
    assert omega_weight + increment < 0
    torch.testing.assert_close(strategy.path_weight, torch.tensor([[omega]]))
    strategy.after_experience(head, experience)
    torch.testing.assert_close(strategy.importance_weight, torch.tensor([[0.0]]))
    torch.testing.assert_close(strategy.importance_bias, torch.tensor([omega_bias]))


def test_one_sgd_step_on_a_two_sample_toy():
    """Plain SGD, one step on both samples: Δθ = −lr·g, so ω = lr·g² and
    Ω = lr·g² / (lr²·g² + ξ), g the cross-entropy's gradient at the initial head (autograd)."""
    features = torch.tensor([[1.0, 2.0], [2.0, -1.0]])
    targets = torch.tensor([0, 1])
    training = {
        "optimizer": "sgd",
        "lr": 0.5,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "batch_size": 2,
        "epochs": 1,
        "schedule": "constant",
    }
    strategy = strategies.create("si")
    initial = {}
    before_experience = strategy.before_experience

    def record(head, experience):
        before_experience(head, experience)
        initial.update({name: p.detach().clone() for name, p in head.named_parameters()})

    strategy.before_experience = record
    scenario = Scenario([0, 1], 2, 2)
    engine.run(strategy, features, targets, features, targets, scenario, training, True, seed=0)
    weight, bias = (initial[name].clone().requires_grad_() for name in ("weight", "bias"))
    F.cross_entropy(F.linear(features, weight, bias), targets).backward()
    for name, parameter in (("weight", weight), ("bias", bias)):
        g, lr = parameter.grad, training["lr"]
        expected = lr * g.square() / (lr**2 * g.square() + 1e-3)
        torch.testing.assert_close(getattr(strategy, f"importance_{name}"), expected)


def test_c_zero_reproduces_naive_exactly(blob_tensors, scenario_2_2, training):
    def run(name, config):
        strategy = strategies.create(name, config)
        return engine.run(strategy, *blob_tensors, scenario_2_2, training, bias=True, seed=0)

    naive, si = run("naive", {}), run("si", {"lambda": 0.0})
    assert si.accuracy_matrix == naive.accuracy_matrix
    assert si.train_loss == naive.train_loss
    assert si.weight_norms == naive.weight_norms
    assert run("si", {}).train_loss != naive.train_loss


@pytest.mark.bad_input
def test_bad_damping_is_refused():
    with pytest.raises(HyperparameterError, match="strategies.si.damping"):
        strategies.create("si", {"damping": 0.0})
