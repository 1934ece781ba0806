"""Bad input of every kind: exit status 2, one line on stderr that starts with
"headbench: error:" and names the bad value and what is accepted, no traceback, and
nothing written (the --out directory is never created).

Each family of refusals has a valid-input control beside it, built the same way with the
one bad detail left out, so a test cannot pass merely because the base input is broken.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_config

from benchmarks.cli import main

NUM_CLASSES = 6
DIM = 8
TRAIN_PER_CLASS = 5
TEST_PER_CLASS = 3


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths (and the default results/ folder) land in the test's own folder."""
    monkeypatch.chdir(tmp_path)


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """A valid .npz payload: class c around 3 * e_c in 8 dims, 5 train / 3 test per class."""
    generator = np.random.RandomState(seed)
    centres = 3.0 * np.eye(NUM_CLASSES, DIM)
    payload = {}
    for split, count in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        labels = np.repeat(np.arange(NUM_CLASSES), count)
        features = centres[labels] + 0.1 * generator.randn(len(labels), DIM)
        payload[f"X_{split}"] = features.astype(np.float32)
        payload[f"y_{split}"] = labels.astype(np.int64)
    return payload


def bench(directory: Path, payload: dict[str, np.ndarray], extra: str = "") -> Path:
    """Save `payload` as an .npz and return a B2 Inc2 features config that reads it."""
    npz = directory / "data.npz"
    np.savez(npz, **payload)
    return write_config(directory, npz, extra)


