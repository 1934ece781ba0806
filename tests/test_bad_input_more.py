"""More bad input of issue 14, beside tests/test_bad_input.py (whose contract and helpers
this file shares): `.npz` arrays that cannot fit or were cast silently, training options
out of range, a full disk, an OUT whose folders are files, leftovers of killed processes,
`sweep --executor ray` without Ray, `tune` over another strategy's key, and a strategy
name that matplotlib would read as mathtext.

Each refusal asserts its exact line; each family has a valid-input control beside it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import write_config
from test_bad_input import FAST, arrays, assert_refused, assert_runs, bench, call, replaced

from benchmarks import store
from benchmarks.cache import Cache

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def no_warnings_while(function, *args):
    """Run `function(*args)`; fail if it warned (a warning prints lines before the one)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(*args)
    assert [str(w.message) for w in caught] == []
    return result


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------------------------------
# The .npz of features: sizes that cannot fit, values that were cast silently


def emptied(split: str) -> dict[str, np.ndarray]:
    payload = arrays()
    payload[f"X_{split}"] = payload[f"X_{split}"][:0]
    payload[f"y_{split}"] = payload[f"y_{split}"][:0]
    return payload


def as_dtype(name: str, dtype) -> dict[str, np.ndarray]:
    return replaced(**{name: arrays()[name].astype(dtype)})


def with_entry(name: str, index: tuple, value, dtype=None) -> dict[str, np.ndarray]:
    payload = arrays()
    array = payload[name].astype(dtype or payload[name].dtype)
    array[index] = value
    payload[name] = array
    return payload


NPZ_REFUSALS = {
    "train-zero-rows": (
        emptied("train"),
        "X_train has 0 rows; accepted: at least one sample per class",
    ),
    "test-zero-rows": (
        emptied("test"),
        "X_test has 0 rows; accepted: at least one sample per class",
    ),
    "dimension-0": (
        replaced(X_train=arrays()["X_train"][:, :0], X_test=arrays()["X_test"][:, :0]),
        "X_train has shape (30, 0) (features of dimension 0); accepted: at least one feature "
        "per sample",
    ),
    "complex-labels": (
        as_dtype("y_train", np.complex128),
        "y_train has complex dtype complex128; accepted: real numbers",
    ),
    "complex-test-labels": (
        with_entry("y_test", (0,), 1j, np.complex64),
        "y_test has complex dtype complex64; accepted: real numbers",
    ),
    "complex-features": (
        as_dtype("X_test", np.complex64),
        "X_test has complex dtype complex64; accepted: real numbers",
    ),
    "float64-1e300": (
        with_entry("X_train", (4, 2), 1e300, np.float64),
        "X_train[4, 2] = 1e+300 is beyond float32's range; accepted: finite values within ±3.4e+38",
    ),
    "float64-minus-1e39": (
        with_entry("X_test", (0, 7), -1e39, np.float64),
        "X_test[0, 7] = -1e+39 is beyond float32's range; accepted: finite values within ±3.4e+38",
    ),
    "label-1e9": (
        with_entry("y_train", (0,), 10**9),
        "y_train has label 1000000000, but 30 training samples hold at most 30 classes "
        "(every class needs training samples); accepted: labels 0..29",
    ),
    "test-label-1e9": (
        with_entry("y_test", (5,), 10**9),
        "y_test has label 1000000000, but 30 training samples hold at most 30 classes "
        "(every class needs training samples); accepted: labels 0..29",
    ),
    "float-label-1e20": (
        with_entry("y_train", (3,), 1e20, np.float64),
        "y_train has label 1e+20, but 30 training samples hold at most 30 classes (every "
        "class needs training samples); accepted: labels 0..29",
    ),
    "empty-class-names": (
        {**arrays(), "class_names": np.array([], dtype=str)},
        "class_names is empty; accepted: one name per class",
    ),
}


@pytest.mark.parametrize("case", list(NPZ_REFUSALS))
@pytest.mark.bad_input
def test_npz_that_cannot_fit_or_was_cast_silently(case, tmp_path, capsys):
    payload, message = NPZ_REFUSALS[case]
    config = bench(tmp_path, payload)
    line = no_warnings_while(assert_refused, capsys, ["run", config], tmp_path / "out", message)
    assert line == f"headbench: error: {tmp_path / 'data.npz'}: {message}"


