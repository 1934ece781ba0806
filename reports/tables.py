"""Summaries over seeds from saved run records: tidy CSV, Markdown, LaTeX and HTML tables.

Works from the records alone (dicts as stored in OUT/runs/*.json); never imports the
engine. Accuracies are shown in percent, forgetting and BWT in percentage points.
`headbench run` prints and writes the same summary as `headbench report` (multi-seed
tables with intervals, ranks and notes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape

import pandas as pd

from reports.bibliography import entry_key
from reports.metrics import REPORT_METRICS, TASK_AWARE_METRICS


def _cell(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(std):
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


# ---------------------------------------------------------------------------------------
# `headbench report`: multi-seed tables in Markdown, LaTeX (booktabs) and HTML, all drawn
# from the tidy summary of reports.aggregate (one row per benchmark × strategy × metric).

UNIT = {
    "final_accuracy": "%",
    "average_incremental_accuracy": "%",
    "forgetting": "pp",
    "drop_since_learned": "pp",
    "bwt": "pp",
    "gap": "pp",
}
"""Each report metric's unit: accuracies in percent, the differences of accuracies in
percentage points (pp)."""
UNITS = (
    "accuracies in %, forgetting, drop since learned and BWT in percentage points (pp); "
    "mean ± std over seeds (n − 1); ↑ higher is better, ↓ lower is better; "
    "bold: the best method per column, only when it is the only one with that value "
    "(ties are not bolded); the lower bound (listed first) and the upper bound (listed "
    "last) are references, never ranked or bolded"
)
LATEX_HEADERS = {
    "final_accuracy": "Final acc.\\ (\\%)",
    "average_incremental_accuracy": "Avg.\\ inc.\\ acc.\\ (\\%)",
    "forgetting": "Forgetting (pp)",
    "drop_since_learned": "Drop (pp)",
    "bwt": "BWT (pp)",
}


@dataclass(frozen=True)
class Cell:
    """One table cell: a metric over the seeds of one strategy on one benchmark. `best`:
    the only method with the best shown mean in its column (ties bold nobody)."""

    mean: float
    std: float
    ci95_low: float
    ci95_high: float
    rank: int | None
    best: bool = False


@dataclass(frozen=True)
class Row:
    """How a table prints one strategy: its name, the keys it cites, its group (0: lower
    bound, 1: method, 2: upper bound; the rows are already in this order)."""

    name: str
    cite_keys: tuple[str, ...] = ()
    group: int = 1


@dataclass
class TableModel:
    """Rows of strategies; columns grouped by benchmark, one per metric, plus seeds."""

    caption: str
    benchmarks: list[str]
    metrics: list[str]
    strategies: list[str]
    cells: dict[tuple[str, str, str], Cell]  # (strategy, benchmark, metric)
    seeds: dict[tuple[str, str], int]  # (strategy, benchmark) -> runs
    notes: list[str]
    rows: dict[str, Row] = field(default_factory=dict)  # strategy label -> how to print it

    def cell(self, strategy: str, benchmark: str, metric: str) -> Cell | None:
        return self.cells.get((strategy, benchmark, metric))

    def row(self, strategy: str) -> Row:
        return self.rows.get(strategy, Row(strategy))


def table_model(
    summary: pd.DataFrame, caption: str, notes: list[str], rows: dict[str, Row] | None = None
) -> TableModel:
    """The table of the benchmarks in `summary` (SUMMARY_COLUMNS rows), strategies in order."""
    benchmarks = list(dict.fromkeys(summary["benchmark"]))
    strategies = list(dict.fromkeys(summary["strategy"]))
    metrics = list(dict.fromkeys(summary["metric"]))
    firsts = (
        summary[summary["rank"].eq(1).fillna(False).astype(bool)]
        .groupby(["benchmark", "metric"])
        .size()
    )
    cells, seeds = {}, {}
    for row in summary.itertuples(index=False):
        rank = None if pd.isna(row.rank) else int(row.rank)
        unique = rank == 1 and firsts.get((row.benchmark, row.metric), 0) == 1
        cells[row.strategy, row.benchmark, row.metric] = Cell(
            row.mean, row.std, row.ci95_low, row.ci95_high, rank, unique
        )
        if row.metric == "final_accuracy":  # defined for every run, so n = the runs
            seeds[row.strategy, row.benchmark] = int(row.n)
    return TableModel(caption, benchmarks, metrics, strategies, cells, seeds, notes, rows or {})


def _header(metric: str) -> str:
    name, higher_is_better = REPORT_METRICS.get(metric) or TASK_AWARE_METRICS[metric]
    if higher_is_better is None:  # the task-aware gap: a measurement, not a score
        return f"{name} ({UNIT[metric]})"
    return f"{name} ({UNIT[metric]}) {'↑' if higher_is_better else '↓'}"


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def _interval(cell: Cell) -> str:
    if math.isnan(cell.ci95_low):
        return "n/a"
    return f"[{_percent(cell.ci95_low)}, {_percent(cell.ci95_high)}]"


def _columns(model: TableModel) -> list[tuple[str, str | None]]:
    """(benchmark, metric) per value column; metric None is that benchmark's seeds column."""
    return [
        (benchmark, metric) for benchmark in model.benchmarks for metric in [*model.metrics, None]
    ]


