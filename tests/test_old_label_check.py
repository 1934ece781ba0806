"""The old-label check: per-class counts in the run record, the classes that lost most,
the share of old-class samples taken by the newest classes, the report's table and plot,
and `headbench run --max-old-drop P` as a gate (exit status 1)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_blobs, write_config

from benchmarks import engine
from benchmarks.cli import main
from reports import old_labels
from reports.records import ReportError, RunRecord

NAMES = ["ant", "bee", "cat", "dog", "eel", "fox"]


def run_cli(capsys: pytest.CaptureFixture, *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_records(out: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((out / "runs").glob("*.json"))]


@pytest.fixture
def named_config(tmp_path: Path) -> Path:
    """The six blob classes with names (B2 Inc2, three experiences), naive fine-tuning."""
    arrays = make_blobs(spread=1.0)  # overlapping enough that old classes lose accuracy
    np.savez(tmp_path / "named.npz", **arrays, class_names=np.array(NAMES))
    return write_config(tmp_path, tmp_path / "named.npz", "[strategies.naive]\n")


# ---------------------------------------------------------------------------------------
# Per-class counts on a hand-made prediction case


def test_class_counts_on_hand_made_predictions():
    # Seen classes 0..4; old classes 0..2, the newest experience brings 3 and 4.
    targets = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4])
    predictions = torch.tensor([0, 3, 1, 1, 4, 2, 2, 3, 4, 3, 3])
    correct, to_newest = engine.class_counts(predictions, targets, 3, 5)
    # class 0: 1 right (first), one to 3; class 1: 1 right, one to 4; class 2: 2 right,
    # two to 3 and 4; class 3: 1 right; class 4: 0 right.
    assert correct == [1, 1, 2, 1, 0]
    assert to_newest == [1, 1, 2]
    # The accuracies the report derives from them: correct / test samples per class.
    counts = {"test_counts": [3, 2, 4, 1, 1], "correct": [correct], "to_newest": [to_newest]}
    assert old_labels.class_accuracies(counts) == [[1 / 3, 1 / 2, 2 / 4, 1.0, 0.0]]


def test_class_counts_of_the_first_experience_have_no_old_classes():
    correct, to_newest = engine.class_counts(torch.tensor([1, 0]), torch.tensor([0, 0]), 0, 2)
    assert correct == [1, 0] and to_newest == []  # the second sample is right


# ---------------------------------------------------------------------------------------
# Old-label accuracy, the classes that lost most and the new-label share, by hand

MATRIX = [[0.9, None, None], [0.6, 0.8, None], [0.5, 0.4, 1.0]]
COUNTS = [10, 10, 20]


def test_old_label_accuracy_and_drop_by_hand():
    pairs = old_labels.old_label_accuracy(MATRIX, COUNTS)
    assert pairs[0] is None
    # Experience 2 (index 1): old = experience 1's classes, 0.9 before, 0.6 after.
    assert pairs[1] == pytest.approx((0.9, 0.6))
    # Experience 3: old = experiences 1 and 2 (10 samples each): before (0.6 + 0.8) / 2,
    # after (0.5 + 0.4) / 2.
    assert pairs[2] == pytest.approx((0.7, 0.45))
    drops = old_labels.old_label_drops(MATRIX, COUNTS)
    assert math.isnan(drops[0]) and drops[1:] == pytest.approx([30.0, 25.0])


def test_the_gate_flags_a_drop_above_p_strictly_and_names_the_worst_experience():
    record = {"strategy": "naive", "seed": 3, "run_id": "r", "accuracy_matrix": MATRIX,
              "test_counts": COUNTS}  # fmt: skip
    (flag,) = old_labels.gate([record], 29.0)
    assert (flag.experience, flag.before, flag.after) == (1, 0.9, 0.6)
    assert flag.drop == pytest.approx(30.0)
    assert "naive seed 3" in flag.line() and "after experience 2 of 3" in flag.line()
    assert old_labels.gate([record], 30.5) == []
    text, flagged = old_labels.gate_text([record], 30.5)
    assert not flagged and "largest fall 30.0 pp" in text
    one = {**record, "accuracy_matrix": [[0.5]], "test_counts": [4]}
    assert old_labels.gate([one], 0.0) == []  # one experience: nothing old to lose


# Two experiences then a third: classes 0, 1 | 2 | 3, 4 test samples each except class 1.
CLASS_COUNTS = {
    "test_counts": [4, 5, 4, 4],
    "correct": [[4, 5], [3, 5, 4], [1, 5, 2, 4]],
    "to_newest": [[], [1, 0], [2, 0, 1]],
}


def test_class_changes_largest_drops_and_new_label_share_by_hand():
    changes = old_labels.class_changes(CLASS_COUNTS, 2)
    # Old classes of the last experience: 0 (3/4 -> 1/4), 1 (5/5 -> 5/5), 2 (4/4 -> 2/4).
    assert [(c.position, c.before, c.after) for c in changes] == [
        (0, 0.75, 0.25), (1, 1.0, 1.0), (2, 1.0, 0.5),
    ]  # fmt: skip
    assert [c.to_newest for c in changes] == [0.5, 0.0, 0.25]
    # Falls: class 0 by 0.5, class 2 by 0.5 (tie: earlier arrival first), class 1 by 0.
    assert [c.position for c in old_labels.largest_drops(changes, 2)] == [0, 2]
    # Old samples predicted as class 3: (2 + 0 + 1) of (4 + 5 + 4).
    assert old_labels.new_label_share(CLASS_COUNTS, 2) == pytest.approx(3 / 13)
    assert old_labels.new_label_share(CLASS_COUNTS, 1) == pytest.approx(1 / 9)


def _record(**extra) -> dict:
    matrix = [[1.0, None, None], [8 / 9, 1.0, None], [6 / 9, 0.5, 1.0]]  # from CLASS_COUNTS
    base = {
        "benchmark": "b", "strategy": "naive", "seed": 0, "config": {},
        "accuracy_matrix": matrix, "test_counts": [9, 4, 4],
        "experiences": [[0, 1], [2], [3]],
    }  # fmt: skip
    return {**base, **extra}


def test_a_record_with_consistent_counts_reads_and_one_without_them_still_reads():
    record = RunRecord.parse(_record(class_accuracy=CLASS_COUNTS), "r.json")
    assert record.class_accuracy == CLASS_COUNTS
    assert RunRecord.parse(_record(), "old.json").class_accuracy is None


@pytest.mark.parametrize(
    "counts, field",
    [
        ({**CLASS_COUNTS, "correct": [[4, 5], [3, 5, 4], [2, 5, 2, 4]]}, "gives"),  # vs R
        ({**CLASS_COUNTS, "test_counts": [4, 5, 4]}, "test_counts"),
        ({**CLASS_COUNTS, "to_newest": [[], [1, 0], [4, 0, 1]]}, "row 2"),  # 1 + 4 > 4
        ({**CLASS_COUNTS, "to_newest": [[], [1], [2, 0, 1]]}, "row 1"),
        ({"test_counts": [4, 5, 4, 4]}, "class_accuracy"),
    ],
)
@pytest.mark.bad_input
def test_inconsistent_class_counts_are_refused_naming_the_field(counts, field):
    with pytest.raises(ReportError, match=field):
        RunRecord.parse(_record(class_accuracy=counts), "r.json")


# ---------------------------------------------------------------------------------------
# End to end: the run record, the gate's exit status, bad values, the report


def worst_drop(record: dict) -> float:
    """The largest old-label drop (pp) of a record, from its matrix, written out here."""
    matrix, counts = np.array(record["accuracy_matrix"], dtype=float), record["test_counts"]
    drops = []
    for t in range(1, len(counts)):
        n = np.array(counts[:t], dtype=float)
        before = (matrix[t - 1, :t] * n).sum() / n.sum()
        after = (matrix[t, :t] * n).sum() / n.sum()
        drops.append(100 * (before - after))
    return max(drops)


def test_the_gate_exits_1_above_p_and_0_below_after_writing_every_record(
    named_config, tmp_path, capsys
):
    options = ["--quiet", "--device", "cpu", "--seeds", "0-1"]
    code, stdout, stderr = run_cli(
        capsys, "run", named_config, "--out", tmp_path / "a", "--max-old-drop", "100", *options
    )
    assert code == 0, stderr
    records = read_records(tmp_path / "a")
    assert len(records) == 2 and (tmp_path / "a" / "summary.md").exists()
    assert "old-label check (--max-old-drop 100): no run fell" in stdout
    drops = [worst_drop(record) for record in records]
    # Naive fine-tuning on overlapping blobs loses old classes; the test needs a real fall.
    assert min(drops) >= 2.0, drops
    for record in records:  # the counts the record carries agree with its matrix
        counts = record["class_accuracy"]
        assert sum(counts["test_counts"]) == sum(record["test_counts"])
        assert [len(row) for row in counts["correct"]] == [2, 4, 6]

    below = min(drops) - 1.0  # every run fell more than this
    code, stdout, stderr = run_cli(
        capsys, "run", named_config, "--out", tmp_path / "b", "--max-old-drop", str(below),
        *options,
    )  # fmt: skip
    assert code == 1, stderr
    assert len(read_records(tmp_path / "b")) == 2 and (tmp_path / "b" / "summary.md").exists()
    table_end = stdout.index("next: headbench report")
    gate = stdout[table_end:]
    assert f"2 of 2 runs fell by more than {below:g} pp" in gate
    assert "- naive seed 0:" in gate and "- naive seed 1:" in gate

    above = max(drops) + 1.0  # no run fell this much
    code, stdout, stderr = run_cli(
        capsys, "run", named_config, "--out", tmp_path / "c", "--max-old-drop", str(above),
        *options,
    )  # fmt: skip
    assert code == 0, stderr
    assert f"no run fell by more than {above:g} pp" in stdout


@pytest.mark.parametrize("value", ["-1", "nan", "text", "inf", "100.5", ""])
@pytest.mark.bad_input
def test_bad_max_old_drop_is_one_line_exit_2_and_writes_nothing(
    config_file, tmp_path, capsys, value
):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stopped:  # argparse refuses it, before any work
        main(["run", str(config_file), "--out", str(out), "--quiet", f"--max-old-drop={value}"])
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    stdout, stderr = captured.out, captured.err
    assert stderr.count("\n") == 1 and "--max-old-drop" in stderr and "[0, 100]" in stderr
    assert "Traceback" not in stderr and stdout == ""
    assert not out.exists()


def test_report_renders_the_old_label_table_and_plot(named_config, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, stderr = run_cli(
        capsys, "run", named_config, "--out", out, "--quiet", "--device", "cpu", "--seeds", "0"
    )
    assert code == 0, stderr
    (record,) = read_records(out)
    code, _, stderr = run_cli(capsys, "report", out, "--format", "md,png,csv")
    assert code == 0, stderr
    report = out / "report"
    assert (report / "figures" / "bench-old_labels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (report / "report.md").read_text()
    assert "### Old-label check" in text and "bench-old_labels.png" in text
    section = text[text.index("### Old-label check") :]
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| Fine-tuning")
    ]
    # The last experience (3): its old classes are ant, bee, cat, dog; the table's first
    # row is all of them, then the three that lost most, by name, computed here.
    counts = record["class_accuracy"]
    totals = counts["test_counts"]
    last = [row for row in rows if row[1].startswith("3 (last")]
    old = range(4)
    before = [counts["correct"][1][c] / totals[c] for c in old]
    after = [counts["correct"][2][c] / totals[c] for c in old]
    overall = (
        100 * sum(counts["correct"][1][:4]) / sum(totals[:4]),
        100 * sum(counts["correct"][2][:4]) / sum(totals[:4]),
    )
    assert last[0][2] == "all old classes"
    assert [float(last[0][3]), float(last[0][4])] == pytest.approx(overall, abs=0.05)
    worst = sorted(old, key=lambda c: (after[c] - before[c], c))[:3]
    assert [row[2] for row in last[1:]] == [NAMES[c] for c in worst]
    for row, c in zip(last[1:], worst, strict=True):
        shown = [float(row[3]), float(row[4]), float(row[6])]
        expected = [100 * before[c], 100 * after[c], 100 * counts["to_newest"][2][c] / totals[c]]
        assert shown == pytest.approx(expected, abs=0.05)
    csv = (report / "old_labels-bench.csv").read_text().splitlines()
    assert csv[0] == "strategy,experience,which,class,before,after,to_newest,change"


def test_report_of_records_without_class_counts_leaves_the_check_out(
    named_config, tmp_path, capsys
):
    out = tmp_path / "out"
    code, _, stderr = run_cli(
        capsys, "run", named_config, "--out", out, "--quiet", "--device", "cpu", "--seeds", "0"
    )
    assert code == 0, stderr
    (path,) = sorted((out / "runs").glob("*.json"))
    record = json.loads(path.read_text())
    del record["class_accuracy"]  # as records written before the field
    path.write_text(json.dumps(record))
    code, _, stderr = run_cli(capsys, "report", out, "--format", "md,png")
    assert code == 0, stderr
    assert "### Old-label check" not in (out / "report" / "report.md").read_text()
    assert not (out / "report" / "figures" / "bench-old_labels.png").exists()
