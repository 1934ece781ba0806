"""Few-shot scenarios (`[scenario] shots`, `base_shots`): samples drawn once per seed,
recorded as indices, identical on re-run, different across seeds, the test split untouched;
bad input refused in one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_blobs, write_config
from test_bad_input import assert_refused, assert_runs, call

from benchmarks import engine, run
from benchmarks.scenario import Scenario
from benchmarks.shots import draw
from reports.records import ReportError, check_record
from strategies import create


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def uneven_targets() -> np.ndarray:
    """Classes 0..5 with 12, 9, 8, 11, 7, 10 training samples, interleaved."""
    sizes = [12, 9, 8, 11, 7, 10]
    labels = np.repeat(np.arange(6), sizes)
    return labels[np.random.RandomState(3).permutation(len(labels))]


# ---------------------------------------------------------------------------------------
# The draw


def test_each_later_class_keeps_k_of_its_own_samples_and_the_first_experience_all():
    targets = uneven_targets()
    scenario = Scenario(list(range(6)), 2, 2)
    kept = draw(targets, scenario, 3, "all", seed=0)
    assert kept[0] is None
    for index, indices in enumerate(kept[1:], start=1):
        classes = scenario.boundaries[index], scenario.boundaries[index + 1]
        assert np.bincount(targets[indices], minlength=6).tolist() == [
            3 if classes[0] <= c < classes[1] else 0 for c in range(6)
        ]
        assert indices.tolist() == sorted(set(indices.tolist()))
    base = draw(targets, scenario, "all", 4, seed=0)
    assert np.bincount(targets[base[0]], minlength=6).tolist() == [4, 4, 0, 0, 0, 0]
    assert base[1] is None and base[2] is None


def test_the_draw_is_the_same_on_rerun_and_differs_across_seeds():
    targets = uneven_targets()
    scenario = Scenario(list(range(6)), 2, 2)
    first = draw(targets, scenario, 3, "all", seed=0)
    again = draw(targets, scenario, 3, "all", seed=0)
    other = draw(targets, scenario, 3, "all", seed=1)
    assert [a.tolist() for a in first[1:]] == [b.tolist() for b in again[1:]]
    assert [a.tolist() for a in first[1:]] != [b.tolist() for b in other[1:]]


def test_a_class_keeps_the_same_samples_in_any_class_order_and_fewer_shots_are_a_subset():
    labels = uneven_targets()
    identity = Scenario(list(range(6)), 2, 2)
    reordered = Scenario([4, 5, 2, 3, 0, 1], 2, 2)  # class 2 arrives second either way
    by_identity = draw(identity.remap(labels), identity, 3, "all", seed=7)
    by_reordered = draw(reordered.remap(labels), reordered, 3, "all", seed=7)
    assert by_identity[1].tolist() == by_reordered[1].tolist()  # classes 2 and 3
    # Class 0 arrives last in `reordered`: its 3 shots are the ones it has in any position.
    position = np.flatnonzero(labels == 0)
    last = set(by_reordered[2].tolist()) & set(position.tolist())
    base = draw(identity.remap(labels), identity, "all", 3, seed=7)[0]
    assert last == set(base.tolist()) & set(position.tolist())
    more = draw(identity.remap(labels), identity, 5, "all", seed=7)
    assert set(by_identity[2].tolist()) <= set(more[2].tolist())


# ---------------------------------------------------------------------------------------
# The engine trains on the kept samples only


def test_a_kept_mask_trains_exactly_as_the_kept_samples_alone(blob_tensors, training):
    """The engine with a seed's mask equals the engine given only those training samples
    (same code path, same CPU: byte-identical), for a trained head and a prototype one."""
    train_x, train_y, test_x, test_y = blob_tensors
    scenario = Scenario(list(range(6)), 2, 2)
    kept = draw(train_y.numpy(), scenario, 4, "all", seed=5)
    mask = torch.ones(len(train_y), dtype=torch.bool)
    mask[(train_y >= 2)] = False
    for indices in kept[1:]:
        mask[torch.from_numpy(indices)] = True
    assert int(mask.sum()) == 80 + 4 * 4
    for name in ("naive", "ncm"):
        masked = engine.run(
            create(name), train_x, train_y, test_x, test_y, scenario, training, True, 5,
            train_kept=mask,
        )  # fmt: skip
        alone = engine.run(
            create(name), train_x[mask], train_y[mask], test_x, test_y, scenario, training,
            True, 5,
        )  # fmt: skip
        assert masked.accuracy_matrix == alone.accuracy_matrix
        assert masked.weight_norms == alone.weight_norms
        assert masked.test_counts == [40, 40, 40]  # the whole test split


def test_seeds_batched_with_their_own_shots_match_seed_by_seed(blob_tensors, training):
    """run_seeds with per-seed masks gives each seed the matrix it gets alone (within the
    float32 rounding vmap promises; tests/test_engine_seeds.py: equal matrices)."""
    train_x, train_y, test_x, test_y = blob_tensors
    scenario = Scenario(list(range(6)), 2, 2)
    masks = []
    for seed in (0, 1):
        mask = train_y < 2
        for indices in draw(train_y.numpy(), scenario, 4, "all", seed)[1:]:
            mask[torch.from_numpy(indices)] = True
        masks.append(mask)
    data = (train_x, train_y, test_x, test_y, scenario, training, True)
    batched = engine.run_seeds([create("naive"), create("naive")], *data, [0, 1], train_kept=masks)
    for seed, mask, result in zip((0, 1), masks, batched, strict=True):
        alone = engine.run(create("naive"), *data, seed, train_kept=mask)
        assert result.accuracy_matrix == alone.accuracy_matrix


# ---------------------------------------------------------------------------------------
# End to end: recorded, identical on re-run, the test split untouched


def records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]


def shots_config(directory: Path, extra: str = "") -> Path:
    npz = directory / "blobs.npz"
    np.savez(npz, **make_blobs())
    return write_config(directory, npz, f"{extra}\n[strategies.naive]\n[strategies.ncm]")


def run_cli(config: Path, out: Path, *settings: str) -> list[dict]:
    argv = ["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"]
    argv += ["--seeds", "0-2"]
    for setting in settings:
        argv += ["--set", setting]
    assert call(argv) == 0
    return records(out)


def test_shots_are_recorded_per_seed_shared_by_strategies_and_identical_on_rerun(tmp_path):
    config = shots_config(tmp_path)
    first = run_cli(config, tmp_path / "a", "scenario.shots=4")
    again = run_cli(config, tmp_path / "b", "scenario.shots=4")
    full = run_cli(config, tmp_path / "full")
    by_seed: dict[int, dict] = {}
    for record in first:
        subset = record["train_subset"]
        assert subset["source"] == "drawn"
        assert subset["indices"][0] is None and len(subset["indices"]) == 3
        assert all(len(kept) == 8 for kept in subset["indices"][1:])  # 2 classes x 4
        assert by_seed.setdefault(record["seed"], subset) == subset  # naive and ncm agree
        assert record["config"]["scenario"]["shots"] == 4
    assert len({json.dumps(subset) for subset in by_seed.values()}) == 3  # seeds differ
    assert [(r["run_id"], r["train_subset"], r["accuracy_matrix"]) for r in first] == [
        (r["run_id"], r["train_subset"], r["accuracy_matrix"]) for r in again
    ]
    # The test split is untouched: the same test samples as the run with all the data.
    assert {tuple(r["test_counts"]) for r in first} == {tuple(r["test_counts"]) for r in full}
    assert all("train_subset" not in r for r in full)
    # The kept indices are training samples of the experience's classes, in the npz's order.
    labels = make_blobs()["y_train"]
    for record in first:
        for classes, kept in zip(
            record["experiences"][1:], record["train_subset"]["indices"][1:], strict=True
        ):
            assert np.bincount(labels[kept], minlength=6)[classes].tolist() == [4, 4]


def test_reproduce_reruns_a_few_shot_record(tmp_path, capsys):
    config = shots_config(tmp_path)
    (record, *_) = run_cli(config, tmp_path / "out", "scenario.shots=3", "scenario.base_shots=5")
    assert [len(k) for k in record["train_subset"]["indices"]] == [10, 6, 6]
    capsys.readouterr()
    path = next((tmp_path / "out" / "runs").glob("*.json"))
    assert call(["reproduce", str(path), "--device", "cpu"]) == 0, capsys.readouterr()
    changed = json.loads(path.read_text())
    changed["train_subset"]["indices"][1][0] += 1  # another sample than the seed draws
    other = tmp_path / "changed.json"
    other.write_text(json.dumps(changed))
    capsys.readouterr()
    assert call(["reproduce", str(other), "--device", "cpu"]) == 1
    assert "train_subset: the training samples recorded differ" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("subset", "fragment"),
    [
        ({"source": "drawn", "indices": [None, [3, 1]]}, "sorted"),
        ({"source": "drawn", "indices": [None]}, "2 entries"),
        ({"source": "", "indices": [None, None]}, "source"),
        ({"source": "drawn", "indices": [None, [-1]]}, "indices"),
        ({"source": "drawn", "indices": [None, [1]], "extra": 1}, "train_subset"),
    ],
)
@pytest.mark.bad_input
def test_a_record_with_a_bad_train_subset_is_refused(subset, fragment):
    record = {
        "benchmark": "b",
        "strategy": "naive",
        "seed": 0,
        "config": {},
        "accuracy_matrix": [[1.0, None], [0.5, 0.5]],
        "test_counts": [2, 2],
    }
    check_record(record, "r.json")
    with pytest.raises(ReportError, match="train_subset") as error:
        check_record({**record, "train_subset": subset}, "r.json")
    assert fragment in str(error.value)


# ---------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written


def bad_config(directory: Path) -> Path:
    return shots_config(directory, "[strategies.joint]")


def test_control_shots_without_joint_run(tmp_path, capsys):
    config = shots_config(tmp_path)
    assert_runs(capsys, ["run", config, "--set", "scenario.shots=40"], tmp_path / "out")


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        pytest.param(
            ["scenario.shots=5"],
            "headbench: error: scenario.shots = 5 with strategy joint: it trains on all the "
            "data seen so far (the upper bound), which a few-shot stream withholds; leave it "
            "out (--strategy) or drop the shots",
            id="shots-with-joint",
        ),
        pytest.param(
            ["scenario.base_shots=5"],
            "headbench: error: scenario.base_shots = 5 with strategy joint",
            id="base-shots-with-joint",
        ),
    ],
)
@pytest.mark.bad_input
def test_shots_with_joint_are_refused(tmp_path, capsys, settings, line):
    argv = ["run", bad_config(tmp_path), *sum((["--set", s] for s in settings), [])]
    assert assert_refused(capsys, argv, tmp_path / "out").startswith(line)


@pytest.mark.parametrize(
    ("setting", "line"),
    [
        pytest.param(
            "scenario.shots=41",
            "headbench: error: scenario.shots = 41 is more than class 2 ('2') has: 40 "
            "training samples; use at most 40",
            id="shots-larger-than-a-class",
        ),
        pytest.param(
            "scenario.base_shots=100",
            "headbench: error: scenario.base_shots = 100 is more than class 0 ('0') has: 40 "
            "training samples; use at most 40",
            id="base-shots-larger-than-a-class",
        ),
        pytest.param(
            "scenario.shots=0",
            'headbench: error: scenario.shots = 0 is not accepted; use "all" or an integer >= 1',
            id="zero-shots",
        ),
        pytest.param(
            "scenario.shots=few",
            "headbench: error: scenario.shots = 'few' is not accepted; use \"all\" or an "
            "integer >= 1",
            id="shots-a-word",
        ),
        pytest.param(
            "scenario.base_shots=2.5",
            "headbench: error: scenario.base_shots = 2.5 is not accepted; expected str or int",
            id="base-shots-a-float",
        ),
    ],
)
@pytest.mark.bad_input
def test_bad_shots_are_refused(tmp_path, capsys, setting, line):
    argv = ["run", shots_config(tmp_path), "--set", setting]
    assert assert_refused(capsys, argv, tmp_path / "out") == line


@pytest.mark.bad_input
def test_shots_larger_than_the_smallest_new_class_name_it(tmp_path, capsys):
    """Class 3 has 9 training samples, the others 12: the line names class 3 and 9."""
    blobs = make_blobs()
    drop = np.flatnonzero(blobs["y_train"] == 3)[:31]
    blobs["X_train"] = np.delete(blobs["X_train"], drop, axis=0)
    blobs["y_train"] = np.delete(blobs["y_train"], drop)
    np.savez(tmp_path / "uneven.npz", **blobs)
    config = write_config(tmp_path, tmp_path / "uneven.npz", "[strategies.naive]")
    line = assert_refused(
        capsys, ["run", config, "--set", "scenario.shots=10"], tmp_path / "out", "class 3", ": 9"
    )
    assert line.endswith("9 training samples; use at most 9")
    assert_runs(capsys, ["run", config, "--set", "scenario.shots=9"], tmp_path / "ok")


@pytest.mark.bad_input
def test_base_shots_with_a_backbone_trained_on_the_base_task_are_refused(tmp_path, capsys):
    line = assert_refused(
        capsys,
        ["run", "digits_b5_inc1", "--strategy", "naive", "--set", "scenario.base_shots=5"],
        tmp_path / "out",
    )
    assert line == (
        "headbench: error: scenario.base_shots = 5 with backbone 'base-task': the backbone is "
        "trained once on all of the first experience's data, not on each seed's shots; use a "
        "pretrained backbone or leave base_shots out"
    )


def test_plan_of_a_shots_config_writes_nothing(tmp_path):
    plan = run.plan(str(shots_config(tmp_path)), ["scenario.shots=2"], [], "0-1", "cpu")
    assert plan.train_subset is not None
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------------------------------
# headbench tune: scored on the dataset's own validation split, trained on the seed's shots


def nearest_mean_scores(train_x, train_y, val_x, val_y) -> dict[str, float]:
    """Validation accuracy of nearest class means, cosine and Euclidean, by numpy alone."""
    means = np.stack([train_x[train_y == c].mean(0) for c in range(6)]).astype(np.float64)
    val = val_x.astype(np.float64)
    euclidean = -np.linalg.norm(val[:, None] - means[None], axis=2)
    cosine = (val / np.linalg.norm(val, axis=1, keepdims=True)) @ (
        means / np.linalg.norm(means, axis=1, keepdims=True)
    ).T
    return {
        "strategies.ncm.metric=cosine": float((cosine.argmax(1) == val_y).mean()),
        "strategies.ncm.metric=euclidean": float((euclidean.argmax(1) == val_y).mean()),
    }


def test_tune_trains_each_seed_on_its_shots(tmp_path, capsys):
    """NCM's validation scores equal nearest class means (numpy) of the recorded shots,
    on overlapping classes where the means of 2 samples score otherwise than those of 40."""
    from test_tune import NCM_GRID

    arrays = make_blobs(spread=1.5)
    other = make_blobs(spread=1.5, seed=1)
    arrays.update(X_val=other["X_test"], y_val=other["y_test"])
    np.savez(tmp_path / "own.npz", **arrays)
    config = write_config(tmp_path, tmp_path / "own.npz")
    argv = ["tune", config, *NCM_GRID, "--set", "scenario.shots=2", "--out", tmp_path / "o"]
    assert call([str(a) for a in argv]) == 0, capsys.readouterr().err
    (record,) = records(tmp_path / "o")
    shots = record["train_subset"]["indices"][1:]
    kept = np.concatenate([np.flatnonzero(arrays["y_train"] < 2), *shots])
    train_x, train_y = arrays["X_train"][kept], arrays["y_train"][kept]
    assert np.bincount(train_y).tolist() == [40, 40, 2, 2, 2, 2]
    expected = nearest_mean_scores(train_x, train_y, arrays["X_val"], arrays["y_val"])
    everything = nearest_mean_scores(
        arrays["X_train"], arrays["y_train"], arrays["X_val"], arrays["y_val"]
    )
    assert expected != everything  # the case tells the shots from all the samples
    assert record["selection"]["scores"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.bad_input
def test_tune_with_shots_and_no_own_validation_split_is_refused(tmp_path, capsys):
    config = shots_config(tmp_path)
    argv = ["tune", config, "--strategy", "ncm", "--grid", "strategies.ncm.metric=cosine,euclidean"]
    line = assert_refused(
        capsys, [*argv, "--set", "scenario.shots=2", "--out", tmp_path / "o"], tmp_path / "o"
    )
    assert line == (
        "headbench: error: tune with scenario.shots, base_shots or protocol scores on a "
        "dataset's own validation split (clinc150 has one); dataset 'features' has none, and "
        "a split held out of its training data would take samples of the few shots"
    )
