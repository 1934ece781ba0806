"""Nearest class mean (iCaRL's classifier, SimpleCIL's defaults): scores by hand on a toy,
prototypes and predictions against numpy on the blobs, old prototypes never move."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import strategies
from benchmarks import engine
from strategies.base import Experience, Head
from strategies.ncm import NCM, NCMConfig

# Two classes in the plane: class 0 at (1, 0) and (3, 0), class 1 at (0, 1) and (0, 3).
TOY_FEATURES = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
TOY_TARGETS = torch.tensor([0, 0, 1, 1])
QUERY = torch.tensor([[3.0, 1.0]])


def fit_toy(**config) -> tuple[NCM, Head]:
    strategy, head = NCM(NCMConfig(**config)), Head(2)
    strategy.expand(head, 2)
    experience = Experience(0, 0, 2, TOY_FEATURES, TOY_TARGETS)
    strategy.before_experience(head, experience)
    strategy.after_experience(head, experience)
    return strategy, head


@pytest.mark.parametrize(
    "config, prototypes, scores",
    [
        # SimpleCIL: means (2, 0) and (0, 2); cos((3, 1), e_1) = 3/√10, cos((3, 1), e_2) = 1/√10.
        ({}, [[2, 0], [0, 2]], [3 / math.sqrt(10), 1 / math.sqrt(10)]),
        # Minus the distance from (3, 1) to (2, 0) and to (0, 2): −√(1 + 1), −√(9 + 1).
        ({"metric": "euclidean"}, [[2, 0], [0, 2]], [-math.sqrt(2), -math.sqrt(10)]),
        # iCaRL: unit features average to e_1 and e_2 (renormalised); the query becomes
        # (3, 1)/√10, at squared distance 2 − 2·3/√10 from e_1 and 2 − 2/√10 from e_2.
        (
            {"metric": "euclidean", "normalize": True},
            [[1, 0], [0, 1]],
            [-math.sqrt(2 - 6 / math.sqrt(10)), -math.sqrt(2 - 2 / math.sqrt(10))],
        ),
    ],
)
def test_prototypes_and_scores_on_a_toy_by_hand(config, prototypes, scores):
    strategy, head = fit_toy(**config)
    torch.testing.assert_close(strategy.prototypes, torch.tensor(prototypes, dtype=torch.float32))
    # The head's rows hold the prototypes (their norms are the run record's diagnostic).
    assert torch.equal(head.weight, strategy.prototypes)
    assert torch.equal(head.bias, torch.zeros(2))
    torch.testing.assert_close(strategy.predict(head, QUERY), torch.tensor([scores]))


def run(blob_tensors, scenario, training, **config):
    strategy = strategies.create("ncm", config)
    heads = []
    after_experience = strategy.after_experience

    def recording(head, experience):
        after_experience(head, experience)
        heads.append((head, strategy.prototypes.clone()))

    strategy.after_experience = recording
    result = engine.run(strategy, *blob_tensors, scenario, training, bias=True, seed=0)
    return result, strategy, heads


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("normalize", [False, True])
def test_prototypes_and_predictions_equal_numpy_on_the_blobs(
    blobs, blob_tensors, scenario_2_2, training, metric, normalize
):
    result, strategy, heads = run(
        blob_tensors, scenario_2_2, training, metric=metric, normalize=normalize
    )
    features, targets = blobs["X_train"].astype(np.float64), blobs["y_train"]
    if normalize:
        features = features / np.linalg.norm(features, axis=1, keepdims=True)
    means = np.stack([features[targets == c].mean(axis=0) for c in range(6)])
    if normalize:
        means = means / np.linalg.norm(means, axis=1, keepdims=True)
    np.testing.assert_allclose(strategy.prototypes.numpy(), means, rtol=1e-6, atol=1e-6)

    test = blobs["X_test"].astype(np.float64)
    if normalize:
        test = test / np.linalg.norm(test, axis=1, keepdims=True)
    if metric == "cosine":
        unit = means / np.linalg.norm(means, axis=1, keepdims=True)
        expected = test / np.linalg.norm(test, axis=1, keepdims=True) @ unit.T
    else:
        expected = -np.linalg.norm(test[:, None, :] - means[None, :, :], axis=2)
    head = heads[-1][0]
    scores = strategy.predict(head, blob_tensors[2])
    assert scores.dtype == torch.float32
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-5)
    # The blobs separate cleanly: every seen test sample is classified correctly.
    for index, row in enumerate(result.accuracy_matrix):
        assert row[: index + 1] == [1.0] * (index + 1), f"row {index}: {row}"


def test_old_prototypes_never_change(blob_tensors, scenario_2_2, training):
    _, _, heads = run(blob_tensors, scenario_2_2, training)
    for (_, earlier), (_, later) in zip(heads, heads[1:], strict=False):
        assert torch.equal(later[: len(earlier)], earlier)
