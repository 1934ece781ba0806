"""BiC (Wu et al., CVPR 2019): the correction of Eq. 4 by hand, earlier corrections kept
fixed, stage 2 touching only α and β, and the fitted (α, β) equal to an independent
minimisation of the held-out cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_blobs
from scipy.optimize import minimize
from scipy.special import logsumexp

import strategies
from benchmarks import engine
from benchmarks.scenario import Scenario
from strategies.base import Experience, Head, HyperparameterError


def test_correction_scales_only_the_newest_classes_and_keeps_earlier_ones_fixed():
    bic = strategies.create("bic")
    bic.fixed_alpha = torch.tensor([1.0, 1.0, 0.5])  # classes 0, 1 (base) and 2 (experience 1)
    bic.fixed_beta = torch.tensor([0.0, 0.0, -1.0])
    bic.alpha, bic.beta = torch.tensor(2.0), torch.tensor(3.0)  # classes 3, 4 (the newest)
    logits = torch.tensor([[1.0, 2.0, 4.0, 1.0, -1.0]])
    # q = α_k o + β_k: (1, 2, 0.5·4 − 1, 2·1 + 3, 2·(−1) + 3)
    expected = torch.tensor([[1.0, 2.0, 1.0, 5.0, 1.0]])
    torch.testing.assert_close(bic.correct(logits), expected)


def test_a_finished_experience_keeps_its_alpha_and_beta_and_the_new_one_starts_at_identity():
    bic = strategies.create("bic")
    head = Head(2)
    head.append_rows(torch.zeros(2, 2))
    features, targets = torch.zeros(4, 2), torch.tensor([0, 0, 1, 1])
    bic.before_experience(head, Experience(0, 0, 2, features, targets))
    bic.alpha, bic.beta = torch.tensor(0.5), torch.tensor(-1.0)  # as if fitted after exp. 0
    head.append_rows(torch.zeros(1, 2))
    bic.before_experience(head, Experience(1, 2, 3, features, targets))
    torch.testing.assert_close(bic.fixed_alpha, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(bic.fixed_beta, torch.tensor([-1.0, -1.0]))
    assert (bic.alpha.item(), bic.beta.item()) == (1.0, 0.0)


@pytest.mark.bad_input
def test_bic_needs_a_memory_and_a_held_out_share():
    with pytest.raises(HyperparameterError, match="memory_size = 0 must be > 0"):
        strategies.create("bic", {"memory_size": 0})
    with pytest.raises(HyperparameterError, match=r"memory_holdout = 1.0 must be in \(0, 1\)"):
        strategies.create("bic", {"memory_holdout": 1.0})


def run_recording(hyperparameters: dict, tensors, scenario: Scenario, training: dict):
    """engine.run with BiC; records (head weights before stage 2, the Calibration, the head)."""
    bic = strategies.create("bic", hyperparameters)
    records = []
    calibration = bic.calibration

    def recording(head, experience):
        stage = calibration(head, experience)
        if stage is not None:
            records.append((head.weight.detach().clone(), head.bias.detach().clone(), stage, head))
        return stage

    bic.calibration = recording
    result = engine.run(bic, *tensors, scenario, training, True, 0)
    return bic, result, records


@pytest.fixture
def overlapping():
    """Blobs that overlap (spread 1.5 around centres 3 apart): the held-out cross-entropy
    then has a finite minimiser in (α, β)."""
    arrays = make_blobs(num_classes=4, spread=1.5, seed=3)
    return tuple(
        torch.from_numpy(arrays[key]) for key in ("X_train", "y_train", "X_test", "y_test")
    )


def test_stage_two_trains_alpha_beta_to_the_minimiser_of_the_held_out_cross_entropy(
    overlapping, training
):
    # 20 exemplars per class, half held out: 10 per class in the stage-2 set.
    hyperparameters = {
        "memory_size": 20,
        "memory_budget": "per_class",
        "memory_holdout": 0.5,
        "bias_epochs": 400,
    }
    training = dict(training, lr=0.05)
    bic, _, records = run_recording(
        hyperparameters, overlapping, Scenario([0, 1, 2, 3], 2, 2), training
    )
    weight, bias, stage, head = records[-1]
    # Stage 2 leaves the head alone.
    assert torch.equal(head.weight, weight) and torch.equal(head.bias, bias)
    assert torch.bincount(stage.targets).tolist() == [10, 10, 10, 10]

    # Independent: the held-out cross-entropy of (o_old, α o_new + β), minimised by scipy.
    logits = (stage.features @ weight.T + bias).double().numpy()  # (40, 4)
    labels = stage.targets.numpy()

    def cross_entropy(parameters: np.ndarray) -> float:
        alpha, beta = parameters
        corrected = np.concatenate([logits[:, :2], alpha * logits[:, 2:] + beta], axis=1)
        return float(np.mean(logsumexp(corrected, axis=1) - corrected[np.arange(40), labels]))

    optimum = minimize(
        cross_entropy, x0=[1.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-10}
    ).x
    fitted = np.array([bic.alpha.item(), bic.beta.item()])
    assert cross_entropy(fitted) == pytest.approx(cross_entropy(optimum), abs=1e-4)
    np.testing.assert_allclose(fitted, optimum, atol=0.05)
    assert not np.allclose(fitted, [1.0, 0.0])  # it did move


def test_prediction_uses_the_corrected_logits(overlapping, training):
    hyperparameters = {"memory_size": 10, "memory_budget": "per_class", "bias_epochs": 5}
    bic, _, records = run_recording(
        hyperparameters, overlapping, Scenario([0, 1, 2, 3], 2, 2), training
    )
    head = records[-1][3]
    features = overlapping[2]
    with torch.no_grad():
        raw = head(features)
        expected = torch.cat([raw[:, :2], bic.alpha * raw[:, 2:] + bic.beta], dim=1)
        torch.testing.assert_close(bic.predict(head, features), expected)
