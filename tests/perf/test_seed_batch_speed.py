"""Per-seed cost of training S seeds as one batched computation (`engine.run_seeds`)
against the same S seeds one after another (`engine.run`), in the same process.

The features and training settings of test_avalanche_speed.py: its two synthetic feature
sets (CIFAR-100-sized, 50,000 x 512 train, 100 classes in 10 experiences; CLINC150-sized,
15,000 x 384 train, 150 classes in 15 experiences), one epoch, batch 64, SGD 0.1 with
momentum 0.9.
Skipped by default; run `pytest tests/perf/test_seed_batch_speed.py --benchmark-only -s`
and read `extra_info.sequential_over_batched` (> 1: batching pays) and the two per-seed
times, never seconds across machines. `HEADBENCH_SEED_BATCH_SIZE` sets S (default 5);
`HEADBENCH_AVALANCHE_SPEED_FRACTION` keeps a share of the samples as in
test_avalanche_speed.py. The results must be equal (tests/test_engine_seeds.py checks
that exactly); here the final accuracies are compared as a guard.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from test_avalanche_speed import TRAINING
from test_avalanche_speed import features as cpu_features  # noqa: F401 (a fixture)

import strategies
from benchmarks import engine
from benchmarks.scenario import Scenario

SEEDS = list(range(int(os.environ.get("HEADBENCH_SEED_BATCH_SIZE", "5"))))


@pytest.fixture(scope="module")
def features(cpu_features):  # noqa: F811
    """test_avalanche_speed's features (and experience count), on the GPU when there is
    one."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    *tensors, experiences = cpu_features
    return [tensor.to(device) for tensor in tensors], experiences


def final_accuracies(results: list[engine.RunResult]) -> list[float]:
    return [
        sum(a * n for a, n in zip(r.accuracy_matrix[-1], r.test_counts, strict=True))
        / sum(r.test_counts)
        for r in results
    ]


@pytest.mark.parametrize(
    "name, hyperparameters",
    [("naive", {}), ("ewc", {"lambda": 100.0}), ("lwf", {"ce_scope": "seen"})],
    ids=["naive", "ewc", "lwf"],
)
def test_batched_seeds_against_one_after_another(benchmark, features, name, hyperparameters):
    features, experiences = features
    classes = int(features[1].max()) + 1
    scenario = Scenario(list(range(classes)), classes // experiences, classes // experiences)

    def sequential():
        return [
            engine.run(
                strategies.create(name, hyperparameters), *features, scenario, TRAINING, True, s
            )
            for s in SEEDS
        ]

    def batched():
        instances = [strategies.create(name, hyperparameters) for _ in SEEDS]
        return engine.run_seeds(instances, *features, scenario, TRAINING, True, SEEDS)

    sequential()  # torch's first-call costs
    started = time.perf_counter()
    one_by_one = sequential()
    sequential_seconds = time.perf_counter() - started
    results = []
    benchmark.pedantic(lambda: results.append(batched()), rounds=3, iterations=1)
    batched_seconds = benchmark.stats.stats.median
    per_seed = (sequential_seconds / len(SEEDS), batched_seconds / len(SEEDS))
    benchmark.extra_info.update(
        samples=len(features[0]),
        seeds=len(SEEDS),
        device=str(features[0].device),
        sequential_seconds_per_seed=per_seed[0],
        batched_seconds_per_seed=per_seed[1],
        sequential_over_batched=sequential_seconds / batched_seconds,
    )
    print(
        f"\n{name}, {len(SEEDS)} seeds, {tuple(features[0].shape)} on {features[0].device}: "
        "one after another "
        f"{per_seed[0]:.3f} s per seed, batched {per_seed[1]:.3f} s per seed, "
        f"ratio {sequential_seconds / batched_seconds:.2f}x"
    )
    assert final_accuracies(results[-1]) == pytest.approx(final_accuracies(one_by_one), abs=1e-3)
