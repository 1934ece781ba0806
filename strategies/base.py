"""The head, the strategy contract and the small pure functions strategies share.

Strategies see tensors and a head, nothing else: this module imports neither benchmarks/
nor reports/. Hook names follow Avalanche's plugin callbacks, so one strategy object can
also be driven from inside an Avalanche training loop.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class HyperparameterError(ValueError):
    """A strategy hyperparameter (or its combination with the scenario) is not accepted."""


def hyperparameter(default: Any, meaning: str) -> Any:
    """A typed config field with its default and a one-line meaning (shown by `list`)."""
    return dataclasses.field(default=default, metadata={"meaning": meaning})


def config_key(field_name: str) -> str:
    """Config/CLI key of a field: `lambda_` is spelled `lambda` in TOML and `--set`."""
    return field_name.rstrip("_")


class Head(nn.Module):
    """The linear classifier that grows: row c scores the c-th class in arrival order."""

    def __init__(self, in_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.weight = nn.Parameter(torch.empty(0, in_features))
        self.bias = nn.Parameter(torch.empty(0)) if bias else None

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    kind: ClassVar[str] = "linear"

    def forward(self, features: Tensor) -> Tensor:
        return F.linear(features, self.weight, self.bias)  # (batch, num_classes)

    @torch.no_grad()
    def append_rows(self, weight: Tensor, bias: Tensor | None = None) -> None:
        """Add output units; the old rows are kept unchanged.

        The parameters are replaced by larger ones, so an optimizer must be built after
        this call (the engine builds one per experience).
        """
        device = self.weight.device
        self.weight = nn.Parameter(torch.cat([self.weight, weight.to(device)]))
        if self.bias is not None:
            new_bias = torch.zeros(weight.shape[0]) if bias is None else bias
            self.bias = nn.Parameter(torch.cat([self.bias, new_bias.to(device)]))

    def reset(self) -> None:
        """Drop every output unit (the joint upper bound re-learns from scratch)."""
        device = self.weight.device
        self.weight = nn.Parameter(torch.empty(0, self.in_features, device=device))
        if self.bias is not None:
            self.bias = nn.Parameter(torch.empty(0, device=device))


class CosineHead(Head):
    """A cosine-normalised head with a learned scale (LUCIR, Hou et al., CVPR 2019, Eq. 4).

    logits = σ · ⟨w̄_c, x̄⟩ with w̄, x̄ L2-normalised: every class scores on the same
    scale whatever its weight norm, which removes the norm bias towards new classes.
    σ is one learned scalar, initialised to 1 as in the authors' code; no bias.
    """

    kind: ClassVar[str] = "cosine"

    def __init__(self, in_features: int, bias: bool = False) -> None:
        if bias:
            raise HyperparameterError(
                "head.kind = 'cosine' has no bias (LUCIR's cosine head); set head.bias = false"
            )
        super().__init__(in_features, bias=False)
        self.scale = nn.Parameter(torch.ones(()))  # σ

    def reset(self) -> None:
        super().reset()
        with torch.no_grad():
            self.scale.fill_(1.0)

    def forward(self, features: Tensor) -> Tensor:
        cosine = F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))
        return self.scale * cosine  # (batch, num_classes)


HEAD_KINDS: dict[str, type[Head]] = {"linear": Head, "cosine": CosineHead}


def make_head(kind: str, in_features: int, bias: bool) -> Head:
    """A `[head]` table's head: "linear" (W x + b) or "cosine" (LUCIR)."""
    if kind not in HEAD_KINDS:
        raise HyperparameterError(
            f"head.kind = {kind!r} is not accepted; use one of {list(HEAD_KINDS)}"
        )
    return HEAD_KINDS[kind](in_features, bias=bias)


def initial_rows(num_rows: int, in_features: int) -> Tensor:
    """New weight rows ~ U(-1/sqrt(d), 1/sqrt(d)), the range of nn.Linear's default init.

    Drawn on the CPU from the global generator (seeded per run by the engine), so a seed
    gives the same head on every device.
    """
    bound = 1.0 / math.sqrt(in_features)
    return torch.empty(num_rows, in_features).uniform_(-bound, bound)  # (new, dim)


