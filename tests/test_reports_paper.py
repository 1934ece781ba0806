"""What a paper takes from a report as it is: the strategies' printed names and BibTeX
(from the strategy classes, through the records, and for older records from a frozen
table), ties not bolded, the band choice, one numbering of experiences in figures, CSVs
and tables, coinciding curves accounted for, and legends inside their figures.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from test_reports_support import HtmlCollector, make_record, markdown_tables, write_records

import strategies
from reports import bibliography, plots
from reports.records import ReportError, group, load_runs
from reports.report import make_report
from strategies.base import build_config

MATRIX = [[0.9, None, None], [0.6, 0.8, None], [0.5, 0.7, 0.9]]
WORSE = [[0.8, None, None], [0.4, 0.8, None], [0.2, 0.4, 0.9]]


def _benchmark(tmp_path: Path, records: list[dict]):
    (only,) = group(load_runs(write_records(tmp_path / "results", records)))
    return only


# ---------------------------------------------------------------------------------------
# Names and BibTeX: one per registered strategy, in the class, carried by the records


def test_every_registered_strategy_declares_a_distinct_name_and_resolvable_papers():
    names = {}
    for key in strategies.list_strategies():
        cls = strategies.get_strategy(key)
        name, keys = cls.paper_name(cls.Config())
        names[key] = name
        entries = bibliography.resolve(keys, cls.bibtex)
        assert [bibliography.entry_key(e) for e in entries] == list(keys)
        # Bounds and the practitioners' recipe (no paper) cite nothing; every other strategy
        # cites its paper.
        assert bool(keys) == (key not in ("naive", "joint", "new_label_detector")), key
    assert len(set(names.values())) == len(names)
    assert names["weight_aligning"] == "WA" and names["seq_star"] == "SEQ*"


@pytest.mark.parametrize(
    ("key", "hyperparameters"),
    [(key, {}) for key in bibliography.LEGACY_NAMES]
    + [("ridge", {"method": "acil"}), ("ewc", {"mode": "online"})],
)
def test_the_table_for_older_records_says_what_the_strategy_classes_say(key, hyperparameters):
    cls = strategies.get_strategy(key)
    config = build_config(key, cls.Config, hyperparameters)
    resolved = {**strategies.base.resolved_config(config)}
    assert bibliography.legacy_name(key, resolved) == cls.paper_name(config)


# Typed from each paper's first page / the publisher's record (venue, year, volume, pages).
PUBLISHED = {
    "kirkpatrick2017overcoming": (
        "Overcoming catastrophic forgetting in neural networks",
        "Proceedings of the National Academy of Sciences",
        "2017",
        "Kirkpatrick, James",
    ),
    "li2018learning": (
        "Learning without Forgetting",
        "IEEE Transactions on Pattern Analysis and Machine Intelligence",
        "2018",
        "Li, Zhizhong and Hoiem, Derek",
    ),
    "zhao2020maintaining": (
        "Maintaining Discrimination and Fairness in Class Incremental Learning",
        "Computer Vision and Pattern Recognition",
        "2020",
        "Zhao, Bowen",
    ),
    "wu2019large": ("Large Scale Incremental Learning", "Computer Vision", "2019", "Wu, Yue"),
    "rebuffi2017icarl": (
        "{iCaRL}: Incremental Classifier and Representation Learning",
        "Computer Vision and Pattern Recognition",
        "2017",
        "Rebuffi, Sylvestre-Alvise",
    ),
    "hayes2020lifelong": (
        "Lifelong Machine Learning with Deep Streaming Linear Discriminant Analysis",
        "Workshops",
        "2020",
        "Hayes, Tyler L. and Kanan, Christopher",
    ),
    "mensink2013distance": (
        "Distance-Based Image Classification",
        "IEEE Transactions on Pattern Analysis and Machine Intelligence",
        "2013",
        "Mensink, Thomas",
    ),
    "zheng2024learn": (
        "Learn or Recall? Revisiting Incremental Learning with Pre-trained Language",
        "Association for Computational",
        "2024",
        "Zheng, Junhao and Qiu, Shengjie and Ma, Qianli",
    ),
}


def _field(entry: str, name: str) -> str:
    match = re.search(rf"^  {name} = \{{(.*?)\}},?$", entry, re.M | re.S)
    assert match, (name, entry)
    return " ".join(match[1].split())


@pytest.mark.parametrize("key", list(bibliography.ENTRIES))
def test_every_bibtex_entry_is_one_well_formed_entry_with_authors_title_venue_year(key):
    entry = bibliography.ENTRIES[key]
    assert bibliography.entry_key(entry) == key
    kind = re.match(r"@(\w+)\{", entry)[1]
    venue = {"article": "journal", "inproceedings": "booktitle"}[kind]
    fields = {name: _field(entry, name) for name in ("author", "title", venue, "year")}
    assert re.fullmatch(r"(19|20)\d\d", fields["year"])
    if key in PUBLISHED:
        title, where, year, authors = PUBLISHED[key]
        assert fields["title"].startswith(title) and where in fields[venue]
        assert fields["year"] == year and fields["author"].startswith(authors)


def test_pnas_and_tpami_volumes_and_pages():
    kirkpatrick = bibliography.ENTRIES["kirkpatrick2017overcoming"]
    assert [_field(kirkpatrick, f) for f in ("volume", "number", "pages")] == [
        "114",
        "13",
        "3521--3526",
    ]
    lwf = bibliography.ENTRIES["li2018learning"]
    assert [_field(lwf, f) for f in ("volume", "number", "pages")] == ["40", "12", "2935--2947"]


def test_old_records_without_names_get_them_from_the_frozen_table(tmp_path):
    records = [
        make_record("weight_aligning", 0, MATRIX),
        make_record("ridge", 0, WORSE, hyperparameters={"method": "acil"}),
        make_record("mine", 0, WORSE),  # not headbench's: its key, no paper
    ]
    out = tmp_path / "r"
    make_report(write_records(tmp_path / "results", records), out, formats="latex,md")
    rows = markdown_tables((out / "report.md").read_text())[0][1:]
    assert [row[0] for row in rows] == ["ACIL", "mine", "WA"]  # by printed name
    bib = (out / "references.bib").read_text()
    assert re.findall(r"^@\w+\{([^,]+),", bib, re.M) == ["zhuang2022acil", "zhao2020maintaining"]
    assert "ACIL~\\cite{zhuang2022acil}" in (out / "tables.tex").read_text()


def test_a_record_names_and_cites_a_strategy_headbench_does_not_know(tmp_path):
    record = make_record("mine", 0, MATRIX)
    record["display_name"] = "Mine"
    record["references"] = [
        "@misc{mine2026,\n  author = {Me, A.},\n  title = {Mine},\n  year = {2026}\n}"
    ]
    out = tmp_path / "r"
    make_report(write_records(tmp_path / "results", [record]), out, formats="latex")
    assert "Mine~\\cite{mine2026}" in (out / "tables.tex").read_text()
    assert "@misc{mine2026," in (out / "references.bib").read_text()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("display_name", ""),
        ("display_name", 3),
        ("display_name", "A | B"),
        ("display_name", "two\nlines"),
        ("references", ["@misc{a\\input{x}, title={x}}"]),
        ("references", "@misc{a, title={x}}"),
        ("references", ["@misc{a, title={x}"]),
        ("references", ["not bibtex"]),
        ("references", ["@misc{a, title={x}} @misc{b, title={y}}"]),
    ],
)
@pytest.mark.bad_input
def test_bad_names_or_references_in_a_record_are_refused(field, value, tmp_path):
    record = make_record("mine", 0, MATRIX)
    record[field] = value
    with pytest.raises(ReportError, match=f"{field} = "):
        make_report(write_records(tmp_path / "results", [record]), tmp_path / "r")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------
# Ties


def test_a_tie_for_the_best_bolds_nobody_and_a_unique_best_is_bold(tmp_path):
    # alpha and beta have the same matrix: every metric ties; gamma is worse in each but
    # forgetting... so only columns where one method alone is best get a bold cell.
    records = [make_record(s, 0, MATRIX) for s in ("alpha", "beta")]
    records.append(make_record("gamma", 0, WORSE))
    out = tmp_path / "r"
    make_report(write_records(tmp_path / "results", records), out, formats="md,latex,html")
    table = markdown_tables((out / "report.md").read_text())[0]
    assert not any("**" in cell for row in table for cell in row)
    assert "\\mathbf" not in (out / "tables.tex").read_text()
    page = HtmlCollector()
    page.feed((out / "report.html").read_text())
    assert not any(bold for row in page.tables[0][1:] for _, bold in row)
    # Without beta, alpha alone is best: final accuracy (0.5 + 0.7 + 0.9) / 3 = 70.00 %
    # against gamma's (0.2 + 0.4 + 0.9) / 3 = 50.00 %.
    solo = tmp_path / "solo"
    make_report(write_records(tmp_path / "two", [records[0], records[2]]), solo, formats="md")
    rows = {row[0]: row for row in markdown_tables((solo / "report.md").read_text())[0][1:]}
    assert rows["alpha"][1] == "**70.00**" and rows["gamma"][1] == "50.00"


# ---------------------------------------------------------------------------------------
# Figures: band, numbering, coinciding curves, legends


def test_band_choice(tmp_path):
    records = [make_record("alpha", seed, m) for seed, m in enumerate([MATRIX, WORSE])]
    benchmark = _benchmark(tmp_path, records)
    styles = plots.strategy_styles(["alpha"])
    assert not plots.accuracy_figure(benchmark, styles, "none").axes[0].collections
    (band,) = plots.accuracy_figure(benchmark, styles, "std").axes[0].collections
    # Seen accuracy after experience 1: 0.9 and 0.8, mean 85 %, std 0.1 / √2 = 7.07 pp;
    # after 3: (0.5 + 0.7 + 0.9) / 3 = 0.7 and 0.5, mean 60 %, std 0.2 / √2 = 14.14 pp.
    top = band.get_paths()[0].vertices[:, 1]
    assert top.max() == pytest.approx(85 + 10 / np.sqrt(2))
    assert np.isclose(top, 60 + 20 / np.sqrt(2)).any()
    (ci,) = plots.accuracy_figure(benchmark, styles, "ci95").axes[0].collections
    assert ci.get_paths()[0].vertices[:, 1].max() > top.max()  # t(0.975, 1) = 12.7 > 1


def test_band_none_on_the_command_line_drops_bands_and_says_so(tmp_path):
    from benchmarks.cli import main

    records = [make_record("alpha", seed, m) for seed, m in enumerate([MATRIX, WORSE])]
    results = write_records(tmp_path / "results", records)
    args = [str(results), "--out", str(tmp_path / "r"), "--format", "md,png"]
    assert main(["report", *args, "--band", "none"]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "no band drawn" in text and "confidence interval over seeds" not in text
    assert main(["report", *args, "--band", "std", "--names", "registry"]) == 0
    assert "± one standard deviation" in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.bad_input
def test_band_and_names_refused_outside_their_choices(tmp_path, capsys):
    from benchmarks.cli import main

    results = write_records(tmp_path / "results", [make_record("alpha", 0, MATRIX)])
    with pytest.raises(SystemExit) as stop:
        main(["report", str(results), "--band", "sem"])
    assert stop.value.code == 2
    assert "ci95" in capsys.readouterr().err


def test_experiences_are_numbered_alike_in_figures_csv_and_tables(tmp_path):
    records = [make_record(s, 0, m) for s, m in (("alpha", MATRIX), ("beta", WORSE))]
    results = write_records(tmp_path / "results", records)
    out = tmp_path / "r"
    make_report(results, out, formats="csv,html")
    steps = pd.read_csv(out / "steps.csv")
    csv_numbers = sorted(set(steps["experience"]))
    benchmark = _benchmark(tmp_path / "again", records)
    styles = plots.strategy_styles(["alpha", "beta"])
    accuracy = plots.accuracy_figure(benchmark, styles).axes[0]
    plot_numbers = [int(x) for x in accuracy.get_lines()[0].get_xdata()]
    tick_numbers = [int(t) for t in accuracy.get_xticks()]
    heatmap = plots.heatmap_figure(benchmark).axes[0]
    heat_numbers = [int(t.get_text()) for t in heatmap.get_xticklabels()]
    page = HtmlCollector()
    page.feed((out / "report.html").read_text())
    old_new = next(t for t in page.tables if t[0][0][0] == "strategy" and len(t[0]) == 4)
    table_numbers = [int(cell.split("\n")[0]) for cell, _ in old_new[0][1:]]
    assert csv_numbers == plot_numbers == tick_numbers == heat_numbers == table_numbers
    assert csv_numbers == [1, 2, 3]
    # Classes seen beside them: in the CSV, on the figure's top axis, in the table.
    assert list(steps[steps.quantity == "accuracy_seen"]["classes_seen"][:3]) == [2, 4, 6]
    (top,) = [a for a in accuracy.child_axes]
    assert [t.get_text() for t in top.get_xticklabels()] == ["2", "4", "6"]
    assert "(2 classes)" in old_new[0][1][0]


def test_a_curve_that_lies_on_another_is_named_and_drawn_hollow(tmp_path):
    records = [make_record(s, 0, MATRIX) for s in ("alpha", "beta")]
    records.append(make_record("gamma", 0, WORSE))
    benchmark = _benchmark(tmp_path, records)
    figure = plots.accuracy_figure(benchmark, plots.strategy_styles(["alpha", "beta", "gamma"]))
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert set(lines) == {"alpha (n=1)", "beta (n=1) = alpha", "gamma (n=1)"}
    assert lines["beta (n=1) = alpha"].get_markerfacecolor() == "none"
    assert lines["alpha (n=1)"].get_markerfacecolor() != "none"


def _all_figures(benchmark, styles):
    from reports.aggregate import summarise_all
    from reports.report import _figures, _summary_stats  # noqa: F401

    return _figures(benchmark, summarise_all([benchmark]), styles, "ci95")


def test_legends_lie_inside_their_figures_with_every_registered_strategy(tmp_path):
    registered = strategies.list_strategies()
    records = [
        make_record(key, seed, MATRIX if seed else WORSE, hyperparameters={"variant": key * 2})
        for key in registered
        for seed in (0, 1)
    ]
    records.append(make_record("a_strategy_with_a_rather_long_name_of_its_own", 0, MATRIX))
    benchmark = _benchmark(tmp_path, records)
    styles = plots.strategy_styles([(v.label, v.strategy) for v in benchmark.variants])
    checked = 0
    for name, figure in _all_figures(benchmark, styles).items():
        canvas = figure.canvas
        assert isinstance(canvas, FigureCanvasAgg)
        canvas.draw()
        renderer = canvas.get_renderer()
        bounds = figure.bbox
        for legend in figure.legends:
            extent = legend.get_window_extent(renderer)
            assert extent.x0 >= bounds.x0 - 0.5 and extent.x1 <= bounds.x1 + 0.5, name
            assert extent.y0 >= bounds.y0 - 0.5 and extent.y1 <= bounds.y1 + 0.5, name
            if name in ("accuracy", "old_new"):  # weight_norms: naive and WA only
                assert len(legend.get_texts()) == len(benchmark.variants)
            checked += 1
    assert checked == 4  # accuracy, weight_norms, newest_share, old_new


def test_steps_and_summary_csv_carry_the_printed_name_beside_the_key(tmp_path):
    records = [make_record("weight_aligning", 0, MATRIX)]
    out = tmp_path / "r"
    make_report(write_records(tmp_path / "results", records), out, formats="csv")
    for name in ("summary.csv", "steps.csv"):
        frame = pd.read_csv(out / name)
        assert set(frame["strategy"]) == {"weight_aligning"} and set(frame["name"]) == {"WA"}
    assert json.loads(json.dumps(records))  # the records stay plain JSON
