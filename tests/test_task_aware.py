"""Task-aware accuracy (FACIL's TAw): each test sample scored only among its own
experience's classes, beside the task-agnostic accuracy; its matrix in the run records,
its metrics and the gap in `headbench report`, and records without it still read."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_blobs, write_config
from test_reports_support import make_record, markdown_tables, metrics_of, write_records

import strategies
from benchmarks import engine
from benchmarks.cli import main
from benchmarks.scenario import Scenario
from reports.metrics import all_metrics, task_aware_gap
from reports.records import ReportError, RunRecord, read_record
from reports.report import TASK_AWARE_TITLE, make_report
from strategies import Head, Strategy


def run_cli(capsys: pytest.CaptureFixture, *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------------------
# The engine, on scores chosen by hand


@dataclass(frozen=True)
class _NoConfig:
    pass


class FixedScores(Strategy):
    """Scores each sample by its own features: feature c is the score of class c."""

    name = "fixed_scores"
    paper = "none (a test double)"
    Config = _NoConfig
    trains_head = False

    def predict(self, head: Head, features: torch.Tensor) -> torch.Tensor:
        return features[:, : head.num_classes]  # (batch, seen)


# Four classes in two experiences, {0, 1} then {2, 3}; the features are the scores.
SCORES = torch.tensor(
    [
        [2.0, 1.0, 3.0, 0.0],  # class 0: all seen -> 2 (wrong); among {0, 1} -> 0 (right)
        [2.0, 1.0, 0.0, 0.0],  # class 1: -> 0 (wrong) both ways
        [5.0, 0.0, 1.0, 0.0],  # class 2: all seen -> 0 (wrong); among {2, 3} -> 2 (right)
        [0.0, 0.0, 1.0, 2.0],  # class 3: -> 3 (right) both ways
        [1.0, 0.0, 0.0, 0.0],  # class 0: -> 0 (right) both ways
    ]
)
TARGETS = torch.tensor([0, 1, 2, 3, 0])
# After experience 1 only classes 0, 1 are seen and scored (samples 1, 2, 5 on columns 0,
# 1): predictions 0, 0, 0 -> 2 of 3 right, in both (one experience: the same classes).
# After experience 2, experience 1 (3 samples): all seen 1 of 3 (sample 5), task-aware 2 of
# 3 (samples 1, 5); experience 2 (2 samples): all seen 1 of 2 (sample 4), task-aware 2 of 2.
AGNOSTIC = [[2 / 3, None], [1 / 3, 1 / 2]]
AWARE = [[2 / 3, None], [2 / 3, 1.0]]


def test_hand_made_scores_give_the_hand_computed_matrices_and_metrics(training):
    result = engine.run(
        FixedScores(), SCORES, TARGETS, SCORES, TARGETS, Scenario([0, 1, 2, 3], 2, 2),
        training, True, 0,
    )  # fmt: skip
    assert result.test_counts == [3, 2]
    # Correct counts are whole numbers divided by the test counts: exact.
    assert result.accuracy_matrix == AGNOSTIC
    assert result.task_aware_accuracy_matrix == AWARE
    agnostic = all_metrics(result.accuracy_matrix, result.test_counts)
    aware = all_metrics(result.task_aware_accuracy_matrix, result.test_counts)
    # Final: all seen (3·1/3 + 2·1/2) / 5 = 2/5; task-aware (3·2/3 + 2·1) / 5 = 4/5.
    assert agnostic["final_accuracy"] == pytest.approx(0.4)
    assert aware["final_accuracy"] == pytest.approx(0.8)
    # Average incremental: (2/3 + 2/5) / 2 = 8/15 and (2/3 + 4/5) / 2 = 11/15.
    assert agnostic["average_incremental_accuracy"] == pytest.approx(8 / 15)
    assert aware["average_incremental_accuracy"] == pytest.approx(11 / 15)
    # Forgetting 2/3 − 1/3 = 1/3 (BWT −1/3) all seen; none task-aware (2/3 stays 2/3).
    assert agnostic["forgetting"] == pytest.approx(1 / 3)
    assert agnostic["bwt"] == pytest.approx(-1 / 3)
    assert aware["forgetting"] == pytest.approx(0.0)
    assert aware["bwt"] == pytest.approx(0.0)
    # The gap: 4/5 − 2/5 = 0.4, i.e. 40 pp, all of the forgetting here is confusion.
    gap = task_aware_gap(result.task_aware_accuracy_matrix, result.accuracy_matrix, [3, 2])
    assert gap == pytest.approx(0.4)


def test_an_experience_whose_scores_are_all_minus_infinity_predicts_its_first_class(training):
    # Sample 1 (class 1) scores -inf on both its classes: argmax over its own slice is its
    # first class, 0, wrong; sample 2 (class 0) alike is right. Class 2's sample is right.
    scores = torch.tensor(
        [[-math.inf, -math.inf, 1.0], [-math.inf, -math.inf, 2.0], [0.0, -1.0, 3.0]]
    )
    targets = torch.tensor([1, 0, 2])
    result = engine.run(
        FixedScores(), scores, targets, scores, targets, Scenario([0, 1, 2], 2, 1),
        training, True, 0,
    )  # fmt: skip
    # After experience 1 (classes 0, 1): both rows all -inf -> class 0: 1 of 2, both ways.
    # After experience 2: all seen, both go to class 2 (0 of 2); task-aware 1 of 2.
    assert result.accuracy_matrix == [[0.5, None], [0.0, 1.0]]
    assert result.task_aware_accuracy_matrix == [[0.5, None], [0.5, 1.0]]


def test_one_experience_task_aware_equals_task_agnostic(training):
    # Overlapping blobs (spread 1.5), so the accuracy is well below 1 and errors exist.
    blobs = make_blobs(spread=1.5)
    tensors = [torch.from_numpy(blobs[k]) for k in ("X_train", "y_train", "X_test", "y_test")]
    result = engine.run(
        strategies.create("naive"), *tensors, Scenario(list(range(6)), 6, 1), training, True, 0
    )
    assert result.accuracy_matrix[0][0] < 0.95
    assert result.task_aware_accuracy_matrix == result.accuracy_matrix
    # Several experiences: the first row sees one experience only, so it is equal too.
    result = engine.run(
        strategies.create("naive"), *tensors, Scenario(list(range(6)), 2, 2), training, True, 0
    )
    assert result.task_aware_accuracy_matrix[0] == result.accuracy_matrix[0]
    assert result.task_aware_accuracy_matrix != result.accuracy_matrix


# ---------------------------------------------------------------------------------------
# Every strategy: the engine's last row against an independent per-experience argmax


@pytest.mark.parametrize("name", strategies.list_strategies())
def test_every_strategy_gives_the_task_aware_row_of_its_own_scores(name, blob_tensors, training):
    # The contract's blobs and settings (overlapping blobs make EWC's λ = 5000 diverge).
    tensors = blob_tensors
    scenario = Scenario(list(range(6)), 2, 2)
    strategy = strategies.create(name, {"lambda": 0.01} if name == "mas" else {})
    strategy.validate(scenario.experience_sizes)
    heads = []
    after_experience = strategy.after_experience

    def recording(head, experience):
        after_experience(head, experience)
        heads.append(head)

    strategy.after_experience = recording
    result = engine.run(strategy, *tensors, scenario, training, True, 0)
    aware = result.task_aware_accuracy_matrix
    assert aware is not None
    assert aware[0] == result.accuracy_matrix[0]
    for row, agnostic in zip(aware, result.accuracy_matrix, strict=True):
        for value, other in zip(row, agnostic, strict=True):
            assert (value is None) == (other is None)
            assert value is None or value >= other
    # Independently: slice each experience's two columns out of the final scores.
    test_features, test_targets = tensors[2], tensors[3]
    with torch.no_grad():
        scores = strategy.predict(heads[-1], test_features)  # (test, 6)
    expected = []
    for j in range(3):
        members = (test_targets // 2) == j
        own = scores[members][:, 2 * j : 2 * j + 2].argmax(dim=1) + 2 * j
        expected.append((own == test_targets[members]).float().mean().item())
    assert aware[-1] == pytest.approx(expected, abs=1e-7)


def test_batched_seeds_fill_the_task_aware_matrix_as_one_by_one(blob_tensors, training):
    scenario = Scenario(list(range(6)), 2, 2)
    batched = engine.run_seeds(
        [strategies.create("naive"), strategies.create("naive")],
        *blob_tensors, scenario, training, True, [0, 1],
    )  # fmt: skip
    for seed, result in zip((0, 1), batched, strict=True):
        alone = engine.run(
            strategies.create("naive"), *blob_tensors, scenario, training, True, seed
        )
        assert result.task_aware_accuracy_matrix is not None
        assert result.task_aware_accuracy_matrix == alone.task_aware_accuracy_matrix


# ---------------------------------------------------------------------------------------
# Records


@pytest.fixture(scope="module")
def blob_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`headbench run --batch-seeds` on overlapping blobs: naive and ncm, seeds 0-1."""
    directory = tmp_path_factory.mktemp("task_aware")
    npz = directory / "blobs.npz"
    np.savez(npz, **make_blobs(spread=1.5))
    config = write_config(directory, npz, "[strategies.naive]\n[strategies.ncm]\n")
    out = directory / "out"
    code = main(["run", str(config), "--out", str(out), "--quiet", "--seeds", "0-1",
                 "--batch-seeds"])  # fmt: skip
    assert code == 0
    return out


