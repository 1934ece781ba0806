"""The old-label check: what each new experience did to the classes a model already had.

A deployment reviewer who adds labels to a classifier asks three things after each
experience t (numbered 1..T in reports, 0..T-1 in code): did the labels it already had
keep their accuracy, which of them lost most, and how many of their test samples does
the model now call by one of the new labels. Definitions (the old classes of experience
t are the classes seen after experience t−1, i.e. of experiences 1..t−1):

- old-label accuracy before / after t: top-1 accuracy on the old classes' test samples
  after training experience t−1 (predicting over the classes seen then) and after
  experience t (predicting over the classes seen now, new ones included), weighted by
  test samples: before_t = A_{t−1} (`metrics.accuracy_seen`), after_t = old_t
  (`metrics.old_new_accuracy`). Both come from the accuracy matrix, so every record has
  them.
- old-label drop after t: 100 · (before_t − after_t), in percentage points (pp);
  positive when accuracy fell. `headbench run --max-old-drop P` flags a run when the
  drop after any experience t >= 2 is larger than P (strictly).
- per old class c: its accuracy after t−1 and after t; the classes that lost most are
  those with the largest fall after − before (ties: earlier arrival first).
- new-label share after t: the share of the old classes' test samples predicted as one
  of experience t's classes.

The per-class values need the record's `class_accuracy` counts (records.RunRecord);
records written before it still give the old-label accuracy and the gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from reports.metrics import Matrix, accuracy_seen, old_new_accuracy
from reports.records import Benchmark, Variant

WORST_SHOWN = 3  # old classes listed per strategy and experience in the report's table


def old_label_accuracy(matrix: Matrix, counts: list[int]) -> list[tuple[float, float] | None]:
    """(before_t, after_t) for each experience t; None for the first (no old classes)."""
    seen = accuracy_seen(matrix, counts)
    old, _ = old_new_accuracy(matrix, counts)
    return [None] + [(seen[t - 1], old[t]) for t in range(1, len(seen))]


def old_label_drops(matrix: Matrix, counts: list[int]) -> list[float]:
    """100 · (before_t − after_t) in pp per experience; NaN for the first."""
    return [
        math.nan if pair is None else 100 * (pair[0] - pair[1])
        for pair in old_label_accuracy(matrix, counts)
    ]


@dataclass(frozen=True)
class Flag:
    """A run whose old-label accuracy fell by more than the limit: its worst experience."""

    strategy: str
    seed: int
    run_id: str
    experience: int  # 0-based
    num_experiences: int
    before: float  # accuracy in [0, 1]
    after: float

    @property
    def drop(self) -> float:
        return 100 * (self.before - self.after)

    def line(self) -> str:
        return (
            f"- {self.strategy} seed {self.seed}: old-label accuracy {100 * self.before:.1f}% "
            f"-> {100 * self.after:.1f}% after experience {self.experience + 1} of "
            f"{self.num_experiences} (fell {self.drop:.1f} pp; run {self.run_id})"
        )


def worst_step(record: dict[str, Any]) -> Flag | None:
    """The experience with the largest old-label drop of a run; None with one experience."""
    pairs = old_label_accuracy(record["accuracy_matrix"], record["test_counts"])
    steps = [t for t, pair in enumerate(pairs) if pair is not None]
    if not steps:
        return None
    worst = max(steps, key=lambda t: (pairs[t][0] - pairs[t][1], -t))
    before, after = pairs[worst]
    return Flag(
        record["strategy"],
        record["seed"],
        str(record.get("run_id", "")),
        worst,
        len(pairs),
        before,
        after,
    )


def gate(records: list[dict[str, Any]], max_drop: float) -> list[Flag]:
    """The runs whose old-label accuracy fell by more than `max_drop` pp after some
    experience, each with its worst experience, in the records' order."""
    steps = [worst_step(record) for record in records]
    return [step for step in steps if step is not None and step.drop > max_drop]


def gate_text(records: list[dict[str, Any]], max_drop: float) -> tuple[str, bool]:
    """The lines `headbench run --max-old-drop` prints under the table; whether any run
    was flagged."""
    flags = gate(records, max_drop)
    head = f"old-label check (--max-old-drop {max_drop:g}): "
    if flags:
        text = (
            f"{head}{len(flags)} of {len(records)} run{'s' * (len(records) != 1)} fell by more "
            f"than {max_drop:g} pp (accuracy on the classes seen before an experience, right "
            "before it and right after it):\n" + "\n".join(flag.line() for flag in flags)
        )
        return text, True
    steps = [step for step in map(worst_step, records) if step is not None]
    if not steps:
        return f"{head}no run has a second experience; nothing to check", False
    largest = max(steps, key=lambda step: step.drop)
    return (
        f"{head}no run fell by more than {max_drop:g} pp (largest fall {largest.drop:.1f} pp: "
        f"{largest.strategy} seed {largest.seed}, experience {largest.experience + 1})",
        False,
    )


# ---------------------------------------------------------------------------------------
# Per class, from the record's `class_accuracy` counts (classes in order of arrival).


def class_accuracies(counts: dict[str, list]) -> list[list[float]]:
    """Accuracy of every seen class after each experience: correct / test samples."""
    totals = counts["test_counts"]
    return [[c / n for c, n in zip(row, totals, strict=False)] for row in counts["correct"]]


@dataclass(frozen=True)
class ClassChange:
    """One old class across one experience (accuracies and share in [0, 1])."""

    position: int  # in order of arrival
    before: float  # accuracy after the previous experience
    after: float  # after this one
    to_newest: float  # share of its test samples predicted as this experience's classes

    @property
    def change(self) -> float:
        return self.after - self.before


