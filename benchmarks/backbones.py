"""Backbones: turn a dataset's inputs into frozen features, once per `headbench run`.

`identity` uses the inputs as they are (flattened); `base-task` trains a small conv net
on the first experience's classes only (the base task), freezes it, and extracts
features for every image. Every strategy and seed then trains on the same features.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.config import Option
from benchmarks.datasets import Data
from benchmarks.errors import UsageError
from benchmarks.progress import Progress
from benchmarks.scenario import Scenario


@dataclass(frozen=True)
class Features:
    train: Tensor  # (train, dim), on the device
    test: Tensor  # (test, dim)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    description: str
    options: dict[str, Option]
    extract: Callable[[dict[str, Any], Data, Scenario, torch.device, Progress], Features]
    needs_images: bool = False

    def check(self, data: Data) -> None:
        """Refuse data this backbone cannot take, before anything runs."""
        if self.needs_images and not data.is_images:
            raise UsageError(
                f"backbone {self.name!r} needs images (samples, channels, height, width); this "
                f"dataset gives feature vectors of shape {data.train_inputs.shape}; "
                "use backbone 'identity'"
            )


BACKBONES: dict[str, BackboneSpec] = {}


def _backbone(name: str, description: str, options: dict[str, Option], needs_images: bool = False):
    def decorate(extract):
        BACKBONES[name] = BackboneSpec(name, description, options, extract, needs_images)
        return extract

    return decorate


def _as_tensor(array: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


@_backbone("identity", "the inputs are the features (flattened): for .npz features", {})
def identity(
    options: dict, data: Data, scenario: Scenario, device: torch.device, progress: Progress
) -> Features:
    flat = [x.reshape(len(x), -1) for x in (data.train_inputs, data.test_inputs)]
    return Features(*(_as_tensor(x, device) for x in flat))


class SmallConvNet(nn.Module):
    """Three 3x3 conv-BN-ReLU blocks and global average pooling: features of dim 2*width.

    Sized for small images (8x8 digits); the last ReLU makes the features non-negative,
    as Weight Aligning's weight clipping assumes.
    """

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()

        def block(inputs: int, outputs: int) -> list[nn.Module]:
            return [
                nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
                nn.BatchNorm2d(outputs),
                nn.ReLU(),
            ]

        self.body = nn.Sequential(
            *block(in_channels, width),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.out_features = 2 * width

    def forward(self, images: Tensor) -> Tensor:
        return self.body(images)  # (batch, 2 * width)


@torch.inference_mode()
def _extract(network: nn.Module, images: Tensor, batch_size: int = 1024) -> Tensor:
    return torch.cat([network(chunk) for chunk in images.split(batch_size)])  # (samples, dim)


@_backbone(
    "base-task",
    "a small conv net trained on the first experience's classes, then frozen",
    {
        "width": Option(32, int, "channels of the first block (features: 2 * width)", minimum=1),
        "epochs": Option(30, int, "training epochs on the base task", minimum=1),
        "lr": Option(0.05, float, "SGD learning rate (cosine schedule, momentum 0.9)", minimum=0.0),
        "weight_decay": Option(5e-4, float, "SGD weight decay", minimum=0.0),
        "batch_size": Option(64, int, "minibatch size", minimum=1),
        "seed": Option(
            0, int, "seed of the backbone's training (one backbone for all runs)", minimum=0
        ),
    },
    needs_images=True,
)
def base_task(
    options: dict, data: Data, scenario: Scenario, device: torch.device, progress: Progress
) -> Features:
    network = train_base_task(options, data, scenario, device, progress)
    return Features(
        _extract(network, _as_tensor(data.train_inputs, device)),
        _extract(network, _as_tensor(data.test_inputs, device)),
    )


def train_base_task(
    options: dict, data: Data, scenario: Scenario, device: torch.device, progress: Progress
) -> SmallConvNet:
    """Train on the first experience's classes only; return the network frozen (eval mode)."""
    num_base = scenario.initial_classes
    targets = scenario.remap(data.train_targets)
    keep = targets < num_base
    images = _as_tensor(data.train_inputs[keep], device)
    labels = _as_tensor(targets[keep], device)

    generator = torch.Generator().manual_seed(options["seed"])
    torch.manual_seed(options["seed"])
    network = SmallConvNet(data.train_inputs.shape[1], options["width"]).to(device)
    classifier = nn.Linear(network.out_features, num_base).to(device)
    optimizer = torch.optim.SGD(
        [*network.parameters(), *classifier.parameters()],
        lr=options["lr"],
        momentum=0.9,
        weight_decay=options["weight_decay"],
    )
    steps = options["epochs"] * math.ceil(len(labels) / options["batch_size"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    network.train()
    for _ in progress.iterate(range(options["epochs"]), "backbone: training on the base task"):
        order = torch.randperm(len(labels), generator=generator).to(device)
        for batch in order.split(options["batch_size"]):
            loss = F.cross_entropy(classifier(network(images[batch])), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    # Frozen from here on: eval mode keeps batch-norm statistics fixed.
    return network.eval().requires_grad_(False)


def extract(
    options: dict[str, Any],
    data: Data,
    scenario: Scenario,
    device: torch.device,
    progress: Progress,
) -> Features:
    """Features for a resolved `[backbone]` table (checked by `BackboneSpec.check` first)."""
    spec = BACKBONES[options["name"]]
    settings = {k: v for k, v in options.items() if k != "name"}
    return spec.extract(settings, data, scenario, device, progress)
