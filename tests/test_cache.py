"""The feature cache: keys, checksums, atomic writes, healing, `headbench cache`, and the
end-to-end promise: a second run on the same benchmark performs zero backbone forwards."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from conftest import write_cifar_config

from benchmarks import cache as cache_module
from benchmarks.cache import Cache
from benchmarks.cli import main

KEY = {"dataset": "abc", "split": "train", "backbone": {"name": "resnet18"}}


def entry_tensors() -> dict[str, torch.Tensor]:
    return {"features": torch.arange(12, dtype=torch.float32).reshape(3, 4)}


def test_an_entry_round_trips_with_its_key_and_checksum(tmp_path):
    cache = Cache(tmp_path)
    digest, checksum = cache.save("features", KEY, entry_tensors(), "three rows")
    loaded, stored_checksum = cache.load("features", KEY)
    assert torch.equal(loaded["features"], entry_tensors()["features"])
    assert stored_checksum == checksum
    # The entry carries its key as canonical JSON and the SHA-256 of its contents.
    entry = torch.load(tmp_path / "features" / f"{digest}.pt", weights_only=True)
    assert json.loads(entry["key"]) == KEY
    import hashlib

    expected = hashlib.sha256()
    expected.update(b"features|torch.float32|(3, 4)|")
    expected.update(entry_tensors()["features"].numpy().tobytes())
    assert checksum == expected.hexdigest()


def test_another_key_misses(tmp_path):
    cache = Cache(tmp_path)
    cache.save("features", KEY, entry_tensors(), "")
    assert cache.load("features", {**KEY, "split": "test"}) is None


@pytest.mark.bad_input
def test_a_truncated_entry_is_reported_in_one_line_and_deleted(tmp_path):
    lines = []
    cache = Cache(tmp_path, lines.append)
    cache.save("features", KEY, entry_tensors(), "")
    path = cache.path("features", KEY)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert cache.load("features", KEY) is None
    assert len(lines) == 1 and "corrupted" in lines[0] and str(path) in lines[0]
    assert "\n" not in lines[0] and not path.exists()


@pytest.mark.bad_input
def test_altered_contents_fail_the_checksum(tmp_path):
    lines = []
    cache = Cache(tmp_path, lines.append)
    cache.save("features", KEY, entry_tensors(), "")
    path = cache.path("features", KEY)
    entry = torch.load(path, weights_only=True)
    entry["tensors"]["features"][0, 0] = 99.0  # a flipped value, the checksum left as it was
    torch.save(entry, path)
    assert cache.load("features", KEY) is None
    assert len(lines) == 1 and "checksum does not match" in lines[0]


def test_an_interrupted_write_leaves_no_entry_and_no_temporary_file(tmp_path, monkeypatch):
    cache = Cache(tmp_path)

    def interrupted(obj, stream, *args, **kwargs):
        stream.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.save("features", KEY, entry_tensors(), "")
    assert list((tmp_path / "features").iterdir()) == []


def test_cache_directory_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADBENCH_CACHE", str(tmp_path / "from-env"))
    assert cache_module.resolve_directory(str(tmp_path / "flag")) == tmp_path / "flag"
    assert cache_module.resolve_directory(None) == tmp_path / "from-env"
    monkeypatch.delenv("HEADBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if os.name == "posix" and os.uname().sysname == "Linux":
        assert cache_module.resolve_directory(None) == tmp_path / "xdg" / "headbench"


def test_clear_older_than_removes_only_entries_unused_for_longer(tmp_path):
    cache = Cache(tmp_path)
    old_digest, _ = cache.save("features", KEY, entry_tensors(), "old")
    new_key = {**KEY, "split": "test"}
    cache.save("features", new_key, entry_tensors(), "new")
    three_days_ago = time.time() - 3 * 86400
    os.utime(tmp_path / "features" / f"{old_digest}.pt", (three_days_ago, three_days_ago))
    removed, freed = cache.clear(older_than_days=2)
    assert removed == 1 and freed > 0
    assert cache.load("features", KEY) is None and cache.load("features", new_key) is not None
    assert cache.clear() == (1, pytest.approx(freed, rel=0.2))
    assert cache.entries() == []


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cache_ls_and_clear_on_the_command_line(tmp_path, capsys):
    cache = Cache(tmp_path)
    cache.save("features", KEY, {"features": torch.zeros(1000, 250)}, "cifar100 train, resnet18")
    code, out, _ = run_cli(capsys, "cache", "ls", "--cache-dir", tmp_path)
    assert code == 0
    # 1000 x 250 float32 = 1,000,000 bytes of data, plus the entry's framing and its .json.
    assert "features" in out and "cifar100 train, resnet18" in out and "1.0 MB" in out
    assert "1 entries, 1.0 MB" in out
    code, out, _ = run_cli(capsys, "cache", "clear", "--older-than", "1", "--cache-dir", tmp_path)
    assert code == 0 and "removed 0 entries not used for 1 days" in out
    code, out, _ = run_cli(capsys, "cache", "clear", "--cache-dir", tmp_path)
    assert code == 0 and out.startswith("removed 1 entries") and "1.0 MB" in out
    code, out, _ = run_cli(capsys, "cache", "ls", "--cache-dir", tmp_path)
    assert out.strip() == f"feature cache {tmp_path}: empty"


def test_cache_ls_reads_headbench_cache_by_default(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HEADBENCH_CACHE", str(tmp_path))
    Cache(tmp_path).save("features", KEY, entry_tensors(), "from the environment")
    code, out, _ = run_cli(capsys, "cache", "ls")
    assert code == 0 and "from the environment" in out


@pytest.mark.bad_input
def test_bad_older_than_is_one_line(tmp_path, capsys):
    code, out, err = run_cli(
        capsys, "cache", "clear", "--older-than", "-3", "--cache-dir", tmp_path
    )
    assert code == 2 and not out and len(err.splitlines()) == 1 and "'-3'" in err


# ---------------------------------------------------------------------------------------
# End to end: headbench run on the generated CIFAR-100 folder


@pytest.fixture
def count_resnet_forwards(monkeypatch):
    """Counts calls of torchvision's ResNet.forward (one per batch through the backbone)."""
    from torchvision.models.resnet import ResNet

    calls = []
    original = ResNet.forward

    def counted(self, images):
        calls.append(len(images))
        return original(self, images)

    monkeypatch.setattr(ResNet, "forward", counted)
    return calls