@dataclass(frozen=True)
class Experience:
    """One step of the stream, as a strategy sees it.

    Classes are numbered in arrival order, so this experience's classes are
    `num_old .. num_seen - 1`. `features`/`targets` are this experience's training data
    (all seen data for strategies with `trains_on_all_seen`), already on the device.
    """

    index: int
    num_old: int
    num_seen: int
    features: Tensor  # (samples, dim)
    targets: Tensor  # (samples,)

    @property
    def num_new(self) -> int:
        return self.num_seen - self.num_old


CrossEntropyScope = Literal["seen", "new"]
HeadLoss = Literal["softmax", "sigmoid"]
HEAD_LOSSES: tuple[str, ...] = typing.get_args(HeadLoss)


def one_vs_rest_bce(
    logits: Tensor, targets: Tensor, first_class: int = 0, class_weights: Tensor | None = None
) -> Tensor:
    """Binary cross-entropy of every logit against "the sample is this column's class".

    Column k scores class `first_class + k`; a target outside the columns (an old class
    when only the new classes' logits are given) is a negative for all of them. Summed
    over the columns and averaged over the batch: iCaRL's classification loss (Rebuffi et
    al., CVPR 2017, Algorithm 3) sums over classes, so each unit is one logistic regression
    whose gradient does not shrink as classes are added (a mean over columns would divide
    every unit's learning rate by their number). `class_weights` (seen,) weight each
    sample by its class and normalise by the batch's total weight, as `classification_loss`.
    """
    classes = torch.arange(first_class, first_class + logits.shape[1], device=targets.device)
    positives = (targets[:, None] == classes).to(logits.dtype)  # (batch, columns)
    per_logit = F.binary_cross_entropy_with_logits(logits, positives, reduction="none")
    per_sample = per_logit.sum(dim=1)  # (batch,)
    if class_weights is None:
        return per_sample.mean()
    weights = class_weights[targets]  # (batch,)
    return (weights * per_sample).sum() / weights.sum()


def classification_loss(
    logits: Tensor,
    targets: Tensor,
    num_old: int = 0,
    scope: CrossEntropyScope = "seen",
    class_weights: Tensor | None = None,
    loss: HeadLoss = "softmax",
) -> Tensor:
    """Cross-entropy over all seen classes, or over the new classes' logits only.

    "seen" is Avalanche's choice; "new" is the multi-head reading of LwF that PyCIL and
    FACIL use for class-incremental training (old logits then learn only through the
    regulariser). `class_weights` (seen,) weight each sample by its class and normalise
    by the batch's total weight (torch's weighted mean). `loss = "sigmoid"` (`[head]
    loss`) replaces the softmax cross-entropy by one-vs-rest binary cross-entropy over the
    same logits (`one_vs_rest_bce`).
    """
    if loss == "sigmoid":
        first = 0 if scope == "seen" else num_old
        return one_vs_rest_bce(logits[:, first:], targets, first, class_weights)
    if scope == "seen":
        return F.cross_entropy(logits, targets, weight=class_weights)
    weight = None if class_weights is None else class_weights[num_old:]
    return F.cross_entropy(logits[:, num_old:], targets - num_old, weight=weight)


def check_scope(
    strategy: str,
    scope: CrossEntropyScope,
    experience_sizes: Sequence[int],
    replays: bool = False,
) -> None:
    """Refuse cross-entropy over the new classes only when it is undefined or constant.

    With exemplars in the batch, old-class samples have no target among the new logits.
    With one new class, log-softmax over a single logit is identically 0: the loss is
    constant and that class's row never receives a gradient.
    """
    if scope == "new" and replays:
        raise HyperparameterError(
            f"{strategy}: ce_scope='new' cannot score replayed exemplars of old classes; "
            "use ce_scope='seen' with memory_size > 0"
        )
    for index, size in enumerate(experience_sizes):
        if scope == "new" and size == 1:
            raise HyperparameterError(
                f"{strategy}: ce_scope='new' has zero gradient in experience {index}, which "
                "brings a single class; use ce_scope='seen' or an increment of at least 2"
            )


