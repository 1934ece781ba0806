"""torchvision's ImageNet models: `resnet18`, `resnet34`, `resnet50`, `vit_b_16`,
`convnext_tiny`, and `torchvision` with any `model`, with their weight enums and each
weight's own preprocessing (resize, centre crop, normalisation), or a local weights file.
Features are the penultimate layer's (the last Linear layer is replaced by Identity).
"""

from __future__ import annotations

import os
from collections.abc import Callable
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

WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")


def _weights_file(value: str) -> bool:
    return value.endswith(WEIGHT_FILE_SUFFIXES) or "/" in value or os.sep in value


def _drop_classifier(network: nn.Module) -> nn.Module:
    """Replace the last Linear layer (the ImageNet classifier) by Identity: penultimate
    features (ResNet's fc, ViT's heads.head, ConvNeXt's classifier[2], ...)."""
    last = [name for name, module in network.named_modules() if isinstance(module, nn.Linear)]
    if last:
        *parents, child = last[-1].split(".")
        owner = network.get_submodule(".".join(parents)) if parents else network
        setattr(owner, child, nn.Identity())
    return network


def _torchvision_weights(model: str):
    import torchvision
    from torchvision.models import get_model_weights, list_models

    classification = list_models(module=torchvision.models)
    if model not in classification:
        close = [name for name in classification if name.startswith(model[:3])][:8]
        raise UsageError(
            f"backbone.model = {model!r} is not a torchvision classification model; accepted "
            f"e.g. {', '.join(close or classification[:8])} (torchvision.models.list_models())"
        )
    return get_model_weights(model)


def _torchvision_recipe(model: str, options: dict[str, Any]) -> Recipe:
    enum = _torchvision_weights(model)
    value = options["weights"]
    if _weights_file(value):
        path = Path(value).expanduser()
        if not path.is_file():
            raise UsageError(
                f"backbone.weights = {value!r}: no such file; give a state dict saved with "
                f"torch.save(model.state_dict(), PATH) for torchvision's {model}"
            )
        weights, reference = None, enum.DEFAULT
        identity = {"name": "torchvision", "model": model, "weights_sha256": file_sha256(path)}
        label = f"{model} ({path.name})"
    else:
        names = [member for member in enum.__members__ if member != "DEFAULT"]
        if value not in enum.__members__:
            raise UsageError(
                f"backbone.weights = {value!r} is not a weight of torchvision's {model}; "
                f"accepted: DEFAULT, {', '.join(names)}, or a local .pth file"
            )
        weights = reference = enum[value]
        identity = {"name": "torchvision", "model": model, "weights": weights.url}
        label = f"{model} ({weights.name})"
    transform = reference.transforms()
    preprocessing = Preprocessing(
        resize=options["resize_size"] or transform.resize_size[0],
        crop=options["crop_size"] or transform.crop_size[0],
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        interpolation=transform.interpolation.value,
    )

    def build(progress: Progress) -> nn.Module:
        from torchvision.models import get_model

        if weights is None:
            network = get_model(model, weights=None)
            fit_state_dict(network, load_state_dict(path, model), path, model)
        else:
            with download_messages(progress):
                network = _download_torchvision(model, weights)
        return freeze(_drop_classifier(network))

    return Recipe(identity, preprocessing, build, label, default_batch=64)


def _download_torchvision(model: str, weights: Any) -> nn.Module:
    from torchvision.models import get_model

    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        return get_model(model, weights=weights)
    except Exception as error:  # URLError, OSError, a hash mismatch
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(
            f"backbone {model}: weights {weights.name} are not in {checkpoints} and the "
            f"download failed ({reason}); download {weights.url} into {checkpoints}/, or set "
            "backbone.weights to a local .pth file"
        ) from None


def _torchvision_validate(model: str | None) -> Callable[[dict[str, Any], Data], None]:
    def validate(options: dict[str, Any], data: Data) -> None:
        _torchvision_recipe(model or options["model"], options)

    return validate


def _torchvision_extract(model: str | None) -> Callable[..., Features]:
    def extract_features(
        options: dict,
        data: Data,
        scenario: Scenario,
        device: torch.device,
        progress: Progress,
        cache: Cache | None = None,
    ) -> Features:
        recipe = _torchvision_recipe(model or options["model"], options)
        return extract_with_cache(recipe, options, data, device, progress, cache)

    return extract_features


def _torchvision_options(model: str | None) -> dict[str, Option]:
    options: dict[str, Option] = {}
    if model is None:
        options["model"] = Option(
            "resnet18", str, "a torchvision classification model (torchvision.models.list_models)"
        )
    options.update(
        {
            "weights": Option(
                "DEFAULT",
                str,
                "a weight enum member (DEFAULT, IMAGENET1K_V1, ...) or a local .pth state dict",
            ),
            "resize_size": Option(
                0, int, "resize the shorter side to this; 0 = the weights' own", minimum=0
            ),
            "crop_size": Option(0, int, "centre crop side; 0 = the weights' own", minimum=0),
            **EXTRACTION_OPTIONS,
        }
    )
    return options


TORCHVISION_MODELS = {
    "resnet18": "512-d",
    "resnet34": "512-d",
    "resnet50": "2048-d",
    "vit_b_16": "768-d class token",
    "convnext_tiny": "768-d",
}
for _model, _dim in TORCHVISION_MODELS.items():
    register(
        _model,
        f"torchvision's {_model}, ImageNet weights and their preprocessing, {_dim} features",
        _torchvision_options(_model),
        needs_images=True,
        validate=_torchvision_validate(_model),
    )(_torchvision_extract(_model))
register(
    "torchvision",
    "any torchvision classification model by `model`, its weight enums and preprocessing",
    _torchvision_options(None),
    needs_images=True,
    validate=_torchvision_validate(None),
)(_torchvision_extract(None))