def _markdown_grid(model: TableModel, value: Callable[[Cell], str]) -> str:
    wide = len(model.benchmarks) > 1
    header = ["strategy"]
    for benchmark, metric in _columns(model):
        name = _header(metric) if metric else "seeds"
        header.append(f"{benchmark}: {name}" if wide else name)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for strategy in model.strategies:
        cells = [model.row(strategy).name]
        for benchmark, metric in _columns(model):
            if metric is None:
                seeds = model.seeds.get((strategy, benchmark))
                cells.append("–" if seeds is None else str(seeds))
                continue
            cell = model.cell(strategy, benchmark, metric)
            cells.append("–" if cell is None else value(cell))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_table(model: TableModel) -> str:
    """The README-ready table: `mean ± std` (percent) per metric, the best in bold."""

    def value(cell: Cell) -> str:
        text = _cell(cell.mean, cell.std)
        return f"**{text}**" if cell.best else text

    return _markdown_grid(model, value)


def markdown_intervals(model: TableModel) -> str:
    """95% confidence intervals (Student t, n − 1 degrees of freedom), percent."""
    return _markdown_grid(model, _interval)


def markdown_ranks(model: TableModel) -> str:
    """Rank per metric (1 = best; ties share the better rank)."""
    return _markdown_grid(model, lambda cell: "–" if cell.rank is None else str(cell.rank))


# LaTeX ----------------------------------------------------------------------------------

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "–": "--",
    "—": "---",
    "−": "-",
    "±": r"$\pm$",
    "≤": r"$\leq$",
    "×": r"$\times$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
}


