"""The report metrics on hand-made matrices checkable by eye, and an independent check of
forgetting and BWT against Avalanche's own metric classes driven with the same accuracies.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from test_reports_support import make_record, metrics_of

from reports.metrics import (
    backward_transfer,
    balanced_newest_share,
    drop_since_learned,
    forgetting,
    norm_ratio_new_old,
    old_new_accuracy,
    report_metrics,
)

# R[i][j]: accuracy on experience j after training experience i.
R = [
    [0.9, None, None],
    [0.6, 0.8, None],
    [0.5, 0.7, 0.9],
]
# Experience 0 improves after it is learned (0.5 -> 0.9), then falls to 0.6.
R_RISE = [
    [0.5, None, None],
    [0.9, 0.8, None],
    [0.6, 0.8, 0.7],
]


def test_drop_since_learned_is_the_fall_from_the_diagonal():
    # j=0: 0.9 - 0.5 = 0.4; j=1: 0.8 - 0.7 = 0.1; mean 0.25 (= Chaudhry's here: R[j, j]
    # is each column's best).
    assert drop_since_learned(R) == pytest.approx(0.25)
    assert forgetting(R) == pytest.approx(0.25)
    # j=0: 0.5 - 0.6 = -0.1; j=1: 0.8 - 0.8 = 0; mean -0.05, where Chaudhry's forgetting,
    # measured from the best value 0.9, is (0.3 + 0) / 2 = 0.15.
    assert drop_since_learned(R_RISE) == pytest.approx(-0.05)
    assert forgetting(R_RISE) == pytest.approx(0.15)


@pytest.mark.parametrize("matrix", [R, R_RISE, [[1.0, None], [0.5, 0.0]]])
def test_drop_since_learned_is_minus_bwt(matrix):
    assert drop_since_learned(matrix) == pytest.approx(-backward_transfer(matrix))


def test_drop_since_learned_is_undefined_for_one_experience():
    assert math.isnan(drop_since_learned([[0.7]]))


def test_old_and_new_accuracy_per_experience_weigh_by_test_samples():
    old, new = old_new_accuracy(R, counts=[100, 50, 50])
    # After experience 0 there are no old classes.
    assert math.isnan(old[0])
    # After 1: old = R[1, 0] = 0.6. After 2: (100·0.5 + 50·0.7) / 150 = 85 / 150.
    assert old[1:] == pytest.approx([0.6, 85 / 150])
    # New: the diagonal, 0.9, 0.8, 0.9.
    assert new == pytest.approx([0.9, 0.8, 0.9])


def test_old_accuracy_without_counts_is_the_plain_mean_of_the_earlier_columns():
    old, _ = old_new_accuracy(R)
    # After 2: (0.5 + 0.7) / 2 = 0.6.
    assert old[2] == pytest.approx(0.6)


def test_balanced_newest_share_is_the_newest_experiences_share_of_test_samples():
    # 100 / 100, 50 / 150, 50 / 200.
    assert balanced_newest_share([100, 50, 50]) == pytest.approx([1.0, 1 / 3, 0.25])


def test_norm_ratio_new_over_old():
    # Old rows 1 and 1, new rows 3 and 3: 3 / 1.
    assert norm_ratio_new_old([1.0, 1.0, 3.0, 3.0], num_old=2) == pytest.approx(3.0)
    # Old (2 + 4) / 2 = 3, new 3: equal norms, as after Weight Aligning.
    assert norm_ratio_new_old([2.0, 4.0, 3.0], num_old=2) == pytest.approx(1.0)
    assert math.isnan(norm_ratio_new_old([1.0, 2.0], num_old=0))


def test_report_metrics_match_the_independent_recomputation():
    counts = [100, 50, 50]
    expected = metrics_of(make_record("naive", 0, R_RISE, counts))
    assert report_metrics(R_RISE, counts) == pytest.approx(expected)


# ---------------------------------------------------------------------------------------
# Avalanche's metric classes on the same accuracies


def _batch(correct: int, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets all 0, logits picking class 0 for the first `correct` samples: acc = c / t."""
    targets = torch.zeros(total, dtype=torch.long)
    logits = torch.zeros(total, 2)
    logits[:correct, 0] = 1.0
    logits[correct:, 1] = 1.0
    return targets, logits


