"""Metrics of class-incremental learning, pure functions of the accuracy matrix.

R[i][j] is the top-1 accuracy on the test samples of experience j's classes after
training experience i, predicting over all classes seen so far (no task labels); entries
with j > i are None (not yet seen). Experiences are numbered 0..T-1 here; the papers
number them 1..T. `counts[j]` is the number of test samples of experience j; without it,
experiences weigh equally.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Matrix = Sequence[Sequence[float | None]]


def _as_array(matrix: Matrix) -> np.ndarray:
    array = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] == 0:
        raise ValueError(
            f"the accuracy matrix must be square and non-empty; got shape {array.shape}"
        )
    if np.isnan(array[np.tril_indices(len(array))]).any():
        raise ValueError("the accuracy matrix has a missing entry on or below the diagonal")
    return array


def _weights(counts: Sequence[int] | None, size: int) -> np.ndarray:
    return np.ones(size) if counts is None else np.asarray(counts, dtype=float)


def accuracy_seen(matrix: Matrix, counts: Sequence[int] | None = None) -> list[float]:
    """A_i: accuracy over all test samples of the classes seen after experience i.

    A_i = Σ_{j<=i} n_j R[i, j] / Σ_{j<=i} n_j (the mean of row i when the n_j are equal).
    """
    array = _as_array(matrix)
    weights = _weights(counts, len(array))
    return [
        float(np.dot(array[i, : i + 1], weights[: i + 1]) / weights[: i + 1].sum())
        for i in range(len(array))
    ]


def final_average_accuracy(matrix: Matrix, counts: Sequence[int] | None = None) -> float:
    """A_T: accuracy over all test samples of all classes after the last experience."""
    return accuracy_seen(matrix, counts)[-1]


def average_incremental_accuracy(matrix: Matrix, counts: Sequence[int] | None = None) -> float:
    """(1/T) Σ_i A_i: the mean over experiences of the accuracy on all classes seen so far.

    Rebuffi et al., "iCaRL: Incremental Classifier and Representation Learning", CVPR 2017.
    """
    return float(np.mean(accuracy_seen(matrix, counts)))


def forgetting(matrix: Matrix) -> float:
    """F = (1/(T-1)) Σ_{j<T-1} ( max_{l in j..T-2} R[l, j] − R[T-1, j] ).

    Chaudhry et al., "Riemannian Walk for Incremental Learning", ECCV 2018: the drop from
    the best accuracy an old experience ever had (before the last) to its final accuracy.
    NaN for a single experience, where nothing can be forgotten.
    """
    array = _as_array(matrix)
    last = len(array) - 1
    if last == 0:
        return float("nan")
    return float(np.mean([array[j:last, j].max() - array[last, j] for j in range(last)]))


def backward_transfer(matrix: Matrix) -> float:
    """BWT = (1/(T-1)) Σ_{j<T-1} ( R[T-1, j] − R[j, j] ).

    Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017:
    negative when learning later experiences hurts earlier ones. NaN for one experience.
    """
    array = _as_array(matrix)
    last = len(array) - 1
    if last == 0:
        return float("nan")
    return float(np.mean([array[last, j] - array[j, j] for j in range(last)]))


def drop_since_learned(matrix: Matrix) -> float:
    """D = (1/(T-1)) Σ_{j<T-1} ( R[j, j] − R[T-1, j] ): accuracy just after learning minus now.

    The quantity Avalanche reports as `StreamForgetting` (and, negated, as `StreamBWT`):
    the drop of each old experience from its accuracy right after it was learned, not from
    its best accuracy as in Chaudhry et al. (ECCV 2018), so an experience that improved and
    then fell counts less here. On the same matrix D = −BWT (Lopez-Paz & Ranzato, NeurIPS
    2017). Named differently from `forgetting` so that both can be reported side by side.
    NaN for a single experience.
    """
    array = _as_array(matrix)
    last = len(array) - 1
    if last == 0:
        return float("nan")
    return float(np.mean([array[j, j] - array[last, j] for j in range(last)]))


def old_new_accuracy(
    matrix: Matrix, counts: Sequence[int] | None = None
) -> tuple[list[float], list[float]]:
    """Accuracy on the old and on the new classes after each experience i.

    old_i = Σ_{j<i} n_j R[i, j] / Σ_{j<i} n_j (classes of the experiences before i; NaN for
    i = 0, which has no old classes) and new_i = R[i, i] (experience i's own classes). The
    split separates stability (old) from plasticity (new), the trade-off that the bias
    towards new classes upsets (Wu et al., "Large Scale Incremental Learning", CVPR 2019;
    Zhao et al., "Maintaining Discrimination and Fairness in Class Incremental Learning",
    CVPR 2020). Returns (old, new), one value per experience.
    """
    array = _as_array(matrix)
    weights = _weights(counts, len(array))
    old = [float("nan")] + [
        float(np.dot(array[i, :i], weights[:i]) / weights[:i].sum()) for i in range(1, len(array))
    ]
    new = [float(array[i, i]) for i in range(len(array))]
    return old, new


def balanced_newest_share(counts: Sequence[int]) -> list[float]:
    """n_i / Σ_{j<=i} n_j: the share of test samples that belong to the newest experience.

    The reference for the `newest_share` diagnostic (the share of test *predictions* on
    the newest experience's classes, saved in every run record): a classifier without a
    bias towards new classes predicts them about this often; a share near 1 means the head
    sends nearly everything to the newest classes: the bias towards new classes that Wu et
    al. ("Large Scale Incremental Learning", CVPR 2019) trace to the last fully connected
    layer.
    """
    weights = np.asarray(counts, dtype=float)
    return [float(weights[i] / weights[: i + 1].sum()) for i in range(len(weights))]


def norm_ratio_new_old(norms: Sequence[float], num_old: int) -> float:
    """mean_{c new} ‖w_c‖ / mean_{c old} ‖w_c‖ over the head's rows after an experience.

    `norms` are the per-class L2 norms of the head's weight rows (arrival order), the
    first `num_old` of them belonging to classes of earlier experiences. Zhao et al.
    ("Maintaining Discrimination and Fairness in Class Incremental Learning", CVPR 2020)
    show that new classes get larger norms than old ones (ratio > 1), which biases the
    predictions towards them; Weight Aligning rescales the new rows by the inverse of this
    ratio (γ). NaN when there are no old or no new classes, or the old rows are all zero.
    """
    values = np.asarray(norms, dtype=float)
    if num_old <= 0 or num_old >= len(values) or not values[:num_old].any():
        return float("nan")
    return float(values[num_old:].mean() / values[:num_old].mean())


METRICS = {
    "final_accuracy": ("final average accuracy", True),
    "average_incremental_accuracy": ("average incremental accuracy", True),
    "forgetting": ("forgetting", False),
    "bwt": ("BWT", True),
}
"""Metric key -> (display name, higher is better): the metrics of every run record."""

REPORT_METRICS = {
    "final_accuracy": ("final average accuracy", True),
    "average_incremental_accuracy": ("average incremental accuracy", True),
    "forgetting": ("forgetting", False),
    "drop_since_learned": ("drop since learned", False),
    "bwt": ("BWT", True),
}
"""The metrics of `headbench report`: METRICS and the Avalanche-style `drop_since_learned`."""


TASK_AWARE_METRICS = {
    **METRICS,
    "gap": ("gap: task-aware − task-agnostic final accuracy", None),
}
"""The task-aware block of `headbench report`: METRICS of the task-aware matrix, and the
gap (`task_aware_gap`), which is neither better high nor low (None) and is not ranked."""


def task_aware_gap(
    task_aware: Matrix, matrix: Matrix, counts: Sequence[int] | None = None
) -> float:
    """A_T(task-aware) − A_T(task-agnostic): final average accuracy scored among each
    sample's own experience's classes minus among all seen classes (>= 0).

    The task-aware matrix R'[i, j] scores each test sample of experience j only among
    experience j's classes (a task label given at test time), the TAw accuracy that FACIL
    reports beside the TAg one (Masana et al., "Class-incremental learning: survey and
    performance evaluation on image classification", TPAMI 2022). The gap is the share of
    the final errors that only confusion between experiences causes (e.g. the head's bias
    towards new classes), not the loss of within-experience discrimination.
    """
    return final_average_accuracy(task_aware, counts) - final_average_accuracy(matrix, counts)


def all_metrics(matrix: Matrix, counts: Sequence[int] | None = None) -> dict[str, float]:
    """Every metric above, keyed as in METRICS."""
    return {
        "final_accuracy": final_average_accuracy(matrix, counts),
        "average_incremental_accuracy": average_incremental_accuracy(matrix, counts),
        "forgetting": forgetting(matrix),
        "bwt": backward_transfer(matrix),
    }


def report_metrics(matrix: Matrix, counts: Sequence[int] | None = None) -> dict[str, float]:
    """Every metric in REPORT_METRICS, recomputed from the matrix (NaN where undefined)."""
    return {**all_metrics(matrix, counts), "drop_since_learned": drop_since_learned(matrix)}