def test_headbench_run_records_the_matrix_and_its_metrics(blob_runs):
    records = [json.loads(p.read_text()) for p in sorted((blob_runs / "runs").glob("*.json"))]
    assert len(records) == 4
    for record in records:
        aware = record["task_aware_accuracy_matrix"]
        assert len(aware) == len(record["accuracy_matrix"]) == 3
        assert aware[0] == record["accuracy_matrix"][0]
        assert record["seed_batch"] == [0, 1]
        # The stored metrics equal the test suite's own implementation on that matrix.
        expected = metrics_of({**record, "accuracy_matrix": aware})
        for key, value in record["task_aware_metrics"].items():
            assert value == pytest.approx(expected[key], abs=1e-12), key


def test_a_record_round_trips_with_its_task_aware_matrix(blob_runs, tmp_path):
    path = next((blob_runs / "runs").glob("*.json"))
    data = json.loads(path.read_text())
    parsed = RunRecord.parse(data, path)
    assert parsed.task_aware_accuracy_matrix == data["task_aware_accuracy_matrix"]
    assert parsed.task_aware_metrics == data["task_aware_metrics"]
    again = tmp_path / "again.json"
    again.write_text(json.dumps(parsed.to_json()))
    run = read_record(again)
    assert run.record == parsed.to_json()
    assert run.task_aware_matrix == data["task_aware_accuracy_matrix"]


