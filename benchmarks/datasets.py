"""Datasets: inputs and labels with a fixed train/test split and a fingerprint.

`features` reads bring-your-own frozen features from an .npz; `digits` is scikit-learn's
bundled 8x8 digits (real and offline). Image datasets come through torchvision's dataset
classes (`cifar10`, `cifar100`, `stl10`, `food101`, `flowers102`) or any folder in
ImageFolder layout (`imagefolder`); `avalanche` takes the samples, class order and
experiences of any Avalanche class-incremental benchmark (`benchmarks/avalanche.py`).
Inputs are float32 feature vectors (N, D), images in memory (N, C, H, W) as float32 in
[0, 1] or uint8 (CIFAR, STL-10), or `ImageFiles`: paths decoded lazily, batch by batch,
for datasets too large to hold. Labels are int64 in 0..C-1 with every class in the
training split.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.config import Option
from benchmarks.errors import UsageError

NPZ_ARRAYS = ("X_train", "y_train", "X_test", "y_test")
NPZ_VAL_ARRAYS = ("X_val", "y_val")  # optional, both or neither: the dataset's own validation


@dataclass(frozen=True)
class ImageFiles:
    """Images on disk, decoded in DataLoader workers when a backbone reads them."""

    paths: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int | None, ...]:
        return (len(self.paths), 3, None, None)  # sizes vary from file to file

    def dataset(self) -> torch.utils.data.Dataset:
        return _DecodedFiles(self.paths)


class _DecodedFiles(torch.utils.data.Dataset):
    """Decodes one file to an RGB uint8 tensor (3, height, width); no resizing here."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            pixels = np.asarray(image.convert("RGB"))  # (height, width, 3)
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1)  # (3, height, width)


@dataclass(frozen=True)
class Texts:
    """Sentences (one string per sample), for text backbones (`transformers`)."""

    items: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def shape(self) -> tuple[int]:
        return (len(self.items),)


Inputs = np.ndarray | ImageFiles | Texts


@dataclass(frozen=True)
class Data:
    train_inputs: Inputs  # (train, dim), (train, channels, height, width) or files
    train_targets: np.ndarray  # (train,)
    test_inputs: Inputs  # (test, ...)
    test_targets: np.ndarray  # (test,)
    class_names: list[str]
    fingerprint: str
    name: str = ""  # the registry name, set by `load`
    # A dataset that brings its own split (an Avalanche benchmark): its class ids per
    # experience, in arrival order. None: the config's [scenario] table splits the classes.
    experiences: tuple[tuple[int, ...], ...] | None = None
    # A dataset's own validation split (CLINC150's `val`), used by `headbench tune` in
    # place of a split held out of the training data. None: the dataset has none.
    val_inputs: Inputs | None = None
    val_targets: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_images(self) -> bool:
        if isinstance(self.train_inputs, ImageFiles):
            return True
        return isinstance(self.train_inputs, np.ndarray) and self.train_inputs.ndim == 4

    @property
    def is_text(self) -> bool:
        return isinstance(self.train_inputs, Texts)

    @property
    def in_memory(self) -> bool:
        """Images held as one array (not files decoded on the fly)."""
        return isinstance(self.train_inputs, np.ndarray)


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


def check_labels(
    source: str,
    train: np.ndarray,
    test: np.ndarray,
    num_classes: int | None,
    val: np.ndarray | None = None,
) -> int:
    """Labels must be integers 0..C-1 and every class must have training samples."""
    splits = [("y_train", train), ("y_test", test)] + ([("y_val", val)] if val is not None else [])
    for split, labels in splits:
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
    for split, labels in splits:
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


