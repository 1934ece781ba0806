"""Image datasets through torchvision's classes: the generated CIFAR-100 folder, the MD5
check, missing files and failed downloads, and ImageFolder layouts."""

from __future__ import annotations

import hashlib
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from conftest import write_cifar100
from PIL import Image

from benchmarks import datasets
from benchmarks.errors import UsageError

# The MD5 torchvision publishes for CIFAR-100's `train` file (torchvision.datasets.CIFAR100).
PUBLISHED_TRAIN_MD5 = "16019d7e3df5f24257cddd939b257f8d"


def cifar100(root: Path, **options) -> datasets.Data:
    table = {"name": "cifar100", "root": str(root), "download": False, "verify_checksums": False}
    return datasets.load({**table, **options})


def test_generated_cifar100_loads_through_torchvision_in_the_real_layout(tmp_path):
    written = write_cifar100(tmp_path)
    data = cifar100(tmp_path)
    train_images, train_labels = written["train"]
    test_images, test_labels = written["test"]
    # The pickled rows (R plane, G plane, B plane) come back as (N, 3, 32, 32) uint8.
    assert data.train_inputs.dtype == np.uint8 and data.train_inputs.shape == (300, 3, 32, 32)
    np.testing.assert_array_equal(data.train_inputs, train_images)
    np.testing.assert_array_equal(data.test_inputs, test_images)
    assert data.train_targets.tolist() == train_labels.tolist()
    assert data.test_targets.tolist() == test_labels.tolist()
    assert data.class_names[:2] == ["class_00", "class_01"] and data.num_classes == 100
    assert data.is_images and data.in_memory and data.name == "cifar100"
    assert cifar100(tmp_path).fingerprint == data.fingerprint


def test_the_fingerprint_changes_with_one_pixel(tmp_path):
    write_cifar100(tmp_path / "a")
    write_cifar100(tmp_path / "b")
    import pickle

    path = tmp_path / "b" / "cifar-100-python" / "test"
    entry = pickle.loads(path.read_bytes())
    entry["data"][0, 0] ^= 1
    path.write_bytes(pickle.dumps(entry, protocol=2))
    assert cifar100(tmp_path / "a").fingerprint != cifar100(tmp_path / "b").fingerprint


@pytest.mark.bad_input
def test_checksum_check_on_a_small_file_with_a_known_digest(tmp_path):
    path = tmp_path / "small.bin"
    payload = b"headbench checksum test\n" * 3
    path.write_bytes(payload)
    expected = hashlib.md5(payload).hexdigest()  # computed here, independently
    assert datasets.file_md5(path) == expected
    datasets.check_md5(path, expected, "test")  # accepted
    wrong = "0" * 32
    with pytest.raises(UsageError) as error:
        datasets.check_md5(path, wrong, "test")
    message = str(error.value)
    assert expected in message and wrong in message and "verify_checksums = false" in message


@pytest.mark.bad_input
def test_verify_checksums_refuses_a_generated_copy_naming_the_published_md5(tmp_path):
    write_cifar100(tmp_path)
    actual = hashlib.md5((tmp_path / "cifar-100-python" / "train").read_bytes()).hexdigest()
    with pytest.raises(UsageError) as error:
        cifar100(tmp_path, verify_checksums=True)
    message = str(error.value)
    assert PUBLISHED_TRAIN_MD5 in message and actual in message and "\n" not in message


def test_verify_checksums_accepts_files_whose_digests_match(tmp_path, monkeypatch, capsys):
    """The checked path end to end: give the class the generated files' real digests."""
    from torchvision.datasets import CIFAR100

    write_cifar100(tmp_path)
    folder = tmp_path / "cifar-100-python"

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5("train")]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5("test")]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": md5("meta")})
    assert len(cifar100(tmp_path, verify_checksums=True).train_targets) == 300
    assert "warning" not in capsys.readouterr().err  # checked files: nothing to warn about