def call(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit:  # argparse refusals exit from inside main
        return exit.code


def assert_refused(
    capsys: pytest.CaptureFixture, argv: list[str | Path], out: Path, *fragments: str
) -> str:
    """Run `headbench ARGV` (`--out OUT` added for `run`); check the whole contract.

    All problems are collected and reported together. Returns the error line.
    """
    if argv[0] == "run":
        argv = [*argv, "--out", out]
    code = call([str(arg) for arg in argv])
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    problems = []
    if code != 2:
        problems.append(f"exit status {code}, expected 2")
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr, expected 1: {captured.err!r}")
    if not captured.err.startswith("headbench: error:"):
        problems.append(f"stderr does not start with 'headbench: error:': {captured.err!r}")
    if "Traceback" in captured.err:
        problems.append("a traceback on stderr")
    missing = [fragment for fragment in fragments if fragment not in captured.err]
    if missing:
        problems.append(f"the message lacks {missing}: {captured.err!r}")
    if captured.out:
        problems.append(f"stdout is not empty: {captured.out!r}")
    if out.exists():
        written = sorted(str(path.relative_to(out)) for path in out.rglob("*"))
        problems.append(f"{out} was created, holding {written}")
    assert not problems, "\n".join(problems)
    return lines[0]


def assert_runs(capsys: pytest.CaptureFixture, argv: list[str | Path], out: Path) -> None:
    """The control: the same kind of call, with valid input, succeeds and writes records."""
    code = call([str(arg) for arg in [*argv, "--out", out, "--quiet", "--device", "cpu"]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert list((out / "runs").glob("*.json"))


FAST = ["--strategy", "naive", "--set", "training.epochs=1"]


# ---------------------------------------------------------------------------------------
# Strategies, datasets, config keys and types


def test_control_the_base_input_runs(tmp_path, capsys):
    assert_runs(capsys, ["run", bench(tmp_path, arrays()), *FAST], tmp_path / "out")


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        pytest.param(
            ["--strategy", "nope"],
            ["'nope'", "naive", "weight_aligning", "ewc", "lwf", "joint"],
            id="unknown-strategy",
        ),
        pytest.param(
            ["--set", "dataset.name=imagenet"],
            ["'imagenet'", "features", "digits"],
            id="unknown-dataset",
        ),
        pytest.param(
            ["--set", "backbone.name=resnet"],
            ["'resnet'", "identity", "base-task"],
            id="unknown-backbone",
        ),
        pytest.param(["--set", "training.epoch=3"], ["training.epoch", "epochs"], id="key-typo"),
        pytest.param(["--set", "head.biass=true"], ["head.biass", "bias"], id="key-typo-head"),
        pytest.param(["--set", "training.epochs=ten"], ["'ten'", "int"], id="epochs-not-int"),
        pytest.param(["--set", "head.bias=3"], ["head.bias = 3", "bool"], id="bias-not-bool"),
        pytest.param(
            ["--set", "training.optimizer=adamw"], ["'adamw'", "sgd", "adam"], id="optimizer"
        ),
        pytest.param(
            ["--set", "training.epochs"], ["training.epochs", "KEY=VALUE"], id="set-without-value"
        ),
        pytest.param(
            ["--set", "strategies.ewc.lamda=1"], ["lamda", "lambda"], id="hyperparameter-typo"
        ),
        pytest.param(["--set", "strategies.ewc.lambda=-1"], ["-1", ">= 0"], id="negative-lambda"),
        pytest.param(
            ["--set", "strategies.ewc.mode=fast"],
            ["'fast'", "'separate'", "'online'"],
            id="ewc-mode",
        ),
        pytest.param(
            ["--set", "strategies.lwf.t_squared=2"],
            ["t_squared = 2", "bool"],
            id="hyperparameter-type",
        ),
        pytest.param(
            ["--strategy", "replay", "--set", "strategies.replay.memory_size=5"],
            ["memory_size = 5 (total)", "6 classes", ">= 6"],
            id="memory-below-one-per-class",
        ),
        pytest.param(
            ["--set", "strategies.replay.memory_size=-1"], ["memory_size = -1", ">= 0"], id="memory"
        ),
        pytest.param(
            ["--strategy", "lwf", "--set", "strategies.lwf.memory_size=60"],
            ["ce_scope='new'", "replayed", "ce_scope='seen'"],
            id="lwf-new-scope-with-replay",
        ),
        pytest.param(
            ["--set", "head.kind=cosine"], ["head.kind = 'cosine'", "head.bias = false"], id="cos"
        ),
        pytest.param(
            ["--set", "training.sampling=balanced"],
            ["'balanced'", "uniform", "class_balanced"],
            id="sampling",
        ),
    ],
)
@pytest.mark.bad_input
def test_bad_names_keys_and_types_on_the_command_line(
    options, fragments, config_file, tmp_path, capsys
):
    assert_refused(capsys, ["run", config_file, *options], tmp_path / "out", *fragments)


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        pytest.param("[strategies.nope]\n", ["'nope'", "naive"], id="unknown-strategy-table"),
        pytest.param(
            "[strategies.wa]\n[strategies.weight_aligning]\n", ["weight_aligning"], id="alias-twice"
        ),
        pytest.param(
            "[optimiser]\nlr = 0.1\n", ["[optimiser]", "training", "scenario"], id="unknown-section"
        ),
        pytest.param(
            '[backbone]\nname = "identity"\nwidth = 4\n',
            ["backbone.width", "none"],
            id="key-of-another-backbone",
        ),
        pytest.param('[head]\nbias = "yes"\n', ["'yes'", "bool"], id="bias-as-string"),
    ],
)
@pytest.mark.bad_input
def test_bad_tables_in_the_config_file(extra, fragments, tmp_path, blobs_npz, capsys):
    config = write_config(tmp_path, blobs_npz, extra)
    assert_refused(capsys, ["run", config], tmp_path / "out", *fragments)


# ---------------------------------------------------------------------------------------
# The scenario: class order, initial classes, increment


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(["--set", "scenario.class_order=[5,4,3,2,1,0]"], id="explicit-order"),
        pytest.param(["--set", "scenario.increment=4"], id="B2-Inc4"),
        pytest.param(
            ["--set", "scenario.initial_classes=3", "--set", "scenario.increment=3"], id="B3-Inc3"
        ),
        pytest.param(["--set", "scenario.initial_classes=6"], id="B6-one-experience"),
    ],
)
def test_control_valid_scenarios_run(options, config_file, tmp_path, capsys):
    assert_runs(capsys, ["run", config_file, *FAST, *options], tmp_path / "out")


@pytest.mark.parametrize(
    ("order", "fragments"),
    [
        pytest.param("[0,1,1,3,4,5]", ["repeated [1]", "missing [2]", "0..5"], id="repeated-id"),
        pytest.param("[0,1,2,3,4]", ["missing [5]", "0..5"], id="missing-id"),
        pytest.param("[0,1,2,3,4,6]", ["[6]", "0..5"], id="out-of-range-id"),
        pytest.param("[0,1,2,3,4,-5]", ["[-5]", "0..5"], id="negative-id"),
        pytest.param('"shuffled"', ["'shuffled'", "identity", "seed:N"], id="unknown-form"),
        pytest.param('"seed:x"', ["'seed:x'", "integer"], id="seed-not-a-number"),
    ],
)
@pytest.mark.bad_input
def test_class_order_not_a_permutation(order, fragments, config_file, tmp_path, capsys):
    argv = ["run", config_file, "--set", f"scenario.class_order={order}"]
    assert_refused(capsys, argv, tmp_path / "out", *fragments)


