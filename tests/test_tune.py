"""`headbench tune`: the validation split by hand, no use of the test split while choosing,
the first-k-experiences protocol, diverged points skipped, and the choice stated."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_blobs, write_config

from benchmarks import engine, tune
from benchmarks.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_validation_split_holds_out_the_fraction_of_every_class():
    targets = np.repeat([0, 1, 2], [10, 5, 2])
    held_out = tune.validation_split(targets, 0.2, seed=0)
    # round(0.2 · 10) = 2, round(0.2 · 5) = 1, round(0.2 · 2) = 0 -> at least 1.
    assert np.bincount(targets[held_out]).tolist() == [2, 1, 1]
    assert np.array_equal(held_out, tune.validation_split(targets, 0.2, seed=0))
    assert not np.array_equal(held_out, tune.validation_split(targets, 0.2, seed=1))


def tune_argv(config, out, *extra) -> list:
    grid = "strategies.ewc.lambda=0,10,1e15"  # 1e15 diverges (lr · λ · F far past 2)
    return ["tune", config, "--strategy", "ewc", "--grid", grid, "--out", out, "--quiet", *extra]


def test_the_test_split_plays_no_part_in_the_choice(tmp_path, capsys):
    arrays = make_blobs(spread=1.0)
    noise = dict(arrays, X_test=np.random.RandomState(5).randn(*arrays["X_test"].shape))
    outputs = []
    for name, data in (("clean", arrays), ("noise", noise)):
        np.savez(tmp_path / f"{name}.npz", **data)
        config = write_config(tmp_path, tmp_path / f"{name}.npz", name=f"{name}.toml")
        code, stdout, stderr = run_cli(capsys, *tune_argv(config, tmp_path / name))
        assert code == 0, stderr
        outputs.append(stdout.split("\n\n")[0])  # the validation scores and the choice
    assert outputs[0] == outputs[1]
    assert "strategies.ewc.lambda=1e15: diverged" in outputs[0]
    assert "<- chosen" in outputs[0]
    assert f"next: headbench report {tmp_path / 'noise'}\n" in stdout


def test_the_records_state_the_choice_and_the_report_says_it(tmp_path, capsys, blobs_npz):
    config, out = write_config(tmp_path, blobs_npz), tmp_path / "out"
    code, stdout, _ = run_cli(capsys, *tune_argv(config, out, "--first-experiences", "2"))
    assert code == 0
    (path,) = (out / "runs").glob("*.json")
    selection = json.loads(path.read_text())["selection"]
    assert selection["scores"]["strategies.ewc.lambda=1e15"] is None  # diverged
    assert selection["chosen"] in {"strategies.ewc.lambda=0", "strategies.ewc.lambda=10"}
    assert selection["first_experiences"] == 2 and selection["validation_fraction"] == 0.2
    assert "on a validation split of 20% of the training data" in stdout
    assert "the first 2 experiences" in stdout and "not on the test set" in stdout
    code, stdout, _ = run_cli(capsys, "report", out, "--out", tmp_path / "report")
    assert "not on the test set" in stdout


def test_first_experiences_tunes_on_their_classes_only(tmp_path, capsys, blobs_npz, monkeypatch):
    seen = []
    original = engine.run_seeds  # every training goes through it (`engine.run` too)

    def recording(instances, train_f, train_t, test_f, test_t, scenario, *args, **kwargs):
        seen.append((scenario.num_experiences, int(train_t.max()), int(test_t.max())))
        return original(instances, train_f, train_t, test_f, test_t, scenario, *args, **kwargs)

    monkeypatch.setattr(engine, "run_seeds", recording)
    config = write_config(tmp_path, blobs_npz)
    code, _, _ = run_cli(capsys, *tune_argv(config, tmp_path / "out", "--first-experiences", "2"))
    assert code == 0
    # Validation: 2 experiences, classes 0..3 only; then the chosen point on all 3.
    assert seen[:3] == [(2, 3, 3)] * 3
    assert seen[-1] == (3, 5, 5)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--validation-fraction", "1.5"], "--validation-fraction 1.5"),
        (["--criterion", "accuracy"], "--criterion 'accuracy'"),
        (["--first-experiences", "7"], "use 2..3"),
    ],
)
def test_bad_protocol_values_are_refused_in_one_line(
    options, fragment, tmp_path, capsys, blobs_npz
):
    config = write_config(tmp_path, blobs_npz)
    code, _, stderr = run_cli(capsys, *tune_argv(config, tmp_path / "out", *options))
    assert code == 2 and fragment in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()