def distillation_kl(
    logits: Tensor, old_logits: Tensor, temperature: float, t_squared: bool
) -> Tensor:
    """KL(softmax(old/T) || softmax(new/T)) over the old classes, averaged over the batch.

    Hinton et al. (2015) multiply by T^2 to keep gradient magnitudes independent of T;
    LwF, WA and Avalanche do not. The soft-target cross-entropy those papers write
    differs from this KL by the teacher's entropy, a constant, so the gradients are equal
    and the term is 0 when the head equals its snapshot (up to float rounding).
    """
    log_student = F.log_softmax(logits / temperature, dim=1)  # (batch, old)
    log_teacher = F.log_softmax(old_logits / temperature, dim=1)  # (batch, old)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2 if t_squared else kl


class GrowingBuffers(nn.Module):
    """A module whose buffers grow with the stream (or start as None)."""

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # Take the saved shapes, then let torch check and copy as usual.
        for name in self._buffers:
            if prefix + name in state_dict:
                self._buffers[name] = state_dict[prefix + name].clone()
        super()._load_from_state_dict(state_dict, prefix, *args)


@dataclass(frozen=True)
class Calibration:
    """A second training stage after the head's (e.g. BiC's bias correction).

    The engine trains `parameters` on `features`/`targets` for `epochs` with the run's
    optimizer settings (no weight decay) and minibatch size, minimising `loss(features,
    targets)`; the strategy builds no optimizer and writes no loop.
    """

    features: Tensor  # (samples, dim)
    targets: Tensor  # (samples,)
    parameters: list[Tensor]
    loss: Callable[[Tensor, Tensor], Tensor]
    epochs: int


@dataclass(frozen=True)
class FreezeConfig:
    """The frozen-old-rows flag: inherit it in a strategy's config to offer SEQ*'s fixed old
    classifier (Zheng, Qiu & Ma, ACL 2024) on that strategy."""

    freeze_old_rows: bool = hyperparameter(
        False, "keep old classes' rows, biases (a cosine head's σ) as before the experience"
    )