def read_records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]


def resnet18_config(tmp_path: Path, cifar100_root: Path, weights: Path) -> Path:
    backbone = f'name = "resnet18"\nweights = "{weights}"\nresize_size = 32\ncrop_size = 32'
    return write_cifar_config(tmp_path, cifar100_root, backbone)


def test_second_run_performs_zero_backbone_forwards(
    tmp_path, capsys, cifar100_root, resnet18_weights, count_resnet_forwards
):
    config = resnet18_config(tmp_path, cifar100_root, resnet18_weights)
    cache_dir = tmp_path / "cache"
    common = ["--cache-dir", cache_dir, "--device", "cpu"]
    code, _, err = run_cli(capsys, "run", config, "--out", tmp_path / "first", *common)
    assert code == 0, err
    assert sum(count_resnet_forwards) == 400  # 300 train + 100 test images, once each
    assert "features train: computed with resnet18" in err
    assert "images/s" in err

    count_resnet_forwards.clear()
    code, _, err = run_cli(capsys, "run", config, "--out", tmp_path / "second", *common)
    assert code == 0, err
    assert count_resnet_forwards == []
    assert "features train: from the cache" in err and "features test: from the cache" in err

    first, second = read_records(tmp_path / "first"), read_records(tmp_path / "second")
    assert [r["accuracy_matrix"] for r in first] == [r["accuracy_matrix"] for r in second]
    for record in second:
        assert record["class_order"][:4] == [87, 0, 52, 58]  # the podnet order, resolved
        for split in ("train", "test"):
            entry = record["features_cache"][split]
            assert entry["source"] == "cache"
            assert (cache_dir / "features" / f"{entry['key']}.pt").is_file()
            assert entry["checksum"] == first[0]["features_cache"][split]["checksum"]


@pytest.mark.bad_input
def test_a_truncated_cache_file_is_healed_with_a_one_line_report(
    tmp_path, capsys, cifar100_root, resnet18_weights, count_resnet_forwards
):
    config = resnet18_config(tmp_path, cifar100_root, resnet18_weights)
    common = ["--cache-dir", tmp_path / "cache", "--device", "cpu"]
    assert run_cli(capsys, "run", config, "--out", tmp_path / "first", "--quiet", *common)[0] == 0
    train_key = read_records(tmp_path / "first")[0]["features_cache"]["train"]["key"]
    path = tmp_path / "cache" / "features" / f"{train_key}.pt"
    path.write_bytes(path.read_bytes()[:-100])  # a truncated write from some other tool

    count_resnet_forwards.clear()
    code, _, err = run_cli(capsys, "run", config, "--out", tmp_path / "healed", *common)
    assert code == 0, err
    reports = [line for line in err.splitlines() if "corrupted" in line]
    assert len(reports) == 1 and str(path) in reports[0]
    assert sum(count_resnet_forwards) == 300  # the train split only; test came from the cache
    first, healed = read_records(tmp_path / "first"), read_records(tmp_path / "healed")
    assert [r["accuracy_matrix"] for r in first] == [r["accuracy_matrix"] for r in healed]

    count_resnet_forwards.clear()
    assert run_cli(capsys, "run", config, "--out", tmp_path / "third", "--quiet", *common)[0] == 0
    assert count_resnet_forwards == []