def test_an_old_record_without_the_field_reads(tmp_path):
    record = make_record("naive", 0, [[0.9, None], [0.6, 0.8]])
    assert "task_aware_accuracy_matrix" not in record
    path = tmp_path / "old.json"
    path.write_text(json.dumps(record))
    run = read_record(path)
    assert run.task_aware_matrix is None
    parsed = RunRecord.parse(record, path)
    assert parsed.task_aware_accuracy_matrix is None
    assert "task_aware_accuracy_matrix" not in parsed.to_json()


@pytest.mark.parametrize(
    "aware, message",
    [
        ([[0.9, None], [0.5, 0.8]], "task_aware_accuracy_matrix[1][0] = 0.5 is below "
         "accuracy_matrix[1][0] = 0.6"),
        ([[0.9, None], [0.7, 1.2]], "task_aware_accuracy_matrix[1][1] = 1.2; accepted: a "
         "number in [0, 1]"),
        ([[0.9, 0.1], [0.7, 0.9]], "task_aware_accuracy_matrix[0][1] = 0.1; accepted: null "
         "above the diagonal"),
        ([[0.9]], "task_aware_accuracy_matrix = [[0.9]]; accepted: 2 rows, as accuracy_matrix"),
        ([[0.9, None], [0.7]], "task_aware_accuracy_matrix must be a non-empty square list"),
        ("high", "task_aware_accuracy_matrix = 'high'; accepted: a square list of lists"),
    ],
)  # fmt: skip
@pytest.mark.bad_input
def test_a_bad_task_aware_matrix_is_refused_in_one_line(aware, message, tmp_path, capsys):
    good = make_record("naive", 0, [[0.9, None], [0.6, 0.8]])
    results = write_records(tmp_path / "ok", [{**good, "task_aware_accuracy_matrix": None}])
    code, _, stderr = run_cli(capsys, "report", results, "--format", "md")
    assert code == 0, stderr  # the control: null means not measured
    results = write_records(tmp_path / "bad", [{**good, "task_aware_accuracy_matrix": aware}])
    with pytest.raises(ReportError, match="task_aware"):
        read_record(next((results / "runs").glob("*.json")))
    code, stdout, stderr = run_cli(capsys, "report", results, "--format", "md")
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and message in stderr
    assert not (results / "report").exists()


