"""Backbones: turn a dataset's inputs into frozen features, computed once and cached.

- `identity` uses the inputs as they are (flattened): for .npz features.
- `resnet18`, `resnet34`, `resnet50`, `vit_b_16`, `convnext_tiny`, and `torchvision` with
  any `model`: torchvision's ImageNet models with their weight enums and each weight's
  own preprocessing (resize, centre crop, normalisation), or a local weights file.
- `timm`: any timm model by name, with timm's preprocessing for it (optional extra).
- `base-task`: trains a network (`networks.py`) on the first experience's classes only
  (SGD, momentum 0.9, cosine schedule, crop + flip), then freezes it; the trained
  backbone is cached like features, keyed by everything that determines it.

Every network runs in eval mode with gradients off, so batch-norm statistics never move.
Extraction works on batches on the device: uint8 pixels are copied from pinned memory
without blocking, converted, resized and normalised there (not per image on the CPU),
and run under autocast on CUDA (bfloat16 where supported, else float16), channels-last
for conv nets. Features are float32 unless `feature_dtype` says otherwise.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks import networks
from benchmarks.cache import CACHE_FORMAT, Cache, file_sha256
from benchmarks.config import MAX_EPOCHS, Option
from benchmarks.datasets import Data, ImageFiles
from benchmarks.errors import UsageError
from benchmarks.networks import SmallConvNet
from benchmarks.progress import Progress
from benchmarks.scenario import Scenario

__all__ = ["BACKBONES", "Features", "SmallConvNet", "extract", "train_base_task"]

FEATURE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")


@dataclass(frozen=True)
class Features:
    train: Tensor  # (train, dim), float32, on the device
    test: Tensor  # (test, dim)
    train_views: Tensor | None = None  # (views, train, dim): `augment_views` augmented copies
    cache: dict[str, Any] = field(default_factory=dict)  # per split: digest, checksum, source
    val: Tensor | None = None  # (val, dim): the dataset's own validation split, if it has one


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    description: str
    options: dict[str, Option]
    extract: Callable[..., Features]
    needs_images: bool = False
    needs_arrays: bool = False  # trains on the images, so they must fit in memory
    validate: Callable[[dict[str, Any], Data], None] | None = None

    def check(self, data: Data, options: dict[str, Any] | None = None) -> None:
        """Refuse data and options this backbone cannot take, before anything runs."""
        if self.needs_images and not data.is_images:
            raise UsageError(
                f"backbone {self.name!r} needs images (samples, channels, height, width); this "
                f"dataset gives feature vectors of shape {data.train_inputs.shape}; "
                "use backbone 'identity'"
            )
        if self.needs_arrays and not data.in_memory:
            raise UsageError(
                f"backbone {self.name!r} trains on the images and needs a dataset held in "
                "memory (digits, cifar10, cifar100, stl10); for image files use a pretrained "
                "backbone (resnet18, vit_b_16, torchvision, timm, ...)"
            )
        if self.validate is not None and options is not None:
            self.validate({k: v for k, v in options.items() if k != "name"}, data)


BACKBONES: dict[str, BackboneSpec] = {}


def _backbone(
    name: str,
    description: str,
    options: dict[str, Option],
    needs_images: bool = False,
    needs_arrays: bool = False,
    validate: Callable[[dict[str, Any], Data], None] | None = None,
):
    def decorate(extract_function):
        BACKBONES[name] = BackboneSpec(
            name, description, options, extract_function, needs_images, needs_arrays, validate
        )
        return extract_function

    return decorate


EXTRACTION_OPTIONS = {
    "extract_batch_size": Option(
        0, int, "images per forward pass; 0 = automatic (halved on out-of-memory)", minimum=0
    ),
    "feature_dtype": Option(
        "float32",
        str,
        "dtype of the cached features (heads train in float32)",
        choices=tuple(FEATURE_DTYPES),
    ),  # fmt: skip
    "augment_views": Option(
        0, int, "K augmented views (crop + flip) per training image, cached too", minimum=0
    ),
}


# ---------------------------------------------------------------------------------------
# Preprocessing on the device


@dataclass(frozen=True)
class Preprocessing:
    """Pixels in [0, 1] -> the network's input: resize, centre crop, normalise.

    `resize` is the shorter side after resizing (0: none), `crop` the side of the centre
    crop (0: none), as torchvision's `ImageClassification` preset and timm's eval
    transform do; an empty `mean` means no normalisation.
    """

    resize: int = 0
    crop: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    interpolation: str = "bilinear"

    def key(self) -> dict[str, Any]:
        return {
            "resize": self.resize,
            "crop": self.crop,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }

    @staticmethod
    def to_float(images: Tensor) -> Tensor:
        if images.dtype == torch.uint8:
            return images.float().div_(255)
        return images.float()

    def geometry(self, images: Tensor) -> Tensor:
        """Resize and crop a float batch (batch, channels, height, width) or one image."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        if self.resize and min(images.shape[-2:]) != self.resize:
            mode = InterpolationMode(self.interpolation)
            images = TF.resize(images, [self.resize], interpolation=mode, antialias=True)
            if mode == InterpolationMode.BICUBIC:
                images = images.clamp_(0, 1)  # bicubic overshoots; PIL clips to 0..255 too
        if self.crop:
            images = TF.center_crop(images, [self.crop, self.crop])
        return images

    def normalise(self, images: Tensor) -> Tensor:
        if not self.mean:
            return images
        mean = torch.tensor(self.mean, device=images.device)[:, None, None]
        std = torch.tensor(self.std, device=images.device)[:, None, None]
        return (images - mean) / std

    def __call__(self, images: Tensor) -> Tensor:
        return self.normalise(self.geometry(self.to_float(images)))


def augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random crop with zero padding of 1/8 of the side (4 px at 32x32) and random flip.

    The draws come from a CPU generator, so a seed gives the same views on any device.
    """
    batch, channels, height, width = images.shape
    pad = max(1, round(min(height, width) / 8))
    padded = F.pad(images, (pad, pad, pad, pad))  # (batch, channels, h + 2 pad, w + 2 pad)
    rows = torch.randint(0, 2 * pad + 1, (batch,), generator=generator).to(images.device)
    cols = torch.randint(0, 2 * pad + 1, (batch,), generator=generator).to(images.device)
    flips = (torch.rand(batch, generator=generator) < 0.5).to(images.device)
    row_index = (rows[:, None] + torch.arange(height, device=images.device))[:, None, :, None]
    col_index = (cols[:, None] + torch.arange(width, device=images.device))[:, None, None, :]
    sample = torch.arange(batch, device=images.device)[:, None, None, None]
    channel = torch.arange(channels, device=images.device)[None, :, None, None]
    cropped = padded[sample, channel, row_index, col_index]  # (batch, channels, h, w)
    return torch.where(flips[:, None, None, None], cropped.flip(-1), cropped)


AUGMENTATION = "crop (zero padding 1/8 of the side) + horizontal flip, view v seeded by v"


# ---------------------------------------------------------------------------------------
# Running a frozen network over a dataset


def freeze(network: nn.Module) -> nn.Module:
    """Eval mode and no gradients: batch-norm statistics and weights never change again."""
    return network.eval().requires_grad_(False)


def precision(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on CUDA (bfloat16 where supported, else float16); None on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _precision_name(device: torch.device) -> str:
    dtype = precision(device)
    return "float32" if dtype is None else f"autocast-{str(dtype).removeprefix('torch.')}"


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    dtype = precision(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _is_conv_net(network: nn.Module) -> bool:
    return any(isinstance(module, nn.Conv2d) for module in network.modules())


def workers_for(device: torch.device) -> int:
    """DataLoader workers for decoding image files: the machine's cores, leaving room."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    if device.type == "cuda":
        return min(16, max(1, cores - 1))
    return min(4, cores // 2)  # the CPU also runs the network


@dataclass
class Runner:
    """Runs a frozen network on batches; halves the batch on CUDA out-of-memory."""

    network: nn.Module
    preprocessing: Preprocessing
    device: torch.device
    batch_size: int
    augment_generator: torch.Generator | None = None  # set: augment each batch (views)
    description: str = "backbone"  # for progress bars
    channels_last_on_cpu: bool = False  # oneDNN: ResNet-18 at 224 px ~1.3x faster on CPU

    def __post_init__(self) -> None:
        self.network = freeze(self.network).to(self.device)
        wanted = self.device.type == "cuda" or self.channels_last_on_cpu
        self.channels_last = wanted and _is_conv_net(self.network)
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)

    def prepare(self, images: Tensor | list[Tensor]) -> Tensor:
        """Pixels on the device -> the network's input batch (resized on the device)."""
        if isinstance(images, list):  # files of different sizes: resize each, then stack
            geometry = self.preprocessing.geometry
            batch = torch.stack([geometry(Preprocessing.to_float(image)) for image in images])
        else:
            batch = self.preprocessing.geometry(Preprocessing.to_float(images))
        if self.augment_generator is not None:
            batch = augment(batch, self.augment_generator)
        batch = self.preprocessing.normalise(batch)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    @torch.inference_mode()
    def __call__(self, images: Tensor | list[Tensor]) -> Tensor:
        inputs = self.prepare(images)  # (batch, channels, height, width)
        outputs, start = [], 0
        while start < len(inputs):
            chunk = inputs[start : start + self.batch_size]
            try:
                with _autocast(self.device):
                    outputs.append(self.network(chunk).float())  # (chunk, dim)
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self.batch_size //= 2
                torch.cuda.empty_cache()
                continue
            start += len(chunk)
        return torch.cat(outputs).flatten(1)  # (batch, dim)


