"""Figures of a report, drawn with matplotlib's object API on the Agg canvas.

No pyplot: figures are `matplotlib.figure.Figure` objects rendered by FigureCanvasAgg
(PNG) or the PDF/SVG backends through `render`, so nothing here touches global backend
state and each function returns a figure that tests can inspect before it is saved.
Sizes fit a paper column (3.35 in; the heatmaps span both columns), colours come from the
Okabe–Ito palette (colour-blind safe), each strategy keeps its colour and marker in every
figure, and every axis names its unit.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from reports.aggregate import Stats, mean_matrix, mean_weight_norms, step_stats
from reports.records import Benchmark

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn: `headbench run` needs none
    from matplotlib.figure import Figure

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
    "#F0E442",  # yellow (weak on white: used for no strategy)
]
REGISTRY_STYLES = {
    # Okabe–Ito's seven strong colours, then Paul Tol's muted scheme (both colour-blind
    # safe); the bounds in grey and black.
    "naive": ("#7F7F7F", "v"),
    "joint": ("#000000", "^"),
    "ewc": ("#0072B2", "o"),
    "weight_aligning": ("#D55E00", "s"),
    "lwf": ("#009E73", "D"),
    "ncm": ("#E69F00", "P"),
    "slda": ("#CC79A7", "X"),
    "ridge": ("#56B4E9", "*"),
    "replay": ("#882255", "p"),
    "bic": ("#332288", "h"),
    "seq_star": ("#999933", "d"),
    "fecam": ("#44AA99", "<"),
    "fetril": ("#117733", ">"),
    "gdumb": ("#AA4499", "8"),
    "mas": ("#CC6677", "H"),
    "si": ("#661100", "+"),
    "new_label_detector": ("#DDCC77", "|"),
    "icarl": ("#88CCEE", "x"),
    "der": ("#EE3377", "1"),
}
"""Registry key -> (colour, marker): one of each per strategy, none shared, so a strategy
looks the same in every report whichever others it is shown with."""
OTHER_COLOURS = ["#6699CC", "#EE7733", "#0077BB", "#33BBEE", "#009988"]
OTHER_MARKERS = ["2", "3", "4", "_"]
"""Strategies outside REGISTRY_STYLES draw from these (colours and markers no registered
strategy uses)."""
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


def _pick(options: list[str], name: str, taken: set[str]) -> str:
    """The option `name` hashes to (so it keeps its look from report to report), the next
    one not taken if that one is; with all taken, the hashed one."""
    start = int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(options)
    for step in range(len(options)):
        option = options[(start + step) % len(options)]
        if option not in taken:
            return option
    return options[start]


def strategy_styles(labels: list[str] | list[tuple[str, str]]) -> dict[str, LineStyle]:
    """A fixed colour and marker per strategy, and a dash per variant of it.

    `labels` are variant labels, or (label, registry key) pairs when one strategy has
    several variants (`ewc [lam=1]`, `ewc [lam=10]`): they share the strategy's colour and
    marker and differ in dash. A registered strategy has its own entry in REGISTRY_STYLES;
    others get a colour from OTHER_COLOURS and a marker from OTHER_MARKERS that no other
    strategy of `labels` has (while they last), chosen from the name, so the same name
    among the same strategies always looks the same.
    """
    pairs = [(item, item) if isinstance(item, str) else item for item in labels]
    looks: dict[str, tuple[str, str]] = {}
    colours, markers = set(), set()
    for strategy in sorted({key for _, key in pairs}):
        if strategy in REGISTRY_STYLES:
            looks[strategy] = REGISTRY_STYLES[strategy]
        else:
            looks[strategy] = (
                _pick(OTHER_COLOURS, strategy, colours),
                _pick(OTHER_MARKERS, strategy, markers),
            )
            colours.add(looks[strategy][0])
            markers.add(looks[strategy][1])
    styles, counts = {}, {}
    for label, strategy in pairs:
        index = counts.get(strategy, 0)
        counts[strategy] = index + 1
        colour, marker = looks[strategy]
        styles[label] = LineStyle(colour, marker, LINESTYLES[index % len(LINESTYLES)])
    return styles


@contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(STYLE):
        yield


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


LEGEND_ROW = 0.16  # inches per legend row at 7 pt


def _legend(figure: Figure, count: int) -> None:
    """The figure's legend below the axes, inside the figure: as many columns (at most 3)
    as fit its width, and the figure made taller by the rows it takes."""
    if count == 0:
        return
    width, height = figure.get_size_inches()
    renderer = figure.canvas.get_renderer()
    for columns in range(min(count, 3), 0, -1):
        legend = figure.legend(loc="outside lower center", ncols=columns, frameon=False)
        if legend.get_window_extent(renderer).width <= 0.98 * width * figure.dpi or columns == 1:
            break
        legend.remove()
    rows = math.ceil(count / columns)
    figure.set_size_inches(width, height + LEGEND_ROW * max(0, rows - 1))
    while legend.get_window_extent(renderer).width > 0.98 * width * figure.dpi:
        size = legend.get_texts()[0].get_fontsize() - 0.5
        if size < 5:
            break
        for text in legend.get_texts():  # one long name: smaller type, never outside
            text.set_fontsize(size)


def _band(stats: list[Stats], band: str = "ci95") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) in percent; low and high NaN when `band` is "none"."""
    mean = 100 * np.array([s.mean for s in stats])
    if band == "std":
        spread = 100 * np.array([s.std for s in stats])
        return mean, mean - spread, mean + spread
    if band == "none":
        return mean, np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    low = 100 * np.array([s.ci95_low for s in stats])
    high = 100 * np.array([s.ci95_high for s in stats])
    return mean, low, high


