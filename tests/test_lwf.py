"""LwF (Li & Hoiem, ECCV 2016) on the head: zero distillation at the snapshot, α = 0 is
naive, T² scaling, and cross-entropy over the new classes' logits only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import strategies
from benchmarks import engine
from strategies.base import Experience, Head, HyperparameterError, distillation_kl
from strategies.lwf import LwF, LwFConfig


def placeholder_experience(index: int, num_old: int, num_seen: int, dim: int) -> Experience:
    """The snapshot reads only the class counts; the data are placeholders."""
    return Experience(index, num_old, num_seen, torch.zeros(1, dim), torch.zeros(1, dtype=int))


def second_experience(config: LwFConfig, seed: int = 0, dim: int = 4):
    """Two old classes, two new ones: the snapshot taken, then the head moved as training would.

    Returns the strategy, the head, and a batch of the new classes (ids 2 and 3).
    """
    generator = torch.Generator().manual_seed(seed)
    head = Head(dim)
    head.append_rows(torch.randn(2, dim, generator=generator), torch.randn(2, generator=generator))
    strategy = LwF(config)
    strategy.before_experience(head, placeholder_experience(0, 0, 2, dim))
    head.append_rows(torch.randn(2, dim, generator=generator))
    strategy.before_experience(head, placeholder_experience(1, 2, 4, dim))
    features = torch.randn(8, dim, generator=generator)
    targets = torch.tensor([2, 3] * 4)
    return strategy, head, features, targets, generator


def move(head: Head, generator: torch.Generator) -> None:
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))


def kl_by_hand(student_logits, teacher_logits, temperature):
    """mean over the batch of Σ_c p_c (log p_c − log q_c), p, q softmaxes at T."""
    teacher = teacher_logits / temperature
    student = student_logits / temperature
    log_p = teacher - torch.log(torch.exp(teacher).sum(dim=1, keepdim=True))
    log_q = student - torch.log(torch.exp(student).sum(dim=1, keepdim=True))
    return (torch.exp(log_p) * (log_p - log_q)).sum(dim=1).mean()


def test_distillation_is_zero_when_the_head_equals_its_snapshot():
    strategy, head, features, targets, _ = second_experience(LwFConfig())
    old_logits = strategy.old_logits(features, head)  # (batch, 2)
    # Identical logits: KL(p || p) is exactly 0.
    assert distillation_kl(old_logits, old_logits, 2.0, False).item() == 0.0
    # The head's old rows equal the snapshot; a (4-row) and a (2-row) product may round
    # differently in the last bit, so allow float32 rounding, far below any real term.
    head_logits = head(features)  # (batch, 4)
    assert abs(distillation_kl(head_logits[:, :2], old_logits, 2.0, False).item()) < 1e-6
    new_only = F.cross_entropy(head_logits[:, 2:], targets - 2)
    loss = strategy.loss(head_logits, targets, features, head)
    assert loss.item() == pytest.approx(new_only.item(), abs=1e-6)


def test_loss_is_new_class_cross_entropy_plus_alpha_times_distillation():
    strategy, head, features, targets, generator = second_experience(LwFConfig(alpha=0.5))
    move(head, generator)
    logits = head(features)
    # The snapshot's logits from the values it copied: the old rows as they were.
    old_logits = F.linear(features, strategy.old_weight, strategy.old_bias)
    expected = F.cross_entropy(logits[:, 2:], targets - 2) + 0.5 * kl_by_hand(
        logits[:, :2], old_logits, temperature=2.0
    )
    loss = strategy.loss(logits, targets, features, head)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_alpha_zero_with_seen_scope_reproduces_naive_exactly(blob_tensors, scenario_2_2, training):
    def run(name, hyperparameters):
        strategy = strategies.create(name, hyperparameters)
        return engine.run(strategy, *blob_tensors, scenario_2_2, training, bias=True, seed=0)

    naive = run("naive", {})
    lwf = run("lwf", {"alpha": 0.0, "ce_scope": "seen"})
    assert lwf.accuracy_matrix == naive.accuracy_matrix
    # The matrix saturates on the blobs, so compare the losses and row norms too.
    assert lwf.train_loss == naive.train_loss
    assert lwf.weight_norms == naive.weight_norms
    # With α = 1 the distillation acts here, so the comparison above can fail.
    assert run("lwf", {"ce_scope": "seen"}).train_loss != naive.train_loss


def test_t_squared_multiplies_the_distillation_term_by_t_squared():
    temperature = 3.0  # T² = 9, not to be confused with T or 2T
    losses = {}
    for t_squared in (False, True):
        config = LwFConfig(temperature=temperature, t_squared=t_squared)
        strategy, head, features, targets, generator = second_experience(config, seed=1)
        move(head, generator)  # same seed: the same head, snapshot and batch for both configs
        logits = head(features)
        cross_entropy = F.cross_entropy(logits[:, 2:], targets - 2)
        losses[t_squared] = (strategy.loss(logits, targets, features, head) - cross_entropy).item()
    assert losses[False] > 1e-3
    assert losses[True] == pytest.approx(9.0 * losses[False], rel=1e-5)


def test_new_scope_cross_entropy_sees_only_the_new_logits():
    strategy, head, features, targets, generator = second_experience(
        LwFConfig(alpha=0.0, ce_scope="new")
    )
    move(head, generator)
    logits = head(features)  # (batch, 4)
    # Classes 2, 3 are columns 0, 1 of the new logits.
    expected = F.cross_entropy(logits[:, 2:], targets - 2)
    loss = strategy.loss(logits, targets, features, head)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # The old logits would change a softmax over all seen classes: the scopes differ here.
    assert abs(F.cross_entropy(logits, targets).item() - expected.item()) > 1e-3

    seen = LwF(LwFConfig(alpha=0.0, ce_scope="seen"))
    seen.before_experience(head, placeholder_experience(1, 2, 4, 4))
    seen_loss = seen.loss(logits, targets, features, head)
    assert seen_loss.item() == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)


@pytest.mark.bad_input
def test_new_scope_refuses_a_single_class_experience():
    strategy = strategies.create("lwf", {"ce_scope": "new"})
    with pytest.raises(HyperparameterError, match="zero gradient"):
        strategy.validate([2, 1])
    strategy.validate([2, 2])  # two new classes: a real softmax, accepted
    strategies.create("lwf", {"ce_scope": "seen"}).validate([2, 1])
