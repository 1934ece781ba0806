"""Avalanche class-incremental benchmarks as input to headbench's engine.

Two forms, one rule for the class order and the experiences:

- `from_avalanche(benchmark, backbone=...)` passes every training and test sample of an
  Avalanche benchmark (nc_benchmark, SplitCIFAR100, tensor benchmarks, ...) once through
  a frozen backbone of the caller's (eval mode, no gradients; none: the inputs are the
  features), with the benchmark's eval transforms, and returns features ready for the
  engine.
- The config form, `[dataset] name = "avalanche"` (`load_data`): `benchmark =
  "package.module:callable"` is imported and called with `arguments`, and its samples go
  through the normal pipeline (the [backbone] section, the feature cache, the data
  fingerprint). Its transforms are dropped, so images reach the backbone as stored (uint8
  from PIL images) and the backbone applies its weights' own preprocessing once; tensor
  samples of one dimension are features. Where a transform cannot be dropped (a frozen
  one, or one inside the wrapped dataset) or the samples are already normalised, it is
  refused in one line rather than normalised twice.

Both keep the benchmark's own experiences and class order: classes arrive experience by
experience, within one in the benchmark's `classes_order` where it has one (the same
rule the Avalanche plugin follows, `strategies.avalanche.arrival_order`). Targets become
arrival-order ids, as the engine expects; `class_order` keeps Avalanche's ids.
"""

from __future__ import annotations

import copy
import importlib
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

import strategies
from benchmarks import engine
from benchmarks.datasets import Data, fingerprint
from benchmarks.errors import UsageError
from benchmarks.scenario import Scenario, split_scenario
from strategies import Strategy
from strategies.avalanche import arrival_order

EXAMPLE = '"avalanche.benchmarks.classic:SplitCIFAR100"'


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


def experience_classes(benchmark: Any, source: str = "from_avalanche") -> list[list[int]]:
    """Each training experience's Avalanche class ids, in arrival order.

    Raises:
        UsageError: `benchmark` has no train_stream or test_stream.
    """
    missing = [name for name in ("train_stream", "test_stream") if not hasattr(benchmark, name)]
    if missing:
        raise UsageError(
            f"{source} got {type(benchmark).__name__!r}, which has no {' and '.join(missing)}; "
            "accepted: an Avalanche benchmark (SplitCIFAR100, nc_benchmark, "
            "class_incremental_benchmark, ...)"
        )
    return [arrival_order(experience) for experience in benchmark.train_stream]


def _check_tested(class_order: list[int], test_labels: list[int] | Tensor) -> None:
    labels = test_labels.tolist() if isinstance(test_labels, Tensor) else test_labels
    unknown = sorted(set(labels) - set(class_order))
    if unknown:
        raise UsageError(f"test classes {unknown[:10]} are in no training experience")


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


def from_avalanche(
    benchmark: Any,
    backbone: nn.Module | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
) -> AvalancheFeatures:
    """An Avalanche class-incremental benchmark's features, ready for headbench's engine.

    Args:
        benchmark: an Avalanche benchmark with `train_stream` and `test_stream`.
        backbone: the frozen feature extractor (run in eval mode on the benchmark's eval
            transforms' output); None: the inputs are already features (a tensor
            benchmark of cached features).
        device: where the backbone runs and the features stay.
        batch_size: samples per backbone pass.

    Raises:
        UsageError: no train or test stream, a class in two experiences (not
            class-incremental), a test class never trained on, or experience sizes no
            headbench scenario expresses.
    """
    device = torch.device(device)
    backbone = (nn.Identity() if backbone is None else backbone).to(device).eval()
    scenario = split_scenario(experience_classes(benchmark))
    class_order = scenario.class_order
    train_features, train_labels = _features(benchmark.train_stream, backbone, device, batch_size)
    test_features, test_labels = _features(benchmark.test_stream, backbone, device, batch_size)
    _check_tested(class_order, test_labels)
    position = torch.full((max(class_order) + 1,), -1, dtype=torch.long, device=device)
    position[class_order] = torch.arange(len(class_order), device=device)
    return AvalancheFeatures(
        train_features, position[train_labels], test_features, position[test_labels], scenario
    )