class Strategy(GrowingBuffers):
    """Base contract: override only the hooks the method needs.

    Never write an epoch loop, build an optimizer, move devices, evaluate or print in a
    strategy: the engine does those. State carried across experiences lives in buffers
    so `state_dict()` round-trips. `class_weights` is set by the engine before each
    experience's training when `training.class_weighting` asks for it (None otherwise);
    pass it to `classification_loss`. `memory` is an exemplar memory when the config has
    `memory_size > 0` (strategies.memory.ReplayConfig), else None. With `freeze_old_rows`
    (FreezeConfig) the loop calls `hold_old_rows` before an experience trains and
    `after_step` after every optimizer step.
    """

    name: ClassVar[str]
    paper: ClassVar[str]
    display_name: ClassVar[str | None] = None  # as tables and legends name it; None: `name`
    cite_keys: ClassVar[tuple[str, ...]] = ()  # BibTeX keys of its papers
    bibtex: ClassVar[tuple[str, ...]] = ()  # entries for keys headbench's bibliography lacks
    Config: ClassVar[type]
    trains_on_all_seen: ClassVar[bool] = False
    trains_head: ClassVar[bool] = True  # False: no minibatch loop (statistics-only methods)
    head_kinds: ClassVar[tuple[str, ...]] = tuple(HEAD_KINDS)  # the heads it is defined for
    # `[head] loss` values its objective is defined for: a strategy that passes
    # `self.head_loss` to `classification_loss` lists "sigmoid" too.
    head_losses: ClassVar[tuple[str, ...]] = ("softmax",)
    batchable: ClassVar[bool] = True  # False: the loss changes state (seeds train one by one)

    def __init__(self, config: Any = None) -> None:
        super().__init__()
        self.config = self.Config() if config is None else config
        self.class_weights: Tensor | None = None
        self.head_loss: str = "softmax"  # `[head] loss`, set by the engine before training
        self.memory: nn.Module | None = None
        # What `hold_old_rows` copied; only for the current experience, so not a buffer.
        self._held: dict[str, Tensor] | None = None
        size = getattr(self.config, "memory_size", 0)
        require(size >= 0, f"strategies.{self.name}.memory_size = {size} must be >= 0")
        if size > 0:
            from strategies.memory import ExemplarMemory

            self.memory = ExemplarMemory(
                size,
                self.config.memory_budget,
                self.config.memory_selection,
                getattr(self.config, "memory_holdout", 0.0),
            )

    @classmethod
    def paper_name(cls, config: Any) -> tuple[str, tuple[str, ...]]:
        """(display name, citation keys) of the method this config runs; reports print
        them (reports.bibliography holds the BibTeX of the keys)."""
        return cls.display_name or cls.name, cls.cite_keys

    @classmethod
    def overrides(cls, hook: str) -> bool:
        """Whether this strategy defines its own `hook` (callers skip hooks left as the
        base's no-ops, e.g. `after_update` on every optimizer step)."""
        return getattr(cls, hook) is not getattr(Strategy, hook)

    def validate(self, experience_sizes: Sequence[int]) -> None:
        """Raise HyperparameterError when the config degenerates on this scenario."""
        if self.memory is not None:
            self.memory.validate(self.name, experience_sizes)

    def training_set(self, experience: Experience) -> tuple[Tensor, Tensor]:
        """The samples the minibatch loop draws from: the experience's data, plus the
        exemplar memory's when the strategy replays."""
        if self.memory is None:
            return experience.features, experience.targets
        return self.memory.training_set(experience)

    def expand(self, head: Head, num_new: int) -> None:
        """Grow the head: old rows kept, new rows initialised, new biases 0."""
        head.append_rows(initial_rows(num_new, head.in_features))

    def before_experience(self, head: Head, experience: Experience) -> None:
        """Called after `expand`, before the first minibatch of the experience."""

    def loss(self, logits: Tensor, targets: Tensor, features: Tensor, head: Head) -> Tensor:
        """The objective for one minibatch; default: cross-entropy over all seen classes
        (one-vs-rest binary cross-entropy with `[head] loss = "sigmoid"`)."""
        return classification_loss(
            logits, targets, class_weights=self.class_weights, loss=self.head_loss
        )

    def after_update(self, head: Head) -> None:
        """Called after every optimizer step (only when a strategy overrides it)."""

    @property
    def freezes_old_rows(self) -> bool:
        return bool(getattr(self.config, "freeze_old_rows", False))

    def hold_old_rows(self, head: Head, num_old: int) -> None:
        """With `freeze_old_rows`, copy what belongs to the old classes before the experience
        trains: their rows, their biases and a cosine head's σ (it scales their logits).

        `after_step` puts the copy back after every optimizer step, so they stay
        bit-identical whatever momentum, weight decay or Adam's state do to them. Optimizer
        updates are elementwise, so the other parameters follow exactly the trajectory of
        an update that leaves the old rows out (the authors set their lr to 0)."""
        self._held = None
        if not self.freezes_old_rows or num_old == 0:
            return
        held = {"weight": head.weight.detach()[:num_old].clone()}  # (old, dim)
        if head.bias is not None:
            held["bias"] = head.bias.detach()[:num_old].clone()  # (old,)
        if isinstance(head, CosineHead):
            held["scale"] = head.scale.detach().clone()  # ()
        self._held = held

    def needs_after_step(self) -> bool:
        """Whether the loop must call `after_step` (it skips a hook with nothing to do)."""
        return self.overrides("after_update") or self._held is not None

    @torch.no_grad()
    def after_step(self, head: Head) -> None:
        """What the loop calls after every optimizer step: `after_update`, then the rows
        `hold_old_rows` copied are written back."""
        self.after_update(head)
        for name, value in (self._held or {}).items():
            parameter = getattr(head, name)
            (parameter if value.dim() == 0 else parameter[: len(value)]).copy_(value)

    def stability_error(self, learning_rate: float, momentum: float) -> str | None:
        """Before an experience's SGD loop: why it must diverge, or None (the default).

        A penalty whose curvature h along some parameter gives lr·h ≥ 2(1 + μ) makes
        heavy-ball SGD diverge there whatever the data do (the cross-entropy's Hessian is
        positive semi-definite, so the loss's curvature is at least h)."""
        return None

    def after_experience(self, head: Head, experience: Experience) -> None:
        """Called when the experience's training ends, before evaluation."""

    def calibration(self, head: Head, experience: Experience) -> Calibration | None:
        """A second stage to train after `after_experience`, or None (the default)."""
        return None

    def update_memory(self, experience: Experience) -> None:
        """Store exemplars of the experience's classes (last, after any calibration)."""
        if self.memory is not None:
            self.memory.update(experience)

    def predict(self, head: Head, features: Tensor) -> Tensor:
        return head(features)  # (batch, seen)

    def class_norms(self, head: Head) -> Tensor:
        """L2 norm of each class's weight vector, the run record's head-bias diagnostic."""
        return head.weight.detach().norm(dim=1)  # (seen,)


