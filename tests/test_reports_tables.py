"""Every number in every report table (Markdown, CSV, LaTeX, HTML) equals the one
recomputed from the run records' JSON by an independent path (test_reports_support:
plain Python metrics, `statistics.stdev`, scipy's Student t), on real records of a short
run and on hand-made records with a missing seed; plus grouping of merged folders.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_blobs, write_config
from test_reports_support import (
    METRIC_COLUMNS,
    REFERENCES,
    HtmlCollector,
    best_strategies,
    expected_summary,
    keyed,
    make_record,
    markdown_tables,
    metrics_of,
    parse_mean_std,
    printed_names,
    read_records,
    table_order,
    write_records,
)

from benchmarks.cli import main
from reports.records import ReportError
from reports.report import make_report

HALF_CENT = 0.005 + 1e-9  # a value shown with two decimals is within this of the truth


@pytest.fixture(scope="module")
def real_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four strategies, seeds 0-2, on overlapping blobs (B2 Inc2): real, varied records."""
    directory = tmp_path_factory.mktemp("real")
    npz = directory / "noisy.npz"
    np.savez(npz, **make_blobs(spread=1.2))
    config = write_config(directory, npz)
    out = directory / "results"
    strategies = [f"--strategy={name}" for name in ("naive", "weight_aligning", "lwf", "joint")]
    code = main(["run", str(config), "--out", str(out), "--quiet", "--seeds", "0-2", *strategies])
    assert code == 0
    return out


# Hand-made: alpha and beta have seeds 0-2, gamma lacks seed 2 (a failed run).
TOY = {
    ("alpha", 0): [[0.9, None, None], [0.6, 0.8, None], [0.5, 0.7, 0.9]],
    ("alpha", 1): [[0.8, None, None], [0.5, 0.9, None], [0.4, 0.6, 0.8]],
    ("alpha", 2): [[1.0, None, None], [0.7, 0.7, None], [0.6, 0.8, 1.0]],
    ("beta", 0): [[0.9, None, None], [0.9, 0.8, None], [0.8, 0.7, 0.6]],
    ("beta", 1): [[0.7, None, None], [0.8, 0.9, None], [0.7, 0.8, 0.7]],
    ("beta", 2): [[0.8, None, None], [0.7, 0.7, None], [0.6, 0.6, 0.5]],
    ("gamma", 0): [[0.5, None, None], [0.2, 0.9, None], [0.1, 0.2, 1.0]],
    ("gamma", 1): [[0.6, None, None], [0.3, 0.8, None], [0.0, 0.1, 0.9]],
}


@pytest.fixture
def toy_results(tmp_path: Path) -> Path:
    records = [
        make_record(strategy, seed, matrix, counts=[20, 10, 10])
        for (strategy, seed), matrix in TOY.items()
    ]
    return write_records(tmp_path / "toy", records)


def build(results: Path, out: Path, **options) -> Path:
    make_report(results, out, **options)
    return out


def check_main_table(table: list[list[str]], records: list[dict]) -> None:
    """Header, every `mean ± std`, the bold cells and the seeds column of a Markdown table."""
    expected = expected_summary(records)
    header, *rows = keyed(table, records)
    names = [name for name, _, _ in METRIC_COLUMNS.values()]
    assert [re.sub(r" [↑↓]$", "", h) for h in header] == ["strategy", *names, "seeds"]
    strategies = table_order({r["strategy"] for r in records})
    assert [row[0] for row in rows] == strategies
    for row in rows:
        strategy = row[0]
        assert int(row[-1]) == sum(r["strategy"] == strategy for r in records)
        for metric, cell in zip(METRIC_COLUMNS, row[1:-1], strict=True):
            mean, std, bold = parse_mean_std(cell)
            truth = expected[strategy, metric]
            assert abs(mean - 100 * truth["mean"]) <= HALF_CENT, (strategy, metric, cell)
            assert abs(std - 100 * truth["std"]) <= HALF_CENT, (strategy, metric, cell)
            assert bold == (strategy in best_strategies(expected, metric)), (strategy, metric)


