"""Analytic ridge head (RanPAC, NeurIPS 2023; ACIL, NeurIPS 2022): after every experience
the weights equal the ridge fit on all seen data at once (numpy, float64), whichever
update; RanPAC's choice of λ against its own loop of solves; the seeded projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import strategies
from benchmarks import engine
from strategies import ridge
from strategies.ridge import choose_lambda, held_out_predictions


def run(blob_tensors, scenario, training, seed=0, **config):
    strategy = strategies.create("ridge", config)
    heads = []
    after_experience = strategy.after_experience

    def recording(head, experience):
        after_experience(head, experience)
        heads.append(head)

    strategy.after_experience = recording
    result = engine.run(strategy, *blob_tensors, scenario, training, bias=True, seed=seed)
    return result, strategy, heads[-1]


def joint_ridge(features, targets, projection, regulariser):
    """(HᵀH + λI)⁻¹ HᵀY on all data at once, H = ReLU(X P) (or X), Y one-hot."""
    inputs = features.astype(np.float64)
    if projection is not None:
        inputs = np.maximum(inputs @ projection.astype(np.float64), 0.0)
    one_hot = np.eye(targets.max() + 1)[targets]
    gram = inputs.T @ inputs + regulariser * np.eye(inputs.shape[1])
    return np.linalg.solve(gram, inputs.T @ one_hot)


# M = 128, below the 240 training samples, so G is invertible for any λ RanPAC picks.
@pytest.mark.parametrize("projection_dim", [0, 128])
@pytest.mark.parametrize("method", ["ranpac", "acil"])
def test_weights_equal_the_joint_ridge_solution_on_all_data(
    blobs, blob_tensors, scenario_2_2, training, method, projection_dim
):
    result, strategy, head = run(
        blob_tensors, scenario_2_2, training, method=method, projection_dim=projection_dim
    )
    projection = None if projection_dim == 0 else strategy.projection.numpy()
    regulariser = 0.1 if method == "acil" else strategy.lambda_chosen.item()
    expected = joint_ridge(blobs["X_train"], blobs["y_train"], projection, regulariser)
    actual = strategy.weight.numpy()
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    if projection_dim == 0:  # the head's rows are the weights, so it scores on its own
        np.testing.assert_allclose(head.weight.detach().numpy(), expected.T, rtol=1e-5, atol=1e-6)
    # The blobs separate cleanly: every seen test sample is classified correctly.
    for index, row in enumerate(result.accuracy_matrix):
        assert row[: index + 1] == [1.0] * (index + 1), f"row {index}: {row}"


def test_acil_recursion_over_many_blocks_is_still_exact(
    blobs, blob_tensors, scenario_2_2, training, monkeypatch
):
    # Blocks of 7 samples: each experience (80 samples) takes 12 recursive steps.
    monkeypatch.setattr(ridge, "RLS_CHUNK", 7)
    _, strategy, _ = run(blob_tensors, scenario_2_2, training, method="acil", projection_dim=64)
    expected = joint_ridge(blobs["X_train"], blobs["y_train"], strategy.projection.numpy(), 0.1)
    np.testing.assert_allclose(
        strategy.weight.numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()
    )


def test_chosen_lambda_equals_ranpacs_loop_of_solves():
    # RanPAC's code: for λ in 10^-8 .. 10^8, W = solve(FᵀF + λI, FᵀY) on the fitted part,
    # mean squared error on the held-out part, keep the smallest.
    generator = np.random.RandomState(0)
    inputs = np.maximum(generator.randn(60, 8) @ generator.randn(8, 30), 0.0)
    targets = np.eye(3)[generator.randint(0, 3, size=60)]
    inputs += 0.5 * targets @ generator.randn(3, 30)  # some signal, mostly noise
    fit, held = slice(0, 48), slice(48, 60)
    candidates = 10.0 ** np.arange(-8, 9)
    errors = []
    for value in candidates:
        gram = inputs[fit].T @ inputs[fit] + value * np.eye(30)
        weight = np.linalg.solve(gram, inputs[fit].T @ targets[fit])
        errors.append(np.mean((inputs[held] @ weight - targets[held]) ** 2))
    expected = candidates[np.argmin(errors)]
    assert 1e-8 < expected < 1e8  # an interior choice, so the comparison means something
    tensors = [
        torch.from_numpy(a) for a in (inputs[fit], targets[fit], inputs[held], targets[held])
    ]
    assert choose_lambda(*tensors).item() == pytest.approx(expected)


# 48 fitted samples against 30 features decomposes FᵀF; 24 against 30 decomposes FFᵀ.
# `given`: the caller passes the Gram matrix of all samples, and FᵀF is that less the held
# rows'; the subtraction's roundoff, about ε‖FᵀF + HᵀH‖ with the held rows a fifth of the
# samples, is of the order of the perturbation the bound already allows (c·ε‖G‖).
@pytest.mark.parametrize("given", [False, True], ids=["gram-computed", "gram-given"])
@pytest.mark.parametrize("samples", [60, 30])
def test_held_out_predictions_equal_one_solve_per_candidate(samples, given):
    generator = np.random.RandomState(1)
    inputs = torch.from_numpy(np.maximum(generator.randn(samples, 8) @ generator.randn(8, 30), 0))
    targets = torch.from_numpy(np.eye(3)[generator.randint(0, 3, size=samples)])
    cut = int(0.8 * samples)
    fit, fit_targets, held = inputs[:cut], targets[:cut], inputs[cut:]
    candidates = 10.0 ** torch.arange(-8, 9, dtype=torch.float64)
    total = inputs.T @ inputs if given else None
    predictions = held_out_predictions(fit, fit_targets, held, candidates, total)
    gram = fit.T @ fit
    eigenvalues = np.clip(np.linalg.eigvalsh(gram.numpy()), 0, None)
    tight = 0
    for value, predicted in zip(candidates.tolist(), predictions, strict=True):
        weight = torch.linalg.solve(
            gram + value * torch.eye(30, dtype=torch.float64), fit.T @ fit_targets
        )
        expected = held @ weight
        # Both routes are backward stable: each computed W is the exact ridge fit of a Gram
        # matrix perturbed by c·ε‖G‖ with c a low-degree polynomial in M (taken as M = 30),
        # so each is within c·κ·ε of the true W, κ = (e_max + λ) / (e_min + λ) the condition
        # number of G + λI, ε = 2^-52; through H_held: ‖ΔP‖ ≤ ‖H_held‖₂ · 2cκε · ‖W‖.
        condition = (eigenvalues.max() + value) / (eigenvalues.min() + value)
        bound = 2 * 30 * condition * np.finfo(np.float64).eps
        tolerance = np.linalg.norm(held.numpy(), 2) * bound * weight.norm().item()
        assert (predicted - expected).norm().item() <= tolerance, f"λ = {value}"
        tight += tolerance < 1e-9 * expected.norm().item()
    assert tight >= 5  # the bound is a real constraint for the well-conditioned candidates


@pytest.mark.parametrize("method", ["ranpac", "acil"])
def test_the_seed_draws_the_projection(blob_tensors, scenario_2_2, training, method):
    _, first, _ = run(blob_tensors, scenario_2_2, training, seed=0, method=method)
    _, again, _ = run(blob_tensors, scenario_2_2, training, seed=0, method=method)
    _, other, _ = run(blob_tensors, scenario_2_2, training, seed=1, method=method)
    assert torch.equal(first.projection, again.projection)
    assert torch.equal(first.weight, again.weight)
    assert not torch.equal(first.projection, other.projection)
    assert not torch.equal(first.weight, other.weight)
    # The first draw of the run (the engine seeds the global generator; `expand` draws
    # nothing): RanPAC's P ~ N(0, 1), or ACIL's buffer, an nn.Linear's U(−1/√dim, 1/√dim).
    torch.manual_seed(0)
    if method == "ranpac":
        expected = torch.randn(16, 2048)
    else:
        expected = torch.empty(16, 2048).uniform_(-1 / 4, 1 / 4)
    assert torch.equal(first.projection, expected)


def test_reported_class_norms_are_the_norms_of_ws_columns(blob_tensors, scenario_2_2, training):
    # With a projection the head's rows stay 0; the record's per-class norms must come from
    # W (M x seen), one column per class: ‖W[:, c]‖₂ computed here with numpy.
    result, strategy, _ = run(blob_tensors, scenario_2_2, training, projection_dim=64)
    expected = np.linalg.norm(strategy.weight.numpy(), axis=0)
    assert result.weight_norms[-1] == pytest.approx(expected.tolist(), rel=1e-6)
    assert min(result.weight_norms[-1]) > 0