def check_npz_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Refuse what the .npz reader would otherwise crash on, cast silently or try to fit in
    memory: empty splits, features of dimension 0, complex numbers, float64 features beyond
    float32's range, and class ids that cannot all have training samples."""
    largest = float(np.finfo(np.float32).max)
    for name, array in arrays.items():
        if name[:2] not in ("X_", "y_") or array.ndim != (2 if name[0] == "X" else 1):
            continue  # other names, and the wrong number of axes, are checked by the reader
        if np.iscomplexobj(array):
            raise UsageError(
                f"{path}: {name} has complex dtype {array.dtype}; accepted: real numbers"
            )
        if len(array) == 0:
            raise UsageError(f"{path}: {name} has 0 rows; accepted: at least one sample per class")
        if name[0] == "X" and array.shape[1] == 0:
            raise UsageError(
                f"{path}: {name} has shape {array.shape} (features of dimension 0); "
                "accepted: at least one feature per sample"
            )
        wider = np.issubdtype(array.dtype, np.floating) and array.dtype.itemsize > 4
        if name[0] == "X" and wider:  # float64 and longer: values float32 cannot hold
            beyond = np.isfinite(array) & (np.abs(array) > largest)
            if beyond.any():
                row, column = (int(i) for i in np.argwhere(beyond)[0])
                raise UsageError(
                    f"{path}: {name}[{row}, {column}] = {array[row, column].item():.3g} is "
                    f"beyond float32's range; accepted: finite values within ±{largest:.3g}"
                )
    names = arrays.get("class_names")
    if names is not None and names.size == 0:
        raise UsageError(f"{path}: class_names is empty; accepted: one name per class")
    rows = len(arrays["y_train"])
    for name in (n for n in arrays if n.startswith("y_")):
        labels = arrays[name]
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.number):
            continue
        too_large = labels[np.isfinite(labels) & (labels >= rows)]
        if too_large.size:
            raise UsageError(
                f"{path}: {name} has label {too_large[0].item()!r}, but {rows} training "
                f"samples hold at most {rows} classes (every class needs training samples); "
                f"accepted: labels 0..{rows - 1}"
            )


