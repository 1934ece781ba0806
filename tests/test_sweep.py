"""`headbench sweep`: grid expansion, resume after SIGKILL, two sweeps on one OUT, failed
runs recorded and retried, unwritable OUT; `headbench reproduce` with zero differences."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_config

from benchmarks import store, sweep
from benchmarks.cli import main
from benchmarks.errors import UsageError


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "runs").glob("*.json")}


@pytest.fixture
def sweep_config(tmp_path, blobs_npz) -> Path:
    return write_config(tmp_path, blobs_npz, "[strategies.naive]\n[strategies.ewc]\n")


@pytest.mark.bad_input
def test_grid_values_split_at_top_level_commas():
    assert sweep.parse_grid("strategies.ewc.lambda=100,1000") == (
        "strategies.ewc.lambda",
        ["100", "1000"],
    )
    assert sweep.split_values('[1,2],"a,b",online') == ["[1,2]", '"a,b"', "online"]
    for bad in ("lambda=1,2", "strategies.ewc.lambda", "strategies.ewc.lambda="):
        with pytest.raises(UsageError, match="SECTION.KEY=VALUE,VALUE"):
            sweep.parse_grid(bad)  # no section, no `=` (once accepted as "0 runs"), no value
    with pytest.raises(UsageError, match="names a key twice"):
        sweep.grid_points(["training.lr=0.1", "training.lr=0.2"])
    assert sweep.grid_points(["training.lr=0.1,0.2", "training.epochs=1,2"]) == [
        ("training.lr=0.1", "training.epochs=1"),
        ("training.lr=0.1", "training.epochs=2"),
        ("training.lr=0.2", "training.epochs=1"),
        ("training.lr=0.2", "training.epochs=2"),
    ]


def test_a_grid_over_one_strategy_does_not_repeat_the_others(sweep_config, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["sweep", sweep_config, "--seeds", "0-1", "--out", out, "--quiet"]
    argv += ["--grid", "strategies.ewc.lambda=0,100,1000"]
    code, stdout, stderr = run_cli(capsys, *argv)
    assert code == 0, stderr
    found = records(out)
    # naive: 2 seeds once (the grid does not change it); ewc: 3 values × 2 seeds.
    runs = sorted(
        (r["strategy"], r["config"]["strategies"][r["strategy"]].get("lambda"), r["seed"])
        for r in found.values()
    )
    assert runs == sorted(
        [("naive", None, 0), ("naive", None, 1)]
        + [("ewc", value, seed) for value in (0.0, 100.0, 1000.0) for seed in (0, 1)]
    )
    assert "8 runs done now" in stdout
    # The summary tells the three EWC variants apart.
    assert stdout.count("| EWC") == 3
    # The next step, as for `run`: the exact report command for this OUT.
    assert stdout.rstrip("\n").splitlines()[-2] == f"next: headbench report {out}"

    code, stdout, _ = run_cli(capsys, *argv)  # the same command again: nothing to do
    assert code == 0
    assert "0 runs done now" in stdout and "8 already recorded" in stdout
    assert records(out) == found
    # With workers, nothing to do once raised ZeroDivisionError splitting 0 jobs.
    code, stdout, stderr = run_cli(capsys, *argv, "--workers", "2")
    assert code == 0, stderr
    assert "0 runs done now" in stdout and "8 already recorded" in stdout


@pytest.mark.bad_input
def test_a_run_that_raises_is_recorded_as_failed_and_the_sweep_goes_on(
    sweep_config, tmp_path, capsys
):
    out = tmp_path / "out"
    # λ = 1e15: lr · λ · F far beyond SGD's stability limit, so EWC is stopped before it
    # trains its second experience.
    argv = ["sweep", sweep_config, "--out", out, "--quiet", "--set", "strategies.ewc.lambda=1e15"]
    code, stdout, _ = run_cli(capsys, *argv)
    assert code == 1
    assert [r["strategy"] for r in records(out).values()] == ["naive"]
    (failure,) = [json.loads(p.read_text()) for p in (out / "failed").glob("*.json")]
    assert failure["strategy"] == "ewc"
    assert failure["error"].startswith("TrainingDiverged: ewc: lr·λ·max F = 0.1·1e+15·")
    assert "passes SGD's stability limit 2(1 + momentum) = 3.8" in failure["error"]
    assert "Traceback (most recent call last)" in failure["traceback"]
    assert f"{failure['run_id']}: TrainingDiverged" in stdout

    code, stdout, _ = run_cli(capsys, *argv)  # a failure counts as done ...
    assert code == 0 and "0 runs done now" in stdout
    code, stdout, _ = run_cli(capsys, *argv, "--retry-failed")  # ... unless retried
    assert code == 1 and "1 failed" in stdout


@pytest.mark.bad_input
def test_a_full_disk_stops_the_sweep_in_one_line_with_no_partial_record(
    sweep_config, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out"

    def full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "atomic_write", full)
    code, _, stderr = run_cli(capsys, "sweep", sweep_config, "--out", out, "--quiet")
    assert code == 2
    assert stderr.count("\n") == 1 and "No space left on device" in stderr
    assert not out.exists()  # the claim was released, the empty folders it made removed


@pytest.mark.bad_input
def test_a_claim_that_is_a_symbolic_link_is_refused_and_its_target_untouched(
    sweep_config, tmp_path, capsys
):
    """A link planted at OUT/claims/<run_id>.lock once made a sweep truncate and overwrite
    its target; claims are opened with O_NOFOLLOW and refused in one line."""
    out = tmp_path / "out"
    argv = ["sweep", sweep_config, "--out", out, "--quiet", "--seeds", "0", "--strategy", "naive"]
    assert run_cli(capsys, *argv)[0] == 0
    (record,) = (out / "runs").glob("*.json")
    record.unlink()  # the run is to do again, and its claim is now a link
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    claim = out / "claims" / f"{record.stem}.lock"
    claim.unlink(missing_ok=True)
    claim.symlink_to(target)
    code, _, stderr = run_cli(capsys, *argv)
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert f"claim {claim} is a symbolic link" in stderr
    assert target.read_text() == "keep me\n"
    assert list((out / "runs").glob("*.json")) == []


@pytest.mark.bad_input
def test_claims_that_is_a_file_is_refused_in_one_line(sweep_config, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "claims").write_text("not a folder")
    code, _, stderr = run_cli(capsys, "sweep", sweep_config, "--out", out, "--quiet")
    assert code == 2 and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert f"{out / 'claims'} exists and is not a folder" in stderr
    assert not list(out.glob("runs/*.json"))


@pytest.mark.bad_input
def test_an_out_that_is_a_dangling_link_is_refused_naming_its_target(
    sweep_config, tmp_path, capsys
):
    """Once reported as "File exists"; the link and its missing target stay as they were."""
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "gone")
    for command in ("run", "sweep"):
        code, _, stderr = run_cli(capsys, command, sweep_config, "--out", out, "--quiet")
        assert code == 2 and stderr.count("\n") == 1 and "Traceback" not in stderr
        assert f"--out {out} is a symbolic link to {tmp_path / 'gone'}, which does not" in stderr
    assert out.is_symlink() and not (tmp_path / "gone").exists()


@pytest.mark.bad_input
def test_an_out_that_cannot_be_a_directory_is_refused(sweep_config, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, stderr = run_cli(capsys, "sweep", sweep_config, "--out", blocker / "out", "--quiet")
    assert code == 2 and "is not writable" in stderr and stderr.count("\n") == 1


def slow_config(tmp_path: Path, blobs_npz: Path) -> Path:
    # 4 strategies × 6 seeds, 20 epochs each: long enough to be killed midway.
    extra = "[strategies.naive]\n[strategies.ewc]\n[strategies.joint]\n"
    extra += "[strategies.lwf]\nce_scope = 'seen'\n"
    path = write_config(tmp_path, blobs_npz, extra, name="slow.toml")
    path.write_text(path.read_text().replace("epochs = 2", "epochs = 20"))
    return path


def start_sweep(config: Path, out: Path, workers: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "benchmarks", "sweep", str(config), "--seeds", "0-5"]
    command += ["--out", str(out), "--workers", str(workers), "--quiet"]
    # One torch thread per process: two sweeps of two workers on two cores would otherwise
    # fight over threads and take minutes.
    return subprocess.Popen(
        command,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def done_now(log: Path) -> int:
    text = log.read_text()
    return int(text.split(" runs done now")[0].split()[-1])


def test_a_sweep_killed_with_sigkill_resumes_and_finishes_exactly_the_missing_runs(
    tmp_path, blobs_npz
):
    config, out = slow_config(tmp_path, blobs_npz), tmp_path / "out"
    first = start_sweep(config, out, 2, tmp_path / "first.log")
    deadline = time.time() + 120
    while len(list((out / "runs").glob("*.json"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the sweep and its workers, mid-run
    first.wait()
    before = records(out)
    assert 3 <= len(before) < 24
    # Claims left by the dead workers are not asserted: the kill may land after a worker
    # published a run and removed its claim but before it claimed the next one.

    second = start_sweep(config, out, 2, tmp_path / "second.log")
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()
    after = records(out)
    assert len(after) == 24  # 4 strategies × 6 seeds, each exactly once
    assert done_now(tmp_path / "second.log") == 24 - len(before)
    for run_id, record in before.items():
        assert after[run_id] == record  # finished runs were not run again
    assert not list((out / "claims").glob("*.lock"))  # the dead workers' claims are gone


def test_two_sweeps_on_one_out_never_run_a_run_twice(tmp_path, blobs_npz):
    config, out = slow_config(tmp_path, blobs_npz), tmp_path / "out"
    sweeps = [start_sweep(config, out, 1, tmp_path / f"{i}.log") for i in range(2)]
    for process in sweeps:
        assert process.wait(timeout=300) == 0
    assert len(records(out)) == 24
    assert done_now(tmp_path / "0.log") + done_now(tmp_path / "1.log") == 24


def test_reproduce_a_directory_of_records_finds_zero_differences(sweep_config, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, stderr = run_cli(
        capsys, "run", sweep_config, "--out", out, "--quiet", "--seeds", "0-1"
    )
    assert code == 0, stderr
    code, stdout, stderr = run_cli(capsys, "reproduce", out, "--quiet")
    assert code == 0, stderr
    assert "4 of 4 runs reproduced: every accuracy-matrix cell, weight norm and loss identical" in (
        stdout
    )


def test_reproduce_reports_the_cells_that_differ(sweep_config, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, _ = run_cli(
        capsys, "run", sweep_config, "--out", out, "--quiet", "--strategy", "naive"
    )
    (path,) = (out / "runs").glob("*.json")
    record = json.loads(path.read_text())
    original = record["accuracy_matrix"][1][0]
    record["accuracy_matrix"][1][0] = original - 0.25  # as if another machine got 25 points less
    del record["class_accuracy"]  # its per-class counts would no longer add up to the matrix
    path.write_text(json.dumps(record))
    code, stdout, _ = run_cli(capsys, "reproduce", path, "--quiet")
    assert code == 1
    assert "R[1][0]" in stdout and "+25.00" in stdout