def experience_numbers(benchmark: Benchmark) -> list[int]:
    """1..T: how every figure, CSV and table of a report numbers the experiences."""
    return list(range(1, len(benchmark.experiences) + 1))


def _experience_axis(axes, benchmark: Benchmark, top_axes=None) -> None:
    """x: experience 1..T below `axes`, the classes seen after it on top of `top_axes`
    (default: the same axes)."""
    numbers = experience_numbers(benchmark)
    axes.set_xlabel("experience")
    ticks = numbers if len(numbers) <= 12 else numbers[:: math.ceil(len(numbers) / 10)]
    axes.set_xticks(ticks)
    axes.set_xlim(0.6, len(numbers) + 0.4)
    top = (top_axes or axes).secondary_xaxis("top")
    top.set_xticks(ticks, [str(benchmark.classes_seen[t - 1]) for t in ticks])
    top.set_xlabel("classes seen")
    top.tick_params(labelsize=6)


COINCIDE = 0.05
"""Percentage points: curves closer than this everywhere are drawn on top of each other."""


def coinciding(curves: dict[str, list[np.ndarray]]) -> dict[str, str]:
    """label -> the earlier label whose curves (one array per panel) it hides: equal
    within COINCIDE at every finite point of every panel."""
    hidden: dict[str, str] = {}
    labels = list(curves)
    for index, label in enumerate(labels):
        for earlier in labels[:index]:
            if earlier in hidden:
                continue
            same = all(
                a.shape == b.shape
                and np.array_equal(np.isnan(a), np.isnan(b))
                and np.all(np.abs(np.nan_to_num(a - b)) <= COINCIDE)
                for a, b in zip(curves[label], curves[earlier], strict=True)
            )
            if same:
                hidden[label] = earlier
                break
    return hidden


def _labels(
    benchmark: Benchmark, curves: dict[str, list[np.ndarray]], counts: bool
) -> tuple[dict[str, str], set[str]]:
    """Legend text per variant label: its name (n = seeds), and "= X" when its curve lies
    on the curve of X, so a line hidden under another is still accounted for; and the
    labels so hidden."""
    names = {v.label: v.name or v.label for v in benchmark.variants}
    seeds = {v.label: len(v.runs) for v in benchmark.variants}
    hidden = coinciding(curves)
    texts = {}
    for label in curves:
        text = f"{names[label]} (n={seeds[label]})" if counts else names[label]
        if label in hidden:
            text += f" = {names[hidden[label]]}"
        texts[label] = text
    return texts, set(hidden)


