"""Datasets: arrays of inputs and labels with a fixed train/test split and a fingerprint.

`features` reads bring-your-own frozen features from an .npz; `digits` is scikit-learn's
bundled 8x8 digits (real and offline). Inputs are float32 feature vectors (N, D) or
images (N, C, H, W); labels are int64 in 0..C-1 with every class in the training split.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.config import Option
from benchmarks.errors import UsageError

NPZ_ARRAYS = ("X_train", "y_train", "X_test", "y_test")


@dataclass(frozen=True)
class Data:
    train_inputs: np.ndarray  # (train, dim) or (train, channels, height, width)
    train_targets: np.ndarray  # (train,)
    test_inputs: np.ndarray  # (test, ...)
    test_targets: np.ndarray  # (test,)
    class_names: list[str]
    fingerprint: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_images(self) -> bool:
        return self.train_inputs.ndim == 4


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    options: dict[str, Option]
    load: Callable[[dict[str, Any]], Data]


DATASETS: dict[str, DatasetSpec] = {}


def _dataset(name: str, description: str, options: dict[str, Option]):
    def decorate(load: Callable[[dict[str, Any]], Data]) -> Callable[[dict[str, Any]], Data]:
        DATASETS[name] = DatasetSpec(name, description, options, load)
        return load

    return decorate


def fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def check_labels(source: str, train: np.ndarray, test: np.ndarray, num_classes: int | None) -> int:
    """Labels must be integers 0..C-1 and every class must have training samples."""
    for split, labels in (("y_train", train), ("y_test", test)):
        if labels.ndim != 1:
            raise UsageError(f"{source}: {split} must be 1-D; got shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            if not np.issubdtype(labels.dtype, np.number):
                raise UsageError(
                    f"{source}: {split} must hold integer class ids; got dtype {labels.dtype}"
                )
            fractional = labels[~np.isfinite(labels) | (labels != np.round(labels))]
            if fractional.size:
                raise UsageError(
                    f"{source}: {split} has label {fractional[0].item()!r}; "
                    "accepted: integer class ids"
                )
    num_classes = int(train.max()) + 1 if num_classes is None else num_classes
    for split, labels in (("y_train", train), ("y_test", test)):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if bad.size:
            raise UsageError(
                f"{source}: {split} has label {bad[0].item()!r} out of range; "
                f"accepted: 0..{num_classes - 1}"
            )
    missing = sorted(set(range(num_classes)) - set(np.unique(train).tolist()))
    if missing:
        raise UsageError(
            f"{source}: classes {missing[:10]} have no training samples; labels must be "
            f"0..{num_classes - 1} with every class in y_train"
        )
    return num_classes


@_dataset(
    "features",
    "bring-your-own frozen features: an .npz with X_train, y_train, X_test, y_test "
    "(optional class_names)",
    {"path": Option("", str, "the .npz file (relative to the working directory)")},
)
def load_features(options: dict[str, Any]) -> Data:
    path = Path(options["path"])
    if not options["path"]:
        raise UsageError('dataset "features" needs dataset.path = "your_features.npz"')
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [name for name in NPZ_ARRAYS if name not in archive.files]
            if missing:
                raise UsageError(
                    f"{path}: missing arrays {missing}; an .npz needs {list(NPZ_ARRAYS)} "
                    "(and may have class_names)"
                )
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        if isinstance(error, UsageError):
            raise
        raise UsageError(f"dataset.path = {str(path)!r} cannot be read as .npz: {error}") from None
    inputs = {}
    for split in ("train", "test"):
        features, labels = arrays[f"X_{split}"], arrays[f"y_{split}"]
        if features.ndim != 2:
            raise UsageError(
                f"{path}: X_{split} must be 2-D (samples, dim); got shape {features.shape}"
            )
        if len(features) != len(labels):
            raise UsageError(
                f"{path}: X_{split} has {len(features)} rows but y_{split} has {len(labels)}; "
                "they must be equal"
            )
        try:
            inputs[split] = features.astype(np.float32)
        except (TypeError, ValueError):
            raise UsageError(
                f"{path}: X_{split} of dtype {features.dtype} is not numeric"
            ) from None
        bad = ~np.isfinite(inputs[split])
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise UsageError(
                f"{path}: X_{split} has {int(bad.sum())} NaN/inf values (first in row {row}); "
                "features must be finite"
            )
    if inputs["train"].shape[1] != inputs["test"].shape[1]:
        raise UsageError(
            f"{path}: X_train has dim {inputs['train'].shape[1]} but X_test has "
            f"{inputs['test'].shape[1]}; they must be equal"
        )
    names = arrays.get("class_names")
    num_classes = check_labels(
        str(path), arrays["y_train"], arrays["y_test"], None if names is None else len(names)
    )
    class_names = (
        [str(n) for n in names] if names is not None else [str(c) for c in range(num_classes)]
    )
    train_targets = arrays["y_train"].astype(np.int64)
    test_targets = arrays["y_test"].astype(np.int64)
    return Data(
        inputs["train"],
        train_targets,
        inputs["test"],
        test_targets,
        class_names,
        fingerprint(inputs["train"], train_targets, inputs["test"], test_targets),
    )


@_dataset(
    "digits",
    "scikit-learn's bundled 8x8 handwritten digits: 1797 images, 10 classes, offline",
    {
        "test_fraction": Option(0.3, float, "share of each class held out for testing"),
        "split_seed": Option(0, int, "seed of the fixed train/test split", minimum=0),
    },
)
def load_digits(options: dict[str, Any]) -> Data:
    from sklearn.datasets import load_digits as sklearn_digits

    fraction = options["test_fraction"]
    if not 0 < fraction < 1:
        raise UsageError(
            f"dataset.test_fraction = {fraction} is not accepted; use a value in (0, 1)"
        )
    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    labels = bunch.target.astype(np.int64)
    # A stratified split that depends on numpy's legacy generator only, so it never moves.
    generator = np.random.RandomState(options["split_seed"])
    test_mask = np.zeros(len(labels), dtype=bool)
    for label in range(10):
        members = generator.permutation(np.flatnonzero(labels == label))
        test_mask[members[: round(fraction * len(members))]] = True
    return Data(
        images[~test_mask],
        labels[~test_mask],
        images[test_mask],
        labels[test_mask],
        [str(d) for d in range(10)],
        fingerprint(images, labels, test_mask),
    )


def load(options: dict[str, Any]) -> Data:
    """Load the dataset named in a resolved `[dataset]` table."""
    spec = DATASETS[options["name"]]
    return spec.load({k: v for k, v in options.items() if k != "name"})
