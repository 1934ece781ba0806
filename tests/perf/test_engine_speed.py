"""Speed of the head-training engine, as a ratio against a textbook loop in the same process.

Skipped by default (`--benchmark-skip` in pyproject); run with `tox -e bench` or
`pytest tests/perf --benchmark-only`. Absolute times on shared machines are noise: read
the ratio (`extra_info.speedup_vs_dataloader`), never assert on seconds.
"""

import time

import pytest
import torch
import torch.nn.functional as F
from speed_inputs import gaussian_classes, sgd_training
from torch.utils.data import DataLoader, TensorDataset

import strategies
from benchmarks import engine
from benchmarks.scenario import Scenario
from strategies import Head

# The setting of shared/REFERENCE.md's speed note: 15,000 x 384 features, 150 classes,
# 10 experiences, batch 64 (3 epochs here instead of 10 to keep the benchmark short).
SAMPLES, DIM, CLASSES, EXPERIENCES, EPOCHS = 15_000, 384, 150, 10, 3
TRAINING = sgd_training(EPOCHS)


@pytest.fixture(scope="module")
def features():
    return gaussian_classes(SAMPLES, DIM, CLASSES)


def textbook_loop(inputs, targets):
    """What a plain Avalanche-free script does: a DataLoader over tensors, .item() per step."""
    torch.manual_seed(0)
    head = Head(DIM)
    per = CLASSES // EXPERIENCES
    for index in range(EXPERIENCES):
        head.append_rows(torch.empty(per, DIM).uniform_(-0.05, 0.05))
        selected = (targets >= index * per) & (targets < (index + 1) * per)
        loader = DataLoader(
            TensorDataset(inputs[selected], targets[selected]), batch_size=64, shuffle=True
        )
        optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
        for _ in range(EPOCHS):
            for batch_features, batch_targets in loader:
                loss = F.cross_entropy(head(batch_features), batch_targets)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss.item()


def test_engine_against_a_dataloader_loop(benchmark, features):
    inputs, targets = features
    scenario = Scenario(list(range(CLASSES)), CLASSES // EXPERIENCES, CLASSES // EXPERIENCES)

    def ours():
        return engine.run(
            strategies.create("naive"),
            inputs,
            targets,
            inputs[:1500],
            targets[:1500],
            scenario,
            TRAINING,
            True,
            0,
        )

    started = time.perf_counter()
    textbook_loop(inputs, targets)
    baseline = time.perf_counter() - started
    benchmark.pedantic(ours, rounds=3, iterations=1)
    benchmark.extra_info["baseline_seconds"] = baseline
    benchmark.extra_info["speedup_vs_dataloader"] = baseline / benchmark.stats.stats.mean