def _array_batches(
    images: np.ndarray, batch_size: int, device: torch.device
) -> Iterator[tuple[int, Tensor]]:
    pin = device.type == "cuda"
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        if pin:
            chunk = chunk.pin_memory()
        yield len(chunk), chunk.to(device, non_blocking=True)


def _file_batches(
    files: ImageFiles, batch_size: int, device: torch.device
) -> Iterator[tuple[int, list[Tensor]]]:
    from torch.utils.data import DataLoader

    workers = workers_for(device)
    loader = DataLoader(
        files.dataset(),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        collate_fn=list,  # sizes differ: the device resizes each image
        prefetch_factor=4 if workers else None,
    )
    for images in loader:
        yield len(images), [image.to(device, non_blocking=True) for image in images]


def run_network(
    runner: Runner, inputs: np.ndarray | ImageFiles, progress: Progress, description: str
) -> Tensor:
    """Features (samples, dim) of every input, in order, on the device."""
    load_batch = max(runner.batch_size, 256) if isinstance(inputs, np.ndarray) else 64
    batches = (
        _file_batches(inputs, load_batch, runner.device)
        if isinstance(inputs, ImageFiles)
        else _array_batches(inputs, load_batch, runner.device)
    )
    outputs = []
    with progress.bar(len(inputs), description) as bar:
        for count, images in batches:
            outputs.append(runner(images))
            bar.update(count)
    return torch.cat(outputs)  # (samples, dim)


# ---------------------------------------------------------------------------------------
# Extraction through the cache


@dataclass(frozen=True)
class Recipe:
    """What determines a backbone's features, known before the network is built."""

    identity: dict[str, Any]  # the network and its weights (JSON), part of every key
    preprocessing: Preprocessing
    build: Callable[[Progress], nn.Module]  # the frozen network; only on a cache miss
    label: str  # for log lines: "resnet18 (IMAGENET1K_V1)"
    default_batch: int  # images per forward pass when extract_batch_size = 0
    channels_last_on_cpu: bool = True  # False keeps the digits demo's features bit for bit


def _feature_key(
    recipe: Recipe, data: Data, split: str, options: dict, device: torch.device, views: int
) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "kind": "features",
        "dataset": data.fingerprint,
        "split": split,
        "backbone": recipe.identity,
        "preprocessing": recipe.preprocessing.key(),
        "device": device.type,
        "precision": _precision_name(device),
        "dtype": options["feature_dtype"],
        "views": views,
        "augmentation": AUGMENTATION if views else None,
        "torch": torch.__version__,
    }