# ---------------------------------------------------------------------------------------
# The report's block


def toy_records() -> list[dict]:
    """alpha with two seeds and task-aware matrices; counts 10 and 10."""
    matrices = {
        0: ([[0.9, None], [0.6, 0.8]], [[0.9, None], [0.9, 0.9]]),
        1: ([[0.8, None], [0.4, 0.9]], [[0.8, None], [0.8, 1.0]]),
    }
    return [
        {**make_record("alpha", seed, agnostic), "task_aware_accuracy_matrix": aware}
        for seed, (agnostic, aware) in matrices.items()
    ]


# By hand, equal counts: task-agnostic final (0.6 + 0.8) / 2 = 0.70 and (0.4 + 0.9) / 2 = 0.65;
# task-aware final (0.9 + 0.9) / 2 = 0.90 and (0.8 + 1.0) / 2 = 0.90 -> 90.00 ± 0.00. Gaps
# 20 and 25 pp -> 22.50 ± sqrt(2 · 2.5²) = 3.54. Average incremental (0.9 + 0.9) / 2 = 0.90 and
# (0.8 + 0.9) / 2 = 0.85 -> 87.50 ± 3.54. Forgetting 0.9 − 0.9 = 0 and 0.8 − 0.8 = 0; BWT 0.
EXPECTED_ROW = ["90.00 ± 0.00", "87.50 ± 3.54", "0.00 ± 0.00", "0.00 ± 0.00", "22.50 ± 3.54", "2"]


def test_report_shows_the_task_aware_block_with_the_gap_column(tmp_path):
    results = write_records(tmp_path / "toy", toy_records())
    out = tmp_path / "report"
    make_report(results, out, formats="md,csv,html")
    text = (out / "report.md").read_text()
    assert f"### {TASK_AWARE_TITLE}" in text
    assert TASK_AWARE_TITLE == (
        "Task-aware (each sample among its own experience's classes; not comparable with "
        "class-incremental numbers)"
    )
    main_table, _, _, aware = markdown_tables(text)
    assert text.index("### Task-aware") > text.index("| strategy |")  # after the main table
    assert aware[0] == [
        "strategy",
        "final average accuracy (%) ↑",
        "average incremental accuracy (%) ↑",
        "forgetting (pp) ↓",
        "BWT (pp) ↑",
        "gap: task-aware − task-agnostic final accuracy (pp)",
        "seeds",
    ]
    (row,) = aware[1:]
    assert row[0] == "alpha"
    assert [cell.strip("*") for cell in row[1:]] == EXPECTED_ROW
    # The main table is still the task-agnostic one: final (0.70 + 0.65) / 2 = 67.50.
    assert main_table[1][1].strip("*") == "67.50 ± 3.54"

    csv = pd.read_csv(out / "task_aware.csv")
    assert list(csv.columns) == list(pd.read_csv(out / "summary.csv").columns)
    values = dict(zip(csv["metric"], csv["mean"], strict=True))
    assert values["task_aware_final_accuracy"] == pytest.approx(0.9)
    assert values["task_aware_average_incremental_accuracy"] == pytest.approx(0.875)
    assert values["task_aware_gap"] == pytest.approx(0.225)
    gap = csv[csv.metric == "task_aware_gap"].iloc[0]
    assert gap["std"] == pytest.approx(math.sqrt(2 * 0.025**2))
    assert pd.isna(gap["rank"])  # the gap ranks nothing
    assert escape(TASK_AWARE_TITLE) in (out / "report.html").read_text()


