"""Small deterministic fixtures: Gaussian-blob features, an .npz of them, config files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.scenario import Scenario

NUM_CLASSES = 6
DIM = 16


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
