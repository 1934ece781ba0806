"""`timm`: any timm model by name, its pretrained weights or a local checkpoint, and
timm's preprocessing for it (optional extra: pip install "headbench[timm]")."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.backbones.checkpoints import download_messages, fit_state_dict, load_state_dict
from benchmarks.backbones.core import (
    EXTRACTION_OPTIONS,
    Features,
    Preprocessing,
    Recipe,
    extract_with_cache,
    freeze,
    register,
)
from benchmarks.cache import Cache, file_sha256
from benchmarks.config import Option
from benchmarks.datasets import Data
from benchmarks.errors import UsageError
from benchmarks.progress import Progress
from benchmarks.scenario import Scenario


def _timm_recipe(options: dict[str, Any]) -> Recipe:
    try:
        import timm
        from timm.data import resolve_model_data_config
    except ImportError:
        raise UsageError(
            "backbone 'timm' needs the timm package: pip install \"headbench[timm]\""
        ) from None
    model = options["model"]
    if not timm.is_model(model):
        close = timm.list_models(f"*{model.split('.')[0][:6]}*")[:8]
        raise UsageError(
            f"backbone.model = {model!r} is not a timm model; accepted e.g. "
            f"{', '.join(close) or 'see timm.list_models()'}"
        )
    value = options["weights"]
    path = Path(value).expanduser() if value else None
    if path is not None and not path.is_file():
        raise UsageError(f"backbone.weights = {value!r}: no such file; give a timm checkpoint")
    # The architecture alone (no download) gives the pretrained config's preprocessing.
    skeleton = timm.create_model(model, pretrained=False, num_classes=0)
    config = resolve_model_data_config(skeleton)
    size = config["input_size"][-1]
    preprocessing = Preprocessing(
        resize=options["resize_size"] or math.floor(size / config["crop_pct"]),
        crop=options["crop_size"] or size,
        mean=tuple(float(m) for m in config["mean"]),
        std=tuple(float(s) for s in config["std"]),
        interpolation=config["interpolation"],
    )
    tag = skeleton.pretrained_cfg.get("hf_hub_id") or skeleton.pretrained_cfg.get("url") or model
    identity: dict[str, Any] = {"name": "timm", "model": model, "timm": timm.__version__}
    if path is not None:
        identity["weights_sha256"] = file_sha256(path)
    elif options["pretrained"]:
        identity["weights"] = tag
    else:
        identity["weights"] = "random (seed 0)"
    label = f"timm {model}"

    def build(progress: Progress) -> nn.Module:
        if path is not None:
            network = timm.create_model(model, pretrained=False, num_classes=0)
            state = load_state_dict(path, model)
            state = {k: v for k, v in state.items() if k in network.state_dict()}
            fit_state_dict(network, state, path, model)
            return freeze(network)
        if not options["pretrained"]:
            with torch.random.fork_rng():
                torch.manual_seed(0)
                return freeze(timm.create_model(model, pretrained=False, num_classes=0))
        try:
            with download_messages(progress):
                return freeze(timm.create_model(model, pretrained=True, num_classes=0))
        except Exception as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UsageError(
                f"backbone timm {model}: the pretrained weights ({tag}) could not be loaded "
                f"({reason}); download them once with internet, or set backbone.weights to "
                "a local checkpoint"
            ) from None

    return Recipe(identity, preprocessing, build, label, default_batch=64)


@register(
    "timm",
    'any timm model by `model` (optional extra: pip install "headbench[timm]"), its '
    "pretrained weights or a local checkpoint, and timm's preprocessing for it",
    {
        "model": Option("vit_base_patch16_224.augreg_in21k", str, "a timm model name"),
        "pretrained": Option(True, bool, "timm's pretrained weights (downloaded once)"),
        "weights": Option("", str, "a local checkpoint instead of the pretrained weights"),
        "resize_size": Option(0, int, "shorter side after resizing; 0 = timm's", minimum=0),
        "crop_size": Option(0, int, "centre crop side; 0 = timm's input size", minimum=0),
        **EXTRACTION_OPTIONS,
    },
    needs_images=True,
    validate=lambda options, data: _timm_recipe(options) and None,
)
def timm_backbone(
    options: dict,
    data: Data,
    scenario: Scenario,
    device: torch.device,
    progress: Progress,
    cache: Cache | None = None,
) -> Features:
    recipe = _timm_recipe(options)
    return extract_with_cache(recipe, options, data, device, progress, cache)