def avalanche_stream_results(metric, matrix, counts) -> list[float]:
    """Drive an Avalanche stream metric through its callbacks as a class-incremental run:
    train experience i, then evaluate the whole test stream (future experiences included,
    at accuracy 0, as Avalanche evaluates them); the metric's result after each i."""
    size = len(matrix)
    strategy = SimpleNamespace(experience=None, mb_y=None, mb_output=None)
    results = []
    for i in range(size):
        strategy.experience = SimpleNamespace(current_experience=i)
        metric.before_training_exp(strategy)
        metric.before_eval(strategy)
        for j in range(size):
            strategy.experience = SimpleNamespace(current_experience=j)
            metric.before_eval_exp(strategy)
            correct = round(matrix[i][j] * counts[j]) if j <= i else 0
            strategy.mb_y, strategy.mb_output = _batch(correct, counts[j])
            metric.after_eval_iteration(strategy)
            metric.after_eval_exp(strategy)
        results.append(metric.result())
    return results


def _as_fractions(matrix, counts):
    """The matrix Avalanche sees: round(R·n) / n, so both sides get identical inputs."""
    return [
        [
            None if value is None else round(value * counts[j]) / counts[j]
            for j, value in enumerate(row)
        ]
        for row in matrix
    ]


def _avalanche_cases():
    counts = [10, 10, 10]
    yield "R", _as_fractions(R, counts), counts
    yield "R_RISE", _as_fractions(R_RISE, counts), counts
    # Unequal experience sizes; experience 0 falls, recovers, falls (0.96, 0.5, 0.7, 0.4);
    # experience 1 peaks after it was learned (0.9, 0.95, 0.6).
    matrix = [
        [0.96, None, None, None],
        [0.5, 0.9, None, None],
        [0.7, 0.95, 0.85, None],
        [0.4, 0.6, 0.5, 0.75],
    ]
    counts = [50, 20, 20, 20]
    yield "four experiences", _as_fractions(matrix, counts), counts


AVALANCHE_IMPORT_WARNING = "ignore:no QP solver found:UserWarning"


@pytest.mark.filterwarnings(AVALANCHE_IMPORT_WARNING)
@pytest.mark.parametrize(("name", "matrix", "counts"), list(_avalanche_cases()))
def test_avalanche_stream_forgetting_is_our_drop_since_learned_at_every_step(name, matrix, counts):
    from avalanche.evaluation.metrics.forgetting_bwt import StreamBWT, StreamForgetting

    forgetting_results = avalanche_stream_results(StreamForgetting(), matrix, counts)
    bwt_results = avalanche_stream_results(StreamBWT(), matrix, counts)
    for i in range(1, len(matrix)):
        seen = [row[: i + 1] for row in matrix[: i + 1]]
        assert forgetting_results[i] == pytest.approx(drop_since_learned(seen), abs=1e-12), i
        assert bwt_results[i] == pytest.approx(backward_transfer(seen), abs=1e-12), i
    # Chaudhry's forgetting differs from Avalanche's wherever an old experience peaked
    # after it was learned (R_RISE, four experiences), and equals it otherwise (R).
    final_differs = forgetting(matrix) != pytest.approx(forgetting_results[-1])
    assert final_differs == (name != "R")


@pytest.mark.filterwarnings(AVALANCHE_IMPORT_WARNING)
@pytest.mark.parametrize(("name", "matrix", "counts"), list(_avalanche_cases()))
def test_avalanche_standalone_forgetting_and_bwt_per_experience(name, matrix, counts):
    from avalanche.evaluation.metrics.forgetting_bwt import BWT, Forgetting

    last = len(matrix) - 1
    for metric, sign in ((Forgetting(), 1), (BWT(), -1)):
        for i, row in enumerate(matrix):
            for j in range(i + 1):
                metric.update(j, row[j], initial=(i == j))
        per_experience = metric.result()
        # Keys updated twice: the old experiences 0..T-2.
        assert sorted(per_experience) == list(range(last))
        for j, value in per_experience.items():
            assert value == pytest.approx(sign * (matrix[j][j] - matrix[last][j])), (name, j)
        mean = sum(per_experience.values()) / last
        assert sign * mean == pytest.approx(drop_since_learned(matrix))
