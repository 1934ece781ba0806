"""Helpers for the report tests: hand-made run records, an independent recomputation of
every reported number from the JSON alone (plain Python, `statistics` and scipy's t), and
parsers for the Markdown, LaTeX and HTML tables. Holds no tests itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from scipy import stats

# (display name in Markdown/HTML headers, LaTeX header, higher is better), in table order.
METRIC_COLUMNS = {
    "final_accuracy": ("final average accuracy (%)", "Final acc.\\ (\\%)", True),
    "average_incremental_accuracy": (
        "average incremental accuracy (%)",
        "Avg.\\ inc.\\ acc.\\ (\\%)",
        True,
    ),
    "forgetting": ("forgetting (pp)", "Forgetting (pp)", False),
    "drop_since_learned": ("drop since learned (pp)", "Drop (pp)", False),
    "bwt": ("BWT (pp)", "BWT (pp)", True),
}


def make_record(
    strategy: str,
    seed: int,
    matrix: list[list[float | None]],
    counts: list[int] | None = None,
    benchmark: str = "toy",
    hyperparameters: dict[str, Any] | None = None,
    epochs: int = 2,
    paper: str | None = None,
) -> dict[str, Any]:
    """A run record as `headbench run` writes it, two classes per experience."""
    size = len(matrix)
    counts = counts or [10] * size
    config = {
        "dataset": {"name": "features", "path": "toy.npz"},
        "backbone": {"name": "identity"},
        "head": {"bias": True},
        "scenario": {"class_order": "identity", "initial_classes": 2, "increment": 2},
        "training": {"optimizer": "sgd", "lr": 0.1, "epochs": epochs, "seeds": [seed]},
        "strategies": {strategy: hyperparameters or {}},
    }
    tag = hashlib.sha256(json.dumps([config, benchmark], sort_keys=True).encode()).hexdigest()
    return {
        "format": 1,
        "run_id": f"{strategy}-seed{seed}-{tag[:12]}",
        "benchmark": benchmark,
        "strategy": strategy,
        "paper": paper or f"Author et al., The {strategy} paper, VENUE 2020",
        "seed": seed,
        "config": config,
        "class_order": list(range(2 * size)),
        "experiences": [[2 * j, 2 * j + 1] for j in range(size)],
        "class_names": [f"class{c}" for c in range(2 * size)],
        "accuracy_matrix": matrix,
        "test_counts": counts,
        "metrics": {},
        "newest_share": [1.0 / (i + 1) for i in range(size)],
        "weight_norms": [[1.0 + 0.1 * c for c in range(2 * (i + 1))] for i in range(size)],
        "environment": {"python": "3.11", "torch": "2", "device": "cpu", "headbench": "0.1.0"},
    }


def write_records(directory: Path, records: list[dict[str, Any]]) -> Path:
    """Each record as runs/<run_id>.json under `directory`; returns `directory`."""
    runs = directory / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for record in records:
        (runs / f"{record['run_id']}.json").write_text(json.dumps(record))
    return directory


def read_records(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("**/runs/*.json"))]


# ---------------------------------------------------------------------------------------
# The independent path: plain Python on the JSON, no reports.* import.


def metrics_of(record: dict[str, Any]) -> dict[str, float]:
    """Every report metric of one record, from its matrix and test counts."""
    r, n = record["accuracy_matrix"], record["test_counts"]
    size = len(r)
    seen = [sum(n[j] * r[i][j] for j in range(i + 1)) / sum(n[: i + 1]) for i in range(size)]
    last = size - 1
    if last == 0:
        nan = float("nan")
        return dict.fromkeys(METRIC_COLUMNS, nan) | {
            "final_accuracy": seen[0],
            "average_incremental_accuracy": seen[0],
        }
    return {
        "final_accuracy": seen[-1],
        "average_incremental_accuracy": sum(seen) / size,
        "forgetting": sum(max(r[k][j] for k in range(j, last)) - r[last][j] for j in range(last))
        / last,
        "drop_since_learned": sum(r[j][j] - r[last][j] for j in range(last)) / last,
        "bwt": sum(r[last][j] - r[j][j] for j in range(last)) / last,
    }


def expected_summary(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    """(strategy, metric) -> mean, std, ci95_low, ci95_high, n over the records' seeds."""
    by_strategy: dict[str, list[dict[str, float]]] = {}
    for record in records:
        by_strategy.setdefault(record["strategy"], []).append(metrics_of(record))
    summary = {}
    for strategy, runs in by_strategy.items():
        for metric in METRIC_COLUMNS:
            values = [run[metric] for run in runs if not math.isnan(run[metric])]
            n = len(values)
            mean = statistics.mean(values)
            std = statistics.stdev(values) if n > 1 else math.nan
            half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
            summary[strategy, metric] = {
                "mean": mean,
                "std": std,
                "ci95_low": mean - half,
                "ci95_high": mean + half,
                "n": n,
            }
    return summary