def _compute(runner: Runner, inputs: Any, views: int, label: str, progress: Progress) -> Tensor:
    """Clean features (samples, dim), or `views` augmented ones (views, samples, dim)."""
    if not views:
        return run_network(runner, inputs, progress, f"{label}: {runner.description}")
    per_view = []
    for view in range(views):
        runner.augment_generator = torch.Generator().manual_seed(view)
        description = f"{label} (view {view + 1}/{views}): {runner.description}"
        per_view.append(run_network(runner, inputs, progress, description))
    runner.augment_generator = None
    return torch.stack(per_view)  # (views, samples, dim)


def extract_with_cache(
    recipe: Recipe,
    options: dict[str, Any],
    data: Data,
    device: torch.device,
    progress: Progress,
    cache: Cache | None,
) -> Features:
    """Features of every split from the cache, or computed (and then cached).

    The network is built (for base-task: loaded or trained) only if a split is missing.
    """
    views = options["augment_views"]
    storage = FEATURE_DTYPES[options["feature_dtype"]]
    batch_size = options["extract_batch_size"] or recipe.default_batch
    if device.type == "cuda" and not options["extract_batch_size"]:
        batch_size *= 4
    splits = [("train", data.train_inputs, 0), ("test", data.test_inputs, 0)]
    if data.val_inputs is not None:
        splits.append(("val", data.val_inputs, 0))
    if views:
        splits.append((f"train+{views}-views", data.train_inputs, views))
    runner: Runner | None = None
    results: dict[str, Tensor] = {}
    provenance: dict[str, Any] = {}
    for split, inputs, count in splits:
        key = _feature_key(recipe, data, split, options, device, count)
        started = time.perf_counter()
        stored = cache.load("features", key) if cache is not None else None
        if stored is not None:
            (tensors, checksum), source = stored, "cache"
            tensor = tensors["features"]
        else:
            if runner is None:
                network = recipe.build(progress)
                runner = Runner(
                    network,
                    recipe.preprocessing,
                    device,
                    batch_size,
                    description=recipe.label,
                    channels_last_on_cpu=recipe.channels_last_on_cpu,
                )
                started = time.perf_counter()  # extraction only, not building or training
            tensor = _compute(runner, inputs, count, f"features {split}", progress).to(storage)
            source = "computed"
        seconds = time.perf_counter() - started
        entry: dict[str, Any] = {"source": source, "seconds": round(seconds, 3)}
        if cache is not None:
            digest = cache.path("features", key).stem
            if source == "computed":
                shape = "x".join(str(n) for n in tensor.shape)
                description = (
                    f"{data.name or 'dataset'} {split} ({data.fingerprint}), {recipe.label}: "
                    f"{shape} {options['feature_dtype']}"
                )
                digest, checksum = cache.save("features", key, {"features": tensor}, description)
            entry.update(key=digest, checksum=checksum)
        if source == "cache":
            message = f"from the cache ({seconds:.1f} s)"
        else:
            rate = len(inputs) * max(count, 1) / max(seconds, 1e-9)
            message = (
                f"computed with {recipe.label} on {device} ({seconds:.1f} s, {rate:,.0f} images/s)"
            )
        key_text = f" [{entry['key'][:12]}]" if cache is not None else ""
        progress.log(f"features {split}: {message}{key_text}")
        results[split] = tensor.to(device).float()
        provenance[split] = entry
    return Features(
        results["train"],
        results["test"],
        results.get(f"train+{views}-views"),
        provenance,
        results.get("val"),
    )


# ---------------------------------------------------------------------------------------
# identity


