"""FeCAM (Goswami et al., NeurIPS 2023): distances against a numpy implementation of the
authors' pipeline, a hand-computed shrinkage, FeCAM beating NCM on classes whose covariances
differ, and FeCAM equal to Euclidean nearest-prototype on isotropic classes except where a
derived bound on the covariance's sampling noise allows a difference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import strategies
from benchmarks import engine
from strategies.base import Experience, Head, HyperparameterError
from strategies.fecam import shrink


def fit(name: str, config: dict, features: np.ndarray, targets: np.ndarray, num_old: int = 0):
    strategy, head = strategies.create(name, config), Head(features.shape[1])
    num_seen = int(targets.max()) + 1
    strategy.expand(head, num_seen)
    experience = Experience(0, num_old, num_seen, torch.tensor(features), torch.tensor(targets))
    strategy.after_experience(head, experience)
    return strategy, head


def numpy_fecam_distances(train, targets, test, beta=0.5, gamma1=1.0, gamma2=1.0, passes=2):
    """The authors' steps written again in numpy, float64 (models/base.py, maha_utils.py)."""

    def power(x):
        return np.sign(x) * np.abs(x) ** beta

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    query = unit(power(test))
    distances = []
    for label in range(targets.max() + 1):
        members = train[targets == label].astype(np.float64)
        covariance = np.cov(power(members).T)
        for _ in range(passes):
            off = covariance - np.diag(np.diag(covariance))
            v1, v2 = np.mean(np.diag(covariance)), off[off != 0].mean()
            identity = np.eye(len(covariance))
            covariance = covariance + gamma1 * v1 * identity + gamma2 * v2 * (1 - identity)
        deviations = np.sqrt(np.diag(covariance))
        correlation = covariance / np.outer(deviations, deviations)
        difference = query - unit(power(members.mean(axis=0)))
        distances.append(
            np.einsum("bi,ij,bj->b", difference, np.linalg.pinv(correlation), difference)
        )
    return np.stack(distances, axis=1)


def test_shrinkage_by_hand():
    # V1 = (2 + 4)/2 = 3, V2 = 1: one pass adds 3 to the diagonal and 1 off it.
    covariance = torch.tensor([[2.0, 1.0], [1.0, 4.0]], dtype=torch.float64)
    expected = torch.tensor([[5.0, 2.0], [2.0, 7.0]], dtype=torch.float64)
    torch.testing.assert_close(shrink(covariance, 1.0, 1.0), expected, rtol=0, atol=0)
    # γ2 = 0 (the authors' ViT script): the diagonal only.
    expected = torch.tensor([[5.0, 1.0], [1.0, 7.0]], dtype=torch.float64)
    torch.testing.assert_close(shrink(covariance, 1.0, 0.0), expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "config",
    [{}, {"beta": 1.0, "gamma2": 0.0, "shrink_passes": 1}, {"gamma1": 0.5, "shrink_passes": 3}],
)
def test_distances_equal_numpy(blobs, config):
    train, targets, test = blobs["X_train"], blobs["y_train"], blobs["X_test"]
    strategy, head = fit("fecam", config, train, targets)
    numpy_config = {
        "beta": config.get("beta", 0.5),
        "gamma1": config.get("gamma1", 1.0),
        "gamma2": config.get("gamma2", 1.0),
        "passes": config.get("shrink_passes", 2),
    }
    expected = numpy_fecam_distances(train, targets, test, **numpy_config)
    scores = strategy.predict(head, torch.tensor(test)).double().numpy()
    # float32 features and precisions: relative error a few u·cond(Σ); cond ≤ 10 here.
    np.testing.assert_allclose(-scores, expected, rtol=1e-4, atol=1e-6)
    assert torch.equal(head.weight, strategy.prototypes)


