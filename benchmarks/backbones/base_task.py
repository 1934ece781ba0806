"""`base-task`: a network (`networks.py`) trained on the first experience's classes only
(SGD, momentum 0.9, cosine schedule, crop + flip), then frozen; the trained network is
cached like features, keyed by everything that determines it."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks import networks
from benchmarks.backbones.core import (
    EXTRACTION_OPTIONS,
    Features,
    Preprocessing,
    Recipe,
    as_tensor,
    augment,
    extract_with_cache,
    freeze,
    precision,
    precision_name,
    register,
)
from benchmarks.cache import CACHE_FORMAT, Cache
from benchmarks.config import MAX_EPOCHS, Option
from benchmarks.datasets import Data
from benchmarks.progress import Progress
from benchmarks.scenario import Scenario

BASE_TASK_TRAINING = ("arch", "width", "epochs", "lr", "weight_decay", "batch_size", "seed")


@register(
    "base-task",
    "a network trained on the first experience's classes (SGD, momentum 0.9, cosine), then "
    "frozen: small conv net (digits) or CIFAR ResNet-32 / ResNet-18",
    {
        "arch": Option(
            "small",
            str,
            "small (digits-size conv net), resnet20 / resnet32 (64-d) or resnet18_cifar (512-d)",
            choices=networks.ARCHS,
        ),
        "width": Option(
            0,
            int,
            "first-stage channels; 0 = standard (small 32, resnet32 16, resnet18 64)",
            minimum=0,
        ),  # fmt: skip
        "epochs": Option(
            30, int, "training epochs on the base task", minimum=1, maximum=MAX_EPOCHS
        ),
        "lr": Option(
            0.05,
            float,
            "SGD learning rate (cosine schedule, momentum 0.9)",
            minimum=0,
            exclusive=(True, False),
        ),
        "weight_decay": Option(5e-4, float, "SGD weight decay", minimum=0.0),
        "batch_size": Option(64, int, "minibatch size", minimum=1),
        "augmentation": Option(
            "auto",
            str,
            "training augmentation: crop-flip, none, or auto (crop-flip for the ResNets)",
            choices=("auto", "crop-flip", "none"),
        ),
        "seed": Option(
            0, int, "seed of the backbone's training (one backbone for all runs)", minimum=0
        ),
        **EXTRACTION_OPTIONS,
    },
    needs_images=True,
    needs_arrays=True,
)
def base_task(
    options: dict,
    data: Data,
    scenario: Scenario,
    device: torch.device,
    progress: Progress,
    cache: Cache | None = None,
) -> Features:
    key = _base_task_key(options, data, scenario, device)

    def build(progress: Progress) -> nn.Module:
        return trained_base_task(options, data, scenario, device, progress, cache, key)

    arch = options["arch"]
    recipe = Recipe(
        identity=key,
        preprocessing=Preprocessing(),  # the networks standardise their inputs themselves
        build=build,
        label=f"base-task {arch} ({scenario.initial_classes} base classes)",
        default_batch=1024,
        channels_last_on_cpu=False,
    )
    return extract_with_cache(recipe, options, data, device, progress, cache)


def _base_task_key(
    options: dict, data: Data, scenario: Scenario, device: torch.device
) -> dict[str, Any]:
    """Everything that determines the trained backbone."""
    return {
        "format": CACHE_FORMAT,
        "kind": "base-task",
        "dataset": data.fingerprint,
        "base_classes": scenario.class_order[: scenario.initial_classes],  # in arrival order
        **{name: options[name] for name in BASE_TASK_TRAINING},
        "augmentation": _augmentation(options),
        "device": device.type,
        "precision": precision_name(device),
        "torch": torch.__version__,
    }


def _augmentation(options: dict) -> str:
    if options["augmentation"] == "auto":
        return "none" if options["arch"] == "small" else "crop-flip"
    return options["augmentation"]


def trained_base_task(
    options: dict,
    data: Data,
    scenario: Scenario,
    device: torch.device,
    progress: Progress,
    cache: Cache | None,
    key: dict[str, Any],
) -> nn.Module:
    """The frozen base-task network from the cache, or trained now (and then cached)."""
    channels = data.train_inputs.shape[1]
    if cache is not None:
        stored = cache.load("backbones", key)
        if stored is not None:
            network = networks.build(options["arch"], channels, options["width"])
            network.load_state_dict(stored[0])
            progress.log(f"backbone: base-task {options['arch']} from the cache")
            return freeze(network.to(device))
    started = time.perf_counter()
    network = train_base_task(options, data, scenario, device, progress)
    progress.log(
        f"backbone: base-task {options['arch']} trained on {scenario.initial_classes} classes "
        f"in {time.perf_counter() - started:.1f} s"
    )
    if cache is not None:
        description = (
            f"base-task {options['arch']} on {scenario.initial_classes} classes of "
            f"{data.name or 'dataset'} ({data.fingerprint}), {options['epochs']} epochs"
        )
        cache.save("backbones", key, network.state_dict(), description)
    return network


def train_base_task(
    options: dict, data: Data, scenario: Scenario, device: torch.device, progress: Progress
) -> nn.Module:
    """Train on the first experience's classes only; return the network frozen (eval mode)."""
    options = {"arch": "small", "augmentation": "auto", **options}
    num_base = scenario.initial_classes
    targets = scenario.remap(data.train_targets)
    keep = targets < num_base
    images = as_tensor(data.train_inputs[keep], device)  # (base, channels, height, width)
    labels = as_tensor(targets[keep], device)

    generator = torch.Generator().manual_seed(options["seed"])
    torch.manual_seed(options["seed"])
    network = networks.build(options["arch"], images.shape[1], options["width"]).to(device)
    if isinstance(network, networks.CifarResNet):
        pixels = Preprocessing.to_float(images).transpose(0, 1).flatten(1)  # (channels, pixels)
        network.standardize.mean.copy_(pixels.mean(1))
        network.standardize.std.copy_(pixels.std(1).clamp_min(1e-6))
    classifier = nn.Linear(network.out_features, num_base).to(device)
    optimizer = torch.optim.SGD(
        [*network.parameters(), *classifier.parameters()],
        lr=options["lr"],
        momentum=0.9,
        weight_decay=options["weight_decay"],
    )
    steps = options["epochs"] * math.ceil(len(labels) / options["batch_size"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    augmented = _augmentation(options) == "crop-flip"
    autocast_dtype = precision(device) if precision(device) == torch.bfloat16 else None
    if device.type == "cuda" and isinstance(network, networks.CifarResNet):
        network = network.to(memory_format=torch.channels_last)
    network.train()
    description = f"backbone: training {options['arch']} on {num_base} base classes"
    with progress.bar(options["epochs"] * len(labels), description) as bar:
        for _ in range(options["epochs"]):
            order = torch.randperm(len(labels), generator=generator).to(device)
            for batch in order.split(options["batch_size"]):
                inputs = Preprocessing.to_float(images[batch])
                if augmented:
                    inputs = augment(inputs, generator)
                with (
                    torch.autocast(device.type, dtype=autocast_dtype)
                    if autocast_dtype is not None
                    else contextlib.nullcontext()
                ):
                    loss = F.cross_entropy(classifier(network(inputs)), labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update(len(batch))
    # Frozen from here on: eval mode keeps batch-norm statistics fixed.
    return freeze(network.to(memory_format=torch.contiguous_format))


@torch.inference_mode()
def _extract(network: nn.Module, images: Tensor, batch_size: int = 1024) -> Tensor:
    """Features of images already on the network's device, in batches (no preprocessing)."""
    return torch.cat([network(chunk) for chunk in images.split(batch_size)])  # (samples, dim)