def test_no_cache_computes_and_writes_nothing(
    tmp_path, capsys, cifar100_root, resnet18_weights, count_resnet_forwards
):
    config = resnet18_config(tmp_path, cifar100_root, resnet18_weights)
    argv = ["--no-cache", "--cache-dir", tmp_path / "cache", "--device", "cpu", "--quiet"]
    assert run_cli(capsys, "run", config, "--out", tmp_path / "out", *argv)[0] == 0
    assert sum(count_resnet_forwards) == 400 and not (tmp_path / "cache").exists()
    assert read_records(tmp_path / "out")[0]["features_cache"] == {
        "train": {"source": "computed", "seconds": pytest.approx(0, abs=60)},
        "test": {"source": "computed", "seconds": pytest.approx(0, abs=60)},
    }


def test_base_task_backbone_is_trained_once_and_then_never_runs(
    tmp_path, capsys, cifar100_root, monkeypatch
):
    from benchmarks import networks

    calls = []
    original = networks.CifarResNet.forward
    monkeypatch.setattr(
        networks.CifarResNet,
        "forward",
        lambda self, images: calls.append(len(images)) or original(self, images),
    )
    backbone = 'name = "base-task"\narch = "resnet32"\nwidth = 4\nepochs = 1\nbatch_size = 50'
    config = write_cifar_config(tmp_path, cifar100_root, backbone)
    common = ["--cache-dir", tmp_path / "cache", "--device", "cpu"]
    code, _, err = run_cli(capsys, "run", config, "--out", tmp_path / "first", *common)
    assert code == 0, err
    # One epoch over the 150 training images of the 50 base classes (podnet order), then
    # one pass over all 300 train and 100 test images.
    assert sum(calls) == 150 + 300 + 100
    assert "backbone: base-task resnet32 trained on 50 classes" in err

    calls.clear()
    code, _, err = run_cli(capsys, "run", config, "--out", tmp_path / "second", *common)
    assert code == 0, err
    assert calls == [] and "trained" not in err

    # Another base task (other first classes) trains another backbone; the cached one stays.
    calls.clear()
    code, _, err = run_cli(
        capsys, "run", config, "--out", tmp_path / "third", *common,
        "--set", "scenario.class_order=icarl1993",
    )  # fmt: skip
    assert code == 0, err
    assert sum(calls) == 150 + 300 + 100
    kinds = sorted(entry.kind for entry in Cache(tmp_path / "cache").entries())
    assert kinds == ["backbones", "backbones", *["features"] * 4]


@pytest.mark.parametrize("action", ["ls", "clear"])
@pytest.mark.bad_input
def test_cache_commands_refuse_a_cache_dir_that_is_a_file(action, tmp_path, capsys):
    """Once answered "empty" (ls) or "removed 0 entries" (clear) with exit 0."""
    blocker = tmp_path / "file"
    blocker.write_text("not a cache")
    code, out, err = run_cli(capsys, "cache", action, "--cache-dir", blocker)
    assert code == 2 and not out
    assert (
        err
        == f"headbench: error: cache folder {blocker} is not a folder; accepted: a folder or none\n"
    )
    assert blocker.read_text() == "not a cache"


@pytest.mark.parametrize("action", ["ls", "clear"])
@pytest.mark.bad_input
def test_cache_commands_refuse_a_cache_dir_that_is_a_dangling_link(action, tmp_path, capsys):
    """Once answered "empty" with exit 0, as if the link were a cache not made yet."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    code, out, err = run_cli(capsys, "cache", action, "--cache-dir", link)
    assert code == 2 and not out
    assert err == (
        f"headbench: error: cache folder {link} is a link to {tmp_path / 'gone'}, which does "
        "not exist; accepted: a folder, a link to one, or none\n"
    )
    assert link.is_symlink() and not (tmp_path / "gone").exists()  # nothing made
