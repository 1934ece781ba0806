"""Backbones: turn a dataset's inputs into frozen features, computed once and cached.

One module per family, all behind the `BACKBONES` registry of `core.py`:

- `identity.py`: `identity` uses the inputs as they are (flattened): for .npz features.
- `torchvision_models.py`: `resnet18`, `resnet34`, `resnet50`, `vit_b_16`, `convnext_tiny`,
  and `torchvision` with any `model`: torchvision's ImageNet models with their weight
  enums and each weight's own preprocessing, or a local weights file.
- `timm_models.py`: `timm`, any timm model by name, with timm's preprocessing for it
  (optional extra).
- `base_task.py`: `base-task` trains a network on the first experience's classes only,
  then freezes it; the trained backbone is cached like features.
- `text.py`: `transformers`, any Hugging Face text encoder (hub id or local directory),
  mean / cls / pooler pooling, for sentence datasets (optional extra).

`core.py` holds what they share (registry, preprocessing, the runner, the feature cache);
`checkpoints.py` reads local weight files. Importing this package registers every family.
"""

# isort: off
# Each import registers a family; their order is the order of `headbench list backbones`.
from benchmarks.backbones import identity, torchvision_models, timm_models, base_task, text

# isort: on
from benchmarks.backbones.base_task import train_base_task
from benchmarks.backbones.core import (
    BACKBONES,
    EXTRACTION_OPTIONS,
    BackboneSpec,
    Features,
    Preprocessing,
    Recipe,
    Runner,
    augment,
    extract,
    extract_with_cache,
    register,
    run_network,
)
from benchmarks.networks import SmallConvNet

__all__ = [
    "BACKBONES",
    "EXTRACTION_OPTIONS",
    "BackboneSpec",
    "Features",
    "Preprocessing",
    "Recipe",
    "Runner",
    "SmallConvNet",
    "augment",
    "base_task",
    "extract",
    "extract_with_cache",
    "identity",
    "register",
    "run_network",
    "text",
    "timm_models",
    "torchvision_models",
    "train_base_task",
]