def _plot_lines(axes, x, series, styles, texts, hidden: set[str]) -> None:
    """One line per label (mean) and its band (NaN: none); a line that lies on an earlier
    one gets larger hollow markers, so the one beneath still shows through."""
    for label, (mean, low, high) in series.items():
        style = styles[label]
        hollow = label in hidden
        axes.plot(
            x,
            mean,
            color=style.colour,
            marker=style.marker,
            markerfacecolor="none" if hollow else style.colour,
            markersize=6 if hollow else None,
            linestyle=style.linestyle,
            label=texts.get(label),
        )
        if not np.isnan(low).all():
            axes.fill_between(x, low, high, color=style.colour, alpha=0.2, linewidth=0)


def accuracy_figure(
    benchmark: Benchmark, styles: dict[str, LineStyle], band: str = "ci95"
) -> Figure:
    """Accuracy on all seen classes after each experience, one line per strategy.

    The band is the 95% Student-t interval over seeds (`band` "ci95"; absent with one
    seed), ± one standard deviation ("std") or nothing ("none").
    """
    series = {v.label: _band(step_stats(v)["accuracy_seen"], band) for v in benchmark.variants}
    texts, hidden = _labels(benchmark, {k: [m] for k, (m, _, _) in series.items()}, True)
    with _style():
        figure = _figure(COLUMN_WIDTH, 2.9)
        axes = figure.add_subplot()
        _plot_lines(axes, experience_numbers(benchmark), series, styles, texts, hidden)
        axes.set_ylabel("accuracy on seen classes (%)")
        axes.set_ylim(-3, 103)
        _experience_axis(axes, benchmark)
        _legend(figure, len(series))
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
            axes.set_title(f"{variant.name or variant.label} (n={len(variant.runs)})")
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
    benchmark: Benchmark,
    summary: dict[str, dict[str, Stats]],
    styles: dict[str, LineStyle],
    band: str = "ci95",
) -> Figure:
    """Final average accuracy (top) and forgetting (bottom) per strategy; error bars as
    `band` says (95% interval, one standard deviation, or none).

    `summary[metric][strategy]` holds the Stats over seeds.
    """
    labels = [variant.label for variant in benchmark.variants]
    names = [variant.name or variant.label for variant in benchmark.variants]
    with _style():
        figure = _figure(COLUMN_WIDTH, 3.6)
        top, bottom = figure.subplots(2, 1, sharex=True)
        for axes, metric, unit in (
            (top, "final_accuracy", "final average accuracy (%)"),
            (bottom, "forgetting", "forgetting (pp)"),
        ):
            stats = [summary[metric][label] for label in labels]
            means, low, high = _band(stats, band)
            errors = np.nan_to_num(np.array([means - low, high - means]))
            axes.bar(
                range(len(labels)),
                np.nan_to_num(means),
                yerr=None if band == "none" else errors,
                capsize=3,
                color=[styles[label].colour for label in labels],
                error_kw={"linewidth": 1},
            )
            axes.set_ylabel(unit)
            axes.grid(axis="x", visible=False)
        bottom.set_xticks(range(len(labels)), names, rotation=30, ha="right")
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
    texts, hidden = _labels(benchmark, {k: [np.asarray(v)] for k, v in norms.items()}, False)
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
                markerfacecolor="none" if label in hidden else style.colour,
                linestyle=style.linestyle,
                label=texts[label],
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