def _as_tensor(array: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


@_backbone("identity", "the inputs are the features (flattened): for .npz features", {})
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
    flat = [
        _as_tensor(x.reshape(len(x), -1).astype(np.float32, copy=False), device) for x in splits
    ]
    return Features(flat[0], flat[1], val=flat[2] if len(flat) > 2 else None)


# ---------------------------------------------------------------------------------------
# torchvision


def _weights_file(value: str) -> bool:
    return value.endswith(WEIGHT_FILE_SUFFIXES) or "/" in value or os.sep in value


def _load_state_dict(path: Path, label: str) -> dict[str, Tensor]:
    """A state dict from a checkpoint (plain, or under "state_dict" / "model")."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UsageError(
                f"{path}: reading .safetensors needs `pip install safetensors`"
            ) from None
        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise UsageError(
                f"backbone.weights = {str(path)!r} cannot be read as a torch checkpoint "
                f"({type(error).__name__}); give a .pth file saved with torch.save(state_dict)"
            ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise UsageError(f"backbone.weights = {str(path)!r} holds no state dict for {label}")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _fit_state_dict(network: nn.Module, state: dict[str, Tensor], path: Path, label: str) -> None:
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        missing = sorted(set(network.state_dict()) - set(state))
        unexpected = sorted(set(state) - set(network.state_dict()))
        details = (
            "; ".join(
                f"{name} {keys[:3]}"
                for name, keys in (("missing", missing), ("unexpected", unexpected))
                if keys
            )
            or str(error).splitlines()[0]
        )
        raise UsageError(
            f"backbone.weights = {str(path)!r} does not fit {label} ({details}); give weights "
            "saved from the same architecture"
        ) from None


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
            _fit_state_dict(network, _load_state_dict(path, model), path, model)
        else:
            with _download_messages(progress):
                network = _download_torchvision(model, weights)
        return freeze(_drop_classifier(network))

    return Recipe(identity, preprocessing, build, label, default_batch=64)


@contextlib.contextmanager
def _download_messages(progress: Progress) -> Iterator[None]:
    """Download notices and bars go to stderr, or nowhere when quiet: stdout keeps the table
    and a failed download stays one line."""
    import io

    if progress.quiet:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    else:
        with contextlib.redirect_stdout(sys.stderr):
            yield


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
    _backbone(
        _model,
        f"torchvision's {_model}, ImageNet weights and their preprocessing, {_dim} features",
        _torchvision_options(_model),
        needs_images=True,
        validate=_torchvision_validate(_model),
    )(_torchvision_extract(_model))
_backbone(
    "torchvision",
    "any torchvision classification model by `model`, its weight enums and preprocessing",
    _torchvision_options(None),
    needs_images=True,
    validate=_torchvision_validate(None),
)(_torchvision_extract(None))


# ---------------------------------------------------------------------------------------
# timm (optional: pip install "headbench[timm]")


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
            state = _load_state_dict(path, model)
            state = {k: v for k, v in state.items() if k in network.state_dict()}
            _fit_state_dict(network, state, path, model)
            return freeze(network)
        if not options["pretrained"]:
            with torch.random.fork_rng():
                torch.manual_seed(0)
                return freeze(timm.create_model(model, pretrained=False, num_classes=0))
        try:
            with _download_messages(progress):
                return freeze(timm.create_model(model, pretrained=True, num_classes=0))
        except Exception as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UsageError(
                f"backbone timm {model}: the pretrained weights ({tag}) could not be loaded "
                f"({reason}); download them once with internet, or set backbone.weights to "
                "a local checkpoint"
            ) from None

    return Recipe(identity, preprocessing, build, label, default_batch=64)


@_backbone(
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


# ---------------------------------------------------------------------------------------
# base-task: trained on the first experience's classes, then frozen

BASE_TASK_TRAINING = ("arch", "width", "epochs", "lr", "weight_decay", "batch_size", "seed")


@_backbone(
    "base-task",
    "a network trained on the first experience's classes (SGD, momentum 0.9, cosine), then "
    "frozen: small conv net (digits) or CIFAR ResNet-32 / ResNet-18",
    {
        "arch": Option(
            "small",
            str,
            "small (digits-size conv net), resnet32 (64-d) or resnet18_cifar (512-d)",
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
        "precision": _precision_name(device),
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
    images = _as_tensor(data.train_inputs[keep], device)  # (base, channels, height, width)
    labels = _as_tensor(targets[keep], device)

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


def extract(
    options: dict[str, Any],
    data: Data,
    scenario: Scenario,
    device: torch.device,
    progress: Progress,
    cache: Cache | None = None,
) -> Features:
    """Features for a resolved `[backbone]` table (checked by `BackboneSpec.check` first).

    With a cache, every split is read from it when present; only missing splits run the
    backbone, and a base-task backbone is trained only when no cached copy exists.
    """
    spec = BACKBONES[options["name"]]
    settings = {k: v for k, v in options.items() if k != "name"}
    return spec.extract(settings, data, scenario, device, progress, cache)