@_dataset(
    "features",
    "bring-your-own frozen features: an .npz with X_train, y_train, X_test, y_test "
    "(optional class_names; optional X_val, y_val: an own validation split for tune)",
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
                    "(and may have class_names, and X_val with y_val)"
                )
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        if isinstance(error, UsageError):
            raise
        raise UsageError(f"dataset.path = {str(path)!r} cannot be read as .npz: {error}") from None
    present = [name for name in NPZ_VAL_ARRAYS if name in arrays]
    if len(present) == 1:
        (absent,) = set(NPZ_VAL_ARRAYS) - set(present)
        raise UsageError(
            f"{path}: has {present[0]} but no {absent}; a validation split needs both "
            f"{list(NPZ_VAL_ARRAYS)} or neither"
        )
    splits = ("train", "test", "val") if present else ("train", "test")
    check_npz_arrays(path, arrays)
    inputs = {}
    for split in splits:
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
    for split in splits[1:]:
        if inputs["train"].shape[1] != inputs[split].shape[1]:
            raise UsageError(
                f"{path}: X_train has dim {inputs['train'].shape[1]} but X_{split} has "
                f"{inputs[split].shape[1]}; they must be equal"
            )
    names = arrays.get("class_names")
    num_classes = check_labels(
        str(path),
        arrays["y_train"],
        arrays["y_test"],
        None if names is None else len(names),
        arrays.get("y_val"),
    )
    class_names = (
        [str(n) for n in names] if names is not None else [str(c) for c in range(num_classes)]
    )
    targets = {split: arrays[f"y_{split}"].astype(np.int64) for split in splits}
    # (the fingerprint of a file without a validation split is what it was before X_val)
    hashed = [array for split in splits for array in (inputs[split], targets[split])]
    return Data(
        inputs["train"],
        targets["train"],
        inputs["test"],
        targets["test"],
        class_names,
        fingerprint(*hashed),
        val_inputs=inputs.get("val"),
        val_targets=targets.get("val"),
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


# ---------------------------------------------------------------------------------------
# Image datasets: torchvision's classes, checked and loaded without a traceback


def file_md5(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: Path, expected: str, dataset: str) -> None:
    """Refuse a file whose MD5 differs from the published one, naming both digests."""
    actual = file_md5(path)
    if actual != expected:
        raise UsageError(
            f"{dataset}: {path} has MD5 {actual}, expected {expected} (the published file); "
            "re-download it, or set dataset.verify_checksums = false for a re-packed copy"
        )


def _checksummed_files(dataset_class: type, base: Path) -> list[tuple[Path, str]]:
    """The files (under the dataset's folder) and MD5s torchvision's class checks."""
    files = [
        (base / name, md5)
        for name, md5 in [
            *getattr(dataset_class, "train_list", []),
            *getattr(dataset_class, "test_list", []),
        ]
    ]
    if isinstance(getattr(dataset_class, "meta", None), dict):
        files.append((base / dataset_class.meta["filename"], dataset_class.meta["md5"]))
    for key in ("label", "setid"):  # Flowers102 checks its two .mat files
        if key in getattr(dataset_class, "_file_dict", {}):
            name, md5 = dataset_class._file_dict[key]
            files.append((base / name, md5))
    return files


def _without_checksums(dataset_class: type) -> type:
    """The same class with every MD5 set to None: torchvision then checks presence only."""
    attributes: dict[str, Any] = {}
    for name in ("train_list", "test_list"):
        if hasattr(dataset_class, name):
            attributes[name] = [[file, None] for file, _ in getattr(dataset_class, name)]
    if isinstance(getattr(dataset_class, "meta", None), dict):
        attributes["meta"] = {**dataset_class.meta, "md5": None}
    if hasattr(dataset_class, "_file_dict"):
        attributes["_file_dict"] = {
            key: (file, None) for key, (file, _) in dataset_class._file_dict.items()
        }
    return type(f"{dataset_class.__name__}WithoutChecksums", (dataset_class,), attributes)


@dataclass(frozen=True)
class Source:
    """Where a torchvision dataset lives: its folder under `root`, its archive, its files."""

    name: str
    dataset_class: type
    folder: str  # what `root` must hold
    url: str
    required: tuple[str, ...]  # files or folders under `folder` that must exist

    def missing(self, root: Path) -> Path | None:
        for part in self.required:
            if not (root / self.folder / part).exists():
                return root / self.folder / part
        return None

    def where(self, root: Path) -> str:
        return (
            f"download {self.url} and extract it into {root} (so that {root / self.folder} "
            "exists), or set dataset.root to the folder that holds it"
        )


def _download(source: Source, root: Path, construct: Callable[..., Any]) -> None:
    """torchvision's own download; on failure remove what it left and raise one line."""
    existed = {path for path in (root, root / source.folder) if path.exists()}
    archives = {path for path in root.glob("*")} if root.exists() else set()
    try:
        construct(download=True)
    except Exception as error:  # URLError, OSError, RuntimeError: no network, a bad archive
        if root.exists():
            for path in set(root.glob("*")) - archives:  # partial archive or folder
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        for path in (root / source.folder, root):
            if path not in existed and path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(
            f"{source.name}: {source.missing(root) or root / source.folder} is missing and the "
            f"download failed ({reason}); {source.where(root)}"
        ) from None


PICKLED = ("cifar10", "cifar100")  # torchvision unpickles their batches


def _open(source: Source, options: dict[str, Any], **split: Any) -> Any:
    """Construct the torchvision dataset for one split after checking its files.

    Missing files are downloaded when `download` is on; the published MD5s are checked
    when `verify_checksums` is (our own check, so the error names file and digests).
    """
    root = Path(options["root"]).expanduser()
    verify = options.get("verify_checksums", False)
    dataset_class = source.dataset_class if verify else _without_checksums(source.dataset_class)
    if not verify and source.name in PICKLED:
        print(
            f"headbench: warning: dataset.verify_checksums = false: {source.name}'s files in "
            f"{root} are unpickled unchecked, and a crafted pickle runs code; use only a copy "
            "you trust",
            file=sys.stderr,
        )

    def construct(download: bool = False) -> Any:
        return dataset_class(str(root), download=download, **split)

    if source.missing(root) is not None:
        if not options["download"]:
            raise UsageError(
                f"{source.name}: {source.missing(root)} not found (dataset.download = false); "
                f"{source.where(root)}"
            )
        _download(source, root, construct)
        if source.missing(root) is not None:
            raise UsageError(
                f"{source.name}: {source.missing(root)} not found after the download; "
                f"{source.where(root)}"
            )
    if verify:
        for path, md5 in _checksummed_files(source.dataset_class, root / source.folder):
            if path.is_file():
                check_md5(path, md5, source.name)
        dataset_class = _without_checksums(source.dataset_class)  # checked once, above
    try:
        return construct()
    except Exception as error:  # a damaged pickle, a missing metadata file, a bad .mat
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(
            f"{source.name}: the files under {root / source.folder} cannot be read "
            f"({type(error).__name__}: {reason}); {source.where(root)}"
        ) from None


ROOT_OPTIONS = {
    "root": Option("data", str, "folder that holds the dataset's folder (~ is expanded)"),
    "download": Option(True, bool, "download the files when they are missing"),
}
CHECKSUM_OPTION = {
    "verify_checksums": Option(
        True, bool, "check the published MD5s (false for re-packed or generated copies)"
    ),
}


def _from_arrays(
    name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], classes
) -> Data:
    """Data from uint8 images (N, C, H, W) and labels, checked like any dataset's."""
    train_targets, test_targets = (np.asarray(t, dtype=np.int64) for t in (train[1], test[1]))
    check_labels(name, train_targets, test_targets, len(classes))
    return Data(
        train[0],
        train_targets,
        test[0],
        test_targets,
        [str(c) for c in classes],
        fingerprint(train[0], train_targets, test[0], test_targets),
    )


