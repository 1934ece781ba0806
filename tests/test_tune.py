"""`headbench tune`: the validation split by hand, no use of the test split while choosing,
the first-k-experiences protocol, diverged points skipped, and the choice stated."""

from __future__ import annotations

import hashlib
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
@pytest.mark.bad_input
def test_bad_protocol_values_are_refused_in_one_line(
    options, fragment, tmp_path, capsys, blobs_npz
):
    config = write_config(tmp_path, blobs_npz)
    code, _, stderr = run_cli(capsys, *tune_argv(config, tmp_path / "out", *options))
    assert code == 2 and fragment in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------
# A dataset's own validation split (an .npz's X_val / y_val, CLINC150's `val`)


def metric_blobs() -> dict[str, np.ndarray]:
    """Six classes at s_c · e_c with s = (1, 5, 2, 2, 2, 2): cosine and Euclidean nearest
    means agree on every training and test sample, but the own validation split holds
    three class-0 samples at (2, 2.2, 0, ...), which cosine gives to class 1 (the angle to
    e_1 is smaller) and Euclidean to class 0 (distance 2.42 to (1, 0) vs 3.44 to (0, 5))."""
    generator = np.random.RandomState(0)
    centres = np.diag([1.0, 5.0, 2.0, 2.0, 2.0, 2.0])  # (6, 6)
    arrays = {}
    for split, count in (("train", 10), ("test", 5)):
        labels = np.repeat(np.arange(6), count)
        arrays[f"X_{split}"] = (centres[labels] + 0.05 * generator.randn(len(labels), 6)).astype(
            np.float32
        )
        arrays[f"y_{split}"] = labels
    between = np.array([[2.0, 2.2, 0, 0, 0, 0]] * 3)
    val_labels = np.repeat(np.arange(6), 2)
    arrays["X_val"] = np.concatenate([centres[val_labels], between]).astype(np.float32)
    arrays["y_val"] = np.concatenate([val_labels, [0, 0, 0]])
    return arrays


def nearest_mean_accuracy(arrays: dict[str, np.ndarray], metric: str) -> float:
    """Final accuracy of nearest class means on the validation arrays, by numpy alone."""
    means = np.stack([arrays["X_train"][arrays["y_train"] == c].mean(0) for c in range(6)])
    features = arrays["X_val"].astype(np.float64)
    if metric == "cosine":
        scores = (features / np.linalg.norm(features, axis=1, keepdims=True)) @ (
            means / np.linalg.norm(means, axis=1, keepdims=True)
        ).T
    else:
        scores = -np.linalg.norm(features[:, None] - means[None], axis=2)
    return float((scores.argmax(1) == arrays["y_val"]).mean())


NCM_GRID = ["--strategy", "ncm", "--grid", "strategies.ncm.metric=cosine,euclidean", "--quiet"]


def test_tune_scores_on_the_own_validation_split_when_there_is_one(tmp_path, capsys):
    arrays = metric_blobs()
    expected = {m: nearest_mean_accuracy(arrays, m) for m in ("cosine", "euclidean")}
    assert expected == {"cosine": 1 - 3 / 15, "euclidean": 1.0}  # the case is as designed
    chosen = {}
    for name, data in (("own", arrays), ("held", {k: v for k, v in arrays.items()
                                                  if k not in ("X_val", "y_val")})):  # fmt: skip
        np.savez(tmp_path / f"{name}.npz", **data)
        config = write_config(tmp_path, tmp_path / f"{name}.npz", name=f"{name}.toml")
        code, stdout, stderr = run_cli(capsys, "tune", config, *NCM_GRID, "--out",
                                       tmp_path / name)  # fmt: skip
        assert code == 0, stderr
        (path, *_) = (tmp_path / name / "runs").glob("*.json")
        selection = json.loads(path.read_text())["selection"]
        chosen[name] = selection["chosen"]
        if name == "own":
            assert selection["validation_split"] == "dataset"
            assert selection["validation_fraction"] is None
            for metric, accuracy in expected.items():
                score = selection["scores"][f"strategies.ncm.metric={metric}"]
                assert score == pytest.approx(accuracy, abs=1e-12)
            assert "on the dataset's own validation split (all experiences" in stdout
        else:
            assert selection["validation_split"] == "held_out"
            assert selection["validation_fraction"] == 0.2
    # Held out of the training data both metrics are perfect (a tie: the first point).
    assert chosen == {
        "own": "strategies.ncm.metric=euclidean",
        "held": "strategies.ncm.metric=cosine",
    }