def check_interval_table(table: list[list[str]], records: list[dict]) -> None:
    expected = expected_summary(records)
    table = keyed(table, records)
    for row in table[1:]:
        for metric, cell in zip(METRIC_COLUMNS, row[1:-1], strict=True):
            low, high = (float(x) for x in cell.strip("[]").split(","))
            truth = expected[row[0], metric]
            assert abs(low - 100 * truth["ci95_low"]) <= HALF_CENT, (row[0], metric)
            assert abs(high - 100 * truth["ci95_high"]) <= HALF_CENT, (row[0], metric)


def check_rank_table(table: list[list[str]], records: list[dict]) -> None:
    expected = expected_summary(records)
    table = keyed(table, records)
    for metric, column in zip(METRIC_COLUMNS, range(1, 6), strict=True):
        higher = METRIC_COLUMNS[metric][2]
        methods = [row for row in table[1:] if row[0] not in REFERENCES]
        shown = {row[0]: round(100 * expected[row[0], metric]["mean"], 2) for row in methods}
        for row in table[1:]:
            if row[0] in REFERENCES:
                assert row[column] == "–", (row[0], metric)
                continue
            better = [
                v for v in shown.values() if (v > shown[row[0]] if higher else v < shown[row[0]])
            ]
            assert int(row[column]) == 1 + len(better), (row[0], metric)


@pytest.mark.parametrize("results_name", ["real_results", "toy_results"])
def test_markdown_tables_equal_the_independent_recomputation(results_name, request, tmp_path):
    results = request.getfixturevalue(results_name)
    records = read_records(results)
    text = (build(results, tmp_path / "report", formats="md") / "report.md").read_text()
    main_table, intervals, ranks, *later = markdown_tables(text)
    # Real runs add the task-aware block's table (tests/test_task_aware.py) and, with
    # per-class counts, the old-label check (tests/test_old_label_check.py).
    aware = all("task_aware_accuracy_matrix" in record for record in records)
    old_label = all("class_accuracy" in record for record in records)
    assert len(later) == aware + old_label
    check_main_table(main_table, records)
    check_interval_table(intervals, records)
    check_rank_table(ranks, records)


def test_the_toy_table_can_be_read_by_eye(toy_results, tmp_path):
    text = (build(toy_results, tmp_path / "r", formats="md") / "report.md").read_text()
    rows = {row[0]: row for row in markdown_tables(text)[0][1:]}
    # alpha's final accuracy per seed, test counts 20, 10, 10:
    # seed 0: (20·0.5 + 10·0.7 + 10·0.9) / 40 = 26 / 40 = 0.65; seed 1: (8 + 6 + 8) / 40
    # = 0.55; seed 2: (12 + 8 + 10) / 40 = 0.75. Mean 65.00, std 10.00 (deviations ±10).
    assert rows["alpha"][1] == "65.00 ± 10.00"
    # gamma, two seeds: (2 + 2 + 10) / 40 = 0.35 and (0 + 1 + 9) / 40 = 0.25 -> 30.00 ± 7.07.
    assert rows["gamma"][1] == "30.00 ± 7.07"
    assert rows["gamma"][-1] == "2" and rows["alpha"][-1] == "3"


def test_a_strategy_with_fewer_seeds_is_stated_not_averaged_away(toy_results, tmp_path):
    out = build(toy_results, tmp_path / "r", formats="md,csv,html,latex")
    text = (out / "report.md").read_text()
    notes = [line for line in text.splitlines() if line.startswith("> Note:")]
    assert len(notes) == 1
    assert "gamma has 2 of 3 seeds" in notes[0] and "seed 2" in notes[0]
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    gamma = summary[summary.strategy == "gamma"]
    assert set(gamma["n"]) == {2} and set(gamma["missing_seeds"].astype(str)) == {"2"}
    assert set(summary[summary.strategy == "alpha"]["missing_seeds"].astype(str)) == {""}
    assert "gamma has 2 of 3 seeds" in (out / "report.html").read_text()
    assert "gamma has 2 of 3 seeds" in (out / "tables.tex").read_text()


