"""The report figures: inspected as Figure objects before saving (one line, panel or bar
per strategy, the plotted values recomputed independently, one colour per strategy in
every figure), then rendered to valid PNG, PDF and SVG files. reports/ stays free of
pyplot, the engine and Avalanche.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_hex
from PIL import Image
from test_reports_support import make_record, write_records

import strategies
from reports import plots
from reports.aggregate import Stats
from reports.records import group, load_runs
from reports.report import make_report

# Two strategies with three seeds, one with a single seed (no band for it).
MATRICES = {
    "first": [
        [[1.0, None, None], [0.5, 1.0, None], [0.25, 0.5, 1.0]],
        [[1.0, None, None], [0.75, 0.5, None], [0.5, 0.25, 0.75]],
        [[0.5, None, None], [0.5, 0.5, None], [0.5, 0.5, 0.5]],
    ],
    "second": [
        [[0.5, None, None], [0.25, 0.75, None], [0.0, 0.25, 1.0]],
        [[0.75, None, None], [0.5, 1.0, None], [0.25, 0.5, 0.75]],
        [[1.0, None, None], [0.75, 0.5, None], [0.5, 0.75, 0.25]],
    ],
    "third": [[[1.0, None, None], [0.0, 1.0, None], [0.0, 0.0, 1.0]]],
}


@pytest.fixture
def toy_benchmark(tmp_path: Path):
    records = [
        make_record(strategy, seed, matrix)
        for strategy, matrices in MATRICES.items()
        for seed, matrix in enumerate(matrices)
    ]
    (only,) = group(load_runs(write_records(tmp_path / "results", records)))
    return only


@pytest.fixture
def styles():
    return plots.strategy_styles(list(MATRICES))


def labelled_lines(axes) -> dict[str, object]:
    return {
        line.get_label(): line for line in axes.get_lines() if not line.get_label().startswith("_")
    }


def test_accuracy_figure_has_one_line_per_strategy_with_the_mean_over_seeds(toy_benchmark, styles):
    figure = plots.accuracy_figure(toy_benchmark, styles)
    (axes,) = figure.axes
    lines = labelled_lines(axes)
    assert len(lines) == len(MATRICES) == 3
    # Equal test counts: accuracy on seen classes = mean of the row's first i + 1 entries.
    for strategy, matrices in MATRICES.items():
        line = lines[f"{strategy} (n={len(matrices)})"]
        expected = [100 * np.mean([np.mean(m[i][: i + 1]) for m in matrices]) for i in range(3)]
        assert line.get_ydata() == pytest.approx(expected)
        assert list(line.get_xdata()) == [1, 2, 3]  # experiences, numbered 1..T
        assert to_hex(line.get_color()) == styles[strategy].colour.lower()
    # A 95% band for each strategy with two or more seeds: first and second, not third.
    assert len(axes.collections) == 2
    assert "(%)" in axes.get_ylabel() and axes.get_xlabel()
    assert len(figure.legends) == 1


def test_heatmaps_have_one_panel_per_strategy_showing_the_mean_matrix(toy_benchmark):
    figure = plots.heatmap_figure(toy_benchmark)
    panels = [axes for axes in figure.axes if axes.get_visible() and axes.images]
    assert len(panels) == len(MATRICES)
    for axes, (strategy, matrices) in zip(panels, MATRICES.items(), strict=True):
        assert axes.get_title().startswith(strategy)
        shown = axes.images[0].get_array()
        for i in range(3):
            for j in range(i + 1):
                assert shown[i, j] == pytest.approx(100 * np.mean([m[i][j] for m in matrices]))
            for j in range(i + 1, 3):
                assert np.ma.is_masked(shown[i, j])  # not yet seen: left blank


def test_bars_have_one_bar_per_strategy_in_its_colour_with_the_given_heights(toy_benchmark, styles):
    # Final accuracy 10, 20, 30 % and forgetting 20 pp for all three.
    final = {
        s: Stats(0.1 * (k + 1), 0.01, 0.1 * k + 0.05, 0.1 * k + 0.15, 3)
        for k, s in enumerate(MATRICES)
    }
    forgetting = {s: Stats(0.2, 0.01, 0.1, 0.3, 3) for s in MATRICES}
    summary = {"final_accuracy": final, "forgetting": forgetting}
    figure = plots.bars_figure(toy_benchmark, summary, styles)
    top, bottom = figure.axes
    for axes, heights in ((top, [10, 20, 30]), (bottom, [20, 20, 20])):
        bars = axes.patches
        assert [bar.get_height() for bar in bars] == pytest.approx(heights)
        assert [to_hex(bar.get_facecolor()) for bar in bars] == [
            styles[s].colour.lower() for s in MATRICES
        ]
    assert [t.get_text() for t in bottom.get_xticklabels()] == list(MATRICES)
    assert "(%)" in top.get_ylabel() and "(pp)" in bottom.get_ylabel()


def test_weight_norms_figure_plots_the_last_norms_per_class(toy_benchmark, styles):
    figure = plots.weight_norms_figure(toy_benchmark, styles)
    (axes,) = figure.axes
    lines = labelled_lines(axes)
    # make_record gives every strategy the same norms: the later curves lie on the first
    # and their legend entries say so.
    assert set(lines) == {"first", "second = first", "third = first"}
    # make_record's norms after the last experience: 1.0 + 0.1·c for classes 0..5.
    assert lines["first"].get_ydata() == pytest.approx([1.0 + 0.1 * c for c in range(6)])
    assert [t.get_text() for t in axes.get_xticklabels()] == [f"class{c}" for c in range(6)]


def test_weight_norms_figure_compares_naive_and_weight_aligning_only(tmp_path):
    matrix = MATRICES["first"][0]
    records = [make_record(name, 0, matrix) for name in ("naive", "weight_aligning", "slda")]
    (benchmark,) = group(load_runs(write_records(tmp_path / "r", records)))
    figure = plots.weight_norms_figure(
        benchmark, plots.strategy_styles(["naive", "weight_aligning", "slda"])
    )
    # Printed names (the records carry none: the frozen table of older records gives them).
    assert set(labelled_lines(figure.axes[0])) == {"Fine-tuning", "WA = Fine-tuning"}


def test_weight_norms_figure_is_left_out_when_no_record_saved_norms(tmp_path, styles):
    records = [make_record("first", 0, MATRICES["first"][0])]
    del records[0]["weight_norms"]
    (without_norms,) = group(load_runs(write_records(tmp_path / "r", records)))
    assert plots.weight_norms_figure(without_norms, styles) is None


def test_newest_share_figure_has_a_line_per_strategy_and_the_test_sample_share(
    toy_benchmark, styles
):
    figure = plots.newest_share_figure(toy_benchmark, styles)
    (axes,) = figure.axes
    lines = labelled_lines(axes)
    assert set(lines) == {"first", "second = first", "third = first", "test samples"}
    # make_record: newest_share = 1 / (i + 1); equal test counts give the same reference.
    assert lines["first"].get_ydata() == pytest.approx([100, 50, 100 / 3])
    assert lines["test samples"].get_ydata() == pytest.approx([100, 50, 100 / 3])


def test_old_new_figure_has_the_old_and_new_accuracy_per_strategy(toy_benchmark, styles):
    figure = plots.old_new_figure(toy_benchmark, styles)
    top, bottom = figure.axes
    old = {line.get_color(): line.get_ydata() for line in top.get_lines()}
    new = {line.get_color(): line.get_ydata() for line in bottom.get_lines()}
    assert len(old) == len(new) == len(MATRICES)
    first = styles["first"].colour
    # first, seed 0: old after 2 = mean(0.25, 0.5) = 0.375; seed 1: 0.375; seed 2: 0.5.
    assert old[first][2] == pytest.approx(100 * (0.375 + 0.375 + 0.5) / 3)
    assert np.isnan(old[first][0])
    # New = the diagonal: (1.0 + 0.75 + 0.5) / 3 after experience 2.
    assert new[first][2] == pytest.approx(100 * 2.25 / 3)


def test_every_registered_strategy_has_its_own_colour_and_marker():
    registered = strategies.list_strategies()
    styles = plots.strategy_styles(registered)
    colours = [styles[name].colour for name in registered]
    markers = [styles[name].marker for name in registered]
    assert len(set(colours)) == len(colours) == len(registered)
    assert len(set(markers)) == len(markers)
    # The pairs the issue found shared: ewc/weight_aligning, bic/slda.
    assert styles["ewc"].colour != styles["weight_aligning"].colour
    assert styles["bic"].colour != styles["slda"].colour
    assert styles["bic"].marker != styles["slda"].marker
    # Yellow (weak on white) is nobody's.
    assert "#F0E442" not in colours


def test_a_strategy_outside_the_registry_gets_its_own_look_deterministically():
    registered = strategies.list_strategies()
    others = ["mine", "theirs", "another"]
    styles = plots.strategy_styles([*registered, *others])
    colours = [style.colour for style in styles.values()]
    markers = [style.marker for style in styles.values()]
    assert len(set(colours)) == len(colours)
    assert len(set(markers[len(registered) :])) == len(others)
    assert not set(markers[len(registered) :]) & set(markers[: len(registered)])
    # The same names give the same looks, in any order, and a registered strategy keeps its
    # look whatever it is shown with.
    again = plots.strategy_styles([*reversed(others), *registered])
    assert all(again[name] == styles[name] for name in [*registered, *others])
    assert plots.strategy_styles(["ewc"])["ewc"] == styles["ewc"]


def test_variants_of_one_strategy_share_its_colour_and_marker_and_differ_in_dash():
    styles = plots.strategy_styles([("ewc [lam=1]", "ewc"), ("ewc [lam=10]", "ewc")])
    first, second = styles.values()
    assert (first.colour, first.marker) == (second.colour, second.marker)
    assert first.linestyle != second.linestyle


def test_render_gives_valid_png_pdf_and_svg_and_repeats_byte_for_byte(toy_benchmark, styles):
    figure = plots.accuracy_figure(toy_benchmark, styles)
    png = plots.render(figure, "png")
    with Image.open(io.BytesIO(png)) as image:
        image.verify()
        assert image.format == "PNG"
    with Image.open(io.BytesIO(png)) as image:
        width, height = image.size
    # A paper column (3.35 in) at 200 dpi.
    assert width == round(plots.COLUMN_WIDTH * plots.DPI) and height > 300
    pdf = plots.render(figure, "pdf")
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    svg = plots.render(figure, "svg")
    assert ElementTree.fromstring(svg).tag.endswith("svg")
    assert plots.render(figure, "png") == png
    assert plots.render(figure, "pdf") == pdf


def test_report_writes_every_figure_as_a_valid_image_in_each_format(tmp_path):
    records = [
        make_record(strategy, seed, matrix)
        for strategy, matrices in MATRICES.items()
        for seed, matrix in enumerate(matrices)
    ]
    results = write_records(tmp_path / "results", records)
    _, out, written = make_report(results, tmp_path / "report", formats="png,pdf,svg")
    names = ["accuracy", "heatmaps", "bars", "weight_norms", "newest_share", "old_new"]
    expected = {f"figures/toy-{n}.{f}" for n in names for f in ("png", "pdf", "svg")}
    assert {str(p.relative_to(out)) for p in written} == expected
    for name in names:
        with Image.open(out / "figures" / f"toy-{name}.png") as image:
            image.verify()
        assert (out / "figures" / f"toy-{name}.pdf").read_bytes().startswith(b"%PDF-")
        ElementTree.parse(out / "figures" / f"toy-{name}.svg")
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files


REPORTS_ONLY = """
import json, sys
from reports.report import make_report
make_report(sys.argv[1], sys.argv[2])
heavy = ["matplotlib.pyplot", "benchmarks", "strategies", "torch", "avalanche"]
print(json.dumps([name for name in heavy if name in sys.modules]))
"""


def test_reports_work_without_pyplot_the_engine_strategies_torch_or_avalanche(tmp_path):
    records = [make_record("first", seed, m) for seed, m in enumerate(MATRICES["first"])]
    results = write_records(tmp_path / "results", records)
    result = subprocess.run(
        [sys.executable, "-c", REPORTS_ONLY, str(results), str(tmp_path / "report")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert (tmp_path / "report" / "report.html").is_file()