def test_unchecked_pickles_are_loaded_with_a_one_line_warning(tmp_path, capsys):
    """torchvision unpickles CIFAR's batches: with the MD5 check off, a crafted file runs
    code, so the run says so once per split, one line each, on stderr."""
    write_cifar100(tmp_path)
    cifar100(tmp_path)  # verify_checksums = false
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(
        line.startswith("headbench: warning: dataset.verify_checksums = false: cifar100's")
        and "crafted pickle runs code" in line
        for line in lines
    )


@pytest.mark.bad_input
def test_missing_files_without_download_say_where_to_put_them(tmp_path):
    with pytest.raises(UsageError) as error:
        cifar100(tmp_path / "nowhere")
    message = str(error.value)
    assert "cifar-100-python" in message and "cifar-100-python.tar.gz" in message
    assert str(tmp_path / "nowhere") in message and "dataset.download = false" in message
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.bad_input
def test_a_failed_download_leaves_nothing_behind(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar_module

    root = tmp_path / "data"

    def no_network(url, download_root, filename=None, md5=None, **kwargs):
        Path(download_root).mkdir(parents=True, exist_ok=True)
        (Path(download_root) / filename).write_bytes(b"partial")  # half an archive
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(cifar_module, "download_and_extract_archive", no_network)
    with pytest.raises(UsageError) as error:
        cifar100(root, download=True)
    message = str(error.value)
    assert "download failed (<urlopen error no route to host>)" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in message
    assert not root.exists()


@pytest.mark.bad_input
def test_a_damaged_pickle_is_one_line_not_a_traceback(tmp_path):
    write_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "train"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UsageError, match="cannot be read"):
        cifar100(tmp_path)


# ---------------------------------------------------------------------------------------
# ImageFolder layout


def write_image_folder(root: Path, classes: dict[str, dict[str, int]]) -> None:
    """root/SPLIT/CLASS/i.png with images of varying sizes, coloured by class."""
    generator = np.random.RandomState(0)
    for split, counts in classes.items():
        for index, (name, count) in enumerate(sorted(counts.items())):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                height, width = 20 + 3 * i, 30 - 2 * i
                pixels = np.full((height, width, 3), 40 * index, dtype=np.uint8)
                pixels += generator.randint(0, 20, pixels.shape).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_imagefolder_maps_test_classes_by_name(tmp_path):
    write_image_folder(
        tmp_path,
        {"train": {"cat": 3, "dog": 2, "eel": 2}, "test": {"dog": 1, "eel": 2}},
    )
    data = datasets.load(
        {"name": "imagefolder", "root": str(tmp_path), "train_dir": "train", "test_dir": "test"}
    )
    assert data.class_names == ["cat", "dog", "eel"]
    assert data.train_targets.tolist() == [0, 0, 0, 1, 1, 2, 2]
    # The test folder has no "cat": its dog and eel keep the training ids 1 and 2.
    assert data.test_targets.tolist() == [1, 2, 2]
    assert isinstance(data.train_inputs, datasets.ImageFiles) and not data.in_memory
    first = data.train_inputs.dataset()[0]
    assert first.shape == (3, 20, 30) and str(first.dtype) == "torch.uint8"


@pytest.mark.bad_input
def test_imagefolder_refuses_a_test_class_unknown_to_training(tmp_path):
    write_image_folder(tmp_path, {"train": {"cat": 1, "dog": 1}, "test": {"cow": 1}})
    with pytest.raises(UsageError, match=r"test classes \['cow'\]"):
        datasets.load(
            {"name": "imagefolder", "root": str(tmp_path), "train_dir": "train", "test_dir": "test"}
        )