@pytest.mark.parametrize("results_name", ["real_results", "toy_results"])
def test_summary_csv_is_tidy_and_equals_the_independent_recomputation(
    results_name, request, tmp_path
):
    results = request.getfixturevalue(results_name)
    records = read_records(results)
    expected = expected_summary(records)
    summary = pd.read_csv(build(results, tmp_path / "r", formats="csv") / "summary.csv")
    strategies = {r["strategy"] for r in records}
    assert len(summary) == len(strategies) * len(METRIC_COLUMNS)
    assert not summary.duplicated(["benchmark", "strategy", "metric"]).any()
    for row in summary.itertuples():
        truth = expected[row.strategy, row.metric]
        for key in ("mean", "std", "ci95_low", "ci95_high"):
            assert getattr(row, key) == pytest.approx(truth[key], abs=1e-12), (row, key)
        assert row.n == truth["n"]
        assert row.higher_is_better == METRIC_COLUMNS[row.metric][2]
        assert (row.rank == 1 if not pd.isna(row.rank) else False) == (
            row.strategy in best_strategies(expected, row.metric)
        )


def test_steps_csv_holds_old_and_new_accuracy_per_experience(toy_results, tmp_path):
    steps = pd.read_csv(build(toy_results, tmp_path / "r", formats="csv") / "steps.csv")
    alpha = steps[(steps.strategy == "alpha")].set_index(["quantity", "experience"])
    # Experiences are numbered 1..3, as in the figures. After experience 3 (row 2 of the
    # matrix), seed 0: old = (20·0.5 + 10·0.7) / 30 = 17 / 30; seed 1: (8 + 6) / 30; seed 2:
    # (12 + 8) / 30. Mean (17 + 14 + 20) / 90.
    assert alpha.loc[("old_accuracy", 3), "mean"] == pytest.approx(51 / 90)
    # New = the diagonal R[2][2]: 0.9, 0.8, 1.0.
    assert alpha.loc[("new_accuracy", 3), "mean"] == pytest.approx(0.9)
    assert math.isnan(alpha.loc[("old_accuracy", 1), "mean"])
    assert list(alpha.loc["accuracy_seen"].index) == [1, 2, 3]
    assert list(alpha.loc["accuracy_seen", "classes_seen"]) == [2, 4, 6]


# ---------------------------------------------------------------------------------------
# LaTeX


def latex_rows(text: str) -> list[list[str]]:
    body = text.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0]
    return [
        [cell.strip() for cell in line.rstrip().removesuffix("\\\\").split(" & ")]
        for line in body.strip().splitlines()
        if line.strip() != "\\midrule"
    ]


def parse_latex_cell(cell: str) -> tuple[float, float, bool]:
    match = re.fullmatch(r"\$(\\mathbf\{)?(-?[\d.]+) \\pm (-?[\d.]+)\}?\$", cell)
    assert match, cell
    return float(match[2]), float(match[3]), match[1] is not None


def braces_balance(text: str) -> bool:
    depth = 0
    for match in re.finditer(r"(?<!\\)[{}]", text):
        depth += 1 if match[0] == "{" else -1
        if depth < 0:
            return False
    return depth == 0


def printed_row_name(record: dict) -> str:
    """`Name~\\cite{keys}` as tables.tex should print a strategy, from the record alone."""
    name = record.get("display_name", record["strategy"]).replace("_", "\\_")
    keys = [re.match(r"@\w+\{([^,]+),", entry)[1] for entry in record.get("references", [])]
    return f"{name}~\\cite{{{','.join(keys)}}}" if keys else name