def newest_share_figure(
    benchmark: Benchmark, styles: dict[str, LineStyle], band: str = "ci95"
) -> Figure | None:
    """Share of test predictions on the newest experience's classes, per experience.

    The dashed black line is the share of test samples that belong to those classes (what
    an unbiased head would predict about as often). None when no run saved the shares.
    """
    variants = [v for v in benchmark.variants if all("newest_share" in r.record for r in v.runs)]
    if not variants:
        return None
    series = {v.label: _band(step_stats(v)["newest_share"], band) for v in variants}
    texts, hidden = _labels(benchmark, {k: [m] for k, (m, _, _) in series.items()}, False)
    with _style():
        figure = _figure(COLUMN_WIDTH, 2.9)
        axes = figure.add_subplot()
        x = experience_numbers(benchmark)
        _plot_lines(axes, x, series, styles, texts, hidden)
        balanced, _, _ = _band(step_stats(variants[0])["balanced_newest_share"])
        axes.plot(x, balanced, color="black", linestyle="--", linewidth=1, label="test samples")
        axes.set_ylabel("predictions on newest classes (%)")
        axes.set_ylim(-3, 103)
        _experience_axis(axes, benchmark)
        _legend(figure, len(variants) + 1)
    return figure


def old_new_figure(
    benchmark: Benchmark, styles: dict[str, LineStyle], band: str = "ci95"
) -> Figure:
    """Accuracy on the old classes (top) and on the new experience's classes (bottom)."""
    old = {v.label: _band(step_stats(v)["old_accuracy"], band) for v in benchmark.variants}
    new = {v.label: _band(step_stats(v)["new_accuracy"], band) for v in benchmark.variants}
    curves = {label: [old[label][0], new[label][0]] for label in old}
    texts, hidden = _labels(benchmark, curves, False)
    with _style():
        figure = _figure(COLUMN_WIDTH, 3.9)
        top, bottom = figure.subplots(2, 1, sharex=True)
        x = experience_numbers(benchmark)
        _plot_lines(top, x, old, styles, texts, hidden)
        _plot_lines(bottom, x, new, styles, {}, hidden)
        top.set_ylabel("old classes (%)")
        bottom.set_ylabel("new classes (%)")
        for axes in (top, bottom):
            axes.set_ylim(-3, 103)
        _experience_axis(bottom, benchmark, top)
        _legend(figure, len(benchmark.variants))
    return figure


def old_labels_figure(benchmark: Benchmark, styles: dict[str, LineStyle]) -> Figure | None:
    """Per old class, accuracy right before an experience (x) against right after it (y),
    mean over seeds: left for the last experience, right for each strategy's worst one
    (largest old-label drop, reports.old_labels). Points under the diagonal lost accuracy.
    None when no strategy has per-class counts or there is one experience."""
    from reports import old_labels

    variants = [
        v for v in benchmark.variants
        if old_labels.has_class_counts(v) and old_labels.worst_experience(v) is not None
    ]  # fmt: skip
    if not variants:
        return None
    last = len(benchmark.experiences) - 1
    with _style():
        figure = _figure(FULL_WIDTH, 3.3)
        panels = figure.subplots(1, 2, sharex=True, sharey=True)
        titles = (f"last experience ({last + 1})", "worst experience")
        for axes, title in zip(panels, titles, strict=True):
            axes.plot([0, 100], [0, 100], color="grey", linestyle="--", linewidth=0.8)
            axes.set_title(title)
            axes.set_xlabel("accuracy before (%)")
            axes.set_xlim(-3, 103)
            axes.set_ylim(-3, 103)
        panels[0].set_ylabel("accuracy after (%)")
        for variant in variants:
            style = styles[variant.label]
            worst = old_labels.worst_experience(variant)
            for axes, experience in ((panels[0], last), (panels[1], worst)):
                changes = old_labels.mean_changes(variant, experience)
                axes.scatter(
                    [100 * c.before for c in changes],
                    [100 * c.after for c in changes],
                    s=10,
                    color=style.colour,
                    marker=style.marker,
                    alpha=0.7,
                    label=f"{variant.name} (exp. {worst + 1})" if axes is panels[1] else None,
                )
        _legend(figure, len(variants))
    return figure


def render(figure: Figure, image_format: str) -> bytes:
    """The figure as PNG, PDF or SVG bytes (no timestamps, so reruns give equal files)."""
    buffer = io.BytesIO()
    metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}
    with _style():
        figure.savefig(buffer, format=image_format, dpi=DPI, metadata=metadata[image_format])
    return buffer.getvalue()
