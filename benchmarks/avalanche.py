"""Avalanche class-incremental benchmarks as input to headbench's engine.

`from_avalanche(benchmark, backbone=...)` passes every training and test sample of an
Avalanche benchmark (nc_benchmark, SplitCIFAR100, tensor benchmarks, ...) once through a
frozen backbone (eval mode, no gradients; none: the inputs are the features) and keeps
the benchmark's own experiences and class order: classes arrive experience by
experience, within one in the benchmark's `classes_order` where it has one (the same
rule the Avalanche plugin follows, `strategies.avalanche.arrival_order`). Targets become
arrival-order ids, as the engine expects; `class_order` keeps Avalanche's ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

import strategies
from benchmarks import engine
from benchmarks.errors import UsageError
from benchmarks.scenario import Scenario
from strategies import Strategy
from strategies.avalanche import arrival_order


@dataclass(frozen=True)
class AvalancheFeatures:
    """An Avalanche benchmark's features, arrival-order targets and scenario."""

    train_features: Tensor  # (train samples, dim)
    train_targets: Tensor  # (train samples,) arrival-order ids
    test_features: Tensor  # (test samples, dim)
    test_targets: Tensor  # (test samples,)
    scenario: Scenario  # class_order: Avalanche's class ids in arrival order

    def run(
        self,
        strategy: Strategy | str,
        training: dict[str, Any],
        seed: int = 0,
        bias: bool = True,
        head_kind: str = "linear",
    ) -> engine.RunResult:
        """`benchmarks.engine.run` on these features; `strategy` a Strategy or a registry
        name (default hyperparameters). `training` as a config's [training] table."""
        if isinstance(strategy, str):
            strategy = strategies.create(strategy)
        strategy.validate(self.scenario.experience_sizes)
        return engine.run(
            strategy,
            self.train_features,
            self.train_targets,
            self.test_features,
            self.test_targets,
            self.scenario,
            training,
            bias,
            seed,
            head_kind,
        )


@torch.no_grad()
def _features(
    experiences: Any, backbone: nn.Module, device: torch.device, batch_size: int
) -> tuple[Tensor, Tensor]:
    """Features and Avalanche class ids of every sample of a stream, experience by experience."""
    features, labels = [], []
    for experience in experiences:
        dataset = experience.dataset.eval()
        loader = DataLoader(
            dataset, batch_size=batch_size, collate_fn=getattr(dataset, "collate_fn", None)
        )
        for batch in loader:
            features.append(backbone(batch[0].to(device)).flatten(1))  # (batch, dim)
            labels.append(batch[1].to(device))
    return torch.cat(features), torch.cat(labels)


def _scenario(class_order: list[int], sizes: list[int]) -> Scenario:
    later = set(sizes[1:])
    if len(later) > 1:
        raise UsageError(
            f"experiences bring {sizes} classes; headbench's scenarios take a first "
            "experience of any size, then equal increments"
        )
    return Scenario(class_order, sizes[0], later.pop() if later else 1)


def from_avalanche(
    benchmark: Any,
    backbone: nn.Module | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
) -> AvalancheFeatures:
    """An Avalanche class-incremental benchmark's features, ready for headbench's engine.

    Args:
        benchmark: an Avalanche benchmark with `train_stream` and `test_stream`.
        backbone: the frozen feature extractor (run in eval mode); None: the inputs are
            already features (a tensor benchmark of cached features).
        device: where the backbone runs and the features stay.
        batch_size: samples per backbone pass.

    Raises:
        UsageError: a class in two experiences (not class-incremental), a test class never
            trained on, or experience sizes no headbench scenario expresses.
    """
    device = torch.device(device)
    backbone = (nn.Identity() if backbone is None else backbone).to(device).eval()
    experience_classes = [arrival_order(e) for e in benchmark.train_stream]
    class_order = [label for classes in experience_classes for label in classes]
    repeated = sorted({c for c in class_order if class_order.count(c) > 1})
    if repeated:
        raise UsageError(
            f"classes {repeated} appear in more than one experience; from_avalanche takes "
            "class-incremental benchmarks (each class in one experience)"
        )
    scenario = _scenario(class_order, [len(classes) for classes in experience_classes])
    train_features, train_labels = _features(benchmark.train_stream, backbone, device, batch_size)
    test_features, test_labels = _features(benchmark.test_stream, backbone, device, batch_size)
    unknown = sorted(set(test_labels.tolist()) - set(class_order))
    if unknown:
        raise UsageError(f"test classes {unknown} are in no training experience")
    position = torch.full((max(class_order) + 1,), -1, dtype=torch.long, device=device)
    position[class_order] = torch.arange(len(class_order), device=device)
    return AvalancheFeatures(
        train_features, position[train_labels], test_features, position[test_labels], scenario
    )