def _cifar(name: str, class_name: str, folder: str, url: str, files: tuple[str, ...]):
    def load(options: dict[str, Any]) -> Data:
        import torchvision.datasets

        source = Source(name, getattr(torchvision.datasets, class_name), folder, url, files)
        splits = []
        for train in (True, False):
            dataset = _open(source, options, train=train)
            images = np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2))  # (N, 3, 32, 32)
            splits.append((images, dataset.targets))
        return _from_arrays(name, splits[0], splits[1], dataset.classes)

    return load


CIFAR_URL = "https://www.cs.toronto.edu/~kriz/{}-python.tar.gz"
for _name, _class, _folder, _files, _size in (
    ("cifar10", "CIFAR10", "cifar-10-batches-py",
     ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
      "test_batch", "batches.meta"), "60,000 32x32 images, 10 classes"),
    ("cifar100", "CIFAR100", "cifar-100-python", ("train", "test", "meta"),
     "60,000 32x32 images, 100 classes (50,000 train / 10,000 test; class orders "
     "icarl1993, podnet)"),
):  # fmt: skip
    _dataset(
        _name,
        f"torchvision's {_class}: {_size}, held in memory as uint8; root must hold {_folder}/",
        {**ROOT_OPTIONS, **CHECKSUM_OPTION},
    )(_cifar(_name, _class, _folder, CIFAR_URL.format(_name.replace("cifar", "cifar-")), _files))


@_dataset(
    "stl10",
    "torchvision's STL10: 5,000 train / 8,000 test 96x96 images, 10 classes, held in memory "
    "as uint8; root must hold stl10_binary/",
    {**ROOT_OPTIONS, **CHECKSUM_OPTION},
)
def load_stl10(options: dict[str, Any]) -> Data:
    from torchvision.datasets import STL10

    files = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin")
    source = Source("stl10", STL10, "stl10_binary", STL10.url, files)
    train, test = (_open(source, options, split=split) for split in ("train", "test"))
    return _from_arrays(
        "stl10", (train.data, train.labels), (test.data, test.labels), train.classes
    )


def _file_data(name: str, splits: list[tuple[Sequence[Any], Sequence[int]]], classes) -> Data:
    """Data over image files; the fingerprint hashes relative paths, sizes and labels."""
    (train_files, train_labels), (test_files, test_labels) = splits
    train_targets = np.asarray(train_labels, dtype=np.int64)
    test_targets = np.asarray(test_labels, dtype=np.int64)
    check_labels(name, train_targets, test_targets, len(classes))
    digest = hashlib.sha256()
    for files in (train_files, test_files):
        paths = [str(path) for path in files]
        common = os.path.commonpath(paths) if paths else ""
        for path in paths:
            digest.update(f"{os.path.relpath(path, common)}|{os.path.getsize(path)}\n".encode())
    digest.update(fingerprint(train_targets, test_targets).encode())
    return Data(
        ImageFiles(tuple(str(path) for path in train_files)),
        train_targets,
        ImageFiles(tuple(str(path) for path in test_files)),
        test_targets,
        [str(c) for c in classes],
        digest.hexdigest()[:16],
    )


@_dataset(
    "food101",
    "torchvision's Food101: 75,750 train / 25,250 test images, 101 classes, decoded from "
    "files; root must hold food-101/",
    dict(ROOT_OPTIONS),
)
def load_food101(options: dict[str, Any]) -> Data:
    from torchvision.datasets import Food101

    files = ("meta/train.json", "meta/test.json", "images")
    source = Source("food101", Food101, "food-101", Food101._URL, files)
    train, test = (_open(source, options, split=split) for split in ("train", "test"))
    splits = [(d._image_files, d._labels) for d in (train, test)]
    return _file_data("food101", splits, train.classes)


@_dataset(
    "flowers102",
    "torchvision's Flowers102: train (1,020) and test (6,149) splits, 102 classes, decoded "
    "from files; root must hold flowers-102/",
    {**ROOT_OPTIONS, **CHECKSUM_OPTION},
)
def load_flowers102(options: dict[str, Any]) -> Data:
    from torchvision.datasets import Flowers102

    files = ("jpg", "imagelabels.mat", "setid.mat")
    url = Flowers102._download_url_prefix + Flowers102._file_dict["image"][0]
    source = Source("flowers102", Flowers102, "flowers-102", url, files)
    train, test = (_open(source, options, split=split) for split in ("train", "test"))
    splits = [(d._image_files, d._labels) for d in (train, test)]
    return _file_data("flowers102", splits, [str(c) for c in range(102)])