def test_control_float64_features_and_the_largest_label_run(tmp_path, capsys):
    # float64 within float32's range, float16, and 6 classes from 30 rows: accepted as before.
    payload = replaced(
        X_train=arrays()["X_train"].astype(np.float64), X_test=arrays()["X_test"].astype(np.float16)
    )
    no_warnings_while(assert_runs, capsys, ["run", bench(tmp_path, payload), *FAST], tmp_path / "o")


@pytest.mark.bad_input
def test_float64_1e300_prints_no_warning_from_a_real_process(tmp_path):
    config = bench(tmp_path, with_entry("X_train", (0, 0), 1e300, np.float64))
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"headbench: error: {tmp_path / 'data.npz'}: X_train[0, 0] = 1e+300 is beyond "
        "float32's range; accepted: finite values within ±3.4e+38\n"
    )
    assert result.stdout == "" and not out.exists()


# ---------------------------------------------------------------------------------------
# Training options and strategy sizes out of range


OPTION_REFUSALS = {
    "epochs-1e9": (
        ["--set", "training.epochs=1000000000"],
        "training.epochs = 1000000000 is not accepted; must be in [1, 10000]",
    ),
    "lr-0": (["--set", "training.lr=0"], "training.lr = 0.0 is not accepted; must be > 0"),
    "momentum-100": (
        ["--set", "training.momentum=100"],
        "training.momentum = 100.0 is not accepted; must be in [0, 1)",
    ),
    "momentum-1": (
        ["--set", "training.momentum=1"],
        "training.momentum = 1.0 is not accepted; must be in [0, 1)",
    ),
    "momentum-negative": (
        ["--set", "training.momentum=-0.1"],
        "training.momentum = -0.1 is not accepted; must be in [0, 1)",
    ),
    "weight-decay-negative": (
        ["--set", "training.weight_decay=-1"],
        "training.weight_decay = -1.0 is not accepted; must be >= 0",
    ),
    "batch-size-0": (
        ["--set", "training.batch_size=0"],
        "training.batch_size = 0 is not accepted; must be >= 1",
    ),
    "bic-bias-epochs-1e9": (
        ["--strategy", "bic", "--set", "strategies.bic.bias_epochs=1000000000"],
        "strategies.bic.bias_epochs = 1000000000 must be in [1, 10000]",
    ),
    "ridge-projection-1e9": (
        ["--strategy", "ridge", "--set", "strategies.ridge.projection_dim=1000000000"],
        "strategies.ridge.projection_dim = 1000000000 must be in [0, 100000]",
    ),
}


@pytest.mark.parametrize("case", list(OPTION_REFUSALS))
@pytest.mark.bad_input
def test_training_options_out_of_range(case, tmp_path, capsys):
    options, message = OPTION_REFUSALS[case]
    config = bench(tmp_path, arrays())
    line = assert_refused(capsys, ["run", config, *options], tmp_path / "out", message)
    assert line == f"headbench: error: {message}"


@pytest.mark.bad_input
def test_base_task_backbone_lr_0_is_refused(tmp_path, capsys):
    config = bench(tmp_path, arrays(), '[backbone]\nname = "base-task"\nlr = 0\n')
    line = assert_refused(capsys, ["run", config], tmp_path / "out", "backbone.lr = 0.0")
    assert line == "headbench: error: backbone.lr = 0.0 is not accepted; must be > 0"


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(["--set", "training.momentum=0", "--set", "training.lr=1e-6"], id="edges"),
        pytest.param(["--set", "training.momentum=0.999"], id="momentum-below-1"),
    ],
)
def test_control_options_at_the_edges_run(options, tmp_path, capsys):
    assert_runs(capsys, ["run", bench(tmp_path, arrays()), *FAST, *options], tmp_path / "out")


# ---------------------------------------------------------------------------------------
# A full disk


