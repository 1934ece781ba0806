"""Aggregation over seeds: mean, standard deviation, 95% confidence interval, n, ranks.

Every number is recomputed from the runs' accuracy matrices (reports.metrics), not read
from the records' stored metrics, so records of any age give the same table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from reports.metrics import (
    REPORT_METRICS,
    TASK_AWARE_METRICS,
    accuracy_seen,
    all_metrics,
    balanced_newest_share,
    norm_ratio_new_old,
    old_new_accuracy,
    report_metrics,
    task_aware_gap,
)
from reports.records import LOWER_BOUNDS, UPPER_BOUNDS, Benchmark, Variant

SUMMARY_COLUMNS = [
    "benchmark",
    "strategy",
    "metric",
    "mean",
    "std",
    "ci95_low",
    "ci95_high",
    "n",
    "rank",
    "higher_is_better",
    "missing_seeds",
    "name",  # the strategy as tables print it (e.g. WA); `strategy` is the registry label
]
STEP_QUANTITIES = {
    "accuracy_seen": "accuracy on all seen classes",
    "old_accuracy": "accuracy on old classes",
    "new_accuracy": "accuracy on the new experience's classes",
    "newest_share": "share of predictions on the newest classes",
    "balanced_newest_share": "share of test samples in the newest classes",
    "norm_ratio_new_old": "mean weight norm, new over old classes",
}
STEP_COLUMNS = [
    "benchmark",
    "strategy",
    "experience",
    "classes_seen",
    "quantity",
    "mean",
    "std",
    "ci95_low",
    "ci95_high",
    "n",
    "name",
]
RANK_DECIMALS = 2
"""Means are ranked as shown (percent, two decimals), so equal-looking cells tie."""


@dataclass(frozen=True)
class Stats:
    """Mean, sample standard deviation (n − 1), 95% Student-t interval and n over seeds."""

    mean: float
    std: float
    ci95_low: float
    ci95_high: float
    n: int


def describe(values: Sequence[float]) -> Stats:
    """Stats of the finite values: mean ± t_{0.975, n−1} · s / √n for the interval.

    NaN values (a metric undefined for the run) are left out of n; std and the interval
    are NaN below two values.
    """
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(finite)
    if n == 0:
        return Stats(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(finite.mean())
    if n == 1:
        return Stats(mean, math.nan, math.nan, math.nan, 1)
    std = float(finite.std(ddof=1))
    # The Student t quantile: scipy.stats.t.ppf's own routine, without importing
    # scipy.stats (0.4 s of every `headbench run`).
    half = float(special.stdtrit(n - 1, 0.975)) * std / math.sqrt(n)
    return Stats(mean, std, mean - half, mean + half, n)


def run_metrics(variant: Variant) -> list[dict[str, float]]:
    """REPORT_METRICS of each of the variant's runs, in seed order."""
    return [report_metrics(run.matrix, run.counts) for run in variant.runs]


def rank(means: dict[str, float], higher_is_better: bool) -> dict[str, int | None]:
    """Rank 1 = best; equal means at the shown precision share the better rank."""
    shown = {
        label: round(100 * mean, RANK_DECIMALS)
        for label, mean in means.items()
        if mean is not None and math.isfinite(mean)
    }
    ranks: dict[str, int | None] = {label: None for label in means}
    for label, value in shown.items():
        better = [o for o in shown.values() if (o > value if higher_is_better else o < value)]
        ranks[label] = 1 + len(better)  # competition ranking: 1, 2, 2, 4
    return ranks


def summarise_benchmark(benchmark: Benchmark) -> pd.DataFrame:
    """Tidy rows (SUMMARY_COLUMNS) for one benchmark: one per strategy × metric."""
    per_variant = {variant.label: run_metrics(variant) for variant in benchmark.variants}
    rows = []
    for metric, (_, higher_is_better) in REPORT_METRICS.items():
        described = {
            label: describe([values[metric] for values in runs])
            for label, runs in per_variant.items()
        }
        bounds = {v.label for v in benchmark.variants if v.strategy in LOWER_BOUNDS + UPPER_BOUNDS}
        ranks = rank(
            {label: s.mean for label, s in described.items() if label not in bounds},
            higher_is_better,
        )
        for variant in benchmark.variants:
            missing = benchmark.missing_seeds(variant)
            rows.append(
                _row(benchmark, variant, metric, described, ranks, higher_is_better, missing)
            )
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    frame["rank"] = frame["rank"].astype("Int64")
    return frame


def task_aware_runs(variant: Variant) -> list[dict[str, float]]:
    """TASK_AWARE_METRICS of each of the variant's runs that has a task-aware matrix."""
    return [
        {
            **all_metrics(run.task_aware_matrix, run.counts),
            "gap": task_aware_gap(run.task_aware_matrix, run.matrix, run.counts),
        }
        for run in variant.runs
        if run.task_aware_matrix is not None
    ]


