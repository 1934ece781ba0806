"""`headbench report` and `python -m reports` end to end: every format from real digits
records, the self-contained HTML, citation, atomic writes, and bad input of every kind
(exit 2, one `headbench: error:` line naming the value and what is accepted, nothing
written), each beside a valid control built the same way.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from test_reports_support import (
    HtmlCollector,
    expected_summary,
    keyed,
    make_record,
    markdown_tables,
    parse_mean_std,
    read_records,
    write_records,
)

from benchmarks.cli import main
from reports.citation import headbench_version

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILES = {
    "report.md",
    "tables.tex",
    "tables-column.tex",
    "references.bib",
    "summary.csv",
    "steps.csv",
    "task_aware.csv",  # the records hold task-aware matrices (headbench run writes them)
    "report.html",
}
FIGURES = [
    "accuracy", "heatmaps", "bars", "weight_norms", "newest_share", "old_new", "old_labels",
]  # fmt: skip


def run_cli(capsys: pytest.CaptureFixture, *argv: str | Path) -> tuple[int, str, str]:
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exit:  # argparse refusals exit from inside main
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def digits_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits demo cut down to two strategies, two seeds, short training (a few s)."""
    out = tmp_path_factory.mktemp("digits") / "results"
    code = main(
        ["run", "digits_b5_inc1", "--out", str(out), "--quiet", "--seeds", "0-1",
         "--strategy", "naive", "--strategy", "wa", "--set", "training.epochs=2",
         "--set", "backbone.epochs=1", "--set", "backbone.width=4"]
    )  # fmt: skip
    assert code == 0
    return out


@pytest.fixture
def toy_results(tmp_path: Path) -> Path:
    matrix = [[0.9, None], [0.6, 0.8]]
    records = [make_record(s, seed, matrix) for s in ("naive", "ewc") for seed in (0, 1)]
    return write_records(tmp_path / "toy", records)