@pytest.mark.bad_input
def test_increment_that_does_not_cover_the_classes(config_file, tmp_path, capsys):
    # 6 classes, B = 2: the other 4 come 1, 2 or 4 at a time, never 3.
    line = assert_refused(
        capsys,
        ["run", config_file, "--set", "scenario.increment=3"],
        tmp_path / "out",
        "6 classes",
        "[1, 2, 4]",
    )
    assert "3" in line


@pytest.mark.parametrize(
    ("initial", "fragments"),
    [
        pytest.param(1, ["initial_classes = 1", "2"], id="one-class"),
        pytest.param(7, ["initial_classes = 7", "2..6"], id="more-than-the-classes"),
    ],
)
@pytest.mark.bad_input
def test_initial_classes_out_of_range(initial, fragments, config_file, tmp_path, capsys):
    argv = ["run", config_file, "--set", f"scenario.initial_classes={initial}"]
    assert_refused(capsys, argv, tmp_path / "out", *fragments)


def test_control_single_class_experiences_with_seen_scope_run(config_file, tmp_path, capsys):
    argv = ["run", config_file, "--strategy", "lwf", "--set", "strategies.lwf.ce_scope=seen"]
    argv += ["--set", "scenario.increment=1", "--set", "training.epochs=1"]
    assert_runs(capsys, argv, tmp_path / "out")


@pytest.mark.parametrize("strategy", ["lwf", "ewc"])
@pytest.mark.bad_input
def test_new_class_scope_with_increment_one_has_zero_gradient(
    strategy, config_file, tmp_path, capsys
):
    argv = ["run", config_file, "--strategy", strategy, "--set", "scenario.increment=1"]
    argv += ["--set", f"strategies.{strategy}.ce_scope=new"]
    assert_refused(capsys, argv, tmp_path / "out", "ce_scope='new'", "zero gradient", "'seen'")


@pytest.mark.bad_input
def test_image_backbone_on_a_features_dataset(tmp_path, blobs_npz, capsys):
    config = write_config(tmp_path, blobs_npz, '[backbone]\nname = "base-task"\n')
    assert_refused(capsys, ["run", config], tmp_path / "out", "base-task", "identity")


# ---------------------------------------------------------------------------------------
# The .npz of features


def test_control_float_labels_holding_whole_numbers_are_accepted(tmp_path, capsys):
    payload = arrays()
    payload["y_train"] = payload["y_train"].astype(np.float64)
    payload["y_test"] = payload["y_test"].astype(np.float32)
    assert_runs(capsys, ["run", bench(tmp_path, payload), *FAST], tmp_path / "out")


def test_control_class_names_are_accepted(tmp_path, capsys):
    payload = {**arrays(), "class_names": np.array(["a", "b", "c", "d", "e", "f"])}
    assert_runs(capsys, ["run", bench(tmp_path, payload), *FAST], tmp_path / "out")


def without(name: str) -> dict[str, np.ndarray]:
    payload = arrays()
    del payload[name]
    return payload


def replaced(**changes: np.ndarray) -> dict[str, np.ndarray]:
    return {**arrays(), **changes}


def with_value(name: str, index: tuple, value: float, dtype: type | None = None) -> dict:
    payload = arrays()
    array = payload[name].astype(dtype or payload[name].dtype)
    array[index] = value
    payload[name] = array
    return payload


def drop_classes(split: str, classes: list[int]) -> dict[str, np.ndarray]:
    payload = arrays()
    keep = ~np.isin(payload[f"y_{split}"], classes)
    payload[f"X_{split}"] = payload[f"X_{split}"][keep]
    payload[f"y_{split}"] = payload[f"y_{split}"][keep]
    return payload


NAMES = np.array(["a", "b", "c", "d", "e", "f"])
TRAIN_ROWS = NUM_CLASSES * TRAIN_PER_CLASS  # 30


