"""The backbone registry and the machinery every family shares.

A backbone family lives in its own module and registers its names with `@register`:
`identity.py`, `torchvision_models.py`, `timm_models.py`, `base_task.py`, `text.py`. This
module holds what they share: the `Features` they return, the `BACKBONES` registry, the
extraction options, preprocessing on the device, the `Runner` that runs a frozen image
network over batches, and `extract_with_cache`, which computes each split once (with a
family's `FeatureRecipe`) and caches it.

Every network runs in eval mode with gradients off, so batch-norm statistics never move.
Extraction works on batches on the device: uint8 pixels are copied from pinned memory
without blocking, converted, resized and normalised there (not per image on the CPU),
and run under autocast on CUDA (bfloat16 where supported, else float16), channels-last
for conv nets. Features are float32 unless `feature_dtype` says otherwise.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.cache import CACHE_FORMAT, Cache
from benchmarks.config import Option
from benchmarks.datasets import Data, ImageFiles
from benchmarks.errors import UsageError
from benchmarks.progress import Progress
from benchmarks.scenario import Scenario

FEATURE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
    needs_text: bool = False

    def check(self, data: Data, options: dict[str, Any] | None = None) -> None:
        """Refuse data and options this backbone cannot take, before anything runs."""
        if self.needs_images and data.is_text:
            raise UsageError(
                f"backbone {self.name!r} needs images; dataset {data.name!r} gives sentences: "
                "use backbone 'transformers'"
            )
        if self.needs_images and not data.is_images:
            raise UsageError(
                f"backbone {self.name!r} needs images (samples, channels, height, width); this "
                f"dataset gives feature vectors of shape {data.train_inputs.shape}; "
                "use backbone 'identity'"
            )
        if self.needs_text and not data.is_text:
            kind = "images" if data.is_images else "feature vectors"
            raise UsageError(
                f"backbone {self.name!r} encodes sentences; dataset {data.name!r} gives {kind}: "
                "use an image backbone (resnet18, ...) or 'identity' (headbench list backbones)"
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


def register(
    name: str,
    description: str,
    options: dict[str, Option],
    needs_images: bool = False,
    needs_arrays: bool = False,
    validate: Callable[[dict[str, Any], Data], None] | None = None,
    needs_text: bool = False,
):
    def decorate(extract_function):
        BACKBONES[name] = BackboneSpec(
            name,
            description,
            options,
            extract_function,
            needs_images,
            needs_arrays,
            validate,
            needs_text,
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


def precision_name(device: torch.device) -> str:
    dtype = precision(device)
    return "float32" if dtype is None else f"autocast-{str(dtype).removeprefix('torch.')}"


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
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
                with autocast(self.device):
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


Encode = Callable[[Any, int, str], Tensor]  # (inputs, views, description) -> features


class FeatureRecipe(Protocol):
    """What determines a family's features (known before its network is built), and how
    to compute them: `extract_with_cache` needs nothing else."""

    identity: dict[str, Any]  # the network and its weights (JSON), part of every key
    label: str  # for log lines: "resnet18 (IMAGENET1K_V1)"
    default_batch: int  # inputs per forward pass when extract_batch_size = 0
    unit: str  # what the inputs are, for log lines: "images", "sentences"

    def preprocessing_key(self) -> dict[str, Any]:
        """What turns an input into the network's input (JSON), part of every key."""
        ...

    def start(self, device: torch.device, batch_size: int, progress: Progress) -> Encode:
        """Build the frozen network (only on a cache miss) and return what runs it."""
        ...


@dataclass(frozen=True)
class Recipe:
    """An image backbone's `FeatureRecipe`: a network built by `build`, run by `Runner`."""

    identity: dict[str, Any]
    preprocessing: Preprocessing
    build: Callable[[Progress], nn.Module]  # the frozen network; only on a cache miss
    label: str
    default_batch: int
    channels_last_on_cpu: bool = True  # False keeps the digits demo's features bit for bit
    unit: str = "images"

    def preprocessing_key(self) -> dict[str, Any]:
        return self.preprocessing.key()

    def start(self, device: torch.device, batch_size: int, progress: Progress) -> Encode:
        runner = Runner(
            self.build(progress),
            self.preprocessing,
            device,
            batch_size,
            description=self.label,
            channels_last_on_cpu=self.channels_last_on_cpu,
        )
        return lambda inputs, views, label: _compute(runner, inputs, views, label, progress)


def _feature_key(
    recipe: FeatureRecipe, data: Data, split: str, options: dict, device: torch.device, views: int
) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "kind": "features",
        "dataset": data.fingerprint,
        "split": split,
        "backbone": recipe.identity,
        "preprocessing": recipe.preprocessing_key(),
        "device": device.type,
        "precision": precision_name(device),
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
    recipe: FeatureRecipe,
    options: dict[str, Any],
    data: Data,
    device: torch.device,
    progress: Progress,
    cache: Cache | None,
) -> Features:
    """Features of every split from the cache, or computed (and then cached).

    The network is built (for base-task: loaded or trained) only if a split is missing.
    """
    views = options.get("augment_views", 0)  # augmented views exist for images only
    storage = FEATURE_DTYPES[options["feature_dtype"]]
    batch_size = options["extract_batch_size"] or recipe.default_batch
    if device.type == "cuda" and not options["extract_batch_size"]:
        batch_size *= 4
    splits = [("train", data.train_inputs, 0), ("test", data.test_inputs, 0)]
    if data.val_inputs is not None:
        splits.append(("val", data.val_inputs, 0))
    if views:
        splits.append((f"train+{views}-views", data.train_inputs, views))
    encode: Encode | None = None
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
            if encode is None:
                encode = recipe.start(device, batch_size, progress)
                started = time.perf_counter()  # extraction only, not building or training
            tensor = encode(inputs, count, f"features {split}").to(storage)
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
                f"computed with {recipe.label} on {device} "
                f"({seconds:.1f} s, {rate:,.0f} {recipe.unit}/s)"
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


def as_tensor(array: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


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