def summarise_task_aware(benchmark: Benchmark) -> pd.DataFrame:
    """SUMMARY_COLUMNS rows of the task-aware block: TASK_AWARE_METRICS per variant whose
    records hold a task-aware matrix (none: an empty frame). Ranked as the main table
    (bounds apart, shown precision), except the gap, which ranks nothing; the gap's mean is
    the mean of the per-seed gaps. `missing_seeds` adds the seeds whose records lack it."""
    per_variant = {v.label: task_aware_runs(v) for v in benchmark.variants}
    variants = [v for v in benchmark.variants if per_variant[v.label]]
    bounds = {v.label for v in variants if v.strategy in LOWER_BOUNDS + UPPER_BOUNDS}
    rows = []
    for metric, (_, higher_is_better) in TASK_AWARE_METRICS.items():
        described = {
            v.label: describe([values[metric] for values in per_variant[v.label]]) for v in variants
        }
        ranks: dict[str, int | None] = {}
        if higher_is_better is not None:
            means = {label: s.mean for label, s in described.items() if label not in bounds}
            ranks = rank(means, higher_is_better)
        for variant in variants:
            lacking = [run.seed for run in variant.runs if run.task_aware_matrix is None]
            missing = sorted(benchmark.missing_seeds(variant) + lacking)
            rows.append(
                _row(benchmark, variant, metric, described, ranks, higher_is_better, missing)
            )
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    frame["rank"] = frame["rank"].astype("Int64")
    return frame


def summarise_all(benchmarks: list[Benchmark]) -> pd.DataFrame:
    """SUMMARY_COLUMNS rows of every benchmark."""
    return pd.concat([summarise_benchmark(b) for b in benchmarks], ignore_index=True)


def step_values(variant: Variant) -> dict[str, list[list[float]]]:
    """Per quantity in STEP_QUANTITIES: one list per run, one value per experience."""
    values: dict[str, list[list[float]]] = {key: [] for key in STEP_QUANTITIES}
    for run in variant.runs:
        size = len(run.matrix)
        old, new = old_new_accuracy(run.matrix, run.counts)
        values["accuracy_seen"].append(accuracy_seen(run.matrix, run.counts))
        values["old_accuracy"].append(old)
        values["new_accuracy"].append(new)
        values["balanced_newest_share"].append(balanced_newest_share(run.counts))
        shares = run.record.get("newest_share")
        values["newest_share"].append(
            [float(v) for v in shares] if shares is not None else [math.nan] * size
        )
        norms = run.record.get("weight_norms")
        experiences = run.record.get("experiences") or [[j] for j in range(size)]
        sizes = [len(classes) for classes in experiences]
        values["norm_ratio_new_old"].append(
            [norm_ratio_new_old(norms[i], sum(sizes[:i])) for i in range(size)]
            if norms is not None
            else [math.nan] * size
        )
    return values


def step_stats(variant: Variant) -> dict[str, list[Stats]]:
    """Per quantity, the Stats over seeds at each experience."""
    return {
        key: [describe(list(column)) for column in zip(*per_run, strict=True)]
        for key, per_run in step_values(variant).items()
    }


def steps_frame(benchmarks: list[Benchmark]) -> pd.DataFrame:
    """Tidy rows (STEP_COLUMNS): one per benchmark × strategy × experience × quantity.

    Experiences are numbered 1..T (as in the figures and the HTML tables), `classes_seen`
    beside them; `strategy` is the registry label, `name` the one tables print.
    """
    rows = []
    for benchmark in benchmarks:
        for variant in benchmark.variants:
            for quantity, per_step in step_stats(variant).items():
                for index, s in enumerate(per_step):
                    rows.append(
                        {
                            "benchmark": benchmark.label,
                            "strategy": variant.label,
                            "name": variant.name or variant.label,
                            "experience": index + 1,  # 1..T, as the figures number them
                            "classes_seen": benchmark.classes_seen[index],
                            "quantity": quantity,
                            "mean": s.mean,
                            "std": s.std,
                            "ci95_low": s.ci95_low,
                            "ci95_high": s.ci95_high,
                            "n": s.n,
                        }
                    )
    return pd.DataFrame(rows, columns=STEP_COLUMNS)


def mean_weight_norms(variant: Variant) -> list[float] | None:
    """Per-class head norms after the last experience, averaged over seeds (None if absent)."""
    norms = [run.record.get("weight_norms") for run in variant.runs]
    if any(n is None for n in norms):
        return None
    return np.mean([n[-1] for n in norms], axis=0).tolist()


def mean_matrix(variant: Variant) -> np.ndarray:
    """The accuracy matrix averaged over seeds; NaN above the diagonal."""
    arrays = [
        np.array([[np.nan if v is None else v for v in row] for row in run.matrix], dtype=float)
        for run in variant.runs
    ]
    return np.mean(arrays, axis=0)


def _row(
    benchmark: Benchmark,
    variant: Variant,
    metric: str,
    described: dict[str, Stats],
    ranks: dict[str, int | None],
    higher_is_better: bool | None,
    missing: Sequence[int],
) -> dict:
    """One tidy row of summary.csv / task_aware.csv: a variant's statistics of a metric."""
    s = described[variant.label]
    return {
        "benchmark": benchmark.label,
        "strategy": variant.label,
        "name": variant.name or variant.label,
        "metric": metric,
        "mean": s.mean,
        "std": s.std,
        "ci95_low": s.ci95_low,
        "ci95_high": s.ci95_high,
        "n": s.n,
        "rank": ranks.get(variant.label),
        "higher_is_better": higher_is_better,
        "missing_seeds": " ".join(map(str, missing)),
    }