@pytest.mark.parametrize(
    ("payload", "fragments"),
    [
        pytest.param(
            without("y_test"), ["y_test", "X_train", "y_train", "X_test"], id="missing-array"
        ),
        pytest.param(
            replaced(y_train=arrays()["y_train"][:-1]),
            ["X_train", f"{TRAIN_ROWS} rows", f"y_train has {TRAIN_ROWS - 1}"],
            id="X-y-lengths",
        ),
        pytest.param(with_value("X_train", (4, 1), np.nan), ["X_train", "NaN", "finite"], id="nan"),
        pytest.param(with_value("X_test", (2, 0), np.inf), ["X_test", "finite"], id="inf"),
        pytest.param(with_value("X_train", (0, 0), -np.inf), ["X_train", "finite"], id="minus-inf"),
        pytest.param(
            replaced(X_train=arrays()["X_train"].reshape(TRAIN_ROWS, 2, 4)),
            ["X_train", "2-D", "(30, 2, 4)"],
            id="X-not-2d",
        ),
        pytest.param(
            replaced(X_test=arrays()["X_test"][:, :7]), ["dim 8", "X_test has 7"], id="dims-differ"
        ),
        pytest.param(with_value("y_train", (0,), -1), ["label -1 ", "0..5"], id="negative-label"),
        pytest.param(
            {**with_value("y_test", (-1,), 6), "class_names": NAMES},
            ["label 6 ", "0..5"],
            id="label-beyond-class-names",
        ),
        pytest.param(
            {**with_value("y_train", (3,), 6), "class_names": NAMES},
            ["label 6 ", "0..5"],
            id="train-label-beyond-class-names",
        ),
        pytest.param(
            drop_classes("train", [3]),
            ["[3]", "no training samples"],
            id="class-without-training-samples",
        ),
        pytest.param(
            {**drop_classes("train", [5]), "class_names": NAMES},
            ["[5]", "no training samples"],
            id="last-class-without-training-samples",
        ),
        pytest.param(
            with_value("y_train", (3,), 0.5, np.float64), ["0.5", "integer"], id="label-0.5"
        ),
        pytest.param(
            drop_classes("test", [4, 5]), ["no test samples"], id="experience-without-test-samples"
        ),
    ],
)
@pytest.mark.bad_input
def test_bad_npz(payload, fragments, tmp_path, capsys):
    assert_refused(capsys, ["run", bench(tmp_path, payload)], tmp_path / "out", *fragments)


# ---------------------------------------------------------------------------------------
# Files


@pytest.mark.bad_input
def test_missing_config_file(tmp_path, capsys):
    argv = ["run", tmp_path / "absent.toml"]
    assert_refused(capsys, argv, tmp_path / "out", "absent.toml", "digits_b5_inc1")


@pytest.mark.bad_input
def test_missing_shipped_config_name(tmp_path, capsys):
    assert_refused(capsys, ["run", "digits_b9"], tmp_path / "out", "digits_b9", "digits_b5_inc1")


@pytest.mark.bad_input
def test_missing_npz(tmp_path, capsys):
    config = write_config(tmp_path, tmp_path / "absent.npz")
    assert_refused(capsys, ["run", config], tmp_path / "out", "absent.npz")


@pytest.mark.bad_input
def test_npz_that_is_not_an_npz(tmp_path, capsys):
    text = tmp_path / "features.npz"
    text.write_text("not a zip archive\n")
    config = write_config(tmp_path, text)
    assert_refused(capsys, ["run", config], tmp_path / "out", "features.npz", ".npz")


@pytest.mark.bad_input
def test_malformed_toml(tmp_path, blobs_npz, capsys):
    config = write_config(tmp_path, blobs_npz, "epochs = = 3\n")
    assert_refused(capsys, ["run", config], tmp_path / "out", "bench.toml", "TOML")


# ---------------------------------------------------------------------------------------
# Command-line options


@pytest.mark.parametrize(
    ("seeds", "fragments"),
    [
        pytest.param("4-0", ["'4-0'", "0-4", "0,2,7"], id="backwards-range"),
        pytest.param("a", ["'a'", "0-4", "0,2,7"], id="not-a-number"),
        pytest.param("1,1", ["'1,1'", "once"], id="repeated"),
        pytest.param("-1", ["'-1'", "0-4"], id="negative"),
    ],
)
@pytest.mark.bad_input
def test_bad_seeds(seeds, fragments, config_file, tmp_path, capsys):
    argv = ["run", config_file, f"--seeds={seeds}"]
    assert_refused(capsys, argv, tmp_path / "out", *fragments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.bad_input
def test_cuda_device_without_cuda(config_file, tmp_path, capsys):
    argv = ["run", config_file, "--device", "cuda"]
    assert_refused(capsys, argv, tmp_path / "out", "cuda", "cpu")


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        pytest.param(["--device", "gpu"], ["'gpu'", "'cpu'", "'cuda'"], id="device-choice"),
        pytest.param(["--sed", "1"], ["--sed"], id="unknown-option"),
    ],
)
@pytest.mark.bad_input
def test_argument_parser_refusals(options, fragments, config_file, tmp_path, capsys):
    assert_refused(capsys, ["run", config_file, *options], tmp_path / "out", *fragments)