def class_changes(counts: dict[str, list], experience: int) -> list[ClassChange]:
    """Every old class of `experience` (>= 1): before, after and the new-label share."""
    accuracies = class_accuracies(counts)
    totals = counts["test_counts"]
    absorbed = counts["to_newest"][experience]
    return [
        ClassChange(c, accuracies[experience - 1][c], accuracies[experience][c], m / totals[c])
        for c, m in enumerate(absorbed)
    ]


def largest_drops(changes: list[ClassChange], count: int) -> list[ClassChange]:
    """The `count` classes whose accuracy fell most (ties: earlier arrival first)."""
    return sorted(changes, key=lambda change: (change.change, change.position))[:count]


def new_label_share(counts: dict[str, list], experience: int) -> float:
    """Share of the old classes' test samples predicted as `experience`'s classes."""
    absorbed = counts["to_newest"][experience]
    return sum(absorbed) / sum(counts["test_counts"][: len(absorbed)])


# ---------------------------------------------------------------------------------------
# A strategy (variant) over its seeds: means, for the report.


def has_class_counts(variant: Variant) -> bool:
    return all(run.record.get("class_accuracy") is not None for run in variant.runs)


def mean_drops(variant: Variant) -> list[float]:
    """The old-label drop per experience (pp), mean over seeds; NaN for the first."""
    drops = np.array([old_label_drops(run.matrix, run.counts) for run in variant.runs])
    return drops.mean(axis=0).tolist()


def worst_experience(variant: Variant) -> int | None:
    """The experience (0-based) with the largest mean old-label drop; None with one."""
    drops = mean_drops(variant)
    if len(drops) < 2:
        return None
    return max(range(1, len(drops)), key=lambda t: (drops[t], -t))


def mean_changes(variant: Variant, experience: int) -> list[ClassChange]:
    """`class_changes` of every seed, averaged class by class (seeds share the order)."""
    per_seed = [class_changes(run.record["class_accuracy"], experience) for run in variant.runs]
    return [
        ClassChange(
            seeds[0].position,
            float(np.mean([c.before for c in seeds])),
            float(np.mean([c.after for c in seeds])),
            float(np.mean([c.to_newest for c in seeds])),
        )
        for seeds in zip(*per_seed, strict=True)
    ]


def arrival_names(benchmark: Benchmark) -> list[str]:
    """Class names in order of arrival (the record's `class_names`), else original ids."""
    record = benchmark.first.record
    order = [c for classes in benchmark.experiences for c in classes]
    names = record.get("class_names")
    if names and all(0 <= c < len(names) for c in order):
        return [str(names[c]) for c in order]
    return [str(c) for c in order]


def shown_experiences(variant: Variant) -> list[tuple[str, int]]:
    """(label, experience) for the last experience and the variant's worst one."""
    worst = worst_experience(variant)
    if worst is None:
        return []
    last = len(variant.runs[0].matrix) - 1
    if worst == last:
        return [("last, worst", last)]
    return [("last", last), ("worst", worst)]


def table_rows(benchmark: Benchmark, count: int = WORST_SHOWN) -> list[dict[str, Any]]:
    """Per strategy with class counts, for its last and its worst experience: a row for all
    old classes, then its `count` classes that lost most (means over seeds, in %)."""
    names = arrival_names(benchmark)
    rows = []
    for variant in benchmark.variants:
        if not has_class_counts(variant):
            continue
        pairs = [old_label_accuracy(run.matrix, run.counts) for run in variant.runs]
        for which, t in shown_experiences(variant):
            before = float(np.mean([p[t][0] for p in pairs]))
            after = float(np.mean([p[t][1] for p in pairs]))
            share = float(
                np.mean([new_label_share(run.record["class_accuracy"], t) for run in variant.runs])
            )
            common = {"strategy": variant.name, "experience": t + 1, "which": which}
            rows.append(
                {**common, "class": "all old classes", "before": 100 * before,
                 "after": 100 * after, "to_newest": 100 * share}
            )  # fmt: skip
            for change in largest_drops(mean_changes(variant, t), count):
                rows.append(
                    {**common, "class": names[change.position], "before": 100 * change.before,
                     "after": 100 * change.after, "to_newest": 100 * change.to_newest}
                )  # fmt: skip
    for row in rows:
        row["change"] = row["after"] - row["before"]
    return rows


def markdown_table(benchmark: Benchmark, count: int = WORST_SHOWN) -> str | None:
    """The report's old-label table (Markdown); None when no run has class counts."""
    rows = table_rows(benchmark, count)
    if not rows:
        return None
    lines = [
        "| Strategy | Experience | Old class | Before (%) | After (%) | Change (pp) "
        "| Predicted as new (%) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        name = row["class"].replace("|", "\\|")
        lines.append(
            f"| {row['strategy']} | {row['experience']} ({row['which']}) | {name} | "
            f"{row['before']:.1f} | {row['after']:.1f} | {row['change']:+.1f} | "
            f"{row['to_newest']:.1f} |"
        )
    return "\n".join(lines) + "\n"


TABLE_CAPTION = (
    "Old-label check: for each strategy's last experience and the experience where its "
    "old-label accuracy fell most (mean over seeds), the accuracy on the classes seen "
    "before that experience right before it and right after it, then the {count} old "
    "classes that lost most; 'Predicted as new' is the share of their test samples now "
    "predicted as one of that experience's classes. Means over seeds."
)