@_dataset(
    "imagefolder",
    "any folder in ImageFolder layout: ROOT/train/CLASS/*.jpg and ROOT/test/CLASS/*.jpg "
    "(ImageNet-100, ImageNet-R, CUB-200 style subsets), decoded from files",
    {
        "root": Option("", str, "the folder holding the train and test folders"),
        "train_dir": Option("train", str, "training folder under root (one subfolder a class)"),
        "test_dir": Option("test", str, "test folder under root (same class subfolders)"),
    },
)
def load_imagefolder(options: dict[str, Any]) -> Data:
    from torchvision.datasets import ImageFolder

    if not options["root"]:
        raise UsageError(
            'dataset "imagefolder" needs dataset.root = "folder with train/ and test/"'
        )
    root = Path(options["root"]).expanduser()
    folders = {}
    for split in ("train_dir", "test_dir"):
        if not (root / options[split]).is_dir():
            raise UsageError(
                f"imagefolder: {root / options[split]} is not a folder; dataset.root must hold "
                f"{options['train_dir']}/CLASS/IMAGE and {options['test_dir']}/CLASS/IMAGE"
            )
    for split in ("train_dir", "test_dir"):
        path = root / options[split]
        try:
            folders[split] = ImageFolder(str(path))
        except (FileNotFoundError, OSError) as error:
            raise UsageError(f"imagefolder: {path}: {error}") from None
    train, test = folders["train_dir"], folders["test_dir"]
    unknown = sorted(set(test.classes) - set(train.classes))
    if unknown:
        raise UsageError(
            f"imagefolder: test classes {unknown[:5]} have no folder in "
            f"{root / options['train_dir']}; the test folder must use the training folder's "
            "class names"
        )
    to_train_id = {name: train.class_to_idx[name] for name in test.classes}
    splits = [
        ([path for path, _ in train.samples], [label for _, label in train.samples]),
        (
            [path for path, _ in test.samples],
            [to_train_id[test.classes[label]] for _, label in test.samples],
        ),
    ]
    return _file_data("imagefolder", splits, train.classes)


# ---------------------------------------------------------------------------------------
# Text datasets: sentences and intent names, from the published files or a user's own

CLINC150_URL = (
    "https://raw.githubusercontent.com/clinc/oos-eval/"
    "828f8093932c8fe6ca7936c3d2e52903b1c523de/data/{}"
)
BANKING77_URL = (
    "https://raw.githubusercontent.com/PolyAI-LDN/task-specific-datasets/"
    "57ec275d8078af65b7731c2a98be812d844a6d6b/banking_data/{}"
)
# The SHA-256 of each published file at the pinned commit: dataset -> file -> digest.
TEXT_SHA256: dict[str, dict[str, str]] = {
    "clinc150": {
        "data_full.json": "36923c3705a59e08fe9c3883d8bc2dd966ef93e22cb78ac41171782a698d56e0",
        "data_small.json": "050e17476e6b4fa88f8518edaf09921c8f5e3a86dc8b63615361102a20b2ac01",
        "data_imbalanced.json": "4886730b20c51eece26aa392ecae2717bfe9908680419e96255351c6148eb4cc",
    },
    "banking77": {
        "train.csv": "b06e26ac675513959a63135f11b94ea7786ed02da65db93a5650d8838cbc664b",
        "test.csv": "d12d6e3bc4c3103966ae786dc435913c0c563dfa328f5a3646d0e62cfeeb474d",
    },
}
TEXT_URLS = {"clinc150": CLINC150_URL, "banking77": BANKING77_URL}
TEXT_DATASETS = ("clinc150", "banking77", "text")  # parsed as text: nothing is unpickled
CLINC150_VARIANTS = {
    "full": "data_full.json",
    "small": "data_small.json",
    "imbalanced": "data_imbalanced.json",
}
TEXT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}
OUT_OF_SCOPE = "oos"  # CLINC150's intent name for out-of-scope queries


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _where_text(dataset: str, name: str, folder: Path) -> str:
    return (
        f"download {TEXT_URLS[dataset].format(name)} into {folder}, or set dataset.root to "
        "the folder that holds it"
    )


def check_sha256(path: Path, expected: str, dataset: str) -> None:
    """Refuse a file whose SHA-256 differs from the published one, naming both digests."""
    actual = file_sha256(path)
    if actual != expected:
        raise UsageError(
            f"{dataset}: {path} has SHA-256 {actual}, expected {expected} (the published "
            f"file); {_where_text(dataset, path.name, path.parent)}, or set "
            "dataset.verify_checksums = false for an edited copy"
        )