@pytest.mark.bad_input
def test_unknown_list_section(tmp_path, capsys):
    line = assert_refused(capsys, ["list", "metrics"], tmp_path / "out", "'metrics'")
    assert "strategies" in line and "configs" in line


@pytest.mark.bad_input
def test_out_under_a_regular_file(config_file, tmp_path, capsys):
    regular = tmp_path / "file.txt"
    regular.write_text("a file, not a folder\n")
    out = regular / "out"
    assert_refused(capsys, ["run", config_file], out, str(out), "writable")
    assert regular.read_text() == "a file, not a folder\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
@pytest.mark.bad_input
def test_out_in_a_read_only_folder(config_file, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_refused(capsys, ["run", config_file], locked / "out", "writable")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


@pytest.mark.bad_input
def test_no_traceback_from_a_real_process(config_file, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", str(config_file), "--out", str(out)]
        + ["--set", "scenario.class_order=[0,1,2,3,4,4]"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("headbench: error:"), result.stderr
    assert "repeated [4]" in lines[0]
    assert result.stdout == ""
    assert not out.exists()


# ---------------------------------------------------------------------------------------
# Seeds beyond numpy's range, configs that are not UTF-8 (issue 14)


@pytest.mark.parametrize(
    "argv_tail, fragments",
    [
        (["--seeds", "99999999999999999999"], ["'99999999999999999999'", "0..4294967295"]),
        (["--seeds", "4294967296"], ["'4294967296'", "0..4294967295"]),
        (["--seeds", "0-100000000"], ["'0-100000000'", "at most 10000"]),
        (["--set", "training.seeds=[4294967296]"], ["training.seeds", "0..4294967295"]),
    ],
)
@pytest.mark.bad_input
def test_seeds_out_of_range_are_refused(argv_tail, fragments, tmp_path, capsys):
    config = bench(tmp_path, arrays())
    assert_refused(capsys, ["run", config, *argv_tail], tmp_path / "out", *fragments)


def test_control_the_largest_seed_runs(tmp_path, capsys):
    config = bench(tmp_path, arrays())
    assert_runs(capsys, ["run", config, *FAST, "--seeds", "4294967295"], tmp_path / "out")


@pytest.mark.bad_input
def test_a_validation_seed_out_of_range_is_refused(tmp_path, capsys):
    config = bench(tmp_path, arrays())
    out = tmp_path / "out"
    argv = ["tune", config, "--strategy", "naive", "--grid", "training.lr=0.1,0.01"]
    assert_refused(capsys, [*argv, "--validation-seed", "-1", "--out", out], out, "-1", "0..")


@pytest.mark.bad_input
def test_a_config_that_is_not_utf8_is_refused(tmp_path, capsys):
    config = tmp_path / "latin1.toml"
    config.write_bytes('# café\n[dataset]\nname = "digits"\n'.encode("latin-1"))
    assert_refused(capsys, ["run", config], tmp_path / "out", "latin1.toml", "not UTF-8")


@pytest.mark.bad_input
def test_weights_that_overflow_are_a_diverged_run(tmp_path, capsys):
    """lr = 1e30 sends the head's weights (or their norms) past float32's range while the
    mean loss can stay finite; the run is listed as failed (exit 1) like a NaN loss, and no
    record holding inf is written (JSON has no inf)."""
    config = bench(tmp_path, arrays())
    out = tmp_path / "out"
    argv = ["run", config, "--strategy", "naive", "--seeds", "0", "--quiet", "--out", out]
    code = call([str(arg) for arg in [*argv, "--set", "training.lr=1e30"]])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "Traceback" not in captured.err
    assert "naive seed 0: naive: the head's weights overflowed in experience 0" in captured.out
    assert list((out / "runs").glob("*.json")) == []