def correlated_classes(seed: int, per_class: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Four classes around 4·1 in 8 dimensions, class k shifted by 0.3 along e_k, with
    standard deviation 1 along a diagonal direction of its own in dimensions 4-7 and 0.05
    elsewhere. FeCAM's covariance is normalised to a correlation matrix, so unequal
    variances along the axes would be invisible to it: the classes differ in correlation."""
    generator = np.random.RandomState(seed)
    dim, features, targets = 8, [], []
    for k in range(4):
        direction = np.zeros(dim)
        direction[[4 + k, 4 + (k + 1) % 4]] = [1, 1] if k % 2 == 0 else [1, -1]
        direction /= np.linalg.norm(direction)
        covariance = 0.05**2 * np.eye(dim) + np.outer(direction, direction)
        mean = 4.0 + 0.3 * np.eye(dim)[k]
        features.append(generator.multivariate_normal(mean, covariance, size=per_class))
        targets.append(np.full(per_class, k))
    return np.concatenate(features).astype(np.float32), np.concatenate(targets)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beats_ncm_when_class_covariances_differ(seed):
    train, train_targets = correlated_classes(seed)
    test, test_targets = correlated_classes(seed + 100)
    accuracy = {}
    for name, config in (("fecam", {}), ("ncm", {}), ("ncm", {"metric": "euclidean"})):
        strategy, head = fit(name, config, train, train_targets)
        predictions = strategy.predict(head, torch.tensor(test)).argmax(dim=1).numpy()
        accuracy[f"{name}{config}"] = (predictions == test_targets).mean()
    # Measured on seeds 0-2: FeCAM 99.75-99.88 %, NCM (cosine) 82.9-90.5 %, NCM (Euclidean)
    # 81.3-89.6 %. A Gaussian with the true covariance classifies these classes almost
    # perfectly; the class means alone cannot (each class spreads over its neighbours).
    assert accuracy["fecam{}"] > 0.99
    assert (
        accuracy["fecam{}"] - max(accuracy["ncm{}"], accuracy["ncm{'metric': 'euclidean'}"]) > 0.08
    )


def test_equals_nearest_prototype_on_isotropic_classes_within_the_noise_bound():
    """With C_c = I + E_c the estimated correlation, P_c = C_c⁻¹ and δ = max_c ‖P_c − I‖₂,
    every squared distance dᵀP_c d lies in ‖d‖²(1 ± δ). So wherever the nearest prototype b
    (Euclidean, on FeCAM's normalised features and prototypes) satisfies
    ‖d_b‖²(1 + δ) < ‖d_c‖²(1 − δ) for every other class c, FeCAM must predict b too."""
    generator = np.random.RandomState(3)
    dim, classes, per_class = 16, 6, 400
    centres = 4.0 + 1.5 * np.eye(classes, dim)
    labels = np.repeat(np.arange(classes), per_class)
    train = (centres[labels] + 0.5 * generator.randn(len(labels), dim)).astype(np.float32)
    test = (centres[labels] + 0.5 * generator.randn(len(labels), dim)).astype(np.float32)
    strategy, head = fit("fecam", {"beta": 1.0}, train, labels)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    query = unit(test.astype(np.float64))
    prototypes = unit(np.stack([train[labels == c].mean(axis=0) for c in range(classes)]))
    squared = ((query[:, None] - prototypes[None]) ** 2).sum(axis=2)  # (test, classes)
    delta = max(
        np.linalg.norm(precision.double().numpy() - np.eye(dim), ord=2)
        for precision in strategy.precisions
    )
    # The sampling noise of a correlation matrix from n = 400 samples in 16 dimensions is
    # about 2√(d/n) = 0.4 in spectral norm, divided by ~3 by two shrinkage passes.
    assert delta < 0.25
    best = squared.argmin(axis=1)
    best_distance = squared[np.arange(len(best)), best]
    others = np.where(np.eye(classes, dtype=bool)[best], np.inf, squared)
    guaranteed = best_distance * (1 + delta) < others.min(axis=1) * (1 - delta)
    predictions = strategy.predict(head, torch.tensor(test)).argmax(dim=1).numpy()
    assert (predictions[guaranteed] == best[guaranteed]).all()
    assert guaranteed.mean() > 0.5  # the bound is not vacuous
    accuracy_gap = abs((predictions == labels).mean() - (best == labels).mean())
    assert accuracy_gap <= (~guaranteed).mean()


def test_old_classes_keep_their_statistics_and_the_engine_runs(
    blob_tensors, scenario_2_2, training
):
    strategy = strategies.create("fecam")
    stored = []
    after_experience = strategy.after_experience

    def record(head, experience):
        after_experience(head, experience)
        stored.append((strategy.prototypes.clone(), strategy.precisions.clone()))

    strategy.after_experience = record
    result = engine.run(strategy, *blob_tensors, scenario_2_2, training, True, seed=0)
    for (prototypes, precisions), (later_p, later_s) in zip(stored, stored[1:], strict=False):
        assert torch.equal(later_p[: len(prototypes)], prototypes)
        assert torch.equal(later_s[: len(precisions)], precisions)
    assert result.train_loss == [None] * scenario_2_2.num_experiences


@pytest.mark.bad_input
def test_a_class_with_one_sample_is_refused():
    features = np.array([[1.0, 2.0], [1.5, 2.5], [3.0, 1.0]], dtype=np.float32)
    with pytest.raises(HyperparameterError, match="class 1 has 1 training sample"):
        fit("fecam", {}, features, np.array([0, 0, 1]))


@pytest.mark.parametrize(
    "config", [{"beta": 0.0}, {"beta": 1.5}, {"gamma1": -1.0}, {"shrink_passes": -1}]
)
@pytest.mark.bad_input
def test_bad_hyperparameters_are_refused(config):
    with pytest.raises(HyperparameterError, match="strategies.fecam."):
        strategies.create("fecam", config)