@pytest.mark.parametrize("results_name", ["real_results", "toy_results"])
def test_latex_table_numbers_bold_and_structure(results_name, request, tmp_path):
    results = request.getfixturevalue(results_name)
    records = read_records(results)
    expected = expected_summary(records)
    text = (build(results, tmp_path / "r", formats="latex") / "tables.tex").read_text()
    # booktabs, in order; a tabular with one column per metric plus seeds, held to the
    # text width; one more \midrule after the lower bound and before the upper bound.
    positions = [text.index(rule) for rule in ("\\toprule", "\\midrule", "\\bottomrule")]
    assert positions == sorted(positions)
    assert text.count("\\toprule") == text.count("\\bottomrule") == 1
    bounds = {r["strategy"] for r in records} & set(REFERENCES)
    assert text.count("\\midrule") == 1 + len(bounds)
    assert "\\begin{tabular}{lrrrrrr}" in text and "\\hline" not in text
    assert "\\resizebox{\\ifdim\\width>\\textwidth\\textwidth\\else\\width\\fi}{!}{%" in text
    assert braces_balance(text)
    assert text.count("\\begin{table*}") == text.count("\\end{table*}") == 1
    # Every underscore is escaped (labels and cite keys may keep theirs).
    unlabelled = re.sub(r"\\(label|cite)\{[^}]*\}", "", text)
    assert not re.search(r"(?<!\\)_", unlabelled.replace("\\_", ""))
    caption = re.search(r"\\caption\{(.*)\}\n", text)[1]
    benchmark = records[0]["benchmark"].replace("_", "\\_")
    for part in (benchmark, "identity backbone", "3 seeds", "in \\%", "percentage points"):
        assert part in caption, part
    assert "class order" not in caption and "bias" not in caption  # no config dump
    header = re.search(r"^Strategy & (.*) \\\\$", text, re.M)[1].split(" & ")
    assert header[:3] == [
        "Final acc.\\ (\\%) $\\uparrow$",
        "Avg.\\ inc.\\ acc.\\ (\\%) $\\uparrow$",
        "Forgetting (pp) $\\downarrow$",
    ]
    assert "headbench" in text and "CITATION.cff" in text
    rows = latex_rows(text)
    by_name = {printed_row_name(r): r["strategy"] for r in records}
    assert [row[0] for row in rows] == [
        next(n for n, k in by_name.items() if k == s)
        for s in table_order({r["strategy"] for r in records})
    ]
    for row in rows:
        strategy = by_name[row[0]]
        assert int(row[-1]) == sum(r["strategy"] == strategy for r in records)
        for metric, cell in zip(METRIC_COLUMNS, row[1:-1], strict=True):
            mean, std, bold = parse_latex_cell(cell)
            truth = expected[strategy, metric]
            assert abs(mean - 100 * truth["mean"]) <= HALF_CENT, (strategy, metric)
            assert abs(std - 100 * truth["std"]) <= HALF_CENT, (strategy, metric)
            assert bold == (strategy in best_strategies(expected, metric)), (strategy, metric)
    # Forgetting is bold at its lowest value, final accuracy at its highest.
    assert METRIC_COLUMNS["forgetting"][2] is False


def test_real_records_print_the_papers_names_and_cite_them(real_results, tmp_path):
    out = build(real_results, tmp_path / "r", formats="latex,md")
    names = [row[0] for row in latex_rows((out / "tables.tex").read_text())]
    # Typed from the papers: Zhao et al. CVPR 2020 (WA), Li & Hoiem TPAMI 2018 (LwF).
    assert names == [
        "Fine-tuning",
        "LwF~\\cite{li2018learning}",
        "WA~\\cite{zhao2020maintaining}",
        "Joint",
    ]
    bib = (out / "references.bib").read_text()
    assert re.findall(r"^@(\w+)\{([^,]+),", bib, re.M) == [
        ("article", "li2018learning"),
        ("inproceedings", "zhao2020maintaining"),
    ]
    assert [row[0] for row in markdown_tables((out / "report.md").read_text())[0][1:]] == [
        "Fine-tuning",
        "LwF",
        "WA",
        "Joint",
    ]
    registry = build(real_results, tmp_path / "k", formats="md", names="registry")
    rows = markdown_tables((registry / "report.md").read_text())[0][1:]
    assert [row[0] for row in rows] == ["naive", "lwf", "weight_aligning", "joint"]


LATEX_ENGINES = [name for name in ("pdflatex", "lualatex") if shutil.which(name)]


def _compile(tmp_path: Path, body: str, bib: bool = False) -> str:
    """The log of a twocolumn article with `body`; bibtex between runs when asked."""
    document = tmp_path / "paper.tex"
    document.write_text(
        "\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
        f"\\begin{{document}}\n{body}\n\\end{{document}}\n"
    )
    passes = [[LATEX_ENGINES[0], "-interaction=nonstopmode", "-halt-on-error", "paper.tex"]]
    if bib:
        passes += [["bibtex", "paper"], passes[0], passes[0]]
    for command in passes:
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "paper.pdf").stat().st_size > 0
    return (tmp_path / "paper.log").read_text(errors="replace")