class DistillingStrategy(Strategy):
    """A strategy that keeps a snapshot of the head from before the current experience."""

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.register_buffer("old_weight", None)
        self.register_buffer("old_bias", None)
        self.register_buffer("old_scale", None)  # a cosine head's σ

    @property
    def num_old(self) -> int:
        return 0 if self.old_weight is None else self.old_weight.shape[0]

    def before_experience(self, head: Head, experience: Experience) -> None:
        # Taken after `expand`, so the first num_old rows are the old head.
        self.old_weight = head.weight.detach()[: experience.num_old].clone()
        if head.bias is not None:
            self.old_bias = head.bias.detach()[: experience.num_old].clone()
        if isinstance(head, CosineHead):
            self.old_scale = head.scale.detach().clone()

    def old_logits(self, features: Tensor, head: Head) -> Tensor:
        """The snapshot's logits: the same head function with the old parameters."""
        snapshot = {"weight": self.old_weight}
        if self.old_bias is not None:
            snapshot["bias"] = self.old_bias
        if self.old_scale is not None:
            snapshot["scale"] = self.old_scale
        return torch.func.functional_call(head, snapshot, (features,))  # (batch, old)


def config_fields(config_class: type) -> list[tuple[str, Any, Any, str]]:
    """(config key, type, default, meaning) of each hyperparameter: the class's own fields
    in declaration order, then inherited ones (e.g. the replay flag's `memory_*`)."""
    hints = typing.get_type_hints(config_class)
    own = config_class.__dict__.get("__annotations__", {})
    fields = sorted(dataclasses.fields(config_class), key=lambda f: f.name not in own)
    return [
        (config_key(f.name), hints[f.name], f.default, f.metadata.get("meaning", ""))
        for f in fields
    ]


def type_name(annotation: Any) -> str:
    """`float`, `bool`, or the accepted values of a Literal, for messages and listings."""
    if typing.get_origin(annotation) is Literal:
        return " | ".join(repr(value) for value in typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " | ".join(type_name(arm) for arm in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _coerce(key: str, annotation: Any, value: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arm in typing.get_args(annotation):  # e.g. `float | Literal["calibrated"]`
            try:
                return _coerce(key, arm, value)
            except HyperparameterError:
                continue
    elif typing.get_origin(annotation) is Literal:
        if value in typing.get_args(annotation):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, annotation):
        return value
    raise HyperparameterError(
        f"{key} = {value!r} is not accepted; expected {type_name(annotation)}"
    )


def build_config(strategy: str, config_class: type, values: dict[str, Any]) -> Any:
    """A strategy's frozen config from a TOML table: unknown keys and wrong types refused."""
    hints = typing.get_type_hints(config_class)
    fields = {config_key(f.name): (f.name, hints[f.name]) for f in dataclasses.fields(config_class)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            accepted = ", ".join(fields) or "none"
            raise HyperparameterError(
                f"unknown hyperparameter strategies.{strategy}.{key}; accepted: {accepted}"
            )
        name, annotation = fields[key]
        kwargs[name] = _coerce(f"strategies.{strategy}.{key}", annotation, value)
    return config_class(**kwargs)


def resolved_config(config: Any) -> dict[str, Any]:
    """Every hyperparameter written out under its config key."""
    return {config_key(f.name): getattr(config, f.name) for f in dataclasses.fields(config)}


def require(condition: bool, message: str) -> None:
    """Config range checks, used in `__post_init__`."""
    if not condition:
        raise HyperparameterError(message)
