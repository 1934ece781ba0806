"""FeTrIL (Petit et al., WACV 2023): the translation of Eq. 1 by hand, the SVMs against an
independent pipeline (numpy translation, scikit-learn fit per class as the authors' script
does), the two-class mirror, and the SGD classifier's training sets through the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_blobs
from sklearn.svm import LinearSVC

import strategies
from benchmarks import engine
from benchmarks.scenario import Scenario
from strategies.base import HyperparameterError
from strategies.fetril import linear_svms, pseudo_features


def test_translation_by_hand():
    # Old class 0 at (10, 0), old class 1 at (0, 10); new class 2 = {(1, 1), (3, 1)}, mean
    # (2, 1); new class 3 = {(1, 8), (1, 6)}, mean (1, 7). Class 0 is nearest to class 2
    # (squared distances 65 < 130) and takes its features shifted by (8, −1); class 1 is
    # nearest to class 3 (10 < 85) and takes its features shifted by (−1, 3).
    features = torch.tensor([[1.0, 1.0], [1.0, 8.0], [3.0, 1.0], [1.0, 6.0]])
    targets = torch.tensor([2, 3, 2, 3])
    means = torch.tensor([[10.0, 0.0], [0.0, 10.0], [2.0, 1.0], [1.0, 7.0]])
    pseudo, labels = pseudo_features(features, targets, means, num_old=2)
    expected = torch.tensor([[9.0, 0.0], [11.0, 0.0], [0.0, 11.0], [0.0, 9.0]])
    torch.testing.assert_close(pseudo, expected, rtol=0, atol=0)
    assert labels.tolist() == [0, 0, 1, 1]
    # The pseudo-features of an old class have exactly its mean.
    torch.testing.assert_close(pseudo[:2].mean(dim=0), means[0])


def test_two_classes_mirror_the_single_svm():
    generator = np.random.RandomState(0)
    features = torch.tensor(generator.randn(40, 3) + np.repeat([[1, 0, 0], [0, 1, 0]], 20, 0))
    targets = torch.tensor(np.repeat([0, 1], 20))
    weight, bias = linear_svms(features, targets, 1.0, 1e-4)
    for label in (0, 1):  # the authors fit each class against the rest separately
        svm = LinearSVC(C=1.0, tol=1e-4, dual=False).fit(features.numpy(), targets.numpy() == label)
        np.testing.assert_allclose(weight[label].numpy(), svm.coef_[0], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(bias[label].numpy(), svm.intercept_[0], rtol=1e-6, atol=1e-8)


def reference_predictions(train, train_targets, test, scenario):
    """The authors' pipeline in numpy: raw class means, nearest new class by Euclidean
    distance, translated features, L2 normalisation, one LinearSVC per class."""

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    means, rows = [], []
    for index in range(scenario.num_experiences):
        num_old, num_seen = scenario.boundaries[index], scenario.boundaries[index + 1]
        mask = (train_targets >= num_old) & (train_targets < num_seen)
        x, y = train[mask].astype(np.float64), train_targets[mask]
        means += [x[y == c].mean(axis=0) for c in range(num_old, num_seen)]
        parts, labels = [x], [y]
        for old in range(num_old):
            distances = [np.linalg.norm(means[old] - means[c]) for c in range(num_old, num_seen)]
            nearest = num_old + int(np.argmin(distances))
            parts.append(x[y == nearest] - means[nearest] + means[old])
            labels.append(np.full((y == nearest).sum(), old))
        features, labels = unit(np.concatenate(parts)), np.concatenate(labels)
        scores = []
        for c in range(num_seen):
            svm = LinearSVC(C=1.0, tol=1e-4, dual=False).fit(features, labels == c)
            scores.append(unit(test.astype(np.float64)) @ svm.coef_[0] + svm.intercept_[0])
        rows.append(np.argmax(np.stack(scores, axis=1), axis=1))
    return rows


def test_svm_predictions_equal_the_authors_pipeline(training):
    # Overlapping blobs (spread 1.5 around centres 3 apart), so that the SVMs err.
    blobs = make_blobs(spread=1.5, seed=4)
    keys = ("X_train", "y_train", "X_test", "y_test")
    blob_tensors = tuple(torch.from_numpy(blobs[key]) for key in keys)
    scenario = Scenario(list(range(6)), 2, 2)
    strategy = strategies.create("fetril")
    predictions = []
    after_experience = strategy.after_experience

    def record(head, experience):  # every test sample, after every experience
        after_experience(head, experience)
        predictions.append(strategy.predict(head, blob_tensors[2]).argmax(dim=1).numpy())

    strategy.after_experience = record
    engine.run(strategy, *blob_tensors, scenario, training, True, seed=0)
    expected = reference_predictions(blobs["X_train"], blobs["y_train"], blobs["X_test"], scenario)
    assert len(predictions) == len(expected) == 3
    for actual, reference in zip(predictions, expected, strict=True):
        assert (actual == reference).all()
    assert (expected[-1] != blobs["y_test"]).mean() > 0.05  # not a trivially separable case
    assert strategy.means.shape == (6, blob_tensors[0].shape[1])


def test_sgd_trains_the_head_on_real_and_pseudo_features(blob_tensors, scenario_2_2, training):
    strategy = strategies.create("fetril", {"classifier": "sgd"})
    assert strategy.trains_head and not strategies.get_strategy("fetril").trains_head
    sizes = []
    training_set = strategy.training_set

    def record(experience):
        features, targets = training_set(experience)
        sizes.append(torch.bincount(targets, minlength=6).tolist())
        # The L2-normalised features the head trains on.
        torch.testing.assert_close(features.norm(dim=1), torch.ones(len(features)))
        return features, targets

    strategy.training_set = record
    result = engine.run(strategy, *blob_tensors, scenario_2_2, training, True, seed=0)
    # 40 training samples per class: each old class gets as many pseudo-features as the new
    # class nearest to it has samples.
    assert sizes == [[40, 40, 0, 0, 0, 0], [40, 40, 40, 40, 0, 0], [40] * 6]
    assert all(loss is not None for loss in result.train_loss)
    assert result.accuracy_matrix[-1][-1] > 0.5


@pytest.mark.bad_input
def test_svm_needs_two_classes_in_the_first_experience(blob_tensors, training):
    with pytest.raises(HyperparameterError, match="single class"):
        strategies.create("fetril").validate([1, 1, 1])
    strategies.create("fetril", {"classifier": "sgd"}).validate([1, 1, 1])


@pytest.mark.parametrize("config", [{"svm_c": 0.0}, {"svm_tolerance": -1.0}])
@pytest.mark.bad_input
def test_bad_hyperparameters_are_refused(config):
    with pytest.raises(HyperparameterError, match="strategies.fetril."):
        strategies.create("fetril", config)
