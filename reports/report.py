"""`headbench report RESULTS_DIR` (also `python -m reports RESULTS_DIR`).

Reads every run record under RESULTS_DIR, checks them all, builds every table and figure
in memory, and only then writes them into OUT (default RESULTS_DIR/report), each file
atomically (temporary file + rename). Bad input raises ReportError before anything is
written; the command line prints it as one `headbench: error:` line and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from reports import aggregate, citation, html, old_labels, plots, tables
from reports.atomic import atomic_write_bytes
from reports.metrics import REPORT_METRICS
from reports.options import (
    BAND_CHOICES,
    BY_CHOICES,
    NAMES_CHOICES,
    add_arguments,
    parse_formats,
)
from reports.records import Benchmark, ReportError, group, load_runs, row_order

if TYPE_CHECKING:
    from matplotlib.figure import Figure

IMAGE_FORMATS = ("png", "pdf", "svg")

BAND_TEXT = {
    "ci95": "the 95% Student-t confidence interval over seeds",
    "std": "± one standard deviation over seeds (n − 1)",
    "none": None,
}


def figure_captions(band: str = "ci95") -> dict[str, tuple[str, str]]:
    """Figure name -> (title, what it shows), in the order the reports show them; the
    bands and error bars described as `band` draws them."""
    spread = BAND_TEXT[band]
    bands = f"the band is {spread}." if spread else "no band drawn."
    bars = f"error bars: {spread}." if spread else "no error bars."
    steps = "experiences numbered 1..T (classes seen on the top axis)"
    return {
        "accuracy": (
            "Accuracy on seen classes",
            f"Accuracy (%) on all classes seen so far after each experience ({steps}), one "
            f"line per strategy; {bands}",
        ),
        "heatmaps": (
            "Accuracy matrices",
            "R[i, j]: accuracy (%) on experience j's classes after training experience i "
            "(experiences numbered 1..T), mean over seeds, one panel per strategy.",
        ),
        "bars": (
            "Final accuracy and forgetting",
            "Final average accuracy (%) and forgetting (Chaudhry et al. 2018, percentage "
            f"points) per strategy; {bars}",
        ),
        "weight_norms": (
            "Head weight norms",
            "L2 norm of each class's row of the head after the last experience (mean over "
            "seeds), classes in order of arrival; dotted lines separate experiences. Naive "
            "training inflates the newest rows, Weight Aligning equalises them.",
        ),
        "newest_share": (
            "Predictions on the newest classes",
            f"Share (%) of test predictions that fall on the newest experience's classes "
            f"({steps}); the dashed black line is their share of the test samples (an "
            f"unbiased head's rate); {bands}",
        ),
        "old_new": (
            "Old and new classes",
            "Accuracy (%) on the classes of earlier experiences (old) and of the experience "
            f"just learned (new) after each experience ({steps}); {bands}",
        ),
        "old_labels": (
            "Old classes before and after",
            "Accuracy (%) of each old class right before an experience (x) and right after "
            "it (y), mean over seeds: left, the last experience; right, each strategy's "
            "experience with the largest old-label drop (in its legend entry). Points below "
            'the dashed diagonal lost accuracy (docs/reports.md, "The old-label check").',
        ),
    }


FIGURES = figure_captions()
"""The figures with the default band (95% intervals)."""


def slug(text: str) -> str:
    """A file-name-safe form of a benchmark label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "benchmark"


def _short_list(values: list, limit: int = 10) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return f"[{shown}, … ({len(values)} in all)]" if len(values) > limit else f"[{shown}]"


