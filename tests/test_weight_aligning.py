"""Weight Aligning (Zhao et al., CVPR 2020): equal mean norms after alignment, γ by hand,
weight clipping, and the (1 − λ)·CE + λ·KD balance against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import strategies
from benchmarks import engine
from strategies.base import Experience, Head
from strategies.weight_aligning import WeightAligning, WeightAligningConfig


def make_head(weight, bias=None) -> Head:
    """A head whose rows (and biases) are exactly the given values."""
    weight = torch.tensor(weight, dtype=torch.float32)
    head = Head(weight.shape[1], bias=bias is not None)
    head.append_rows(weight, None if bias is None else torch.tensor(bias, dtype=torch.float32))
    return head


def experience(index: int, num_old: int, num_seen: int, dim: int = 2) -> Experience:
    """Alignment reads only the class counts; the data are placeholders."""
    return Experience(index, num_old, num_seen, torch.zeros(1, dim), torch.zeros(1, dtype=int))


def row_norms(head: Head) -> np.ndarray:
    return np.sqrt((head.weight.detach().numpy().astype(np.float64) ** 2).sum(axis=1))


def test_alignment_equalises_the_mean_norms_of_old_and_new_rows():
    generator = torch.Generator().manual_seed(0)
    old = torch.randn(3, 5, generator=generator)
    new = 4.0 * torch.randn(2, 5, generator=generator)  # new rows much larger, as after CE
    head = make_head(torch.cat([old, new]).tolist(), [0.0] * 5)
    before = head.weight.detach().numpy().copy()

    WeightAligning().after_experience(head, experience(1, 3, 5, dim=5))

    norms = row_norms(head)
    assert norms[3:].mean() == pytest.approx(norms[:3].mean(), rel=1e-6)
    after = head.weight.detach().numpy()
    np.testing.assert_array_equal(after[:3], before[:3])  # old rows untouched
    # The new rows keep their direction: scaled by one γ = mean old norm / mean new norm.
    norms_before = np.linalg.norm(before.astype(np.float64), axis=1)
    gamma = norms_before[:3].mean() / norms_before[3:].mean()
    np.testing.assert_allclose(after[3:], gamma * before[3:], rtol=1e-6)


def test_gamma_by_hand_scales_new_weights_and_biases():
    # Old rows of norm 2 and 4 (mean 3); new rows of norm 1 and 3 (mean 2): γ = 3 / 2.
    head = make_head(
        [[2.0, 0.0], [0.0, 4.0], [1.0, 0.0], [0.0, 3.0]],
        [0.5, -1.0, 0.5, -2.0],
    )
    WeightAligning().after_experience(head, experience(1, 2, 4))
    expected_weight = [[2.0, 0.0], [0.0, 4.0], [1.5, 0.0], [0.0, 4.5]]
    assert head.weight.tolist() == expected_weight
    # align_bias (default): o_new -> γ·o_new, so the new biases are scaled by γ as well.
    assert head.bias.tolist() == [0.5, -1.0, 0.75, -3.0]


def test_without_align_bias_the_biases_are_unchanged():
    # Old norms 2 and 4, one new row of norm 1: γ = 3.
    head = make_head([[2.0, 0.0], [0.0, 4.0], [0.0, 1.0]], [0.5, -1.0, 0.25])
    WeightAligning(WeightAligningConfig(align_bias=False)).after_experience(
        head, experience(1, 2, 3)
    )
    assert head.weight.tolist() == [[2.0, 0.0], [0.0, 4.0], [0.0, 3.0]]
    assert head.bias.tolist() == [0.5, -1.0, 0.25]


def test_first_experience_is_not_aligned():
    # Rows of norm 1 and 5: any alignment would change one of them.
    head = make_head([[1.0, 0.0], [3.0, 4.0]], [0.5, -0.5])
    WeightAligning().after_experience(head, experience(0, 0, 2))
    assert head.weight.tolist() == [[1.0, 0.0], [3.0, 4.0]]
    assert head.bias.tolist() == [0.5, -0.5]


@pytest.mark.parametrize("weight_clipping", [True, False])
def test_weight_clipping_after_each_update(weight_clipping):
    weight = [[1.0, -2.0], [-0.5, 3.0]]
    head = make_head(weight, [-1.0, 2.0])
    WeightAligning(WeightAligningConfig(weight_clipping=weight_clipping)).after_update(head)
    # Clipping is max(w, 0) elementwise; the paper's FC layer has no bias, so biases stay.
    expected = [[1.0, 0.0], [0.0, 3.0]] if weight_clipping else weight
    assert head.weight.tolist() == expected
    assert head.bias.tolist() == [-1.0, 2.0]


def run_recording_heads(hyperparameters, blob_tensors, scenario, training):
    """engine.run for WA; a copy of the head's weight after each experience's hooks."""
    strategy = strategies.create("weight_aligning", hyperparameters)
    weights = []
    after_experience = strategy.after_experience

    def recording(head, experience):
        after_experience(head, experience)
        weights.append(head.weight.detach().clone())

    strategy.after_experience = recording
    engine.run(strategy, *blob_tensors, scenario, training, bias=True, seed=0)
    return weights


def test_engine_run_aligns_after_every_experience(blob_tensors, scenario_2_2, training):
    weights = run_recording_heads({}, blob_tensors, scenario_2_2, training)
    for index, weight in enumerate(weights[1:], start=1):
        norms = np.linalg.norm(weight.numpy().astype(np.float64), axis=1)
        num_old = 2 * index  # two classes per experience
        assert norms[num_old:].mean() == pytest.approx(norms[:num_old].mean(), rel=1e-5)


def test_engine_run_clips_only_when_asked(blob_tensors, scenario_2_2, training):
    clipped = run_recording_heads({"weight_clipping": True}, blob_tensors, scenario_2_2, training)
    unclipped = run_recording_heads(
        {"weight_clipping": False}, blob_tensors, scenario_2_2, training
    )
    assert all((weight >= 0).all() for weight in clipped)
    # Initial rows are U(-1/4, 1/4) and the blobs' off-centre features are noise around 0,
    # so without clipping some weights stay negative: the check above can fail.
    assert any((weight < 0).any() for weight in unclipped)


def kl_by_hand(student_logits, teacher_logits, temperature):
    """mean over the batch of Σ_c p_c (log p_c − log q_c), p, q softmaxes at T."""
    teacher = teacher_logits / temperature
    student = student_logits / temperature
    log_p = teacher - torch.log(torch.exp(teacher).sum(dim=1, keepdim=True))
    log_q = student - torch.log(torch.exp(student).sum(dim=1, keepdim=True))
    return (torch.exp(log_p) * (log_p - log_q)).sum(dim=1).mean()


def cross_entropy_by_hand(logits, targets):
    log_normaliser = torch.log(torch.exp(logits).sum(dim=1))
    return (log_normaliser - logits[torch.arange(len(targets)), targets]).mean()


def snapshotted_strategy_and_head(config: WeightAligningConfig):
    """Two old classes snapshotted, one new class, then the head moved as training would."""
    head = make_head([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], [0.0, 0.1, -0.2])
    strategy = WeightAligning(config)
    strategy.before_experience(head, experience(1, 2, 3))  # snapshot of rows 0, 1
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.8, 0.3], [-0.2, 1.1], [1.0, 0.9]]))
        head.bias.copy_(torch.tensor([0.1, -0.1, 0.3]))
    features = torch.tensor([[1.0, 2.0], [2.0, -1.0], [0.5, 0.5]])
    targets = torch.tensor([2, 2, 2])  # the new class's data, as in head-only training
    return strategy, head, features, targets


def test_loss_balances_cross_entropy_and_distillation_by_old_share():
    strategy, head, features, targets = snapshotted_strategy_and_head(WeightAligningConfig())
    logits = head(features)
    # The snapshot's logits, from the values written above: W_old = I, b_old = (0, 0.1).
    old_logits = features @ torch.eye(2) + torch.tensor([0.0, 0.1])
    balance = 2 / 3  # λ = n / (n + m), n = 2 old and m = 1 new class
    expected = (1 - balance) * cross_entropy_by_hand(logits, targets) + balance * kl_by_hand(
        logits[:, :2], old_logits, temperature=2.0
    )
    loss = strategy.loss(logits, targets, features, head)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # Both terms are non-zero here, so a wrong λ would show.
    assert kl_by_hand(logits[:, :2], old_logits, 2.0).item() > 1e-3


def test_without_distillation_the_loss_is_plain_cross_entropy():
    config = WeightAligningConfig(distillation=False)
    strategy, head, features, targets = snapshotted_strategy_and_head(config)
    logits = head(features)
    loss = strategy.loss(logits, targets, features, head)
    assert loss.item() == pytest.approx(cross_entropy_by_hand(logits, targets).item(), rel=1e-6)


def test_first_experience_loss_is_plain_cross_entropy():
    head = make_head([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    strategy = WeightAligning()
    strategy.before_experience(head, experience(0, 0, 2))  # nothing old to distil
    features = torch.tensor([[1.0, 2.0], [2.0, -1.0]])
    targets = torch.tensor([0, 1])
    logits = head(features)
    loss = strategy.loss(logits, targets, features, head)
    assert loss.item() == pytest.approx(cross_entropy_by_hand(logits, targets).item(), rel=1e-6)


def test_auto_clipping_follows_the_sign_of_the_features(blob_tensors, scenario_2_2, training):
    """`auto` clips iff every first-experience training feature is >= 0: the blobs are noise
    around 0 (signed: no clipping, as `false`), their ReLU is not (clipping, as `true`)."""
    train_x, train_y, test_x, test_y = blob_tensors
    assert (train_x < 0).any()
    relu = (train_x.clamp(min=0), train_y, test_x.clamp(min=0), test_y)
    for tensors, expected in [(blob_tensors, False), (relu, True)]:
        auto = strategies.create("weight_aligning", {})
        forced = strategies.create("weight_aligning", {"weight_clipping": expected})
        runs = [
            engine.run(s, *tensors, scenario_2_2, training, bias=True, seed=0)
            for s in (auto, forced)
        ]
        assert bool(auto.clips) is expected
        assert runs[0].weight_norms == runs[1].weight_norms
        assert runs[0].accuracy_matrix == runs[1].accuracy_matrix
