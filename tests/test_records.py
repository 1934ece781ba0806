"""Run records are data: `reproduce` refuses a record that names code to run (unless
`--trust-record`), and every reader validates a record field by field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_blobs, write_config

from benchmarks.cli import main


def run_cli(capsys: pytest.CaptureFixture, *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real naive record on the blobs, made on the CPU (the record every bad variant
    starts from; a CPU record's weight norms and losses are binding in `reproduce`, also
    on a machine with CUDA)."""
    directory = tmp_path_factory.mktemp("recorded")
    npz = directory / "blobs.npz"
    np.savez(npz, **make_blobs())
    config = write_config(directory, npz, "[strategies.naive]\n")
    argv = ["run", str(config), "--out", str(directory / "out"), "--device", "cpu", "--quiet"]
    code = main(argv)
    assert code == 0
    (path,) = (directory / "out" / "runs").glob("*.json")
    return json.loads(path.read_text())


PWNED_DATASET = {
    "name": "avalanche",
    "benchmark": "os:system",
    "arguments": {"command": "touch pwned"},
}


@pytest.mark.bad_input
def test_reproduce_refuses_a_record_whose_dataset_names_code(
    recorded, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    record = json.loads(json.dumps(recorded))
    record["config"]["dataset"] = PWNED_DATASET
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    code, stdout, stderr = run_cli(capsys, "reproduce", path, "--quiet")
    assert code == 2
    assert stdout == ""
    assert stderr == (
        f"headbench: error: {path}: config.dataset.benchmark = 'os:system' names code to "
        "import and call; reproduce runs such a record only with --trust-record (records are "
        "data: trust it only if you would run its config yourself)\n"
    )
    assert not (tmp_path / "pwned").exists()


def test_trust_record_is_what_lets_such_a_record_run(recorded, tmp_path, capsys, monkeypatch):
    # The flag is the only difference: with it the record's callable does run (here a
    # harmless `touch` in this test's own folder), then fails as no benchmark.
    monkeypatch.chdir(tmp_path)
    record = json.loads(json.dumps(recorded))
    record["config"]["dataset"] = PWNED_DATASET
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    code, _, stderr = run_cli(capsys, "reproduce", path, "--quiet", "--trust-record")
    assert (tmp_path / "pwned").exists()
    assert code == 2 and stderr.count("\n") == 1


@pytest.mark.bad_input
def test_reproduce_refuses_unchecked_pickled_dataset_files(recorded, tmp_path, capsys):
    record = json.loads(json.dumps(recorded))
    record["config"]["dataset"] = {
        "name": "cifar100",
        "root": str(tmp_path),
        "download": False,
        "verify_checksums": False,
    }
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    code, stdout, stderr = run_cli(capsys, "reproduce", path, "--quiet")
    assert code == 2 and stdout == ""
    assert stderr.startswith(
        f"headbench: error: {path}: config.dataset.verify_checksums = false lets the dataset "
        "files be unpickled unchecked (a crafted file runs code); reproduce runs such a record "
        "only with --trust-record"
    )


@pytest.mark.bad_input
def test_one_refused_record_in_a_folder_stops_every_run(recorded, tmp_path, capsys):
    runs = tmp_path / "out" / "runs"
    runs.mkdir(parents=True)
    (runs / "a-good.json").write_text(json.dumps(recorded))
    bad = json.loads(json.dumps(recorded))
    bad["config"]["dataset"] = PWNED_DATASET
    (runs / "b-bad.json").write_text(json.dumps(bad))
    code, stdout, stderr = run_cli(capsys, "reproduce", tmp_path / "out")
    assert code == 2 and stdout == ""
    # One line and no progress (not --quiet: a started run would log its features).
    assert stderr.count("\n") == 1
    assert stderr.startswith(f"headbench: error: {runs / 'b-bad.json'}: config.dataset.benchmark")


def _changed(record: dict, dotted: str, value) -> dict:
    changed = json.loads(json.dumps(record))
    *parents, last = dotted.split(".")
    target = changed
    for key in parents:
        target = target[key]
    target[last] = value
    return changed


# Records that passed the old check and crashed `headbench report` (issue 14), each refused
# in one line: the file, the field, what is accepted. The recorded run has 3 experiences
# of 2 classes.
REPORT_REFUSALS = {
    "experiences": (5, "experiences = 5; accepted: 3 non-empty lists of class ids, one per "
                    "row of accuracy_matrix"),
    "config.scenario": ("oops", "config.scenario = 'oops'; accepted: an object (a TOML table)"),
    "class_order": (7, "class_order = 7; accepted: a list of distinct class ids (non-negative "
                    "integers), at least one per class of the experiences"),
    "weight_norms": ("oops", "weight_norms = 'oops'; accepted: 3 lists of lengths [2, 4, 6] "
                     "(one norm >= 0 per class seen after each experience)"),
    "newest_share": ([1], "newest_share = [1]; accepted: a list of 3 numbers in [0, 1], one "
                     "per experience"),
    "schema_version": (3, "schema_version = 3; accepted: one of 1, 2"),
}  # fmt: skip


@pytest.mark.parametrize("field", list(REPORT_REFUSALS))
@pytest.mark.bad_input
def test_report_refuses_a_bad_record_naming_file_field_and_accepted(
    recorded, field, tmp_path, capsys
):
    value, message = REPORT_REFUSALS[field]
    runs = tmp_path / "out" / "runs"
    runs.mkdir(parents=True)
    path = runs / "bad.json"
    path.write_text(json.dumps(_changed(recorded, field, value)))
    code, stdout, stderr = run_cli(capsys, "report", tmp_path / "out", "--format", "md")
    assert code == 2 and stdout == ""
    assert stderr == f"headbench: error: {path}: {message}\n"
    assert not (tmp_path / "out" / "report").exists()  # refused: nothing written


def test_records_carry_schema_version_2_and_old_version_1_records_still_read(
    recorded, tmp_path, capsys
):
    assert recorded["schema_version"] == 2 and "format" not in recorded
    assert recorded["environment"]["threads"] >= 1
    runs = tmp_path / "out" / "runs"
    runs.mkdir(parents=True)
    # The run writes the strategy's printed name and papers; records of the versions
    # before them have neither and get them from reports.bibliography's frozen table.
    assert recorded["display_name"] == "Fine-tuning" and recorded["references"] == []
    dropped = ("schema_version", "display_name", "references")
    old = {k: v for k, v in recorded.items() if k not in dropped}
    (runs / "old-format.json").write_text(json.dumps({**old, "format": 1, "seed": 1}))
    (runs / "no-version.json").write_text(json.dumps({**old, "seed": 2}))
    code, stdout, stderr = run_cli(capsys, "report", tmp_path / "out", "--format", "md")
    assert code == 0, stderr
    assert "| Fine-tuning |" in stdout and "| 2 |" in stdout  # both seeds in the table


# Records on which `reproduce` crashed or lied (issue 14): refused before anything runs.
REPRODUCE_REFUSALS = {
    "unknown strategy": (
        lambda r: _changed(r, "strategy", "nosuch"),
        "strategy = 'nosuch' is not registered here; accepted: naive, ",
    ),
    "seed a string": (
        lambda r: _changed(r, "seed", "zero"),
        "seed = 'zero'; accepted: an integer in [0, 2**32)",
    ),
    "config a string": (
        lambda r: _changed(r, "config", "oops"),
        "config = 'oops'; accepted: an object (the resolved config)",
    ),
    "1x1 matrix": (
        lambda r: {**r, "accuracy_matrix": [[1.0]], "test_counts": [40], "experiences": None,
                   "newest_share": None, "weight_norms": None, "train_loss": None,
                   "class_accuracy": None, "task_aware_accuracy_matrix": None},
        "accuracy_matrix has 1 rows but its config makes 3 experiences; accepted: one row per "
        "experience",
    ),
    "ragged matrix": (
        lambda r: _changed(r, "accuracy_matrix", [[1.0], [1.0, 1.0], [0.9, 1.0, 1.0]]),
        "accuracy_matrix must be a non-empty square list of lists; got 3 rows of lengths "
        "[1, 2, 3]",
    ),
    "seed_batch without the seed": (
        lambda r: _changed(r, "seed_batch", [1, 2]),
        "seed_batch = [1, 2]; accepted: a list of distinct integer seeds that holds seed 0",
    ),
    "NaN cell": (
        lambda r: _changed(r, "accuracy_matrix", [[1.0, None, None], [float("nan"), 1.0, None],
                                                  [0.9, 1.0, 1.0]]),
        "accuracy_matrix[1][0] = nan; accepted: a number in [0, 1] on and below the diagonal",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REPRODUCE_REFUSALS))
@pytest.mark.bad_input
def test_reproduce_refuses_a_bad_record_in_one_line(recorded, case, tmp_path, capsys):
    change, message = REPRODUCE_REFUSALS[case]
    path = tmp_path / "record.json"
    path.write_text(json.dumps(change(recorded)))
    code, stdout, stderr = run_cli(capsys, "reproduce", path, "--quiet")
    assert code == 2 and stdout == ""
    assert stderr.startswith(f"headbench: error: {path}: {message}"), stderr
    assert stderr.count("\n") == 1


def test_the_unchanged_record_reproduces_identically(recorded, tmp_path, capsys):
    path = tmp_path / "record.json"  # the control for the refusals above
    path.write_text(json.dumps(recorded))
    code, stdout, stderr = run_cli(capsys, "reproduce", path, "--quiet")
    assert code == 0, stderr
    assert "1 of 1 runs reproduced" in stdout


def test_reproduce_compares_weight_norms_and_losses_within_the_stated_tolerance(
    recorded, tmp_path, capsys
):
    # The same machine and thread count: the rerun is bit-identical, so a recorded value
    # moved by 1e-4 relative (10x the 1e-5 bound) is a difference, and one moved by
    # 1e-6 (a tenth of it) is within tolerance but not "identical".
    norm = recorded["weight_norms"][2][3]
    loss = recorded["train_loss"][1]
    far = json.loads(json.dumps(recorded))
    far["weight_norms"][2][3] = norm * (1 + 1e-4)
    far["train_loss"][1] = loss * (1 - 1e-4)
    path = tmp_path / "far.json"
    path.write_text(json.dumps(far))
    code, stdout, _ = run_cli(capsys, "reproduce", path, "--device", "cpu", "--quiet")
    assert code == 1
    assert "2 weight norms or losses differ by more than 1e-05 relative (largest 1.0e-04)" in stdout
    assert f"  weight_norms[2][3]: recorded {norm * (1 + 1e-4):.9g}, now {norm:.9g}" in stdout
    assert f"  train_loss[1]: recorded {loss * (1 - 1e-4):.9g}, now {loss:.9g}" in stdout
    assert "0 of 1 runs reproduced; 1 differ" in stdout

    near = json.loads(json.dumps(recorded))
    near["weight_norms"][2][3] = norm * (1 + 1e-6)
    path = tmp_path / "near.json"
    path.write_text(json.dumps(near))
    code, stdout, _ = run_cli(capsys, "reproduce", path, "--device", "cpu", "--quiet")
    assert code == 0
    assert "1 of 1 runs reproduced: within tolerance" in stdout
    assert "within 0.00 points, weight norms and losses within 1.0e-06 relative" in stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_weight_norms_are_listed_but_not_counted(tmp_path, capsys):
    # A CUDA record: its weight norms and losses are shown, marked as not counted, and
    # only the accuracy matrix (within 1 point, reproduce.CUDA_TOLERANCE) decides.
    np.savez(tmp_path / "blobs.npz", **make_blobs())
    config = write_config(tmp_path, tmp_path / "blobs.npz", "[strategies.naive]\n")
    out = tmp_path / "out"
    code = main(["run", str(config), "--out", str(out), "--device", "cuda", "--quiet"])
    assert code == 0
    (path,) = (out / "runs").glob("*.json")
    record = json.loads(path.read_text())
    assert record["environment"]["device"] == "cuda"
    norm = record["weight_norms"][2][3]
    record["weight_norms"][2][3] = norm * (1 + 1e-4)  # 10x the CPU bound
    path.write_text(json.dumps(record))
    code, stdout, _ = run_cli(capsys, "reproduce", path, "--quiet")
    assert code == 0
    assert f"  (not counted on CUDA) weight_norms[2][3]: recorded {norm * (1 + 1e-4):.9g}" in stdout
    assert "1 of 1 runs reproduced: within tolerance" in stdout