def _download_text(dataset: str, name: str, folder: Path) -> None:
    """Fetch one published file into `folder` through a temporary file there, check its
    SHA-256 (always: the URL is pinned to a commit), then rename it into place. On any
    failure nothing is left: not the temporary file, nor a folder made for it."""
    url, expected = TEXT_URLS[dataset].format(name), TEXT_SHA256[dataset][name]
    made = [path for path in (*reversed(folder.parents), folder) if not path.exists()]
    temporary = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=folder, prefix=f".{name}.", suffix=".part", delete=False
        ) as handle:
            temporary = Path(handle.name)
            digest = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (https)
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    handle.write(chunk)
        if digest.hexdigest() != expected:
            raise ValueError(f"the file has SHA-256 {digest.hexdigest()}, expected {expected}")
        os.replace(temporary, folder / name)
    except BaseException as error:  # URLError, OSError, a changed file, Ctrl-C
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        for path in reversed(made):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        if not isinstance(error, Exception):
            raise  # KeyboardInterrupt: cleaned up, and still an interrupt
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(
            f"{dataset}: {folder / name} is missing and the download failed ({reason}); "
            f"{_where_text(dataset, name, folder)}"
        ) from None


def _published_files(dataset: str, options: dict[str, Any], names: Sequence[str]) -> list[Path]:
    """The dataset's files under `root`: downloaded when missing (`download`), their
    SHA-256 checked on every load (`verify_checksums`; they are small)."""
    folder = Path(options["root"]).expanduser()
    paths = []
    for name in names:
        path = folder / name
        if not path.is_file():
            if not options["download"]:
                raise UsageError(
                    f"{dataset}: {path} not found (dataset.download = false); "
                    f"{_where_text(dataset, name, folder)}"
                )
            _download_text(dataset, name, folder)
        elif options["verify_checksums"]:
            check_sha256(path, TEXT_SHA256[dataset][name], dataset)
        paths.append(path)
    return paths


def _decoded(path: Path) -> str:
    """The file's text as UTF-8 (a byte-order mark is dropped); one line if it is not."""
    try:
        payload = path.read_bytes()
    except OSError as error:
        raise UsageError(f"{path} cannot be read: {error.strerror or error}") from None
    try:
        return payload.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = payload[: error.start].count(b"\n") + 1
        raise UsageError(
            f"{path}: line {line} is not UTF-8 (byte 0x{payload[error.start]:02x} at offset "
            f"{error.start}); save the file as UTF-8"
        ) from None


@dataclass(frozen=True)
class TextSplit:
    """One split as read: its sentences, their label names, and where each came from."""

    texts: list[str]
    labels: list[str]
    places: list[str]  # "line 12" or "train[3]", for messages


def _checked_sample(text: Any, label: Any, where: str, text_name: str, label_name: str):
    if isinstance(label, int) and not isinstance(label, bool):
        label = str(label)
    if not isinstance(text, str):
        raise UsageError(f"{where}: {text_name} is {text!r}; expected a string")
    if not isinstance(label, str):
        raise UsageError(f"{where}: {label_name} is {label!r}; expected a string or an integer")
    if not text.strip():
        raise UsageError(f"{where}: empty text in {text_name}; every sample needs a sentence")
    if not label.strip():
        raise UsageError(f"{where}: empty label in {label_name}; every sample needs a class")
    return text, label


def read_delimited(path: Path, delimiter: str, text_column: str, label_column: str) -> TextSplit:
    """A CSV or TSV file with a header row (RFC 4180 quoting; blank lines skipped)."""
    reader = csv.reader(io.StringIO(_decoded(path), newline=""), delimiter=delimiter, strict=True)
    split = TextSplit([], [], [])
    try:
        header = next(reader, None)
        if not header:
            raise UsageError(f"{path}: no header row; the first line must name the columns")
        for column, option in ((text_column, "text_column"), (label_column, "label_column")):
            if column not in header:
                raise UsageError(
                    f"{path}: no column {column!r} (dataset.{option}); the file has columns "
                    f"{header}"
                )
        text_index, label_index = header.index(text_column), header.index(label_column)
        for row in reader:
            if not row:
                continue
            where = f"{path}: line {reader.line_num}"
            if len(row) != len(header):
                raise UsageError(
                    f"{where} has {len(row)} fields, the header {len(header)} ({header}); "
                    "quote fields that hold the delimiter"
                )
            text, label = _checked_sample(
                row[text_index], row[label_index], where, repr(text_column), repr(label_column)
            )
            split.texts.append(text)
            split.labels.append(label)
            split.places.append(where)
    except csv.Error as error:
        raise UsageError(f"{path}: line {reader.line_num} is not valid CSV ({error})") from None
    return split


