"""Summaries over seeds from saved run records: a tidy CSV and a Markdown table.

Works from the records alone (dicts as stored in OUT/runs/*.json); never imports the
engine. Accuracies are shown in percent, forgetting and BWT in percentage points.
"""

from __future__ import annotations

import math

import pandas as pd

from reports.metrics import METRICS


def summarise(records: list[dict]) -> pd.DataFrame:
    """One row per (strategy, metric): mean, standard deviation (n − 1) and n over seeds."""
    rows = [
        {
            "strategy": record["strategy"],
            "seed": record["seed"],
            "metric": key,
            "value": record["metrics"][key],
        }
        for record in records
        for key in METRICS
    ]
    frame = pd.DataFrame(rows, columns=["strategy", "seed", "metric", "value"])
    order = list(dict.fromkeys(record["strategy"] for record in records))
    summary = (
        frame.groupby(["strategy", "metric"], sort=False)["value"]
        .agg(mean="mean", std="std", seeds="count")
        .reset_index()
    )
    summary["strategy"] = pd.Categorical(summary["strategy"], categories=order, ordered=True)
    summary["metric"] = pd.Categorical(summary["metric"], categories=list(METRICS), ordered=True)
    return summary.sort_values(["strategy", "metric"]).reset_index(drop=True)


def _cell(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(std):
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown(summary: pd.DataFrame) -> str:
    """A README-ready table: one row per strategy, `mean ± std` (percent) per metric."""
    header = ["strategy", *(name for name, _ in METRICS.values()), "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for strategy, group in summary.groupby("strategy", sort=False, observed=True):
        cells = {row.metric: _cell(row.mean, row.std) for row in group.itertuples()}
        seeds = int(group["seeds"].max())
        lines.append(
            "| " + " | ".join([str(strategy), *(cells[k] for k in METRICS), str(seeds)]) + " |"
        )
    return "\n".join(lines) + "\n"


def tidy_csv(summary: pd.DataFrame) -> str:
    """One row per strategy × metric; values as fractions, unrounded."""
    return summary.to_csv(index=False)
