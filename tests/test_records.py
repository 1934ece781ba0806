"""Run records are data: `reproduce` refuses a record that names code to run (unless
`--trust-record`), and every reader validates a record field by field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_blobs, write_config

from benchmarks.cli import main


def run_cli(capsys: pytest.CaptureFixture, *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real naive record on the blobs (the record every bad variant starts from)."""
    directory = tmp_path_factory.mktemp("recorded")
    npz = directory / "blobs.npz"
    np.savez(npz, **make_blobs())
    config = write_config(directory, npz, "[strategies.naive]\n")
    code = main(["run", str(config), "--out", str(directory / "out"), "--quiet"])
    assert code == 0
    (path,) = (directory / "out" / "runs").glob("*.json")
    return json.loads(path.read_text())


PWNED_DATASET = {
    "name": "avalanche",
    "benchmark": "os:system",
    "arguments": {"command": "touch pwned"},
}


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