@pytest.mark.skipif(not LATEX_ENGINES, reason="no pdflatex or lualatex installed")
@pytest.mark.parametrize("by", [None, "benchmark"])
def test_latex_tables_compile_fit_their_width_and_cite_references_bib(by, tmp_path):
    results = _two_benchmarks(tmp_path / "merged") if by else None
    if results is None:
        records = [make_record(s, seed, m) for (s, seed), m in TOY.items()]
        records += [make_record(s, 0, TOY["alpha", 0]) for s in ("ewc", "slda")]
        results = write_records(tmp_path / "toy", records)
    out = build(results, tmp_path / "r", formats="latex", by=by)
    body = (
        f"\\input{{{(out / 'tables.tex').as_posix()}}}\n"
        f"\\input{{{(out / 'tables-column.tex').as_posix()}}}\n"
    )
    if shutil.which("bibtex") and not by:
        shutil.copy(out / "references.bib", tmp_path / "references.bib")
        body += "\\bibliographystyle{plain}\n\\bibliography{references}\n"
        log = _compile(tmp_path, body, bib=True)
        assert "undefined" not in log, log[-2000:]
        cited = (tmp_path / "paper.bbl").read_text()
        assert "Kirkpatrick" in cited and "Hayes" in cited
    else:
        log = _compile(tmp_path, body)
    # Neither float sticks out of its width (a tabular wider than \columnwidth does:
    # the same table without \resizebox is overfull, below).
    assert "Overfull \\hbox" not in log, log[-3000:]
    column = (out / "tables-column.tex").read_text()
    assert "\\begin{table}[t]" in column and "\\columnwidth" in column
    unscaled = column.replace(
        "\\resizebox{\\ifdim\\width>\\columnwidth\\columnwidth\\else\\width\\fi}{!}{%", "{%"
    )
    assert unscaled != column
    control = tmp_path / "control"
    control.mkdir()
    (control / "unscaled.tex").write_text(unscaled)
    assert "Overfull \\hbox" in _compile(control, "\\input{unscaled.tex}")


# ---------------------------------------------------------------------------------------
# HTML tables


@pytest.mark.parametrize("results_name", ["real_results", "toy_results"])
def test_html_summary_table_equals_the_independent_recomputation(results_name, request, tmp_path):
    results = request.getfixturevalue(results_name)
    records = read_records(results)
    expected = expected_summary(records)
    page = HtmlCollector()
    page.feed((build(results, tmp_path / "r", formats="html") / "report.html").read_text())
    summary = page.tables[0]
    strategies = table_order({r["strategy"] for r in records})
    names = printed_names(records)
    assert [row[0][0] for row in summary[1:]] == [names[s] for s in strategies]
    keys = {name: key for key, name in names.items()}
    for row in summary[1:]:
        strategy = keys[row[0][0]]
        assert int(row[-1][0]) == sum(r["strategy"] == strategy for r in records)
        for metric, (text, bold) in zip(METRIC_COLUMNS, row[1:-1], strict=True):
            shown, interval = text.split("\n")
            mean, std, _ = parse_mean_std(shown)
            low, high = (float(x) for x in interval.strip().strip("[]").split(","))
            truth = expected[strategy, metric]
            for value, key in (
                (mean, "mean"),
                (std, "std"),
                (low, "ci95_low"),
                (high, "ci95_high"),
            ):
                assert abs(value - 100 * truth[key]) <= HALF_CENT, (strategy, metric, key)
            assert bold == (strategy in best_strategies(expected, metric)), (strategy, metric)


def test_html_per_run_table_lists_every_run_with_its_metrics(toy_results, tmp_path):
    records = read_records(toy_results)
    page = HtmlCollector()
    page.feed((build(toy_results, tmp_path / "r", formats="html") / "report.html").read_text())
    runs = next(t for t in page.tables if t[0][0][0] == "run")
    by_id = {row[0][0]: row for row in runs[1:]}
    assert set(by_id) == {r["run_id"] for r in records}
    for record in records:
        row = by_id[record["run_id"]]
        values = metrics_of(record)
        for metric, (text, _) in zip(METRIC_COLUMNS, row[3:8], strict=True):
            assert abs(float(text) - 100 * values[metric]) <= HALF_CENT