def test_report_notes_records_without_the_task_aware_matrix(tmp_path):
    old = [make_record("beta", seed, [[0.7, None], [0.5, 0.9]]) for seed in (0, 1)]
    results = write_records(tmp_path / "mixed", toy_records() + old)
    out = tmp_path / "report"
    make_report(results, out, formats="md,csv")
    text = (out / "report.md").read_text()
    aware = markdown_tables(text)[3]
    assert [row[0] for row in aware[1:]] == ["alpha"]
    assert "beta: its records hold no task-aware accuracy" in text
    assert set(pd.read_csv(out / "task_aware.csv")["strategy"]) == {"alpha"}


def test_a_report_of_old_records_only_has_no_block_and_no_file(tmp_path):
    old = [make_record("beta", seed, [[0.7, None], [0.5, 0.9]]) for seed in (0, 1)]
    results = write_records(tmp_path / "old", old)
    out = tmp_path / "report"
    make_report(results, out, formats="md,csv")
    text = (out / "report.md").read_text()
    assert "Task-aware" not in text
    assert len(markdown_tables(text)) == 3
    assert not (out / "task_aware.csv").exists()


def test_report_of_real_runs_equals_an_independent_recomputation(blob_runs, tmp_path):
    out = tmp_path / "report"
    make_report(blob_runs, out, formats="csv")
    csv = pd.read_csv(out / "task_aware.csv").set_index(["strategy", "metric"])
    records = [json.loads(p.read_text()) for p in (blob_runs / "runs").glob("*.json")]
    for strategy in ("naive", "ncm"):
        mine = [r for r in records if r["strategy"] == strategy]
        aware = [
            metrics_of({**r, "accuracy_matrix": r["task_aware_accuracy_matrix"]}) for r in mine
        ]
        agnostic = [metrics_of(r) for r in mine]
        for key in ("final_accuracy", "average_incremental_accuracy", "forgetting", "bwt"):
            mean = np.mean([m[key] for m in aware])
            assert csv.loc[(strategy, f"task_aware_{key}"), "mean"] == pytest.approx(mean)
        gaps = [
            a["final_accuracy"] - b["final_accuracy"] for a, b in zip(aware, agnostic, strict=True)
        ]
        assert csv.loc[(strategy, "task_aware_gap"), "mean"] == pytest.approx(np.mean(gaps))
        assert min(gaps) >= 0


def test_report_says_when_single_class_experiences_are_right_by_construction(tmp_path):
    records = [
        {**r, "experiences": [[0, 1, 2], [3]], "weight_norms": [[1.0] * 3, [1.0] * 4]}
        for r in toy_records()
    ]
    results = write_records(tmp_path / "inc1", records)
    out = tmp_path / "report"
    make_report(results, out, formats="md")
    text = (out / "report.md").read_text()
    assert "1 of 2 experiences hold a single class (experience 2)" in text
    # Two classes per experience (toy_records as they are): no such note.
    make_report(write_records(tmp_path / "inc2", toy_records()), tmp_path / "r2", formats="md")
    assert "hold a single class" not in (tmp_path / "r2" / "report.md").read_text()