def files_under(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def test_headbench_report_writes_every_default_format_from_digits_records(
    digits_results, tmp_path, capsys
):
    out = tmp_path / "report"
    code, stdout, stderr = run_cli(capsys, "report", digits_results, "--out", out)
    assert code == 0, stderr
    assert stderr == ""
    figures = {f"figures/digits_b5_inc1-{n}.{f}" for n in FIGURES for f in ("png", "pdf")}
    old_labels = {"old_labels-digits_b5_inc1.csv"}  # the old-label check's table, as CSV
    assert files_under(out) == DEFAULT_FILES | figures | old_labels
    # The terminal shows the main table (numbers checked against the records) and the files.
    (table,) = markdown_tables(stdout)
    expected = expected_summary(read_records(digits_results))
    for row in keyed(table, read_records(digits_results))[1:]:
        mean, _, _ = parse_mean_std(row[1])
        assert abs(mean - 100 * expected[row[0], "final_accuracy"]["mean"]) <= 0.005 + 1e-9
    assert "figures/digits_b5_inc1-accuracy.png" in stdout
    # The Markdown report shows the PNGs by relative path.
    markdown = (out / "report.md").read_text()
    for name in FIGURES:
        assert f"](figures/digits_b5_inc1-{name}.png)" in markdown


def test_default_out_is_results_dir_slash_report_and_formats_can_be_chosen(toy_results, capsys):
    code, _, stderr = run_cli(capsys, "report", toy_results, "--format", "md,csv")
    assert code == 0, stderr
    assert files_under(toy_results / "report") == {"report.md", "summary.csv", "steps.csv"}
    # The report folder holds no records, so a second report reads the same runs.
    code, _, stderr = run_cli(capsys, "report", toy_results, "--format", "all")
    assert code == 0, stderr
    summary = pd.read_csv(toy_results / "report" / "summary.csv")
    assert set(summary["n"]) == {2}


def test_python_dash_m_reports_in_a_subprocess(toy_results, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "reports", str(toy_results), "--out", str(out), "--format", "md"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "| EWC |" in result.stdout and "report.md" in result.stdout
    assert files_under(out) == {"report.md"}


def test_a_report_over_a_previous_one_replaces_its_files(toy_results, tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("old")
    code, _, _ = run_cli(capsys, "report", toy_results, "--out", out, "--format", "md")
    assert code == 0
    assert (out / "report.md").read_text().startswith("# headbench report")


def test_an_interrupted_write_leaves_no_partial_or_temporary_file(
    toy_results, tmp_path, capsys, monkeypatch
):
    real_fsync = os.fsync
    calls = []

    def interrupted_second_time(descriptor):
        calls.append(None)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", interrupted_second_time)
    out = tmp_path / "report"
    with pytest.raises(KeyboardInterrupt):
        main(["report", str(toy_results), "--out", str(out), "--format", "md,csv"])
    # The first file is complete; the second was never put in place; no temporary remains.
    assert files_under(out) == {"report.md"}
    assert (out / "report.md").read_text().rstrip().endswith(".")


# ---------------------------------------------------------------------------------------
# The HTML report


def decode_image(uri: str) -> tuple[str, bytes]:
    match = re.fullmatch(r"data:(image/(?:png|svg\+xml));base64,([A-Za-z0-9+/=]+)", uri)
    assert match, uri[:80]
    return match[1], base64.b64decode(match[2], validate=True)


def test_html_report_is_self_contained_and_every_image_decodes(digits_results, tmp_path):
    out = tmp_path / "report"
    main(["report", str(digits_results), "--out", str(out), "--format", "html"])
    text = (out / "report.html").read_text()
    page = HtmlCollector()
    page.feed(text)
    assert len(page.images) == len(FIGURES)
    for image in page.images:
        assert image.get("alt")
        kind, data = decode_image(image["src"])
        if kind == "image/png":
            with Image.open(io.BytesIO(data)) as png:
                png.verify()
        else:
            ElementTree.fromstring(data)
    # Nothing from outside: every src/href is a data: URI or an in-page anchor.
    assert all(url.startswith(("data:", "#")) for url in page.urls), page.urls
    assert "url(" not in text and "@import" not in text
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)


def test_html_report_describes_benchmark_runs_environment_and_citation(digits_results, tmp_path):
    out = tmp_path / "report"
    main(["report", str(digits_results), "--out", str(out), "--format", "html"])
    text = (out / "report.html").read_text()
    records = read_records(digits_results)
    record = records[0]
    for needle in (
        "dataset",
        "&quot;digits&quot;",  # the dataset table, JSON-escaped
        "base-task",  # backbone
        "class order (resolved)",
        json.dumps(record["class_order"]),
        "protocol (training)",
        f"&quot;epochs&quot;: {record['config']['training']['epochs']}",
        record["environment"]["torch"],
        record["environment"]["python"],
        f"headbench {headbench_version()}",
        "CITATION.cff",
    ):
        assert needle in text, needle
    for r in records:
        assert r["run_id"] in text
        assert r["paper"] in text


def test_every_report_names_the_version_how_to_cite_and_the_papers(toy_results, tmp_path):
    out = tmp_path / "report"
    main(["report", str(toy_results), "--out", str(out), "--format", "md,latex,html"])
    papers = {r["paper"] for r in read_records(toy_results)}
    for name in ("report.md", "tables.tex", "report.html"):
        text = (out / name).read_text()
        assert f"headbench {headbench_version()}" in text, name
        assert "Cite it as" in text and "CITATION.cff" in text, name
        if name != "tables.tex":  # the LaTeX cites the papers instead: \cite, references.bib
            for paper in papers:
                assert paper in text, (name, paper)
    assert "EWC~\\cite{kirkpatrick2017overcoming}" in (out / "tables.tex").read_text()
    assert "@article{kirkpatrick2017overcoming," in (out / "references.bib").read_text()


CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
VIRIDIS_TOP = (253, 231, 37)  # the heatmaps' colour for 100 %; nowhere in the page's CSS


def pixels_near(image: Image.Image, colour: tuple[int, int, int]) -> int:
    return sum(
        count
        for count, pixel in image.convert("RGB").getcolors(maxcolors=1 << 24)
        if sum(abs(a - b) for a, b in zip(pixel, colour, strict=True)) < 30
    )


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (/usr/bin/chromium) to render in")
def test_html_report_renders_in_headless_chromium_without_network(digits_results, tmp_path):
    out = tmp_path / "report"
    main(["report", str(digits_results), "--out", str(out), "--format", "html"])
    screenshot = tmp_path / "page.png"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--host-resolver-rules=MAP * ~NOTFOUND",  # any network request would fail
         f"--screenshot={screenshot}", "--window-size=1200,6000",
         (out / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with Image.open(screenshot) as image:
        # The embedded figures were decoded and drawn: the heatmaps' yellow and the second
        # strategy's Okabe-Ito vermillion (the first's blue also borders the citation box).
        assert pixels_near(image, VIRIDIS_TOP) > 1000
        assert pixels_near(image, (213, 94, 0)) > 1000


# ---------------------------------------------------------------------------------------
# CITATION.cff and the README


def cff_fields(text: str) -> dict[str, str]:
    """Top-level `key: value` pairs of a CITATION.cff, quotes removed (a YAML subset)."""
    pairs = re.findall(r"^([\w-]+):[ \t]*(.*)$", text, flags=re.MULTILINE)
    return {key: value.strip().strip('"') for key, value in pairs}


def test_citation_cff_matches_the_package():
    text = (ROOT / "CITATION.cff").read_text()
    citation = cff_fields(text)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert citation["title"] == "headbench"
    assert citation["version"] == pyproject["project"]["version"] == "0.1.0"
    assert citation["license"] == "MIT"
    assert citation["message"]
    assert re.search(r"^authors:\n  - name: \"headbench developers\"$", text, re.MULTILINE)
    assert "repository-code" not in citation
    readme = (ROOT / "README.md").read_text()
    assert "## How to cite" in readme and "version = {0.1.0}" in readme


# ---------------------------------------------------------------------------------------
# Bad input: exit 2, one line, nothing written; each next to a valid control


def assert_refused(code: int, stdout: str, stderr: str, *named: str, out: Path) -> None:
    assert code == 2, (stdout, stderr)
    assert stderr.startswith("headbench: error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    for text in named:
        assert text in stderr, (text, stderr)
    assert not out.exists()


@pytest.mark.bad_input
def test_missing_results_dir(tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, stderr = run_cli(capsys, "report", tmp_path / "nowhere", "--out", out)
    assert_refused(code, stdout, stderr, "nowhere", "no such directory", "accepted", out=out)


@pytest.mark.bad_input
def test_results_dir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "records.txt"
    path.write_text("")
    out = tmp_path / "report"
    code, stdout, stderr = run_cli(capsys, "report", path, "--out", out)
    assert_refused(code, stdout, stderr, "records.txt", "not a directory", out=out)


@pytest.mark.bad_input
def test_a_folder_without_records(tmp_path, capsys):
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no records here")
    out = tmp_path / "report"
    code, stdout, stderr = run_cli(capsys, "report", tmp_path / "empty", "--out", out)
    assert_refused(code, stdout, stderr, "empty", "no run records", "runs/*.json", out=out)


@pytest.mark.parametrize(
    ("formats", "named"),
    [("md,docx", ["docx", "md, latex, csv, html, png, pdf"]), (",", ["(none given)"])],
)
@pytest.mark.bad_input
def test_unknown_format(formats, named, toy_results, tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, stderr = run_cli(capsys, "report", toy_results, "--out", out, "--format", formats)
    assert_refused(code, stdout, stderr, "--format", *named, out=out)
    # Control: the same with a known format.
    code, _, stderr = run_cli(capsys, "report", toy_results, "--out", out, "--format", "md")
    assert code == 0, stderr


@pytest.mark.bad_input
def test_unknown_by(toy_results, tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, stderr = run_cli(capsys, "report", toy_results, "--out", out, "--by", "seed")
    assert_refused(code, stdout, stderr, "--by", "seed", "benchmark", out=out)
    code, _, stderr = run_cli(
        capsys, "report", toy_results, "--out", out, "--by", "benchmark", "--format", "md"
    )
    assert code == 0, stderr


def _valid_record() -> dict:
    return make_record("naive", 0, [[0.9, None], [0.6, 0.8]])


def _set(path: list, value) -> callable:
    def change(record: dict) -> None:
        target = record
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


BAD_RECORDS = {
    "missing key": (lambda r: r.pop("accuracy_matrix"), ["'accuracy_matrix' is missing"]),
    "wrong type": (_set(["seed"], "zero"), ["seed = 'zero'", "integer"]),
    "newer format": (_set(["format"], 2), ["format = 2", "accepted: 1"]),
    "accuracy above 1": (_set(["accuracy_matrix", 1, 0], 1.5), ["[1][0] = 1.5", "[0, 1]"]),
    "value above the diagonal": (_set(["accuracy_matrix", 0, 1], 0.5), ["[0][1] = 0.5", "null"]),
    "not square": (_set(["accuracy_matrix"], [[0.9, None]]), ["square"]),
    "counts": (_set(["test_counts"], [10, 0]), ["test_counts = [10, 0]", "positive"]),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
@pytest.mark.bad_input
def test_invalid_record(case, tmp_path, capsys):
    change, named = BAD_RECORDS[case]
    good = write_records(tmp_path / "good", [_valid_record()])
    code, _, stderr = run_cli(
        capsys, "report", good, "--out", tmp_path / "good_report", "--format", "md"
    )
    assert code == 0, stderr  # control: the record as made is accepted
    record = _valid_record()
    change(record)
    bad = write_records(
        tmp_path / "bad", [make_record("ewc", 0, [[0.5, None], [0.5, 0.5]]), record]
    )
    out = tmp_path / "report"
    code, stdout, stderr = run_cli(capsys, "report", bad, "--out", out)
    assert_refused(code, stdout, stderr, "naive-seed0", *named, out=out)


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ('{"format": 1, "benchmark": ', ["not valid JSON", "run records"]),
        ("[1, 2]", ["JSON list", "run record"]),
        (b"\xff\xfe", ["not valid JSON"]),
    ],
)
@pytest.mark.bad_input
def test_unparsable_record_json(content, named, toy_results, tmp_path, capsys):
    path = toy_results / "runs" / "broken.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    out = tmp_path / "report"
    code, stdout, stderr = run_cli(capsys, "report", toy_results, "--out", out)
    assert_refused(code, stdout, stderr, "broken.json", *named, out=out)


@pytest.mark.bad_input
def test_unreadable_record(toy_results, tmp_path, capsys):
    (toy_results / "runs" / "odd.json").mkdir()  # a folder where a record should be
    out = tmp_path / "report"
    code, stdout, stderr = run_cli(capsys, "report", toy_results, "--out", out)
    assert_refused(code, stdout, stderr, "odd.json", "cannot be read", out=out)


@pytest.mark.bad_input
def test_out_that_is_a_file(toy_results, tmp_path, capsys):
    out = tmp_path / "report"
    out.write_text("a file")
    code, _, stderr = run_cli(capsys, "report", toy_results, "--out", out, "--format", "md")
    assert code == 2 and stderr.startswith("headbench: error: --out") and "is a file" in stderr
    assert out.read_text() == "a file"


@pytest.mark.bad_input
def test_console_script_refuses_with_one_line(tmp_path):
    script = shutil.which("headbench")
    if script is None:
        pytest.skip("the headbench console script is not installed")
    result = subprocess.run(
        [script, "report", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert (
        result.stderr.startswith("headbench: error: RESULTS_DIR") and result.stderr.count("\n") == 1
    )
    assert result.stdout == ""


def test_reports_modules_import_nothing_from_benchmarks_strategies_or_avalanche():
    for path in (ROOT / "reports").glob("*.py"):
        source = path.read_text()
        imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", source, flags=re.MULTILINE)
        roots = {name.split(".")[0] for name in imports}
        assert not roots & {"benchmarks", "strategies", "avalanche", "torch"}, (path, roots)
        assert not [name for name in imports if "pyplot" in name], path
        assert not re.search(r"^\s*from matplotlib import .*pyplot", source, re.MULTILINE), path
