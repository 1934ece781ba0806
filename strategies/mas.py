"""Memory Aware Synapses on the head: EWC's quadratic penalty with an importance that is the
sensitivity of the head's output to each parameter, measured without labels.

Aljundi et al., "Memory Aware Synapses: Learning what (not) to forget", ECCV 2018.
Eq. 10 (the global version the paper uses): Ω_ij = 1/N Σ_k |∂ ‖F(x_k; θ)‖²₂ / ∂θ_ij|, F the
network's output, here the head's logits over all seen classes; Eq. 3: L(θ) = L_n(θ) +
λ Σ_ij Ω_ij (θ_ij − θ*_ij)², with λ = 1 (the paper's choice; Avalanche's default). After
each experience the new Ω is added to the old one and θ* moves to the current parameters,
as the authors' code accumulates Ω: EWC's online mode with γ = 1 (`mode = "separate"`
keeps one anchor per experience instead).

Head-only version: θ is the head's weight and bias (and a cosine head's scale). For logits
z = W x + b, ∂‖z‖²/∂W = 2 z xᵀ per sample, so Ω_W = 2/N · |Z|ᵀ|X| and Ω_b = 2/N Σ_k |z_k|,
one matrix product; a cosine head's Ω is taken per sample by autograd. Ω is measured on the
experience's training features after it is trained. The penalty, its completed-square
bookkeeping, the replay and frozen-rows flags and the stability check are EWC's
(strategies.ewc); only the importance and the factor λ (not λ/2) differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from strategies.base import Experience, Head, hyperparameter, require
from strategies.ewc import EWC, EWCConfig, per_sample_mean
from strategies.registry import register


@dataclass(frozen=True)
class MASConfig(EWCConfig):
    lambda_: float = hyperparameter(1.0, "λ, Eq. 3: weight of the penalty")
    mode: Literal["separate", "online"] = hyperparameter(
        "online", "Ω summed with one anchor (the authors' code), or one anchor per experience"
    )
    gamma: float = hyperparameter(1.0, "γ: decay of the running Ω in online mode")

    def __post_init__(self) -> None:
        require(self.lambda_ >= 0, f"strategies.mas.lambda = {self.lambda_} must be >= 0")
        require(0 <= self.gamma <= 1, f"strategies.mas.gamma = {self.gamma} must be in [0, 1]")


def output_sensitivity(head: Head, features: Tensor) -> dict[str, Tensor]:
    """Eq. 10: mean over samples of |∂ ‖z‖² / ∂θ| for the head's logits z."""
    if head.kind != "linear":

        def squared_norm(logits: Tensor, target: Tensor) -> Tensor:
            return logits.square().sum()

        targets = torch.zeros(len(features), dtype=torch.long, device=features.device)
        return per_sample_mean(head, features, targets, squared_norm, Tensor.abs)
    logits = head(features).abs()  # (samples, seen)
    importance = {"weight": 2 * logits.T @ features.abs() / len(features)}  # (seen, dim)
    if head.bias is not None:
        importance["bias"] = 2 * logits.mean(dim=0)  # (seen,)
    return importance


@register("mas")
class MAS(EWC):
    """Cross-entropy plus λ · Σ Ω (θ − θ*)², Ω the output's sensitivity to θ."""

    display_name = "MAS"
    cite_keys = ("aljundi2018memory",)

    @classmethod
    def paper_name(cls, config: MASConfig) -> tuple[str, tuple[str, ...]]:
        return cls.display_name, cls.cite_keys  # one name in either mode

    paper = "Aljundi et al., Memory Aware Synapses, ECCV 2018"
    Config = MASConfig
    penalty_factor: ClassVar[float] = 1.0  # λ, Eq. 3

    @torch.no_grad()
    def importance(self, head: Head, experience: Experience) -> dict[str, Tensor]:
        return output_sensitivity(head, experience.features)