def read_jsonl(path: Path, text_column: str, label_column: str) -> TextSplit:
    """JSON Lines: one object per line holding the text and label keys (blank lines skipped)."""
    split = TextSplit([], [], [])
    for number, line in enumerate(_decoded(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            sample = json.loads(line)
        except json.JSONDecodeError as error:
            raise UsageError(f"{where} is not JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(sample, dict):
            raise UsageError(f"{where} is {type(sample).__name__}; expected a JSON object")
        for column, option in ((text_column, "text_column"), (label_column, "label_column")):
            if column not in sample:
                raise UsageError(
                    f"{where} has no key {column!r} (dataset.{option}); it has keys {list(sample)}"
                )
        text, label = _checked_sample(
            sample[text_column], sample[label_column], where, repr(text_column),
            repr(label_column),
        )  # fmt: skip
        split.texts.append(text)
        split.labels.append(label)
        split.places.append(where)
    return split


def read_clinc150(path: Path, include_oos: bool) -> dict[str, TextSplit]:
    """CLINC150's JSON: {split: [[text, intent], ...]} for train, val, test and oos_*."""
    try:
        content = json.loads(_decoded(path))
    except json.JSONDecodeError as error:
        raise UsageError(
            f"{path}: line {error.lineno} is not JSON ({error.msg} at column {error.colno})"
        ) from None
    keys = list(content) if isinstance(content, dict) else []
    wanted = ["train", "val", "test"]
    if include_oos:
        wanted += [f"oos_{split}" for split in ("train", "val", "test")]
    lacking = [key for key in wanted if key not in keys]
    if not isinstance(content, dict) or lacking:
        fix = (
            "; set dataset.include_oos = false" if include_oos and lacking[0][:4] == "oos_" else ""
        )
        raise UsageError(
            f"clinc150: {path} has no split {lacking[0]!r} (its keys: {keys}); expected "
            f"{wanted}{fix}"
        )
    splits = {}
    for split in ("train", "val", "test"):
        read = TextSplit([], [], [])
        for key in [split, f"oos_{split}"] if include_oos else [split]:
            entries = content[key]
            if not isinstance(entries, list):
                raise UsageError(f"clinc150: {path}: {key} is not a list of [text, intent]")
            for index, entry in enumerate(entries):
                where = f"{path}: {key}[{index}]"
                if not (isinstance(entry, list) and len(entry) == 2):
                    raise UsageError(f"{where} is {entry!r:.80}; expected [text, intent]")
                text, label = _checked_sample(entry[0], entry[1], where, "the text", "the intent")
                read.texts.append(text)
                read.labels.append(label)
                read.places.append(where)
        splits[split] = read
    return splits


def text_data(name: str, splits: dict[str, TextSplit]) -> Data:
    """Data from sentences and label names: ids by sorted name (numerically when every
    name is an integer), every class in the training split; the fingerprint covers the
    texts and labels of every split."""
    for split, read in splits.items():
        if not read.texts:
            raise UsageError(f"{name}: the {split} split has no samples")
    train = splits["train"]
    names = sorted(set(train.labels))
    if all(label.lstrip("-").isdecimal() for label in names):
        names.sort(key=int)
    ids = {label: index for index, label in enumerate(names)}
    for split, read in splits.items():
        for label, where in zip(read.labels, read.places, strict=True):
            if label not in ids:
                raise UsageError(
                    f"{name}: {where}: class {label!r} has no training samples; every "
                    f"{split} class must be in the training split"
                )
    targets = {
        split: np.array([ids[label] for label in read.labels], dtype=np.int64)
        for split, read in splits.items()
    }
    digest = hashlib.sha256(json.dumps(names).encode())
    for split, read in splits.items():
        digest.update(f"{split}:{len(read.texts)}\n".encode())
        for text in read.texts:
            encoded = text.encode()
            digest.update(f"{len(encoded)}:".encode() + encoded)
        digest.update(fingerprint(targets[split]).encode())
    val = splits.get("val")
    return Data(
        Texts(tuple(train.texts)),
        targets["train"],
        Texts(tuple(splits["test"].texts)),
        targets["test"],
        names,
        digest.hexdigest()[:16],
        val_inputs=None if val is None else Texts(tuple(val.texts)),
        val_targets=targets.get("val"),
    )


TEXT_CHECKSUM_OPTION = {
    "verify_checksums": Option(
        True, bool, "check the published SHA-256s on every load (false for an edited copy)"
    ),
}


@_dataset(
    "clinc150",
    "CLINC150 intents (Larson et al., EMNLP 2019): 150 intents x 100 train / 20 val / 30 "
    "test utterances; root must hold data_full.json (variant full; data_small.json, "
    "data_imbalanced.json for the others)",
    {
        "root": Option("data/clinc150", str, "folder that holds the release's JSON files"),
        "download": Option(True, bool, "download the file when it is missing"),
        **TEXT_CHECKSUM_OPTION,
        "variant": Option(
            "full", str, "the release's training set: data_VARIANT.json",
            choices=tuple(CLINC150_VARIANTS),
        ),
        "include_oos": Option(
            False, bool, 'out-of-scope queries as one more class "oos" (not class-incremental '
            "practice)",
        ),
    },
)  # fmt: skip
def load_clinc150(options: dict[str, Any]) -> Data:
    variant = options["variant"]
    if variant not in CLINC150_VARIANTS:  # the config checks it too; a direct call may not
        raise UsageError(
            f"dataset.variant = {variant!r} is not accepted; use one of {list(CLINC150_VARIANTS)}"
        )
    (path,) = _published_files("clinc150", options, [CLINC150_VARIANTS[variant]])
    return text_data("clinc150", read_clinc150(path, options["include_oos"]))


@_dataset(
    "banking77",
    "BANKING77 intents (Casanueva et al., 2020): 10,003 train / 3,080 test utterances, 77 "
    "intents; root must hold train.csv and test.csv",
    {
        "root": Option("data/banking77", str, "folder that holds train.csv and test.csv"),
        "download": Option(True, bool, "download the files when they are missing"),
        **TEXT_CHECKSUM_OPTION,
    },
)
def load_banking77(options: dict[str, Any]) -> Data:
    paths = _published_files("banking77", options, ["train.csv", "test.csv"])
    splits = [read_delimited(path, ",", "text", "category") for path in paths]
    return text_data("banking77", dict(zip(("train", "test"), splits, strict=True)))


@_dataset(
    "text",
    "your own sentences: CSV, TSV or JSON Lines files for train, test and optionally val, "
    "one sample a row with a text and a label column",
    {
        "root": Option("", str, "folder the file paths are relative to (empty: the working "
                       "directory)"),
        "train": Option("", str, "the training file (.csv, .tsv or .jsonl)"),
        "test": Option("", str, "the test file"),
        "val": Option("", str, "a validation file for headbench tune (empty: none)"),
        "format": Option(
            "auto", str, "the files' format; auto: from the suffix",
            choices=("auto", "csv", "tsv", "jsonl"),
        ),
        "text_column": Option("text", str, "the column (JSON key) holding the sentence"),
        "label_column": Option("label", str, "the column (JSON key) holding the class name"),
    },
)  # fmt: skip
def load_text(options: dict[str, Any]) -> Data:
    if not options["train"] or not options["test"]:
        raise UsageError(
            'dataset "text" needs dataset.train = "train.csv" and dataset.test = "test.csv" '
            "(.csv, .tsv or .jsonl)"
        )
    root = Path(options["root"]).expanduser()
    splits = {}
    for split in ("train", "test", "val"):
        if not options[split]:
            continue
        path = root / Path(options[split]).expanduser()  # an absolute path stays itself
        if not path.is_file():
            raise UsageError(f"text: dataset.{split} = {str(path)!r} is not a file")
        kind = options["format"]
        if kind == "auto":
            kind = TEXT_FORMATS.get(path.suffix.lower())
            if kind is None:
                raise UsageError(
                    f"text: cannot tell the format of {path} from its suffix; name it .csv, "
                    ".tsv or .jsonl, or set dataset.format"
                )
        columns = options["text_column"], options["label_column"]
        if kind == "jsonl":
            splits[split] = read_jsonl(path, *columns)
        else:
            splits[split] = read_delimited(path, "\t" if kind == "tsv" else ",", *columns)
    return text_data("text", splits)


@_dataset(
    "avalanche",
    "any Avalanche class-incremental benchmark (SplitCIFAR100, nc_benchmark, "
    "class_incremental_benchmark, ...) with its own class order and experiences; its "
    "transforms are dropped: images reach the backbone raw (uint8), tensors as features",
    {
        "benchmark": Option(
            "",
            str,
            'what builds it, "package.module:callable" (imported and called), e.g. '
            '"avalanche.benchmarks.classic:SplitCIFAR100"',
        ),
        "arguments": Option(
            {},
            dict,
            "keyword arguments of the call, e.g. { n_experiences = 10, seed = 1234, "
            'dataset_root = "data" }',
        ),
    },
)
def load_avalanche(options: dict[str, Any]) -> Data:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # importing Avalanche warns about optional solvers
        from benchmarks import avalanche
    return avalanche.load_data(options["benchmark"], options["arguments"])


def load(options: dict[str, Any]) -> Data:
    """Load the dataset named in a resolved `[dataset]` table."""
    spec = DATASETS[options["name"]]
    data = spec.load({k: v for k, v in options.items() if k != "name"})
    return dataclasses.replace(data, name=spec.name)
