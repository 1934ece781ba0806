"""Elastic Weight Consolidation on the head: a quadratic penalty, weighted by the Fisher
information, that holds parameters important to old experiences near their old values.

Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS 2017.
Eq. 3: L(θ) = L_B(θ) + Σ_i λ/2 · F_i · (θ_i − θ*_A,i)², F the diagonal empirical Fisher
after experience A. Mode `separate` keeps one penalty per finished experience (the
paper's several-task form); mode `online` keeps one running Fisher F ← γ·F + F_new
anchored at the latest parameters (Schwarz et al., "Progress & Compress", ICML 2018).

Head-only version: θ is the head's weight and bias; the Fisher is the per-sample
empirical Fisher, mean over the experience's training samples of the squared gradient of
log p(y | x) over all seen classes, computed in closed form for a linear head and by
per-sample autograd for a cosine head (Avalanche
squares minibatch-mean gradients instead, which underestimates it). Rows added after a
Fisher was taken get no penalty from it. The paper tunes λ per experiment. The default
λ = 500 was chosen from evidence on the shipped real-data benchmarks (docs/strategies.md,
"EWC's λ"): `headbench tune` on CLINC150's and BANKING77's own validation splits rose
with λ up to the largest stable value and was within 0.3 points of its best at 500, which
keeps a 2× margin to SGD's stability limit on CLINC150 (largest stable λ ≈ 960 at lr 0.1).
FACIL's 5000 penalises a feature extractor, not a head, and is past that limit here.
Cross-entropy is over all seen classes by default (the network's whole
output, as in the paper and Avalanche); PyCIL and FACIL use the new classes only.
Bias (and a cosine head's scale): penalised like the weights. The replay flag
(`memory_size`) adds exemplars to the cross-entropy; the Fisher stays on the new data.

The separate-mode sum Σ_k F_k (θ − θ_k)² is stored in completed-square form
A (θ − μ)² + c with A = Σ_k F_k, μ = Σ_k F_k θ_k / A, which has the same value and
gradient and a fixed number of buffers however many experiences have passed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from strategies.base import (
    HEAD_LOSSES,
    CrossEntropyScope,
    Experience,
    FreezeConfig,
    Head,
    HeadLoss,
    Strategy,
    check_scope,
    classification_loss,
    hyperparameter,
    require,
)
from strategies.memory import ReplayConfig
from strategies.registry import register


@dataclass(frozen=True)
class EWCConfig(FreezeConfig, ReplayConfig):
    lambda_: float = hyperparameter(500.0, "λ, Eq. 3: weight of the quadratic penalty")
    mode: Literal["separate", "online"] = hyperparameter(
        "separate", "one penalty per experience, or one running penalty"
    )
    gamma: float = hyperparameter(1.0, "γ: decay of the running Fisher in online mode")
    ce_scope: CrossEntropyScope = hyperparameter("seen", "cross-entropy over all seen or new")

    def __post_init__(self) -> None:
        require(self.lambda_ >= 0, f"strategies.ewc.lambda = {self.lambda_} must be >= 0")
        require(0 <= self.gamma <= 1, f"strategies.ewc.gamma = {self.gamma} must be in [0, 1]")


def empirical_fisher(
    head: Head, features: Tensor, targets: Tensor, loss: HeadLoss = "softmax"
) -> dict[str, Tensor]:
    """Mean over samples of the squared per-sample gradient of −log p(y | x).

    For logits z = W x + b, ∂(−log p_y)/∂z = p − e_y, so the per-sample gradient of W is
    (p − e_y) xᵀ and its square (p − e_y)² (x²)ᵀ: the mean is one matrix product. With a
    sigmoid head (`loss = "sigmoid"`) the likelihood is a product of Bernoullis, −log p(y | x)
    is the one-vs-rest binary cross-entropy, and p above is σ(z) taken elementwise.
    Squares below float's smallest normal number are set to 0 first: old classes' softmax
    probabilities become that small, and subnormal inputs make the CPU's matrix product
    up to 20 times slower, for terms far below the sum's rounding.
    """
    with torch.no_grad():
        logits = head(features)  # (samples, seen)
        residual = torch.sigmoid(logits) if loss == "sigmoid" else F.softmax(logits, dim=1)
        residual[torch.arange(len(targets), device=targets.device), targets] -= 1
        squared = residual.square()  # (samples, seen)
        squared.masked_fill_(squared < torch.finfo(squared.dtype).tiny, 0.0)
        fisher = {"weight": squared.T @ features.square() / len(targets)}  # (seen, dim)
        if head.bias is not None:
            fisher["bias"] = squared.mean(dim=0)  # (seen,)
    return fisher


def autograd_fisher(
    head: Head, features: Tensor, targets: Tensor, loss: HeadLoss = "softmax", chunk: int = 256
) -> dict[str, Tensor]:
    """The same mean of squared per-sample gradients, by `torch.func` for any head (the
    cosine head's logits are not linear in its parameters)."""

    def negative_log_likelihood(logits: Tensor, target: Tensor) -> Tensor:
        return classification_loss(logits, target[None], loss=loss)

    return per_sample_mean(head, features, targets, negative_log_likelihood, Tensor.square, chunk)


def per_sample_mean(
    head: Head,
    features: Tensor,
    targets: Tensor,
    objective: Callable[[Tensor, Tensor], Tensor],
    transform: Callable[[Tensor], Tensor],
    chunk: int = 256,
) -> dict[str, Tensor]:
    """Mean over samples of transform(∂ objective(logits, target) / ∂θ), one sample at a time
    by `torch.func` (EWC: squared gradients of −log p; MAS: absolute gradients of ‖z‖²);
    chunked to bound memory."""
    parameters = {name: p.detach() for name, p in head.named_parameters()}

    def of_one(params: dict[str, Tensor], sample: Tensor, target: Tensor) -> Tensor:
        logits = torch.func.functional_call(head, params, (sample[None],))  # (1, seen)
        return objective(logits, target)

    per_sample = torch.func.vmap(torch.func.grad(of_one), in_dims=(None, 0, 0))
    sums = {name: torch.zeros_like(p) for name, p in parameters.items()}
    for start in range(0, len(targets), chunk):
        gradients = per_sample(
            parameters, features[start : start + chunk], targets[start : start + chunk]
        )
        for name, gradient in gradients.items():
            sums[name] += transform(gradient).sum(dim=0)
    return {name: total / len(targets) for name, total in sums.items()}


def _pad_rows(tensor: Tensor, rows: int) -> Tensor:
    if tensor.dim() == 0:  # a cosine head's σ does not grow
        return tensor
    padding = tensor.new_zeros((rows - tensor.shape[0], *tensor.shape[1:]))
    return torch.cat([tensor, padding])


PARAMETERS = ("weight", "bias", "scale")  # those a head may have


@register("ewc")
class EWC(Strategy):
    """Cross-entropy plus λ/2 · Σ F (θ − θ*)² over the head's parameters."""

    paper = "Kirkpatrick et al., Overcoming catastrophic forgetting, PNAS 2017"
    display_name = "EWC"
    cite_keys = ("kirkpatrick2017overcoming",)
    Config = EWCConfig
    penalty_factor: ClassVar[float] = 0.5  # λ/2 in Eq. 3 (MAS and SI write λ, c)
    head_losses = HEAD_LOSSES  # the Fisher follows the head's likelihood

    @classmethod
    def paper_name(cls, config: EWCConfig) -> tuple[str, tuple[str, ...]]:
        if config.mode == "online":  # Schwarz et al.'s name for it
            return "Online EWC", (*cls.cite_keys, "schwarz2018progress")
        return cls.display_name, cls.cite_keys

    def __init__(self, config: EWCConfig | None = None) -> None:
        super().__init__(config)
        for name in PARAMETERS:
            self.register_buffer(f"importance_{name}", None)  # A
            self.register_buffer(f"anchor_{name}", None)  # μ
        self.register_buffer("penalty_offset", torch.zeros(()))  # c
        self.num_old = 0

    def get_extra_state(self) -> dict[str, int]:
        return {"num_old": self.num_old}  # a Python int, so `loss` needs no device sync

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.num_old = state["num_old"]

    def validate(self, experience_sizes: Sequence[int]) -> None:
        super().validate(experience_sizes)
        check_scope(self.name, self.config.ce_scope, experience_sizes, self.memory is not None)

    def before_experience(self, head: Head, experience: Experience) -> None:
        self.num_old = experience.num_old

    def penalty(self, head: Head) -> Tensor:
        """Σ A (θ − μ)² + c = Σ_k F_k (θ − θ_k)² over the rows that existed (no λ/2)."""
        total = self.penalty_offset
        for name in PARAMETERS:
            importance = getattr(self, f"importance_{name}")
            if importance is not None:
                parameter = getattr(head, name)
                if importance.dim():
                    parameter = parameter[: importance.shape[0]]
                total = (
                    total
                    + (importance * (parameter - getattr(self, f"anchor_{name}")).square()).sum()
                )
        return total

    def stability_error(self, learning_rate: float, momentum: float) -> str | None:
        """The penalty λ/2·Σ A (θ − μ)² has curvature λ·A; SGD with momentum μ is stable on
        it only while lr·λ·max A < 2(1 + μ) (MAS's and SI's λ·Σ A (θ − μ)²: 2λ·A).

        Only parameters the data loss moves count: with `ce_scope = "new"` (no exemplars)
        the old rows get no cross-entropy gradient, stay at their anchor, and the penalty's
        gradient there is exactly 0, so an unstable curvature is never excited (the cosine
        head's shared σ still is). With `freeze_old_rows` every penalised parameter is held
        (new rows carry no Fisher yet), so none counts."""
        names = () if self.freezes_old_rows else PARAMETERS
        if self.config.ce_scope == "new" and names:
            names = tuple(name for name in PARAMETERS if name not in ("weight", "bias"))
        importances = [getattr(self, f"importance_{name}") for name in names]
        largest = max((float(a.max()) for a in importances if a is not None), default=0.0)
        largest *= 2 * self.penalty_factor  # curvature per unit of λ
        limit = 2 * (1 + momentum)
        if largest == 0 or learning_rate * self.config.lambda_ * largest < limit:
            return None
        stable = limit / (learning_rate * largest)
        symbol = "F" if self.penalty_factor == 0.5 else f"{2 * self.penalty_factor:g}Ω"
        return (
            f"{self.name}: lr·λ·max {symbol} = {learning_rate:g}·{self.config.lambda_:g}·"
            f"{largest:.3g} = {learning_rate * self.config.lambda_ * largest:.3g} passes SGD's "
            f"stability limit 2(1 + momentum) = {limit:g}, so training must diverge; use "
            f"strategies.{self.name}.lambda < {stable:.3g} or a lower training.lr"
        )

    def loss(self, logits: Tensor, targets: Tensor, features: Tensor, head: Head) -> Tensor:
        loss = classification_loss(
            logits, targets, self.num_old, self.config.ce_scope, self.class_weights, self.head_loss
        )
        if self.importance_weight is None or self.config.lambda_ == 0:
            return loss
        return loss + self.config.lambda_ * self.penalty_factor * self.penalty(head)  # Eq. 3

    @torch.no_grad()
    def importance(self, head: Head, experience: Experience) -> dict[str, Tensor]:
        """The new importance of each head parameter: EWC's empirical Fisher (MAS and SI,
        which share the penalty, override this)."""
        estimate = empirical_fisher if head.kind == "linear" else autograd_fisher
        return estimate(head, experience.features, experience.targets, self.head_loss)

    @torch.no_grad()
    def after_experience(self, head: Head, experience: Experience) -> None:
        fisher = self.importance(head, experience)
        offset = torch.zeros((), device=head.weight.device)
        for name, new_importance in fisher.items():
            parameter = getattr(head, name).detach()
            old_importance = getattr(self, f"importance_{name}")
            if old_importance is None:
                importance, anchor = new_importance, parameter.clone()
            elif self.config.mode == "online":
                importance = self.config.gamma * _pad_rows(old_importance, head.num_classes)
                importance, anchor = importance + new_importance, parameter.clone()
            else:
                old_importance = _pad_rows(old_importance, head.num_classes)
                old_anchor = _pad_rows(getattr(self, f"anchor_{name}"), head.num_classes)
                importance = old_importance + new_importance
                weighted = old_importance * old_anchor + new_importance * parameter
                anchor = torch.where(importance > 0, weighted / importance, parameter)
                # c = Σ_k F_k θ_k² − A μ²: the value of the sum at θ = μ.
                offset += (
                    old_importance * old_anchor.square()
                    + new_importance * parameter.square()
                    - importance * anchor.square()
                ).sum()
            setattr(self, f"importance_{name}", importance)
            setattr(self, f"anchor_{name}", anchor)
        if self.config.mode == "separate":
            offset += self.penalty_offset
        self.penalty_offset = offset