@pytest.mark.bad_input
def test_imagefolder_without_the_split_folder_says_what_is_expected(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(UsageError, match="val is not a folder"):
        datasets.load(
            {"name": "imagefolder", "root": str(tmp_path), "train_dir": "train", "test_dir": "val"}
        )


# ---------------------------------------------------------------------------------------
# STL-10 and Food-101 in their on-disk formats (tiny generated copies)


def test_stl10_binary_files_load_as_uint8_images(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    generator = np.random.RandomState(0)
    splits = {}
    for split, count in (("train", 20), ("test", 10)):
        images = generator.randint(0, 256, (count, 3, 96, 96)).astype(np.uint8)  # (N, C, H, W)
        labels = np.arange(count) % 10
        # The binary format stores each channel column-major: (N, C, W, H) in C order.
        images.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")
        (labels + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")  # labels 1..10
        splits[split] = (images, labels)
    (folder / "unlabeled_X.bin").write_bytes(b"")
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    data = datasets.load(
        {"name": "stl10", "root": str(tmp_path), "download": False, "verify_checksums": False}
    )
    np.testing.assert_array_equal(data.train_inputs, splits["train"][0])
    assert data.test_targets.tolist() == splits["test"][1].tolist()
    assert data.class_names == names and data.in_memory


def test_food101_meta_json_and_images_load_as_files(tmp_path):
    import json

    base = tmp_path / "food-101"
    (base / "meta").mkdir(parents=True)
    meta = {
        "train": {"apple_pie": ["apple_pie/1", "apple_pie/2"], "ramen": ["ramen/3"]},
        "test": {"apple_pie": ["apple_pie/4"], "ramen": ["ramen/5"]},
    }
    for split, classes in meta.items():
        (base / "meta" / f"{split}.json").write_text(json.dumps(classes))
        for paths in classes.values():
            for path in paths:
                (base / "images" / path).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (40, 30), (200, 10, 10)).save(base / "images" / f"{path}.jpg")
    data = datasets.load({"name": "food101", "root": str(tmp_path), "download": False})
    assert data.class_names == ["apple_pie", "ramen"]
    assert data.train_targets.tolist() == [0, 0, 1] and data.test_targets.tolist() == [0, 1]
    assert data.train_inputs.paths[2].endswith("images/ramen/3.jpg")
    assert data.train_inputs.dataset()[0].shape == (3, 30, 40)


def test_cifar10_batches_load_in_order(tmp_path):
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    generator = np.random.RandomState(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = generator.randint(0, 256, (10, 3, 32, 32)).astype(np.uint8)
        labels = list(range(10))
        entry = {"data": images.reshape(10, 3072), "labels": labels, "batch_label": name}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        batches[name] = images
    names = {"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(names, protocol=2))
    data = datasets.load(
        {"name": "cifar10", "root": str(tmp_path), "download": False, "verify_checksums": False}
    )
    train = np.concatenate([batches[f"data_batch_{i}"] for i in range(1, 6)])
    np.testing.assert_array_equal(data.train_inputs, train)
    np.testing.assert_array_equal(data.test_inputs, batches["test_batch"])
    assert data.class_names[:2] == ["c0", "c1"] and len(data.train_targets) == 50


@pytest.mark.bad_input
def test_image_files_with_the_identity_backbone_are_one_line_and_exit_2(tmp_path, capsys):
    """Image files differ in size, so they cannot be flattened into features."""
    from benchmarks.cli import main

    write_image_folder(
        tmp_path / "images", {"train": {"a": 2, "b": 2, "c": 2}, "test": {"a": 1, "b": 1, "c": 1}}
    )
    config = tmp_path / "files.toml"
    config.write_text(
        f'[dataset]\nname = "imagefolder"\nroot = "{tmp_path / "images"}"\n'
        '[backbone]\nname = "identity"\n'
        '[scenario]\nclass_order = "identity"\ninitial_classes = 2\nincrement = 1\n'
        "[strategies.naive]\n"
    )
    out = tmp_path / "out"
    code = main(["run", str(config), "--out", str(out), "--quiet"])
    stderr = capsys.readouterr().err
    assert code == 2 and stderr.count("\n") == 1
    assert "backbone.name = 'identity'" in stderr and "'imagefolder'" in stderr
    assert not out.exists()