@pytest.mark.parametrize("flag", [["--validation-fraction", "0.3"], ["--validation-seed", "1"]])
@pytest.mark.bad_input
def test_a_held_out_split_setting_is_refused_with_an_own_split(tmp_path, capsys, flag):
    np.savez(tmp_path / "own.npz", **metric_blobs())
    config = write_config(tmp_path, tmp_path / "own.npz")
    code, _, stderr = run_cli(capsys, "tune", config, *NCM_GRID, *flag, "--out", tmp_path / "o")
    assert code == 2 and stderr.count("\n") == 1
    assert f"{flag[0]} is not accepted" in stderr and "own validation split (15 samples)" in stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.bad_input
def test_an_own_split_missing_an_experience_is_refused_unless_it_is_not_scored(tmp_path, capsys):
    arrays = metric_blobs()
    kept = arrays["y_val"] < 4  # experience 3 (classes 4, 5) has no validation samples
    arrays.update(X_val=arrays["X_val"][kept], y_val=arrays["y_val"][kept])
    np.savez(tmp_path / "own.npz", **arrays)
    config = write_config(tmp_path, tmp_path / "own.npz")
    code, _, stderr = run_cli(capsys, "tune", config, *NCM_GRID, "--out", tmp_path / "o")
    assert code == 2 and "no samples of experience 3 (classes [4, 5])" in stderr
    assert not (tmp_path / "o").exists()
    code, _, stderr = run_cli(capsys, "tune", config, *NCM_GRID, "--first-experiences", "2",
                              "--out", tmp_path / "o")  # fmt: skip
    assert code == 0, stderr


BAD_VAL = {
    "X_val alone": (lambda a: a.pop("y_val"), "has X_val but no y_val"),
    "y_val alone": (lambda a: a.pop("X_val"), "has y_val but no X_val"),
    "dim": (lambda a: a.update(X_val=a["X_val"][:, :4]), "X_train has dim 6 but X_val has 4"),
    "rows": (lambda a: a.update(y_val=a["y_val"][:-1]), "X_val has 15 rows but y_val has 14"),
    "range": (lambda a: a["y_val"].__setitem__(0, 6), "y_val has label 6 out of range"),
    "finite": (lambda a: a["X_val"].__setitem__((1, 1), np.nan), "X_val has 1 NaN/inf"),
}


@pytest.mark.parametrize("case", list(BAD_VAL))
@pytest.mark.bad_input
def test_bad_validation_arrays_are_refused_in_one_line(tmp_path, case):
    from benchmarks import datasets
    from benchmarks.errors import UsageError

    arrays = metric_blobs()
    change, fragment = BAD_VAL[case]
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UsageError) as error:
        datasets.load({"name": "features", "path": str(tmp_path / "bad.npz")})
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_an_npz_without_validation_keeps_its_fingerprint(tmp_path, blobs, blobs_npz):
    from benchmarks import datasets

    data = datasets.load({"name": "features", "path": str(blobs_npz)})
    digest = hashlib.sha256()  # the fingerprint as defined, written out here
    for key in ("X_train", "y_train", "X_test", "y_test"):
        array = blobs[key].astype(np.float32 if key[0] == "X" else np.int64)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    assert data.fingerprint == digest.hexdigest()[:16] and data.val_inputs is None
