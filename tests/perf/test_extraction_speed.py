"""Feature extraction throughput and what the feature cache saves, in the same process.

Skipped by default (`--benchmark-skip` in pyproject); run with `tox -e bench` or
`pytest tests/perf --benchmark-only`. A generated CIFAR-100 folder (1,200 images) goes
through torchvision's ResNet-18 (local random weights, its own preprocessing: resize 256,
centre crop 224, ImageNet normalisation). Read `extra_info`: `images_per_second` of the
first (computing) run and `first_over_cached`, the time of a whole `headbench run` that
computes its features over one that finds them in the cache. Never assert on seconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from conftest import write_cifar100

from benchmarks.cli import main

TRAIN_PER_CLASS, TEST_PER_CLASS = 10, 2


@pytest.fixture(scope="module")
def bench_config(tmp_path_factory) -> Path:
    from torchvision.models import resnet18

    root = tmp_path_factory.mktemp("bench")
    write_cifar100(root, TRAIN_PER_CLASS, TEST_PER_CLASS)
    torch.manual_seed(0)
    torch.save(resnet18().state_dict(), root / "resnet18.pth")
    config = root / "bench.toml"
    config.write_text(f"""
[dataset]
name = "cifar100"
root = "{root}"
download = false
verify_checksums = false
[backbone]
name = "resnet18"
weights = "{root / "resnet18.pth"}"
[scenario]
class_order = "icarl1993"
initial_classes = 50
increment = 10
[training]
epochs = 1
seeds = [0]
[strategies.naive]
""")
    return config


def test_extraction_throughput_and_cached_rerun(benchmark, bench_config, tmp_path):
    cache = tmp_path / "cache"

    def headbench_run(out: str) -> float:
        started = time.perf_counter()
        argv = ["run", str(bench_config), "--out", str(tmp_path / out), "--quiet"]
        assert main([*argv, "--cache-dir", str(cache), "--device", "cpu"]) == 0
        return time.perf_counter() - started

    first = headbench_run("first")
    record = json.loads(next((tmp_path / "first" / "runs").glob("*.json")).read_text())
    images = 100 * (TRAIN_PER_CLASS + TEST_PER_CLASS)
    runs = iter(range(100))
    benchmark.pedantic(lambda: headbench_run(f"cached{next(runs)}"), rounds=3, iterations=1)
    cached = benchmark.stats.stats.mean
    benchmark.extra_info["device"] = "cpu"
    benchmark.extra_info["images"] = images
    benchmark.extra_info["images_per_second"] = images / record["seconds"]["features"]
    benchmark.extra_info["first_run_seconds"] = first
    benchmark.extra_info["first_over_cached"] = first / cached
