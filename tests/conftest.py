"""Small deterministic fixtures: Gaussian-blob features, an .npz of them, config files, a
generated CIFAR-100 folder in torchvision's on-disk format and a local ResNet-18 weights
file.

Tests never touch the user's home: before anything else is imported, this module points
HOME and every default folder derived from it (the feature cache, the XDG cache, config
and data folders, torch hub, Hugging Face, matplotlib's config) at one temporary folder
for the whole session, so module- and session-scoped fixtures are covered too; and every
test gets its own empty feature cache (HEADBENCH_CACHE) on top of that."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

SESSION_HOME = Path(tempfile.mkdtemp(prefix="headbench-tests-home-"))
ISOLATED_ENVIRONMENT = {
    "HOME": SESSION_HOME,
    "XDG_CACHE_HOME": SESSION_HOME / ".cache",
    "XDG_CONFIG_HOME": SESSION_HOME / ".config",
    "XDG_DATA_HOME": SESSION_HOME / ".local" / "share",
    "HEADBENCH_CACHE": SESSION_HOME / ".cache" / "headbench",
    "TORCH_HOME": SESSION_HOME / ".cache" / "torch",
    "HF_HOME": SESSION_HOME / ".cache" / "huggingface",
    "MPLCONFIGDIR": SESSION_HOME / ".config" / "matplotlib",
}
"""Every default path headbench or its libraries derive from the user's home."""
os.environ.update({name: str(path) for name, path in ISOLATED_ENVIRONMENT.items()})

import pickle  # noqa: E402  (after the environment: imports may read it)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from benchmarks.scenario import Scenario  # noqa: E402


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


NUM_CLASSES = 6
DIM = 16


@pytest.fixture(autouse=True)
def _private_feature_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Runs cache their features in a folder of the test's own, not ~/.cache/headbench."""
    directory = tmp_path_factory.mktemp("headbench-cache")
    monkeypatch.setenv("HEADBENCH_CACHE", str(directory))
    return directory


def make_blobs(
    num_classes: int = NUM_CLASSES,
    dim: int = DIM,
    train_per_class: int = 40,
    test_per_class: int = 20,
    spread: float = 0.3,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Class c is a Gaussian around 3 * e_c (non-negative mean), so classes separate cleanly."""
    generator = np.random.RandomState(seed)
    centres = 3.0 * np.eye(num_classes, dim)
    arrays = {}
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(num_classes), count)
        features = centres[labels] + spread * generator.randn(len(labels), dim)
        arrays[f"X_{split}"] = features.astype(np.float32)
        arrays[f"y_{split}"] = labels.astype(np.int64)
    return arrays


@pytest.fixture
def blobs() -> dict[str, np.ndarray]:
    return make_blobs()


@pytest.fixture
def blobs_npz(tmp_path: Path, blobs: dict[str, np.ndarray]) -> Path:
    path = tmp_path / "blobs.npz"
    np.savez(path, **blobs)
    return path


@pytest.fixture
def blob_tensors(blobs):
    """(train features, train targets, test features, test targets) as torch tensors."""
    return tuple(torch.from_numpy(blobs[key]) for key in ("X_train", "y_train", "X_test", "y_test"))


@pytest.fixture
def training() -> dict:
    return {
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "batch_size": 16,
        "epochs": 5,
        "schedule": "constant",
    }


@pytest.fixture
def scenario_2_2() -> Scenario:
    """Six classes in arrival order 0..5: {0, 1}, {2, 3}, {4, 5}."""
    return Scenario(list(range(NUM_CLASSES)), 2, 2)


def write_config(directory: Path, npz: Path, extra: str = "", name: str = "bench.toml") -> Path:
    """A features config on the blobs: B2 Inc2, 2 epochs, one seed; `extra` appended."""
    text = f"""
[dataset]
name = "features"
path = "{npz}"
[scenario]
class_order = "identity"
initial_classes = 2
increment = 2
[training]
epochs = 2
batch_size = 32
seeds = [0]
{extra}
"""
    path = directory / name
    path.write_text(text)
    return path


@pytest.fixture
def config_file(tmp_path: Path, blobs_npz: Path) -> Path:
    return write_config(tmp_path, blobs_npz)


# ---------------------------------------------------------------------------------------
# Image data: a CIFAR-100 folder in torchvision's exact format, and backbone weights

CIFAR_TRAIN_PER_CLASS = 3
CIFAR_TEST_PER_CLASS = 1


def cifar_images(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, 32, 32) and labels 0..99: class c is a colour plus noise."""
    generator = np.random.RandomState(seed)
    labels = np.repeat(np.arange(100), per_class)
    colours = np.random.RandomState(100).randint(0, 256, size=(100, 3))
    images = colours[labels][:, :, None, None] + generator.randint(
        -40, 41, (len(labels), 3, 32, 32)
    )
    return np.clip(images, 0, 255).astype(np.uint8), labels


def write_cifar100(
    root: Path,
    train_per_class: int = CIFAR_TRAIN_PER_CLASS,
    test_per_class: int = CIFAR_TEST_PER_CLASS,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`root/cifar-100-python/{train,test,meta}` as the real archive holds them: pickled
    dicts with `data` (N, 3072) uint8 rows (1024 red, 1024 green, 1024 blue values, row
    by row), `fine_labels`, `coarse_labels`, `filenames`, `batch_label`; `meta` with
    `fine_label_names` and `coarse_label_names`. Returns the (images, labels) per split."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    splits = {
        "train": cifar_images(train_per_class, seed=1),
        "test": cifar_images(test_per_class, seed=2),
    }
    for split, (images, labels) in splits.items():
        entry = {
            "filenames": [f"image_{i:05d}.png" for i in range(len(labels))],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": labels.tolist(),
            "coarse_labels": (labels // 5).tolist(),
            "data": images.reshape(len(images), 3072),
        }
        with open(folder / split, "wb") as handle:
            pickle.dump(entry, handle, protocol=2)
    meta = {
        "fine_label_names": [f"class_{c:02d}" for c in range(100)],
        "coarse_label_names": [f"superclass_{c:02d}" for c in range(20)],
    }
    with open(folder / "meta", "wb") as handle:
        pickle.dump(meta, handle, protocol=2)
    return splits


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding `cifar-100-python/`: 300 train and 100 test random 32x32 images."""
    root = tmp_path_factory.mktemp("cifar")
    write_cifar100(root)
    return root


@pytest.fixture(scope="session")
def resnet18_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dict of a randomly initialised torchvision ResNet-18 (seed 0), as a user's
    local weights file would be."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18-random.pth"
    torch.save(resnet18().state_dict(), path)
    return path


def write_cifar_config(
    directory: Path, root: Path, backbone: str, extra: str = "", name: str = "cifar.toml"
) -> Path:
    """A CIFAR-100 config on the generated folder (no checksums), B50 Inc25, podnet order,
    naive and ncm, one seed, one epoch; `backbone` is the body of the [backbone] table."""
    text = f"""
[dataset]
name = "cifar100"
root = "{root}"
download = false
verify_checksums = false
[backbone]
{backbone}
[scenario]
class_order = "podnet"
initial_classes = 50
increment = 25
[training]
epochs = 1
seeds = [0]
[strategies.naive]
[strategies.ncm]
{extra}
"""
    path = directory / name
    path.write_text(text)
    return path