# ---------------------------------------------------------------------------------------
# The config form: [dataset] name = "avalanche"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def build(spec: str, arguments: dict[str, Any]) -> Any:
    """Import `package.module:callable` (the callable may be dotted, `module:Class.method`)
    and call it with `arguments` as keyword arguments.

    Raises:
        UsageError: naming `spec` and what is accepted, for a string without a colon, a
            module that cannot be imported, a missing attribute, something not callable
            and a call that raises.
    """
    accepted = f'accepted: "package.module:callable", e.g. {EXAMPLE}'
    if not spec:
        raise UsageError(
            f'dataset "avalanche" needs dataset.benchmark = {EXAMPLE} (or any '
            '"package.module:callable" returning an Avalanche benchmark)'
        )
    what = f"dataset.benchmark = {spec!r}"
    module_name, colon, attribute = (part.strip() for part in spec.partition(":"))
    if not colon or not module_name or not attribute:
        raise UsageError(f"{what} does not name a module and a callable; {accepted}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. Avalanche's import, about optional solvers
            target = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(
            f"{what}: module {module_name!r} cannot be imported ({_first_line(error)}); "
            f"{accepted}, its module importable (installed or on the Python path)"
        ) from None
    except Exception as error:  # a broken module: SyntaxError, an error at import time
        raise UsageError(f"{what}: importing {module_name!r} raised {_first_line(error)}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise UsageError(f"{what}: {module_name!r} has no attribute {attribute!r}; {accepted}")
        target = getattr(target, part)
    if not callable(target):
        raise UsageError(
            f"{what} names an object of type {type(target).__name__}, not a callable; accepted: "
            "a function or class that returns an Avalanche benchmark"
        )
    try:
        return target(**arguments)
    except Exception as error:  # a wrong keyword, missing files, the factory's own checks
        raise UsageError(
            f"{what}: calling it with dataset.arguments = {arguments!r} raised {_first_line(error)}"
        ) from None


def _untransformed(dataset: Any, source: str) -> Any:
    """A copy of an Avalanche dataset that yields its inputs as stored.

    Avalanche keeps transforms in groups (train, eval) at every node of a dataset's tree,
    and `remove_current_transform_group` drops only the group each node has current (an
    inner node's eval transform survives it), so every node's groups are dropped here.
    Frozen groups stay: they may remap class ids (nc_benchmark's class mapping is one),
    but an input transform among them is refused, as is one inside a wrapped dataset
    (a torchvision dataset built with `transform=`): neither can be dropped safely.
    """
    from avalanche.benchmarks.utils.data import _FlatDataWithTransform
    from avalanche.benchmarks.utils.flat_data import FlatData
    from avalanche.benchmarks.utils.transform_groups import EmptyTransformGroups

    def refuse(why: str) -> UsageError:
        return UsageError(
            f"{source}: {why}, which would reach headbench's backbone on top of its own "
            "preprocessing; build the benchmark without it, or use "
            "benchmarks.from_avalanche(benchmark, backbone=...) with a backbone of your own"
        )

    def strip(node: Any) -> Any:
        if isinstance(node, _FlatDataWithTransform):
            frozen = node._frozen_transform_groups["eval"]
            if frozen is not None and frozen.flat_transforms(0):
                raise refuse(f"its inputs have frozen transforms {frozen.flat_transforms(0)}")
            node = node._shallow_clone_dataset()
            node._transform_groups = EmptyTransformGroups()
            node._transform_groups.current_group = "eval"
            node._frozen_transform_groups.current_group = "eval"
        elif isinstance(node, FlatData):
            node = copy.copy(node)
        else:  # a wrapped dataset (torchvision's, tensors): its own transform cannot go
            inner = node
            while inner is not None:
                if getattr(inner, "transform", None) is not None:
                    raise refuse(f"its {type(inner).__name__} applies transform {inner.transform}")
                inner = getattr(inner, "dataset", None)
            return node
        node._datasets = [strip(child) for child in node._datasets]
        return node

    flat = getattr(dataset, "_flat_data", None)
    if not isinstance(flat, FlatData) or not hasattr(dataset, "targets"):
        raise UsageError(
            f"{source}: its experiences hold {type(dataset).__name__}, not Avalanche "
            "classification datasets; use benchmarks.from_avalanche(benchmark, backbone=...)"
        )
    try:
        clone = dataset._shallow_clone_dataset()
        clone._flat_data = strip(flat)
    except (AttributeError, KeyError, TypeError) as error:  # Avalanche's internals moved
        raise UsageError(
            f"{source}: its transforms cannot be dropped with this Avalanche version "
            f"({_first_line(error)}); use benchmarks.from_avalanche(benchmark, backbone=...)"
        ) from None
    return clone


def _as_array(sample: Any, source: str) -> tuple[str, np.ndarray]:
    """("image", (channels, height, width)) or ("features", (dim,)) for one raw input."""
    from PIL import Image

    if isinstance(sample, Image.Image):
        if sample.mode not in ("L", "RGB"):
            sample = sample.convert("RGB")
        pixels = np.asarray(sample)  # (height, width) or (height, width, 3)
        return "image", pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    if isinstance(sample, Tensor):
        sample = sample.detach().cpu().numpy()
    if isinstance(sample, np.ndarray):
        if sample.ndim == 1 and np.issubdtype(sample.dtype, np.number):
            return "features", sample.astype(np.float32)
        if sample.ndim == 3 and sample.dtype == np.uint8:
            return "image", sample
        if sample.ndim == 3 and np.issubdtype(sample.dtype, np.floating):
            return "image", sample.astype(np.float32)  # checked to lie in [0, 1] later
        shape = f"{sample.dtype} samples of shape {sample.shape}"
    else:
        shape = f"samples of type {type(sample).__name__}"
    raise UsageError(
        f"{source}: {shape} are not accepted; accepted: PIL images, (channels, height, width) "
        "uint8 or [0, 1] float images, or (dim,) feature vectors"
    )


def _samples(stream: Any, source: str) -> tuple[str, np.ndarray, list[int]]:
    """Every input of a stream untransformed, as one array, and its Avalanche class ids."""
    kind, inputs, labels = None, [], []
    for experience in stream:
        dataset = _untransformed(experience.dataset, source)
        labels.extend(int(label) for label in experience.dataset.targets)
        for index in range(len(dataset)):
            try:
                sample = dataset[index][0]
            except Exception as error:  # a missing file, a transform-free read that fails
                raise UsageError(
                    f"{source}: reading sample {index} of experience "
                    f"{getattr(experience, 'current_experience', '?')} raised {_first_line(error)}"
                ) from None
            sample_kind, array = _as_array(sample, source)
            if inputs and (sample_kind, array.shape, array.dtype) != (
                kind,
                inputs[0].shape,
                inputs[0].dtype,
            ):
                raise UsageError(
                    f"{source}: its samples differ ({kind} {inputs[0].dtype} "
                    f"{inputs[0].shape} and {sample_kind} {array.dtype} {array.shape}); "
                    "headbench holds them as one array, so they must share a form and size"
                )
            kind = sample_kind
            inputs.append(array)
    if not inputs:
        raise UsageError(f"{source}: a stream without samples; every stream needs data")
    return kind, np.stack(inputs), labels


def _check_values(kind: str, inputs: np.ndarray, split: str, source: str) -> None:
    if inputs.dtype == np.uint8:
        return
    finite = np.isfinite(inputs)
    if not finite.all():
        raise UsageError(
            f"{source}: {int((~finite).sum())} NaN/inf values in the {split} inputs; "
            "they must be finite"
        )
    if kind == "image" and (inputs.min() < 0 or inputs.max() > 1):
        raise UsageError(
            f"{source}: its {split} images are floats in [{inputs.min():.3g}, "
            f"{inputs.max():.3g}], already normalised; headbench's backbone normalises with "
            "its own statistics, so give it uint8 or [0, 1] images (no Normalize), or use "
            "benchmarks.from_avalanche(benchmark, backbone=...)"
        )


def load_data(spec: str, arguments: dict[str, Any]) -> Data:
    """The samples, class ids and split of the benchmark `spec(**arguments)` builds.

    Inputs are untransformed and stacked into one array per split (uint8 or [0, 1] float
    images (N, C, H, W), or float32 features (N, D)), ordered by class id and, within a
    class, as the benchmark lists them: no class order enters the data's fingerprint, so
    every order of the same data shares one feature-cache entry. `Data.experiences` holds
    the benchmark's classes per experience in arrival order; class names are the ids.

    Raises:
        UsageError: a bad `spec` or call (see `build`), a result that is no benchmark,
            a class in two experiences, uneven increments, class ids other than 0..C-1,
            a test class never trained on, or inputs that cannot be taken untransformed.
    """
    benchmark = build(spec, arguments)
    source = f"dataset.benchmark = {spec!r}"
    experiences = experience_classes(benchmark, source)
    try:
        scenario = split_scenario(experiences)
    except UsageError as error:
        raise UsageError(f"{source}: {error}") from None
    num_classes = scenario.num_classes
    if sorted(scenario.class_order) != list(range(num_classes)):
        raise UsageError(
            f"{source}: its class ids {sorted(scenario.class_order)[:10]} are not "
            f"0..{num_classes - 1}; build it with class_ids_from_zero_from_first_exp=True "
            "(SplitCIFAR100, nc_benchmark) or with ids 0..C-1"
        )
    arrays, kinds = {}, set()
    for split in ("train", "test"):
        kind, inputs, labels = _samples(getattr(benchmark, f"{split}_stream"), source)
        _check_values(kind, inputs, split, source)
        order = np.argsort(np.asarray(labels), kind="stable")
        arrays[split] = (inputs[order], np.asarray(labels, dtype=np.int64)[order])
        kinds.add((kind, inputs.shape[1:]))
    _check_tested(scenario.class_order, arrays["test"][1].tolist())
    if len(kinds) > 1:
        raise UsageError(f"{source}: train and test samples differ in form: {sorted(kinds)}")
    (train_inputs, train_targets), (test_inputs, test_targets) = arrays["train"], arrays["test"]
    return Data(
        train_inputs,
        train_targets,
        test_inputs,
        test_targets,
        [str(c) for c in range(num_classes)],
        fingerprint(train_inputs, train_targets, test_inputs, test_targets),
        experiences=tuple(tuple(classes) for classes in experiences),
    )