REFERENCES = ("naive", "joint")


def table_order(strategies: set[str]) -> list[str]:
    """naive first, the methods by name, joint last."""
    methods = sorted(s for s in strategies if s not in REFERENCES)
    return (
        [s for s in ("naive",) if s in strategies]
        + methods
        + (["joint"] if "joint" in strategies else [])
    )


def best_strategies(summary: dict[tuple[str, str], dict[str, float]], metric: str) -> set[str]:
    """The strategy whose mean, shown to two decimals in percent, is the best shown, when no
    other shows the same (a tie bolds nobody); the reference rows (naive, the lower bound;
    joint, the upper bound) never compete."""
    higher = METRIC_COLUMNS[metric][2]
    shown = {
        s: round(100 * v["mean"], 2)
        for (s, m), v in summary.items()
        if m == metric and s not in REFERENCES
    }
    best = max(shown.values()) if higher else min(shown.values())
    winners = {s for s, v in shown.items() if v == best}
    return winners if len(winners) == 1 else set()


def printed_names(records: list[dict[str, Any]]) -> dict[str, str]:
    """Registry key -> the name tables print: the record's display_name, else the key
    (the hand-made strategies are not headbench's)."""
    return {r["strategy"]: r.get("display_name", r["strategy"]) for r in records}


def keyed(table: list[list[str]], records: list[dict[str, Any]]) -> list[list[str]]:
    """A parsed table with each row's printed name replaced by its registry key."""
    keys = {name: key for key, name in printed_names(records).items()}
    return [table[0], *([keys.get(row[0], row[0]), *row[1:]] for row in table[1:])]


# ---------------------------------------------------------------------------------------
# Table parsers


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table in `text`: rows of stripped cells, the header row first."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not set("".join(cells)) <= set("-: "):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def parse_mean_std(cell: str) -> tuple[float, float | None, bool]:
    """'**52.13 ± 0.49**' -> (52.13, 0.49, bold); '52.13' -> (52.13, None, False)."""
    bold = cell.startswith("**") and cell.endswith("**")
    text = cell.strip("*").strip()
    if "±" in text:
        mean, std = text.split("±")
        return float(mean), float(std), bold
    return float(text), None, bold


class HtmlCollector(HTMLParser):
    """Tables (cell texts and whether a cell holds <strong>), <img> and every URL-ish attr."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, bool]]]] = []
        self.images: list[dict[str, str | None]] = []
        self.urls: list[str] = []
        self._cell: list[str] | None = None
        self._strong = False
        self._row: list[tuple[str, bool]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for key in ("src", "href", "data", "action", "poster"):
            if attributes.get(key):
                self.urls.append(attributes[key])
        if tag == "img":
            self.images.append(attributes)
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell, self._strong = [], False
        elif tag == "strong" and self._cell is not None:
            self._strong = True
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(("".join(self._cell).strip(), self._strong))
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