def full_disk_on_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every atomic write fails as a full disk does (ext4 reports ENOSPC at fsync)."""

    def fsync(descriptor: int) -> None:
        raise ENOSPC

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.bad_input
def test_a_full_disk_during_run_is_one_line_naming_the_record(tmp_path, capsys, monkeypatch):
    config = bench(tmp_path, arrays())
    full_disk_on_fsync(monkeypatch)
    out = tmp_path / "out"
    argv = ["run", config, *FAST, "--seeds", "0", "--quiet"]  # one line: no progress
    line = assert_refused(capsys, argv, out, "cannot write")
    (path,) = [p for p in line.split() if p.endswith(".json:")]
    assert line == (
        f"headbench: error: cannot write {path[:-1]}: No space left on device; free space or "
        "give a writable --out"
    )
    assert Path(path[:-1]).parent == out / "runs"  # and out/ is gone: nothing half-written


@pytest.mark.bad_input
def test_a_full_disk_keeps_the_records_written_before(tmp_path, capsys, monkeypatch):
    config = bench(tmp_path, arrays())
    out = tmp_path / "out"
    writes = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        writes.append(descriptor)
        if len(writes) > 1:  # the first record fits, then the disk is full
            raise ENOSPC
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    code = call([str(a) for a in ["run", config, *FAST, "--seeds", "0,1", "--quiet", "--out", out]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err
    (record,) = (out / "runs").glob("*.json")
    assert json.loads(record.read_text())["seed"] == 0  # whole, and the only file
    assert files_under(out) == ["runs", f"runs/{record.name}"]


@pytest.mark.bad_input
def test_a_full_disk_at_a_sweeps_claim_leaves_no_claim(tmp_path, capsys, monkeypatch):
    config = bench(tmp_path, arrays())
    out = tmp_path / "out"

    def write(descriptor: int, data: bytes) -> int:
        raise ENOSPC

    monkeypatch.setattr(store.os, "write", write)
    argv = ["sweep", config, "--strategy", "naive", "--seeds", "0", "--quiet", "--out", out]
    line = assert_refused(capsys, argv, out, "cannot write")
    (lock,) = [p for p in line.split() if p.endswith(".lock:")]
    assert Path(lock[:-1]).parent == out / "claims"
    assert line == (
        f"headbench: error: cannot write {lock[:-1]}: No space left on device; free space or "
        "give a writable --out"
    )


@pytest.mark.bad_input
def test_a_full_disk_at_a_sweeps_record(tmp_path, capsys, monkeypatch):
    config = bench(tmp_path, arrays())
    out = tmp_path / "out"
    full_disk_on_fsync(monkeypatch)
    argv = ["sweep", config, "--strategy", "naive", "--seeds", "0", "--quiet", "--out", out]
    line = assert_refused(capsys, argv, out, "cannot write", "No space left on device")
    assert f"cannot write {out / 'runs'}/naive-seed0-" in line


@pytest.mark.bad_input
def test_a_full_disk_in_the_feature_cache_leaves_no_entry(tmp_path, monkeypatch):
    import torch

    from benchmarks.errors import UsageError

    cache = Cache(tmp_path / "cache")
    key = {"what": "a test entry"}
    full_disk_on_fsync(monkeypatch)
    with pytest.raises(UsageError) as refused:
        cache.save("features", key, {"features": torch.zeros(2, 3)}, "test")
    path = cache.path("features", key)
    assert str(refused.value) == (
        f"feature cache: cannot write {path}: No space left on device; free space, give "
        "another --cache-dir or run with --no-cache"
    )
    assert files_under(tmp_path / "cache") == ["features"]


# ---------------------------------------------------------------------------------------
# An OUT whose folders are files or dangling links


def assert_refused_keeping(capsys, argv: list, out: Path, message: str) -> None:
    """Like assert_refused for an OUT that exists: its contents are left as they were."""
    before = files_under(out)
    code = call([str(arg) for arg in argv])
    captured = capsys.readouterr()
    assert (code, captured.out) == (2, "")
    assert captured.err == f"headbench: error: {message}\n"
    assert files_under(out) == before


@pytest.mark.parametrize("command", ["run", "sweep", "tune"])
@pytest.mark.parametrize("folder", ["runs", "failed", "claims"])
@pytest.mark.bad_input
def test_an_out_folder_that_is_a_file(command, folder, tmp_path, capsys):
    config = bench(tmp_path, arrays())
    out = tmp_path / "out"
    out.mkdir()
    (out / folder).write_text("a file\n")
    argv = {
        "run": ["run", config],
        "sweep": ["sweep", config, "--strategy", "naive"],
        "tune": ["tune", config, "--strategy", "naive", "--grid", "training.lr=0.1,0.01"],
    }[command]
    message = (
        f"{out / folder} exists and is not a folder; accepted: a folder or none (--out holds "
        "runs, failed, claims)"
    )
    assert_refused_keeping(capsys, [*argv, "--out", out, "--quiet"], out, message)
    assert (out / folder).read_text() == "a file\n"


@pytest.mark.bad_input
def test_an_out_runs_that_is_a_dangling_link(tmp_path, capsys):
    config = bench(tmp_path, arrays())
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs").symlink_to(tmp_path / "gone")
    message = (
        f"{out / 'runs'} exists and is not a folder; accepted: a folder or none (--out holds "
        "runs, failed, claims)"
    )
    assert_refused_keeping(capsys, ["run", config, "--out", out], out, message)
    assert not (tmp_path / "gone").exists()


# ---------------------------------------------------------------------------------------
# Leftovers of killed processes: temporary files, claims


def leftover(path: Path, text: str, age: float = 60.0) -> Path:
    """A file last written `age` seconds ago."""
    path.write_text(text)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


@pytest.mark.bad_input
def test_leftovers_of_killed_writers_are_removed_and_logged(tmp_path, capsys):
    config = bench(tmp_path, arrays())
    out = tmp_path / "out"
    assert_runs(capsys, ["run", config, *FAST, "--seeds", "0"], out)
    (published,) = (out / "runs").glob("*.json")
    (out / "claims").mkdir()
    dead_record = leftover(out / "runs" / f".{published.name}.x1y2.tmp", '{"half": ')
    dead_summary = leftover(out / ".summary.md.k3.tmp", "| half")
    empty_claim = leftover(out / "claims" / f"{published.stem}.lock", "")  # published run
    waiting_claim = leftover(out / "claims" / "naive-seed9-000000000000.lock", '{"pid": 1}')
    young = leftover(out / "runs" / ".x.json.young.tmp", "", age=0)  # may not be locked yet
    held = leftover(out / "runs" / ".y.json.held.tmp", "")
    descriptor = os.open(held, os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_EX)  # a live writer
    try:
        code = call([str(a) for a in ["run", config, *FAST, "--seeds", "1", "--out", out]])
    finally:
        os.close(descriptor)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (
        f"{out}: removed 3 leftover files of killed processes (unfinished writes, claims of "
        f"published runs): .summary.md.k3.tmp, runs/{dead_record.name}, "
        f"claims/{empty_claim.name}"
    ) in captured.err
    assert not dead_record.exists() and not dead_summary.exists() and not empty_claim.exists()
    assert waiting_claim.exists() and young.exists() and held.exists()


def test_a_claim_of_a_published_run_is_removed_by_the_claimant(tmp_path, capsys):
    # Two sweeps on one OUT: the second finds the run published after it planned; the
    # claim file it created to find that out is not left behind (an empty .lock).
    config = bench(tmp_path, arrays())
    out = tmp_path / "out"
    assert_runs(capsys, ["run", config, *FAST, "--seeds", "0"], out)
    (published,) = (out / "runs").glob("*.json")
    assert store.claim(out, published.stem) is None
    assert list((out / "claims").iterdir()) == []


def test_a_clean_sweep_leaves_no_claims(tmp_path, capsys):
    config = bench(tmp_path, arrays())
    out = tmp_path / "out"
    argv = ["sweep", config, "--strategy", "naive", "--seeds", "0-1", "--quiet", "--out", out]
    assert call([str(a) for a in argv]) == 0
    assert call([str(a) for a in argv[:-1] + [out]]) == 0  # and again: nothing to do
    capsys.readouterr()
    assert list((out / "claims").iterdir()) == []
    assert len(list((out / "runs").glob("*.json"))) == 2


# ---------------------------------------------------------------------------------------
# sweep --executor ray, tune's grid


@pytest.mark.bad_input
def test_sweep_with_ray_not_installed_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    config = bench(tmp_path, arrays())
    out = tmp_path / "out"
    argv = ["sweep", config, "--strategy", "naive", "--executor", "ray", "--out", out]
    line = assert_refused(capsys, argv, out, "Ray")
    assert line == (
        "headbench: error: --executor ray needs Ray; install it with pip install 'headbench[ray]'"
    )


@pytest.mark.bad_input
def test_sweep_with_no_ray_cluster_writes_nothing(tmp_path, capsys, monkeypatch):
    class NoCluster:
        @staticmethod
        def init(**options):
            raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setitem(sys.modules, "ray", NoCluster)
    config = bench(tmp_path, arrays())
    out = tmp_path / "out"
    argv = ["sweep", config, "--strategy", "naive", "--executor", "ray", "--out", out]
    line = assert_refused(capsys, argv, out, "--address auto")
    assert line == (
        "headbench: error: --address auto: no Ray cluster to connect to (Could not find any "
        "running Ray instance.); start one with `ray start --head` or use --executor local"
    )


@pytest.mark.bad_input
def test_tune_refuses_a_grid_over_another_strategy(tmp_path, capsys):
    config = bench(tmp_path, arrays())
    out = tmp_path / "out"
    argv = ["tune", config, "--strategy", "naive", "--grid", "strategies.ewc.lambda=1,2"]
    line = assert_refused(capsys, [*argv, "--out", out], out, "strategies.ewc.lambda")
    assert line == (
        "headbench: error: --grid strategies.ewc.lambda sets a hyperparameter of 'ewc', but "
        "tune runs only 'naive'; accepted: strategies.naive.KEY or keys of [training], [head]"
    )


@pytest.mark.bad_input
def test_tune_refuses_an_alias_of_another_strategy(tmp_path, capsys):
    config = bench(tmp_path, arrays())
    out = tmp_path / "out"
    argv = ["tune", config, "--strategy", "ewc", "--grid", "strategies.wa.temperature=1,2"]
    assert_refused(capsys, [*argv, "--out", out], out, "of 'weight_aligning'", "only 'ewc'")


def test_control_tune_over_its_own_strategy_by_alias_runs(tmp_path, capsys):
    # --strategy wa, the grid under the registry name: once a KeyError after validation.
    config = bench(tmp_path, arrays())
    out = tmp_path / "out"
    argv = ["tune", config, "--strategy", "wa", "--seeds", "0", "--quiet", "--out", out]
    argv += ["--grid", "strategies.weight_aligning.temperature=1,2", *FAST[2:]]
    code = call([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (record,) = (out / "runs").glob("*.json")
    assert json.loads(record.read_text())["strategy"] == "weight_aligning"


# ---------------------------------------------------------------------------------------
# A strategy name that is matplotlib mathtext


@pytest.mark.bad_input
def test_a_strategy_name_with_mathtext_is_plain_text_in_figures(tmp_path, capsys):
    config = write_config(tmp_path, tmp_path / "data.npz", "[strategies.naive]\n")
    np.savez(tmp_path / "data.npz", **arrays())
    source = tmp_path / "source"
    assert call(["run", str(config), "--out", str(source), "--quiet", *FAST[2:]]) == 0
    (path,) = (source / "runs").glob("*.json")
    record = json.loads(path.read_text())
    record["strategy"] = r"naive$\frac{$"
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "mathtext.json").write_text(json.dumps(record))
    capsys.readouterr()
    code = call(["report", str(out)])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    assert (out / "report" / "figures" / "bench-accuracy.png").stat().st_size > 0
    markdown = (out / "report" / "report.md").read_text()
    assert r"naive$\frac{$" in markdown


@pytest.mark.bad_input
def test_figure_labels_keep_the_dollar_signs():
    import matplotlib
    from matplotlib.figure import Figure

    from reports.plots import STYLE

    with matplotlib.rc_context(STYLE):
        figure = Figure()
        text = figure.text(0, 0, r"naive$\frac{$")
    assert text._parse_math is False  # drawn as the characters given, never parsed
    assert text.get_text() == r"naive$\frac{$"


@pytest.mark.bad_input
def test_a_summary_that_is_a_folder_is_one_line_naming_it(tmp_path, capsys):
    config = bench(tmp_path, arrays())
    out = tmp_path / "out"
    (out / "summary.md").mkdir(parents=True)
    code = call([str(a) for a in ["run", config, *FAST, "--quiet", "--out", out]])
    captured = capsys.readouterr()
    assert (code, captured.out) == (2, "")
    assert captured.err == (
        f"headbench: error: cannot write {out / 'summary.md'}: Is a directory; give a "
        "writable --out\n"
    )
    assert len(list((out / "runs").glob("*.json"))) == 1  # the record is whole and kept
    assert not list(out.rglob("*.tmp"))
