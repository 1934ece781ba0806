"""Speed of headbench's engine against Avalanche's stock strategies, same process, same data.

Two synthetic feature sets: CIFAR-100-sized ("cifar100": 50,000 x 512 train, 10,000
test, 100 classes, 10 experiences of 10 classes) and CLINC150-sized ("clinc150": 15,000 x
384 train, 4,500 test, 150 classes, 15 experiences of 10, MiniLM's dimension); one epoch
per experience, batch 64, SGD 0.1 with momentum 0.9, evaluation on every seen experience
after each one. Avalanche runs its stock `Naive` and
`EWC` (ewc_lambda = λ/2, its penalty has no 1/2) with an `IncrementalClassifier` on a
tensor benchmark; headbench runs `naive` and `ewc` through `benchmarks.engine.run`.

Skipped by default (`--benchmark-skip` in pyproject); run with
`pytest tests/perf/test_avalanche_speed.py --benchmark-only -s`. Read the ratio
(`extra_info.avalanche_over_headbench`) and the two final accuracies, never seconds. On a
slow machine, `HEADBENCH_AVALANCHE_SPEED_FRACTION=0.2` keeps that share of the samples
(classes, dimension and experiences unchanged).

Both start from the engine's initial rows (zero biases; a once-per-experience plugin);
accuracies then agree within a few points, not exactly: Avalanche shuffles minibatches
from its own generator and its EWC takes the minibatch Fisher (tests/test_avalanche.py
runs the exact comparisons).
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from torch import nn

import strategies
from benchmarks import engine
from benchmarks.scenario import Scenario
from strategies.base import initial_rows

FRACTION = float(os.environ.get("HEADBENCH_AVALANCHE_SPEED_FRACTION", "1.0"))
# name: (train samples, test samples, dimension, classes, experiences)
SHAPES = {"cifar100": (50_000, 10_000, 512, 100, 10), "clinc150": (15_000, 4_500, 384, 150, 15)}
LAMBDA = 100.0  # EWC's λ (ours); Avalanche's ewc_lambda = λ/2
TRAINING = {
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "batch_size": 64,
    "epochs": 1,
    "schedule": "constant",
}


@pytest.fixture(scope="module")
def avalanche_imported() -> None:
    """Import Avalanche before any timing: its import takes seconds."""
    import avalanche.training  # noqa: F401


@pytest.fixture(scope="module", params=list(SHAPES))
def features(request):
    """Class c's features are a random centre plus unit noise; classes overlap a little.
    Returns (train x, train y, test x, test y, experiences)."""
    train, test, dim, classes, experiences = SHAPES[request.param]
    generator = torch.Generator().manual_seed(0)
    centres = 0.15 * torch.randn(classes, dim, generator=generator)  # (classes, dim)
    data = []
    for count in (int(train * FRACTION), int(test * FRACTION)):
        targets = torch.arange(count) % classes
        inputs = centres[targets] + torch.randn(count, dim, generator=generator)
        data += [inputs, targets]
    return (*data, experiences)


def run_headbench(name: str, hyperparameters: dict, features) -> float:
    *tensors, experiences = features
    classes = int(tensors[1].max()) + 1
    scenario = Scenario(list(range(classes)), classes // experiences, classes // experiences)
    result = engine.run(
        strategies.create(name, hyperparameters), *tensors, scenario, TRAINING, True, 0
    )
    last, counts = result.accuracy_matrix[-1], result.test_counts
    return sum(a * n for a, n in zip(last, counts, strict=True)) / sum(counts)


def same_initial_rows(seed: int, dim: int):
    """An Avalanche plugin giving new rows the engine's initial rows (`initial_rows` on a
    generator seeded like the engine's) and zero biases; once per experience, so it costs
    nothing per iteration."""
    from avalanche.core import SupervisedPlugin

    class SameInitialRows(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.state = torch.Generator().manual_seed(seed).get_state()
            self.num_old = 0

        @torch.no_grad()
        def before_training_exp(self, strategy, **kwargs) -> None:
            linear = strategy.model[0].classifier
            num_new = len(strategy.experience.classes_in_this_experience)
            saved = torch.random.get_rng_state()
            torch.random.set_rng_state(self.state)
            rows = initial_rows(num_new, dim)  # (new, dim)
            self.state = torch.random.get_rng_state()
            torch.random.set_rng_state(saved)
            linear.weight[self.num_old : self.num_old + num_new] = rows
            linear.bias[self.num_old : self.num_old + num_new] = 0.0
            self.num_old += num_new

    return SameInitialRows()


def run_avalanche(name: str, features) -> float:
    from avalanche.benchmarks import nc_benchmark
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.models import IncrementalClassifier
    from avalanche.training import EWC, Naive
    from avalanche.training.plugins import EvaluationPlugin

    train_x, train_y, test_x, test_y, experiences = features
    classes, dim = int(train_y.max()) + 1, train_x.shape[1]
    benchmark = nc_benchmark(
        _make_taskaware_tensor_classification_dataset(train_x, train_y),
        _make_taskaware_tensor_classification_dataset(test_x, test_y),
        n_experiences=experiences,
        task_labels=False,
        fixed_class_order=list(range(classes)),
    )
    torch.manual_seed(0)
    model = nn.Sequential(IncrementalClassifier(dim, initial_out_features=2))
    optimizer = torch.optim.SGD(model.parameters(), lr=TRAINING["lr"], momentum=0.9)
    settings = {
        "model": model,
        "optimizer": optimizer,
        "criterion": nn.CrossEntropyLoss(),
        "train_mb_size": TRAINING["batch_size"],
        "train_epochs": TRAINING["epochs"],
        "eval_mb_size": 1024,
        "evaluator": EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
        "plugins": [same_initial_rows(0, dim)],
    }
    if name == "ewc":
        strategy = EWC(ewc_lambda=LAMBDA / 2, mode="separate", **settings)
    else:
        strategy = Naive(**settings)
    for index, experience in enumerate(benchmark.train_stream):
        strategy.train(experience)
        metrics = strategy.eval(benchmark.test_stream[: index + 1])
    return metrics["Top1_Acc_Stream/eval_phase/test_stream/Task000"]


@pytest.mark.parametrize(
    "name, hyperparameters", [("naive", {}), ("ewc", {"lambda": LAMBDA})], ids=["naive", "ewc"]
)
def test_engine_against_avalanche(benchmark, avalanche_imported, features, name, hyperparameters):
    started = time.perf_counter()
    avalanche_accuracy = run_avalanche(name, features)
    avalanche_seconds = time.perf_counter() - started
    accuracies = []
    benchmark.pedantic(
        lambda: accuracies.append(run_headbench(name, hyperparameters, features)),
        rounds=3,
        iterations=1,
        warmup_rounds=1,  # torch's first-call costs; Avalanche's run is long enough to absorb them
    )
    ours = benchmark.stats.stats.median  # shared machines: the median resists a busy neighbour
    benchmark.extra_info.update(
        samples=len(features[0]),
        avalanche_seconds=avalanche_seconds,
        headbench_seconds=ours,
        avalanche_over_headbench=avalanche_seconds / ours,
        avalanche_accuracy=avalanche_accuracy,
        headbench_accuracy=accuracies[-1],
    )
    print(
        f"\n{name}: Avalanche {avalanche_seconds:.1f} s, headbench {ours:.1f} s, "
        f"ratio {avalanche_seconds / ours:.1f}x; final accuracy {avalanche_accuracy:.4f} vs "
        f"{accuracies[-1]:.4f} ({features[0].shape[0]} x {features[0].shape[1]} train)"
    )
    assert abs(avalanche_accuracy - accuracies[-1]) < 0.05
