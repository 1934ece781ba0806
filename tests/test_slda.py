"""Deep SLDA (Hayes & Kanan, CVPRW 2020): OAS against scikit-learn, the closed-form
streaming update against a literal per-sample loop of the paper's equations, the engine's
estimates and predictions against numpy on all seen data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import OAS

import strategies
from benchmarks import engine
from strategies.slda import oas_covariance, streaming_update


def paper_loop(means, counts, covariance, features, targets):
    """The paper's updates, one sample at a time (numpy, float64). Sample t of class k:
    Δ = t/(t+1) (z − μ_k)(z − μ_k)ᵀ, Σ ← (tΣ + Δ)/(t+1), μ_k ← (c_k μ_k + z)/(c_k + 1)."""
    means, counts, covariance = means.copy(), counts.copy(), covariance.copy()
    t = counts.sum()
    for z, k in zip(features, targets, strict=True):
        deviation = z - means[k]
        covariance = (t * covariance + t / (t + 1) * np.outer(deviation, deviation)) / (t + 1)
        means[k] = (counts[k] * means[k] + z) / (counts[k] + 1)
        counts[k] += 1
        t += 1
    return means, counts, covariance


def test_oas_equals_scikit_learn():
    generator = np.random.RandomState(0)
    residuals = generator.randn(30, 5) @ generator.randn(5, 5)
    expected = OAS(assume_centered=True).fit(residuals).covariance_
    actual = oas_covariance(torch.from_numpy(residuals))
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_closed_form_equals_the_per_sample_loop_with_interleaved_and_new_classes():
    generator = np.random.RandomState(1)
    dim = 4
    # Three classes already seen (counts 5, 3, 7), two new ones (mean 0, count 0), and a
    # stream that interleaves old and new classes.
    means = np.concatenate([generator.randn(3, dim), np.zeros((2, dim))])
    counts = np.array([5.0, 3.0, 7.0, 0.0, 0.0])
    root = generator.randn(dim, dim)
    covariance = root @ root.T / dim
    features = generator.randn(40, dim) + 2.0
    targets = generator.randint(0, 5, size=40)
    expected = paper_loop(means, counts, covariance, features, targets)
    actual = streaming_update(
        *(torch.from_numpy(a) for a in (means, counts, covariance, features, targets))
    )
    for name, value, reference in zip(("means", "counts", "Σ"), actual, expected, strict=True):
        np.testing.assert_allclose(value.numpy(), reference, rtol=1e-10, atol=1e-12, err_msg=name)


def test_one_class_streamed_alone_gives_its_population_covariance():
    # The paper's update is Welford's for a single Gaussian: Σ is the covariance with 1/n.
    generator = np.random.RandomState(2)
    features = generator.randn(25, 3) * [1.0, 2.0, 0.5] + [1.0, -1.0, 3.0]
    means, counts, covariance = streaming_update(
        torch.zeros(1, 3, dtype=torch.float64),
        torch.zeros(1, dtype=torch.float64),
        torch.zeros(3, 3, dtype=torch.float64),
        torch.from_numpy(features),
        torch.zeros(25, dtype=torch.long),
    )
    np.testing.assert_allclose(means[0].numpy(), features.mean(axis=0), rtol=1e-12)
    assert counts.item() == 25
    np.testing.assert_allclose(covariance.numpy(), np.cov(features.T, bias=True), rtol=1e-10)


def run(blob_tensors, scenario, training, **config):
    strategy = strategies.create("slda", config)
    heads = []
    after_experience = strategy.after_experience

    def recording(head, experience):
        after_experience(head, experience)
        heads.append(head)

    strategy.after_experience = recording
    result = engine.run(strategy, *blob_tensors, scenario, training, bias=True, seed=0)
    return result, strategy, heads[-1]


@pytest.mark.parametrize("covariance", ["streaming", "fixed"])
def test_estimates_and_predictions_equal_numpy_on_all_seen_data(
    blobs, blob_tensors, scenario_2_2, training, covariance
):
    result, strategy, head = run(blob_tensors, scenario_2_2, training, covariance=covariance)
    features, targets = blobs["X_train"].astype(np.float64), blobs["y_train"]
    # Class means and counts: those of all seen data, whatever the order.
    means = np.stack([features[targets == c].mean(axis=0) for c in range(6)])
    np.testing.assert_allclose(strategy.means.numpy(), means, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(strategy.counts.numpy(), np.bincount(targets))

    # Σ: OAS of the class-centred first experience (base initialisation, by scikit-learn),
    # then, when plastic, the paper's loop over experiences 1 and 2 in the engine's order.
    base = targets < 2
    residuals = features[base] - means[targets[base]]
    sigma = OAS(assume_centered=True).fit(residuals).covariance_
    if covariance == "streaming":
        state = np.concatenate([means[:2], np.zeros((4, 16))]), np.bincount(targets[base], None, 6)
        later = ~base
        _, _, sigma = paper_loop(*state, sigma, features[later], targets[later])
    np.testing.assert_allclose(strategy.covariance.numpy(), sigma, rtol=1e-5, atol=1e-8)

    # Predictions: the linear discriminant with Λ = ((1 − ε)Σ + εI)⁻¹, ε = 1e-4, in numpy.
    precision = np.linalg.inv((1 - 1e-4) * sigma + 1e-4 * np.eye(16))
    test = blobs["X_test"].astype(np.float64)
    expected = test @ precision @ means.T - 0.5 * np.einsum("kd,de,ke->k", means, precision, means)
    scores = strategy.predict(head, blob_tensors[2])
    assert scores.dtype == torch.float32
    scale = np.abs(expected).max()
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-5 * scale)
    # The head holds W and b, so it computes the same scores on its own.
    torch.testing.assert_close(head(blob_tensors[2]), scores)
    for index, row in enumerate(result.accuracy_matrix):
        assert row[: index + 1] == [1.0] * (index + 1), f"row {index}: {row}"


def test_a_head_without_bias_keeps_the_discriminants_offset(blob_tensors, scenario_2_2, training):
    # `predict` scores with the strategy's own b = −½ μᵀΛμ, so the head's bias is not needed.
    def scores(bias):
        strategy = strategies.create("slda")
        engine.run(strategy, *blob_tensors, scenario_2_2, training, bias=bias, seed=0)
        return strategy.predict(None, blob_tensors[2])

    assert torch.equal(scores(False), scores(True))
