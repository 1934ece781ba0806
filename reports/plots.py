"""Figures of a report, drawn with matplotlib's object API on the Agg canvas.

No pyplot: figures are `matplotlib.figure.Figure` objects rendered by FigureCanvasAgg
(PNG) or the PDF/SVG backends through `render`, so nothing here touches global backend
state and each function returns a figure that tests can inspect before it is saved.
Sizes fit a paper column (3.35 in; the heatmaps span both columns), colours come from the
Okabe–Ito palette (colour-blind safe), each strategy keeps its colour and marker in every
figure, and every axis names its unit.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reports.aggregate import Stats, mean_matrix, mean_weight_norms, step_stats
from reports.records import Benchmark

COLUMN_WIDTH = 3.35  # inches: one column of a two-column paper
FULL_WIDTH = 6.9
DPI = 200
OKABE_ITO = [
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#E69F00",  # orange
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow (last: weak on white)
]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", "-.", ":"]
STYLE = {
    "font.size": 8,
    "axes.labelsize": 8,
    "axes.titlesize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.3,
    "lines.markersize": 4,
    "pdf.fonttype": 42,  # TrueType in PDFs, as publishers ask
    "svg.fonttype": "none",
    "text.parse_math": False,  # labels are plain text: a '$' in a strategy name stays a '$'
}


@dataclass(frozen=True)
class LineStyle:
    """The look of one strategy in every figure."""

    colour: str
    marker: str
    linestyle: str


def strategy_styles(labels: list[str]) -> dict[str, LineStyle]:
    """A fixed colour, marker and dash per strategy label, in the order given."""
    return {
        label: LineStyle(
            OKABE_ITO[index % len(OKABE_ITO)],
            MARKERS[index % len(MARKERS)],
            LINESTYLES[(index // len(OKABE_ITO)) % len(LINESTYLES)],
        )
        for index, label in enumerate(labels)
    }


@contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context(STYLE):
        yield


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _legend(figure: Figure, count: int) -> None:
    figure.legend(loc="outside lower center", ncols=min(count, 3), frameon=False)


def _band(stats: list[Stats]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = 100 * np.array([s.mean for s in stats])
    low = 100 * np.array([s.ci95_low for s in stats])
    high = 100 * np.array([s.ci95_high for s in stats])
    return mean, low, high


def _classes_axis(axes, benchmark: Benchmark) -> None:
    axes.set_xlabel("classes seen (after each experience)")
    if len(benchmark.classes_seen) <= 12:
        axes.set_xticks(benchmark.classes_seen)
    else:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def accuracy_figure(benchmark: Benchmark, styles: dict[str, LineStyle]) -> Figure:
    """Accuracy on all seen classes after each experience, one line per strategy.

    The band is the 95% Student-t interval over seeds (absent with one seed).
    """
    with _style():
        figure = _figure(COLUMN_WIDTH, 2.9)
        axes = figure.add_subplot()
        x = benchmark.classes_seen
        for variant in benchmark.variants:
            style = styles[variant.label]
            mean, low, high = _band(step_stats(variant)["accuracy_seen"])
            axes.plot(
                x,
                mean,
                color=style.colour,
                marker=style.marker,
                linestyle=style.linestyle,
                label=f"{variant.label} (n={len(variant.runs)})",
            )
            if not np.isnan(low).all():
                axes.fill_between(x, low, high, color=style.colour, alpha=0.2, linewidth=0)
        axes.set_ylabel("accuracy on seen classes (%)")
        axes.set_ylim(-3, 103)
        _classes_axis(axes, benchmark)
        _legend(figure, len(benchmark.variants))
    return figure


def heatmap_figure(benchmark: Benchmark) -> Figure:
    """The accuracy matrix of each strategy (mean over seeds), one panel per strategy."""
    variants = benchmark.variants
    columns = min(len(variants), 3)
    rows = math.ceil(len(variants) / columns)
    size = len(benchmark.experiences)
    with _style():
        figure = _figure(FULL_WIDTH, 2.3 * rows + 0.3)
        grid = figure.subplots(rows, columns, squeeze=False)
        image = None
        for index, axes in enumerate(grid.flat):
            if index >= len(variants):
                axes.set_visible(False)
                continue
            variant = variants[index]
            matrix = 100 * mean_matrix(variant)
            image = axes.imshow(
                np.ma.masked_invalid(matrix), cmap="viridis", vmin=0, vmax=100, aspect="equal"
            )
            axes.set_title(f"{variant.label} (n={len(variant.runs)})")
            ticks = range(size) if size <= 12 else range(0, size, max(1, size // 6))
            axes.set_xticks(list(ticks), [str(t + 1) for t in ticks])
            axes.set_yticks(list(ticks), [str(t + 1) for t in ticks])
            axes.grid(False)
            if index % columns == 0:
                axes.set_ylabel("after training experience i")
            if index >= len(variants) - columns:
                axes.set_xlabel("test classes of experience j")
            if size <= 10:
                for i in range(size):
                    for j in range(i + 1):
                        value = matrix[i, j]
                        axes.text(
                            j,
                            i,
                            f"{value:.0f}",
                            ha="center",
                            va="center",
                            fontsize=6,
                            color="black" if value > 60 else "white",
                        )
        figure.colorbar(image, ax=grid, label="accuracy (%)", shrink=0.8)
    return figure


def bars_figure(
    benchmark: Benchmark, summary: dict[str, dict[str, Stats]], styles: dict[str, LineStyle]
) -> Figure:
    """Final average accuracy (top) and forgetting (bottom) per strategy, 95% CI error bars.

    `summary[metric][strategy]` holds the Stats over seeds.
    """
    labels = [variant.label for variant in benchmark.variants]
    with _style():
        figure = _figure(COLUMN_WIDTH, 3.6)
        top, bottom = figure.subplots(2, 1, sharex=True)
        for axes, metric, unit in (
            (top, "final_accuracy", "final average accuracy (%)"),
            (bottom, "forgetting", "forgetting (pp)"),
        ):
            stats = [summary[metric][label] for label in labels]
            means = [100 * s.mean for s in stats]
            errors = np.array(
                [
                    [100 * (s.mean - s.ci95_low), 100 * (s.ci95_high - s.mean)]
                    if not math.isnan(s.ci95_low)
                    else [0.0, 0.0]
                    for s in stats
                ]
            ).T
            axes.bar(
                range(len(labels)),
                np.nan_to_num(means),
                yerr=errors,
                capsize=3,
                color=[styles[label].colour for label in labels],
                error_kw={"linewidth": 1},
            )
            axes.set_ylabel(unit)
            axes.grid(axis="x", visible=False)
        bottom.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        top.set_ylim(0, 105)
    return figure


WEIGHT_NORM_FOCUS = ("naive", "weight_aligning")


def weight_norms_figure(benchmark: Benchmark, styles: dict[str, LineStyle]) -> Figure | None:
    """Per-class L2 norms of the head's rows after the last experience (mean over seeds).

    Naive training grows the newest classes' rows; Weight Aligning (Zhao et al., CVPR
    2020) equalises them, which is the figure that motivates it: when either is in the
    results only they are drawn (other heads, e.g. SLDA's discriminants, have norms on
    another scale that would flatten the comparison). Dotted lines separate experiences.
    None when no run saved the norms.
    """
    variants = [v for v in benchmark.variants if v.strategy in WEIGHT_NORM_FOCUS]
    norms = {
        variant.label: mean_weight_norms(variant) for variant in variants or benchmark.variants
    }
    norms = {label: values for label, values in norms.items() if values is not None}
    if not norms:
        return None
    with _style():
        figure = _figure(COLUMN_WIDTH, 2.9)
        axes = figure.add_subplot()
        classes = len(next(iter(norms.values())))
        for label, values in norms.items():
            style = styles[label]
            axes.plot(
                range(classes),
                values,
                color=style.colour,
                marker=style.marker if classes <= 30 else None,
                linestyle=style.linestyle,
                label=label,
            )
        for boundary in benchmark.classes_seen[:-1]:
            axes.axvline(boundary - 0.5, color="grey", linestyle=":", linewidth=0.8)
        names = _arrival_names(benchmark)
        if classes <= 20:
            axes.set_xticks(range(classes), names[:classes])
        axes.set_xlabel("class, in order of arrival")
        axes.set_ylabel("L2 norm of the head's row")
        axes.set_ylim(bottom=0)
        _legend(figure, len(norms))
    return figure


def _arrival_names(benchmark: Benchmark) -> list[str]:
    record = benchmark.first.record
    order = [c for classes in benchmark.experiences for c in classes]
    names = record.get("class_names")
    if names and all(isinstance(c, int) and 0 <= c < len(names) for c in order):
        return [str(names[c]) for c in order]
    return [str(c) for c in order]


def newest_share_figure(benchmark: Benchmark, styles: dict[str, LineStyle]) -> Figure | None:
    """Share of test predictions on the newest experience's classes, per experience.

    The dashed black line is the share of test samples that belong to those classes (what
    an unbiased head would predict about as often). None when no run saved the shares.
    """
    variants = [v for v in benchmark.variants if all("newest_share" in r.record for r in v.runs)]
    if not variants:
        return None
    with _style():
        figure = _figure(COLUMN_WIDTH, 2.9)
        axes = figure.add_subplot()
        x = benchmark.classes_seen
        for variant in variants:
            style = styles[variant.label]
            mean, low, high = _band(step_stats(variant)["newest_share"])
            axes.plot(
                x,
                mean,
                color=style.colour,
                marker=style.marker,
                linestyle=style.linestyle,
                label=variant.label,
            )
            if not np.isnan(low).all():
                axes.fill_between(x, low, high, color=style.colour, alpha=0.2, linewidth=0)
        balanced, _, _ = _band(step_stats(variants[0])["balanced_newest_share"])
        axes.plot(x, balanced, color="black", linestyle="--", linewidth=1, label="test samples")
        axes.set_ylabel("predictions on newest classes (%)")
        axes.set_ylim(-3, 103)
        _classes_axis(axes, benchmark)
        _legend(figure, len(variants) + 1)
    return figure


def old_new_figure(benchmark: Benchmark, styles: dict[str, LineStyle]) -> Figure:
    """Accuracy on the old classes (top) and on the new experience's classes (bottom)."""
    with _style():
        figure = _figure(COLUMN_WIDTH, 3.9)
        top, bottom = figure.subplots(2, 1, sharex=True)
        x = benchmark.classes_seen
        for variant in benchmark.variants:
            style = styles[variant.label]
            per_step = step_stats(variant)
            for axes, key in ((top, "old_accuracy"), (bottom, "new_accuracy")):
                mean, low, high = _band(per_step[key])
                axes.plot(
                    x,
                    mean,
                    color=style.colour,
                    marker=style.marker,
                    linestyle=style.linestyle,
                    label=variant.label if axes is top else None,
                )
                if not np.isnan(low).all():
                    axes.fill_between(x, low, high, color=style.colour, alpha=0.2, linewidth=0)
        top.set_ylabel("old classes (%)")
        bottom.set_ylabel("new classes (%)")
        for axes in (top, bottom):
            axes.set_ylim(-3, 103)
        _classes_axis(bottom, benchmark)
        _legend(figure, len(benchmark.variants))
    return figure


def render(figure: Figure, image_format: str) -> bytes:
    """The figure as PNG, PDF or SVG bytes (no timestamps, so reruns give equal files)."""
    buffer = io.BytesIO()
    metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}
    with _style():
        figure.savefig(buffer, format=image_format, dpi=DPI, metadata=metadata[image_format])
    return buffer.getvalue()