def describe_benchmark(benchmark: Benchmark) -> str:
    """One line naming what a table compares: dataset, backbone, class order, protocol."""
    config = benchmark.config
    scenario = config.get("scenario", {})
    order = benchmark.first.record.get("class_order")
    order_text = str(scenario.get("class_order", "unknown"))
    if order is not None:
        order_text += f" = {_short_list(order)}"
        names = benchmark.first.record.get("class_names")  # by original class id
        if names and all(isinstance(c, int) and 0 <= c < len(names) for c in order[:3]):
            order_text += f" (first {', '.join(str(names[c]) for c in order[:3])}, …)"
    seeds, experiences = benchmark.seeds, _count(len(benchmark.experiences), "experience")
    return (
        f"{benchmark.label}: dataset {config.get('dataset', {}).get('name', 'unknown')}, "
        f"backbone {config.get('backbone', {}).get('name', 'unknown')} (frozen), "
        f"{config.get('head', {}).get('kind', 'linear')} head, "
        f"bias {str(config.get('head', {}).get('bias', 'unknown')).lower()}, "
        f"class order {order_text}, B{scenario.get('initial_classes', '?')} "
        f"Inc{scenario.get('increment', '?')} ({experiences}), "
        f"{_count(len(seeds), 'seed')} ({', '.join(map(str, seeds))})"
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def table_caption(benchmarks: list[Benchmark]) -> str:
    """What a table compares and in which units, in a sentence or two (the benchmarks'
    full setup is in the report's text, not in the caption)."""
    parts = []
    for benchmark in benchmarks:
        config = benchmark.config
        scenario = config.get("scenario", {})
        parts.append(
            f"{benchmark.label} ({config.get('dataset', {}).get('name', 'unknown')}, frozen "
            f"{config.get('backbone', {}).get('name', 'unknown')} backbone, "
            f"B{scenario.get('initial_classes', '?')} Inc{scenario.get('increment', '?')}, "
            f"{_count(len(benchmark.experiences), 'experience')}, "
            f"{_count(len(benchmark.seeds), 'seed')})"
        )
    return (
        "Class-incremental learning on "
        + "; ".join(parts)
        + ". Final and average incremental accuracy in %; forgetting, drop since learned "
        "and BWT in percentage points (pp); mean ± std over seeds. Bold: the best method "
        "per column when no other has the same value. The lower bound (first row) and the "
        "upper bound (last row) are references, not ranked."
    )


TASK_AWARE_TITLE = (
    "Task-aware (each sample among its own experience's classes; not comparable with "
    "class-incremental numbers)"
)


def task_aware_caption(benchmark: Benchmark) -> str:
    """What the task-aware block of one benchmark shows, and why it stands apart."""
    return (
        f"Task-aware accuracy on {benchmark.label}: each test sample is scored only among "
        "the classes of its own experience, as if its experience were given at test time "
        "(the TAw accuracy of FACIL; Masana et al., TPAMI 2022); these numbers are not "
        "comparable with the class-incremental ones above. Final and average incremental "
        "accuracy in %; forgetting and BWT in percentage points (pp); mean ± std over seeds. "
        "Gap: task-aware minus task-agnostic final average accuracy of each seed (pp), the "
        "part of the final errors that is confusion between experiences (e.g. the head's "
        "bias towards new classes) rather than lost discrimination within one."
    )


def task_aware_notes(benchmark: Benchmark) -> list[str]:
    """A note on experiences of one class (always right task-aware), and one per variant
    whose records lack the task-aware matrix (all or some seeds)."""
    notes = []
    if "experiences" in benchmark.first.record:
        single = [i + 1 for i, classes in enumerate(benchmark.experiences) if len(classes) == 1]
        if single:
            notes.append(
                f"{len(single)} of {len(benchmark.experiences)} experiences hold a single class "
                f"(experience {', '.join(map(str, single))}): among its own classes a sample "
                "of those is always right, so their task-aware accuracy is 100% by "
                "construction and only the other experiences can fall below it."
            )
    for variant in benchmark.variants:
        lacking = [run.seed for run in variant.runs if run.task_aware_matrix is None]
        if len(lacking) == len(variant.runs):
            notes.append(
                f"{variant.label}: its records hold no task-aware accuracy (written before "
                "headbench stored it); not in this table."
            )
        elif lacking:
            notes.append(
                f"{variant.label}: the records of seed {', '.join(map(str, lacking))} hold no "
                "task-aware accuracy; its statistics are over the other seeds."
            )
    return notes


def seed_notes(benchmark: Benchmark) -> list[str]:
    """A note per strategy with fewer seeds than the benchmark's others, and record notes."""
    total = len(benchmark.seeds)
    notes = []
    for variant in benchmark.variants:
        missing = benchmark.missing_seeds(variant)
        if missing:
            notes.append(
                f"{variant.label} has {len(variant.runs)} of {total} seeds on "
                f"{benchmark.label} (missing or failed: seed {', '.join(map(str, missing))}); "
                "its statistics are over the seeds it has."
            )
        selections = {
            json.dumps(run.record["selection"], sort_keys=True)
            for run in variant.runs
            if "selection" in run.record
        }
        notes += [f"{variant.label}: {selection_note(json.loads(s))}." for s in sorted(selections)]
    return notes + benchmark.notes


def selection_note(selection: dict) -> str:
    """How `headbench tune` chose a variant's hyperparameters, in one sentence."""
    scope = (
        f"the first {selection['first_experiences']} experiences"
        if selection.get("first_experiences")
        else "all experiences"
    )
    if selection.get("validation_split") == "dataset":
        split = "the dataset's own validation split ("
    else:
        split = (
            f"a validation split of {100 * selection['validation_fraction']:g}% of the "
            f"training data (split seed {selection['validation_seed']}, "
        )
    return (
        f"{selection['chosen']} chosen by {selection['criterion']} on {split}{scope}, mean "
        f"over seeds {selection['seeds']}), not on the test set"
    )


@dataclass
class Report:
    """Everything a report writes, built in memory: relative path -> bytes."""

    files: dict[str, bytes] = field(default_factory=dict)
    markdown: str = ""  # the whole report.md
    summary: str = ""  # its main table(s) with captions and notes, for the terminal


def _summary_stats(
    summary: pd.DataFrame, benchmark: Benchmark
) -> dict[str, dict[str, aggregate.Stats]]:
    rows = summary[summary["benchmark"] == benchmark.label]
    return {
        metric: {
            row.strategy: aggregate.Stats(row.mean, row.std, row.ci95_low, row.ci95_high, row.n)
            for row in rows[rows["metric"] == metric].itertuples(index=False)
        }
        for metric in REPORT_METRICS
    }


def _figures(
    benchmark: Benchmark,
    summary: pd.DataFrame,
    styles: dict[str, plots.LineStyle],
    band: str,
) -> dict[str, Figure]:
    """The figures of one benchmark, by name (as in FIGURES); those without data left out."""
    stats = _summary_stats(summary, benchmark)
    figures = {
        "accuracy": plots.accuracy_figure(benchmark, styles, band),
        "heatmaps": plots.heatmap_figure(benchmark),
        "bars": plots.bars_figure(benchmark, stats, styles, band),
        "weight_norms": plots.weight_norms_figure(benchmark, styles),
        "newest_share": plots.newest_share_figure(benchmark, styles, band),
        "old_new": plots.old_new_figure(benchmark, styles, band),
        "old_labels": plots.old_labels_figure(benchmark, styles),
    }
    return {name: figure for name, figure in figures.items() if figure is not None}


def _markdown_tables(model: tables.TableModel) -> list[str]:
    return [
        model.caption + "\n",
        tables.markdown_table(model),
        *(f"> Note: {note}\n" for note in model.notes),
        "95% confidence intervals (Student t, n − 1 degrees of freedom):\n",
        tables.markdown_intervals(model),
        "Ranks per metric (1 = best; equal shown values share a rank):\n",
        tables.markdown_ranks(model),
    ]


def _terminal_summary(model: tables.TableModel) -> str:
    notes = "".join(f"Note: {note}\n" for note in model.notes)
    return f"{model.caption}\n\n{tables.markdown_table(model)}{notes}"


def _rows(benchmarks: list[Benchmark]) -> dict[str, tables.Row]:
    """How the tables print each strategy label: its name, cited keys and row group."""
    rows: dict[str, tables.Row] = {}
    for benchmark in benchmarks:
        for variant in benchmark.variants:
            group = row_order(variant.strategy)[0]
            rows.setdefault(
                variant.label, tables.Row(variant.name, tuple(variant.cite_keys), group)
            )
    return rows


def build(
    results_dir: Path,
    formats: list[str],
    by: str | None = None,
    source: str | None = None,
    names: str = "display",
    band: str = "ci95",
) -> Report:
    """Every file of the report, in memory. ReportError on bad input; nothing written.

    `names`: "display" prints the strategies as papers name them (WA, LwF), "registry" by
    their registry keys; `band`: what the figures draw around a mean (ci95, std, none).
    """
    if by is not None and by not in BY_CHOICES:
        raise ReportError(f"--by {by!r}: unknown; accepted: {', '.join(BY_CHOICES)}")
    if names not in NAMES_CHOICES:
        raise ReportError(f"--names {names!r}: unknown; accepted: {', '.join(NAMES_CHOICES)}")
    if band not in BAND_CHOICES:
        raise ReportError(f"--band {band!r}: unknown; accepted: {', '.join(BAND_CHOICES)}")
    benchmarks = group(load_runs(results_dir))
    if names == "registry":
        for benchmark in benchmarks:
            for variant in benchmark.variants:
                variant.name = variant.label
            benchmark.variants.sort(key=lambda v: (row_order(v.strategy), v.label))
    source = source or str(results_dir)
    version = citation.headbench_version()
    made_with = citation.made_with(version)
    papers = citation.strategy_papers(benchmarks)
    summary = aggregate.summarise_all(benchmarks)
    task_aware = {b.label: aggregate.summarise_task_aware(b) for b in benchmarks}
    styles = plots.strategy_styles([(v.label, v.strategy) for b in benchmarks for v in b.variants])
    captions = figure_captions(band)
    rows = _rows(benchmarks)
    report = Report()

    models = {
        b.label: tables.table_model(
            summary[summary["benchmark"] == b.label], table_caption([b]), seed_notes(b), rows
        )
        for b in benchmarks
    }
    wide = None
    if by == "benchmark":
        wide = tables.table_model(
            summary,
            table_caption(benchmarks),
            [note for b in benchmarks for note in seed_notes(b)],
            rows,
        )

    markdown = ["# headbench report\n", f"{made_with}\n"]
    summaries = []
    latex: dict[str, list[str]] = {"wide": [], "column": []}

    def add_latex(model: tables.TableModel, label: str) -> None:
        for layout, texts in latex.items():
            suffix = "" if layout == "wide" else "-column"
            texts.append(tables.latex_table(model, label + suffix, made_with, layout))

    if wide is not None:
        markdown += ["## All benchmarks\n", *_markdown_tables(wide)]
        summaries.append(_terminal_summary(wide))
        add_latex(wide, "tab:headbench")

    want_images = [f for f in formats if f in IMAGE_FORMATS]
    need_png = "png" in formats or "html" in formats
    sections = []
    for benchmark in benchmarks:
        model = models[benchmark.label]
        name = slug(benchmark.label)
        markdown.append(f"## {benchmark.label}\n")
        markdown.append(f"Setup: {describe_benchmark(benchmark)}.\n")
        if wide is None:
            markdown += _markdown_tables(model)
            summaries.append(_terminal_summary(model))
            add_latex(model, f"tab:headbench-{name}")
        aware_html = ""
        if len(task_aware[benchmark.label]):
            aware = tables.table_model(
                task_aware[benchmark.label],
                task_aware_caption(benchmark),
                task_aware_notes(benchmark),
                rows,
            )
            markdown += [
                f"### {TASK_AWARE_TITLE}\n",
                aware.caption + "\n",
                tables.markdown_table(aware),
                *(f"> Note: {note}\n" for note in aware.notes),
            ]
            aware_html = (
                f"<h3>{escape(TASK_AWARE_TITLE)}</h3>\n"
                + tables.html_table(aware)
                + "".join(f'<p class="note">{escape(note)}</p>' for note in aware.notes)
            )
        figures = _figures(benchmark, summary, styles, band) if want_images or need_png else {}
        embedded, listed = [], []
        for figure_name, figure in figures.items():
            title, caption = captions[figure_name]
            png = plots.render(figure, "png") if need_png else b""
            for image_format in want_images:
                path = f"figures/{name}-{figure_name}.{image_format}"
                data = png if image_format == "png" else plots.render(figure, image_format)
                report.files[path] = data
            if "png" in formats:
                listed.append(f"![{title}](figures/{name}-{figure_name}.png)\n\n{caption}\n")
            elif want_images:
                files = ", ".join(f"figures/{name}-{figure_name}.{f}" for f in want_images)
                listed.append(f"- {title} ({files}): {caption}\n")
            embedded.append(html.EmbeddedFigure(title, caption, png, figure_name == "heatmaps"))
        old_label_table = old_labels.markdown_table(benchmark)
        if old_label_table is not None:
            caption = old_labels.TABLE_CAPTION.format(count=old_labels.WORST_SHOWN)
            markdown += ["### Old-label check\n", caption + "\n", old_label_table]
        if old_label_table is not None and "csv" in formats:
            report.files[f"old_labels-{name}.csv"] = (
                pd.DataFrame(old_labels.table_rows(benchmark)).to_csv(index=False).encode()
            )
        if listed:
            markdown += ["### Figures\n", *listed]
        table_html = "" if wide is not None else tables.html_table(model)
        if aware_html and not table_html:  # wide mode: the description, then the block
            table_html = f"<p>{escape(describe_benchmark(benchmark))}</p>\n"
        sections.append(
            html.BenchmarkSection(
                benchmark,
                describe_benchmark(benchmark),
                table_html + aware_html,
                [] if wide is not None else model.notes,
                embedded,
            )
        )

    markdown += [
        "## Strategies\n",
        "".join(f"- **{name}**: {paper}\n" for name, paper in papers),
        "## How to cite\n",
        f"{made_with} Runs made with: {', '.join(citation.run_versions(benchmarks))}.\n",
    ]
    report.markdown = "\n".join(markdown)
    report.summary = "\n".join(summaries)
    if "md" in formats:
        report.files["report.md"] = report.markdown.encode()
    if "latex" in formats:
        report.files["tables.tex"] = "\n".join(latex["wide"]).encode()
        report.files["tables-column.tex"] = "\n".join(latex["column"]).encode()
        entries = [e for b in benchmarks for v in b.variants for e in v.references]
        report.files["references.bib"] = tables.bibtex(entries).encode()
    if "csv" in formats:
        report.files["summary.csv"] = summary.to_csv(index=False).encode()
        report.files["steps.csv"] = aggregate.steps_frame(benchmarks).to_csv(index=False).encode()
        frames = [frame for frame in task_aware.values() if len(frame)]
        if frames:  # none when every record predates the task-aware matrix: no file
            aware_frame = pd.concat(frames, ignore_index=True)
            aware_frame["metric"] = "task_aware_" + aware_frame["metric"]
            report.files["task_aware.csv"] = aware_frame.to_csv(index=False).encode()
    if "html" in formats:
        wide_html = None
        if wide is not None:
            wide_html = tables.html_table(wide) + "".join(
                f'<p class="note">{escape(note)}</p>' for note in wide.notes
            )
        page = html.html_report(
            "headbench report",
            source,
            sections,
            wide_html,
            tables.UNITS,
            papers,
            made_with,
            citation.run_versions(benchmarks),
        )
        report.files["report.html"] = page.encode()
    return report


def write(report: Report, out: Path) -> list[Path]:
    """Write every file of `report` under `out`; ReportError if `out` is not writable."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out}: is a file; accepted: a directory (created if absent)")
    directories = sorted({(out / name).parent for name in report.files})
    created = [d for d in [out, *directories] if not d.exists()]
    try:
        for directory in directories:
            directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, data in report.files.items():
            atomic_write_bytes(out / name, data)
            written.append(out / name)
    except OSError as error:
        for directory in reversed(created):
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
        raise ReportError(
            f"--out {out}: cannot write there ({error.strerror}); accepted: a writable directory"
        ) from None
    return written


def make_report(
    results_dir: str | Path,
    out: str | Path | None = None,
    formats: str | None = None,
    by: str | None = None,
    names: str = "display",
    band: str = "ci95",
) -> tuple[Report, Path, list[Path]]:
    """Check, build and write a report; returns it, its folder and the files written."""
    chosen = parse_formats(formats)
    results = Path(results_dir)
    report = build(results, chosen, by, source=str(results_dir), names=names, band=band)
    target = Path(out) if out is not None else results / "report"
    return report, target, write(report, target)


def run_command(args: argparse.Namespace) -> int:
    """Write the report, print its Markdown tables and the files; ReportError propagates."""
    report, out, written = make_report(
        args.results,
        args.out,
        args.formats,
        args.by,
        getattr(args, "names", "display"),
        getattr(args, "band", "ci95"),
    )
    print(report.summary)
    print(f"report: {len(written)} files in {out}/:")
    for path in written:
        print(f"  {path.relative_to(out)}")
    sys.stdout.flush()
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(2, f"headbench: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    """`python -m reports RESULTS_DIR [--out DIR] [--format ...] [--by benchmark]`."""
    parser = _Parser(prog="python -m reports", description="Tables, plots and an HTML report.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except ReportError as error:
        print(f"headbench: error: {error}", file=sys.stderr)
        return 2
