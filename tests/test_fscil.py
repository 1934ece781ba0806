"""The FSCIL protocol (`[scenario] protocol = "fscil_cifar100"`, Tao et al. CVPR 2020 as CEC
runs it): the shipped index lists against the files they come from and the class layout
they imply, on a generated CIFAR-100 folder and through a run end to end."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from test_bad_input import assert_refused, call
from test_cifar_configs import refused

from benchmarks import networks, run
from benchmarks.shots import FSCIL_CIFAR100_SESSIONS, FSCIL_CIFAR100_SHA256

GENERATED = ["dataset.download=false", "dataset.verify_checksums=false"]


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_the_lists_are_the_published_files():
    """Each session's list, written one index per line as the original file, has the
    SHA-256 recorded from TOPIC's / CEC's session_2.txt .. session_9.txt."""
    assert len(FSCIL_CIFAR100_SESSIONS) == 8
    for indices, digest in zip(FSCIL_CIFAR100_SESSIONS, FSCIL_CIFAR100_SHA256[1:], strict=True):
        text = "".join(f"{index}\n" for index in indices)
        assert hashlib.sha256(text.encode()).hexdigest() == digest


def test_the_lists_imply_25_distinct_new_training_images_per_session():
    """5 classes x 5 shots: 25 distinct indices into the 50,000 training images, no image
    in two sessions (its class arrives once)."""
    everything = [index for indices in FSCIL_CIFAR100_SESSIONS for index in indices]
    assert all(len(set(indices)) == 25 for indices in FSCIL_CIFAR100_SESSIONS)
    assert len(set(everything)) == 200
    assert all(0 <= index < 50_000 for index in everything)


def fscil_labels() -> np.ndarray:
    """50,000 training labels laid out as the lists imply: in session s (1..8) indices
    5r..5r+4 are class 60 + 5 (s - 1) + r (taking each run of 5 as one class's shots: the
    files do not say, and the protocol's check only counts 5 classes x 5 samples); the
    other images fill classes 0-59 with 500 each and 60-99 up to 500, in a fixed random
    order."""
    labels = np.full(50_000, -1)
    for session, indices in enumerate(FSCIL_CIFAR100_SESSIONS, start=1):
        for row in range(5):
            labels[indices[5 * row : 5 * row + 5]] = 60 + 5 * (session - 1) + row
    rest = np.repeat(np.arange(100), [500] * 60 + [495] * 40)
    free = np.flatnonzero(labels == -1)
    labels[free] = rest[np.random.RandomState(0).permutation(len(free))]
    return labels


def write_cifar100_fscil(root: Path, labels: np.ndarray) -> None:
    """`root/cifar-100-python/` in torchvision's format (conftest.write_cifar100's) with
    these 50,000 training labels (black images; one white test image per class)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    splits = {"train": labels, "test": np.arange(100)}
    for split, split_labels in splits.items():
        entry = {
            "filenames": [f"image_{i:05d}.png" for i in range(len(split_labels))],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": split_labels.tolist(),
            "coarse_labels": (split_labels // 5).tolist(),
            "data": np.full((len(split_labels), 3072), 255 * (split == "test"), np.uint8),
        }
        with open(folder / split, "wb") as handle:
            pickle.dump(entry, handle, protocol=4)
    meta = {
        "fine_label_names": [f"class_{c:02d}" for c in range(100)],
        "coarse_label_names": [f"superclass_{c:02d}" for c in range(20)],
    }
    with open(folder / "meta", "wb") as handle:
        pickle.dump(meta, handle, protocol=2)


@pytest.fixture(scope="module")
def fscil_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fscil")
    write_cifar100_fscil(root, fscil_labels())
    return root


def root_settings(root: Path) -> list[str]:
    return [f"dataset.root={json.dumps(str(root))}", *GENERATED]


def test_the_shipped_config_keeps_5_classes_x_5_samples_per_session(fscil_root, tmp_path):
    plan = run.plan("cifar100_fscil", root_settings(fscil_root), ["naive"], "0", "cpu")
    assert (
        plan.config["backbone"] | {"name": "base-task", "arch": "resnet20"}
        == (plan.config["backbone"])
    )
    assert plan.scenario.experience_sizes == [60] + [5] * 8
    labels = plan.data.train_targets
    kept = run.kept_mask(plan, 0).numpy()
    per_class = np.bincount(labels[kept], minlength=100)
    assert per_class.tolist() == [500] * 60 + [5] * 40  # all base images, 5 shots after
    for session, indices in enumerate(plan.train_subset.indices_for(0)[1:], start=1):
        classes, counts = np.unique(labels[indices], return_counts=True)
        assert classes.tolist() == list(range(60 + 5 * (session - 1), 65 + 5 * (session - 1)))
        assert counts.tolist() == [5] * 5
    assert plan.train_subset.indices_for(0)[0] is None
    assert [k.tolist() for k in plan.train_subset.indices_for(3)[1:]] == [
        sorted(s) for s in FSCIL_CIFAR100_SESSIONS
    ]  # the same for every seed
    assert np.bincount(plan.data.test_targets).tolist() == [1] * 100  # test split whole
    assert not Path("results").exists()


@pytest.mark.bad_input
def test_a_dataset_the_lists_do_not_fit_is_refused(tmp_path, capsys):
    """Labels in another order (class c at rows 500c..500c+499): session 2's images fall
    in other classes; one line, nothing written."""
    write_cifar100_fscil(tmp_path / "sorted", np.repeat(np.arange(100), 500))
    argv = ["run", "cifar100_fscil", "--strategy", "naive"]
    for setting in root_settings(tmp_path / "sorted"):
        argv += ["--set", setting]
    line = refused(capsys, argv, tmp_path / "out")  # (after the unchecked-pickle warnings)
    assert line.startswith(
        "headbench: error: scenario.protocol = 'fscil_cifar100': the index list of session 2 "
        "gives samples per class {"
    )
    assert line.endswith(
        "not 5 of each of classes [60, 61, 62, 63, 64]; it needs CIFAR-100's training split "
        "in torchvision's order"
    )


@pytest.mark.parametrize(
    ("setting", "line"),
    [
        (
            "scenario.initial_classes=50",
            "scenario.initial_classes = 50 contradicts scenario.protocol = 'fscil_cifar100' "
            "(60 base classes, then 8 sessions of 5, classes in id order); set "
            "initial_classes = 60",
        ),
        (
            'scenario.class_order="icarl1993"',
            "scenario.class_order = 'icarl1993' contradicts scenario.protocol = "
            "'fscil_cifar100' (classes arrive in id order); set class_order = 'identity'",
        ),
        (
            "scenario.shots=5",
            "scenario.protocol = 'fscil_cifar100' fixes the training samples (all of the "
            "first 60 classes, then 5 per class); leave scenario.shots and base_shots out",
        ),
        (
            "scenario.protocol=fscil",
            "scenario.protocol = 'fscil' is not accepted; use one of ['none', 'fscil_cifar100']",
        ),
    ],
)
@pytest.mark.bad_input
def test_settings_that_contradict_the_protocol_are_refused(
    fscil_root, tmp_path, capsys, setting, line
):
    argv = ["run", "cifar100_fscil", "--strategy", "naive", "--set", setting]
    for item in root_settings(fscil_root):
        argv += ["--set", item]
    assert refused(capsys, argv, tmp_path / "out") == f"headbench: error: {line}"


@pytest.mark.bad_input
def test_the_protocol_with_joint_is_refused(fscil_root, tmp_path, capsys):
    argv = ["run", "cifar100_fscil", "--strategy", "joint"]
    for item in root_settings(fscil_root):
        argv += ["--set", item]
    line = refused(capsys, argv, tmp_path / "out")
    assert line.startswith(
        "headbench: error: scenario.protocol = 'fscil_cifar100' with strategy joint"
    )


@pytest.mark.bad_input
def test_the_protocol_on_another_dataset_is_refused(tmp_path, capsys):
    line = assert_refused(
        capsys,
        [
            "run",
            "digits_b5_inc1",
            "--strategy",
            "naive",
            "--set",
            "scenario.protocol=fscil_cifar100",
        ],
        tmp_path / "out",
    )
    assert line == (
        "headbench: error: scenario.initial_classes = 5 contradicts scenario.protocol = "
        "'fscil_cifar100' (60 base classes, then 8 sessions of 5, classes in id order); set "
        "initial_classes = 60"
    )


def test_a_run_trains_on_the_published_samples_and_tests_on_everything(tmp_path):
    """End to end on features laid out as CIFAR-100's (the identity backbone on a 4-d
    .npz, so no backbone is trained): the records list the published indices."""
    labels = fscil_labels()
    generator = np.random.RandomState(0)
    centres = generator.randn(100, 4).astype(np.float32)
    test_labels = np.repeat(np.arange(100), 2)
    np.savez(
        tmp_path / "cifar_like.npz",
        X_train=centres[labels] + 0.1 * generator.randn(50_000, 4).astype(np.float32),
        y_train=labels,
        X_test=centres[test_labels],
        y_test=test_labels,
    )
    config = tmp_path / "fscil.toml"
    config.write_text(
        f'[dataset]\nname = "features"\npath = "{tmp_path / "cifar_like.npz"}"\n'
        '[scenario]\nclass_order = "identity"\ninitial_classes = 60\nincrement = 5\n'
        'protocol = "fscil_cifar100"\n[training]\nepochs = 1\nbatch_size = 512\n'
        "[strategies.naive]\n[strategies.ncm]\n"
    )
    out = tmp_path / "out"
    argv = ["run", str(config), "--out", str(out), "--quiet", "--device", "cpu", "--seeds", "0-1"]
    assert call(argv) == 0
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    assert len(records) == 4
    for record in records:
        assert record["train_subset"] == {
            "source": "fscil_cifar100",
            "indices": [None, *(sorted(s) for s in FSCIL_CIFAR100_SESSIONS)],
        }
        assert record["test_counts"] == [120] + [10] * 8
        assert len(record["accuracy_matrix"]) == 9


def test_resnet20_has_the_published_size():
    """He et al. 2016, Table 6: ResNet-20 has 0.27M parameters. By hand, option A (no
    shortcut parameters) with a 10-way classifier: stem 3*16*9 + 32 (BN) = 464; stage 1:
    3 * (2 * 16*16*9 + 64) = 14,016; stage 2: 16*32*9 + 32*32*9 + 128 + 2 * (2 * 32*32*9 +
    128) = 51,072; stage 3: 32*64*9 + 64*64*9 + 256 + 2 * (2 * 64*64*9 + 256) = 203,520;
    classifier 64*10 + 10 = 650: 269,722 (0.27M). CEC's projection shortcuts (option B) add
    16*32 + 32*64 + 2 * (32 + 64) = 2,752 to the 269,072 of the trunk."""
    network = networks.build("resnet20", 3, 0)
    assert sum(p.numel() for p in network.parameters()) == 269_072 + 2_752
    assert network.out_features == 64
    assert network(torch.rand(2, 3, 32, 32)).shape == (2, 64)