def latex_escape(text: str) -> str:
    """Text safe in a LaTeX document: special characters escaped, a few symbols as math."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def _latex_value(cell: Cell | None) -> str:
    if cell is None:
        return "--"
    if math.isnan(cell.mean):
        return "n/a"
    text = _percent(cell.mean)
    if not math.isnan(cell.std):
        text += rf" \pm {_percent(cell.std)}"
    return rf"$\mathbf{{{text}}}$" if cell.best else f"${text}$"


LATEX_PACKAGES = r"\usepackage{booktabs}, \usepackage{graphicx}"
LATEX_LAYOUTS = {
    "wide": ("table*", r"\textwidth", "spans both columns of a two-column paper"),
    "column": ("table", r"\columnwidth", "fits one column"),
}
"""Layout -> (float, the width the tabular is held to, what it is for)."""


def _latex_name(row: Row) -> str:
    name = latex_escape(row.name)
    return rf"{name}~\cite{{{','.join(row.cite_keys)}}}" if row.cite_keys else name


def latex_table(model: TableModel, label: str, comment: str, layout: str = "wide") -> str:
    """A booktabs table float: `mean ± std` cells, a unique best per column in bold, the
    strategies' papers cited (`\\cite`, keys in references.bib), the bounds set apart by
    rules. `layout` "wide" is a `table*` held to `\\textwidth`, "column" a `table` held to
    `\\columnwidth`: a tabular wider than that is scaled down to it (`\\resizebox`), a
    narrower one keeps its size. Needs `\\usepackage{booktabs}` and `{graphicx}`.
    """
    environment, width, purpose = LATEX_LAYOUTS[layout]
    wide = len(model.benchmarks) > 1
    per_group = len(model.metrics) + 1
    columns = _columns(model)
    lines = [
        f"% Made by headbench report; needs {LATEX_PACKAGES} and the entries of references.bib.",
        f"% {environment}: {purpose}. {comment}",
        rf"\begin{{{environment}}}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(model.caption)}}}",
        rf"\label{{{label}}}",
        r"\small",
        rf"\resizebox{{\ifdim\width>{width}{width}\else\width\fi}}{{!}}{{%",
        rf"\begin{{tabular}}{{l{'r' * len(columns)}}}",
        r"\toprule",
    ]
    if wide:
        groups = [
            rf"\multicolumn{{{per_group}}}{{c}}{{{latex_escape(benchmark)}}}"
            for benchmark in model.benchmarks
        ]
        lines.append(" & " + " & ".join(groups) + r" \\")
        rules = [
            rf"\cmidrule(lr){{{2 + k * per_group}-{1 + (k + 1) * per_group}}}"
            for k in range(len(model.benchmarks))
        ]
        lines.append(" ".join(rules))
    header = ["Strategy"]
    for _, metric in columns:
        if metric is None:
            header.append("$n$")
        else:
            arrow = r"$\uparrow$" if REPORT_METRICS[metric][1] else r"$\downarrow$"
            header.append(f"{LATEX_HEADERS[metric]} {arrow}")
    lines += [" & ".join(header) + r" \\", r"\midrule"]
    previous = None
    for strategy in model.strategies:
        row = model.row(strategy)
        if previous is not None and row.group != previous:
            lines.append(r"\midrule")  # the bounds apart from the methods
        previous = row.group
        cells = [_latex_name(row)]
        for benchmark, metric in columns:
            if metric is None:
                seeds = model.seeds.get((strategy, benchmark))
                cells.append("--" if seeds is None else str(seeds))
            else:
                cells.append(_latex_value(model.cell(strategy, benchmark, metric)))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}"]
    if model.notes:
        lines += [
            r"\par\smallskip",
            r"{\footnotesize " + latex_escape(" ".join(model.notes)) + "\\par}",
        ]
    lines.append(rf"\end{{{environment}}}")
    return "\n".join(lines) + "\n"


def bibtex(entries: list[str]) -> str:
    """references.bib: each entry once (by key, first kept), in the order given."""
    unique = {}
    for entry in entries:
        unique.setdefault(entry_key(entry), entry.strip())
    header = "% The papers of the strategies cited in tables.tex (made by headbench report).\n"
    return header + "".join(f"\n{entry}\n" for entry in unique.values())


# HTML -----------------------------------------------------------------------------------


def html_table(model: TableModel) -> str:
    """The summary as an HTML table: `mean ± std` with the 95% CI below, the best in bold."""
    wide = len(model.benchmarks) > 1
    per_group = len(model.metrics) + 1
    parts = ['<table class="summary">', f"<caption>{escape(model.caption)}</caption>", "<thead>"]
    if wide:
        parts.append(
            "<tr><th></th>"
            + "".join(
                f'<th colspan="{per_group}">{escape(benchmark)}</th>'
                for benchmark in model.benchmarks
            )
            + "</tr>"
        )
    header = "".join(
        f"<th>{escape(_header(metric) if metric else 'seeds')}</th>"
        for _, metric in _columns(model)
    )
    parts += [f"<tr><th>strategy</th>{header}</tr>", "</thead>", "<tbody>"]
    for strategy in model.strategies:
        cells = [f'<th scope="row">{escape(model.row(strategy).name)}</th>']
        for benchmark, metric in _columns(model):
            if metric is None:
                seeds = model.seeds.get((strategy, benchmark))
                cells.append(f"<td>{'–' if seeds is None else seeds}</td>")
                continue
            cell = model.cell(strategy, benchmark, metric)
            if cell is None:
                cells.append("<td>–</td>")
                continue
            value = escape(_cell(cell.mean, cell.std))
            if cell.best:
                value = f"<strong>{value}</strong>"
            cells.append(f'<td>{value}<br><span class="ci">{_interval(cell)}</span></td>')
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts += ["</tbody>", "</table>"]
    return "\n".join(parts) + "\n"