# ---------------------------------------------------------------------------------------
# Merged folders: several benchmarks, several hyperparameter sets, duplicates


def _two_benchmarks(directory: Path) -> Path:
    first = [make_record(s, seed, TOY[s, seed], benchmark="first") for s, seed in TOY]
    # The second benchmark has two experiences (the toy matrices cut) and no beta.
    second = [
        make_record(s, seed, [row[:2] for row in TOY[s, seed][:2]], benchmark="second")
        for s, seed in TOY
        if s != "beta"
    ]
    write_records(directory / "machine_a", first)
    write_records(directory / "machine_b", second)
    return directory


def test_several_benchmarks_get_one_table_each(tmp_path):
    results = _two_benchmarks(tmp_path / "merged")
    text = (build(results, tmp_path / "r", formats="md") / "report.md").read_text()
    assert "## first" in text and "## second" in text
    tables = markdown_tables(text)
    assert len(tables) == 6  # main, intervals, ranks per benchmark
    first, second = tables[0], tables[3]
    check_main_table(first, [r for r in read_records(results) if r["benchmark"] == "first"])
    check_main_table(second, [r for r in read_records(results) if r["benchmark"] == "second"])


def test_by_benchmark_gives_one_wide_table(tmp_path):
    results = _two_benchmarks(tmp_path / "merged")
    out = build(results, tmp_path / "r", formats="md,latex,html", by="benchmark")
    wide = markdown_tables((out / "report.md").read_text())[0]
    header = wide[0]
    assert header[0] == "strategy"
    assert header[1].startswith("first: final average accuracy")
    assert header[6] == "first: seeds" and header[12] == "second: seeds"
    assert len(header) == 1 + 2 * 6
    rows = {row[0]: row for row in wide[1:]}
    assert rows["beta"][7:] == ["–"] * 6  # beta did not run on the second benchmark
    records = [r for r in read_records(results) if r["benchmark"] == "second"]
    expected = expected_summary(records)
    mean, _, _ = parse_mean_std(rows["alpha"][7])
    assert abs(mean - 100 * expected["alpha", "final_accuracy"]["mean"]) <= HALF_CENT
    latex = (out / "tables.tex").read_text()
    assert latex.count("\\begin{table*}") == 1
    assert "\\multicolumn{6}{c}{first} & \\multicolumn{6}{c}{second}" in latex
    assert "\\cmidrule(lr){2-7} \\cmidrule(lr){8-13}" in latex
    assert braces_balance(latex)


def test_one_strategy_with_two_hyperparameter_sets_gives_two_labelled_rows(tmp_path):
    records = [
        make_record("wa", seed, TOY["alpha", seed], hyperparameters={"clip": clip})
        for seed in (0, 1)
        for clip in (True, False)
    ]
    results = write_records(tmp_path / "results", records)
    text = (build(results, tmp_path / "r", formats="md") / "report.md").read_text()
    labels = [row[0] for row in markdown_tables(text)[0][1:]]
    assert labels == ["wa [clip=false]", "wa [clip=true]"]


def test_a_copy_of_a_record_counts_once(toy_results, tmp_path):
    original = next((toy_results / "runs").glob("alpha-seed0-*.json"))
    copy = toy_results / "copied" / "runs"
    copy.mkdir(parents=True)
    shutil.copy(original, copy / original.name)
    text = (build(toy_results, tmp_path / "r", formats="md") / "report.md").read_text()
    rows = {row[0]: row for row in markdown_tables(text)[0][1:]}
    assert rows["alpha"][-1] == "3"
    assert "repeats" in text and "counted once" in text


@pytest.mark.bad_input
def test_two_different_records_for_one_strategy_and_seed_are_refused(toy_results, tmp_path):
    record = json.loads(next((toy_results / "runs").glob("alpha-seed0-*.json")).read_text())
    record["accuracy_matrix"][2][2] = 0.1
    (toy_results / "other.json").write_text(json.dumps(record))
    with pytest.raises(ReportError, match="two different records for alpha seed 0"):
        make_report(toy_results, tmp_path / "r")
    assert not (tmp_path / "r").exists()
