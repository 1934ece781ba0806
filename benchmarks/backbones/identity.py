"""`identity`: the inputs are the features, flattened (for .npz features)."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.backbones.core import Features, as_tensor, register
from benchmarks.cache import Cache
from benchmarks.datasets import Data
from benchmarks.errors import UsageError
from benchmarks.progress import Progress
from benchmarks.scenario import Scenario


@register("identity", "the inputs are the features (flattened): for .npz features", {})
def identity(
    options: dict,
    data: Data,
    scenario: Scenario,
    device: torch.device,
    progress: Progress,
    cache: Cache | None = None,
) -> Features:
    # float32 as every backbone's features: uint8 images (CIFAR, an Avalanche benchmark)
    # become their pixel values 0..255, which heads can train on.
    splits = [data.train_inputs, data.test_inputs]
    if data.val_inputs is not None:
        splits.append(data.val_inputs)
    if data.is_text:
        raise UsageError(
            f"backbone.name = 'identity' takes features or images held in memory; dataset "
            f"{data.name!r} gives sentences: use backbone 'transformers'"
        )
    if any(not isinstance(x, np.ndarray) for x in splits):
        raise UsageError(
            f"backbone.name = 'identity' takes features or images held in memory; dataset "
            f"{data.name!r} reads image files of differing sizes: use a backbone such as "
            "resnet18, vit_b_16 or base-task (headbench list backbones)"
        )
    flat = [as_tensor(x.reshape(len(x), -1).astype(np.float32, copy=False), device) for x in splits]
    return Features(flat[0], flat[1], val=flat[2] if len(flat) > 2 else None)
