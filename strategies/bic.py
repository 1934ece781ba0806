"""Bias Correction: after training with exemplars and distillation, fit two parameters
that rescale the newest classes' logits on a held-out, class-balanced slice of the memory.

Wu, Chen, Wang, Ye, Liu, Guo & Fu, "Large Scale Incremental Learning", CVPR 2019.
Stage 1 (Eq. 1-3): L = λ·L_d + (1 − λ)·L_c with λ = n / (n + m) for n old and m new
classes, L_d the distillation of the previous model's (bias-corrected) old logits at
T = 2, on new data plus exemplars. Stage 2 (Eq. 4-5): q_k = o_k for old classes,
q_k = α·o_k + β for new ones; only α, β are trained, with cross-entropy on the
validation set, with everything else frozen. The exemplars and the new data are split
9:1 into training and validation, so the validation set has as many samples of every
class. The corrections of earlier experiences stay applied (fixed) afterwards.

Head-only version: o = the head's logits on cached features; exemplars are features.
The stage-2 loop (200 epochs, the authors' code per FACIL; the run's optimizer settings
without weight decay) runs in the engine as a calibration stage. The authors' code adds
0.1·β²/2 to the stage-2 loss, which the paper does not state: `beta_decay` (default 0, the
paper). L_d is written as a KL divergence (same gradient as the paper's soft
cross-entropy). Which new-class samples are held out is random (seeded); the paper does
not say. Bias: the head's bias is trained in stage 1 like the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from strategies.base import (
    Calibration,
    DistillingStrategy,
    Experience,
    FreezeConfig,
    Head,
    classification_loss,
    distillation_kl,
    hyperparameter,
    require,
)
from strategies.memory import ReplayConfig
from strategies.registry import register

MAX_BIAS_EPOCHS = 10_000  # the paper trains stage 2 for 200 epochs; 10^9 would never end


@dataclass(frozen=True)
class BiCConfig(FreezeConfig, ReplayConfig):
    memory_size: int = hyperparameter(2000, "K: exemplars kept (the paper's CIFAR-100 budget)")
    memory_holdout: float = hyperparameter(0.1, "share of exemplars held out for stage 2 (9:1)")
    temperature: float = hyperparameter(2.0, "T: distillation temperature, Eq. 1")
    t_squared: bool = hyperparameter(False, "multiply L_d by T² (Hinton)")
    bias_epochs: int = hyperparameter(200, "epochs of stage 2 (α, β) per experience")
    beta_decay: float = hyperparameter(0.0, "weight of β²/2 in stage 2 (authors' code: 0.1)")

    def __post_init__(self) -> None:
        require(
            self.memory_size > 0, f"strategies.bic.memory_size = {self.memory_size} must be > 0"
        )
        require(
            0 < self.memory_holdout < 1,
            f"strategies.bic.memory_holdout = {self.memory_holdout} must be in (0, 1)",
        )
        require(
            self.temperature > 0, f"strategies.bic.temperature = {self.temperature} must be > 0"
        )
        require(
            1 <= self.bias_epochs <= MAX_BIAS_EPOCHS,
            f"strategies.bic.bias_epochs = {self.bias_epochs} must be in [1, {MAX_BIAS_EPOCHS}]",
        )
        require(self.beta_decay >= 0, f"strategies.bic.beta_decay = {self.beta_decay} must be >= 0")


@register("bic")
class BiC(DistillingStrategy):
    """Replay with distillation, then a learned α·o + β on the newest classes' logits."""

    paper = "Wu et al., Large Scale Incremental Learning, CVPR 2019"
    display_name = "BiC"
    cite_keys = ("wu2019large",)
    Config = BiCConfig

    def __init__(self, config: BiCConfig | None = None) -> None:
        super().__init__(config)
        self.register_buffer("fixed_alpha", torch.ones(0))  # per class, earlier experiences
        self.register_buffer("fixed_beta", torch.zeros(0))
        self.register_buffer("alpha", torch.ones(()))  # the newest experience's α, β
        self.register_buffer("beta", torch.zeros(()))

    def correct(self, logits: Tensor) -> Tensor:
        """Eq. 4: fixed corrections on earlier experiences' classes, α·o + β on the newest."""
        num_fixed = self.fixed_alpha.shape[0]
        newest = logits.shape[1] - num_fixed
        alpha = torch.cat([self.fixed_alpha, self.alpha.expand(newest)])  # (seen,)
        beta = torch.cat([self.fixed_beta, self.beta.expand(newest)])  # (seen,)
        return logits * alpha + beta  # (batch, seen)

    def before_experience(self, head: Head, experience: Experience) -> None:
        super().before_experience(head, experience)
        # The last experience's α, β become fixed for its classes; the new ones start at 1, 0.
        count = experience.num_old - self.fixed_alpha.shape[0]
        self.fixed_alpha = torch.cat([self.fixed_alpha, self.alpha.detach().expand(count)])
        self.fixed_beta = torch.cat([self.fixed_beta, self.beta.detach().expand(count)])
        self.alpha = torch.ones((), device=self.alpha.device)
        self.beta = torch.zeros((), device=self.beta.device)

    def loss(self, logits: Tensor, targets: Tensor, features: Tensor, head: Head) -> Tensor:
        logits = self.correct(logits)
        loss = classification_loss(logits, targets, class_weights=self.class_weights)
        num_old = self.num_old
        if num_old == 0:
            return loss
        config = self.config
        old_logits = self.correct(self.old_logits(features, head))  # (batch, old)
        distillation = distillation_kl(
            logits[:, :num_old], old_logits, config.temperature, config.t_squared
        )
        balance = num_old / head.num_classes  # λ = n / (n + m), Eq. 3
        return (1 - balance) * loss + balance * distillation

    def calibration(self, head: Head, experience: Experience) -> Calibration | None:
        if experience.num_old == 0:
            return None  # no old classes to balance against
        memory = self.memory
        self.alpha.requires_grad_(True)
        self.beta.requires_grad_(True)

        def bias_loss(features: Tensor, targets: Tensor) -> Tensor:
            with torch.no_grad():
                logits = head(features)  # (batch, seen), frozen in stage 2
            loss = torch.nn.functional.cross_entropy(self.correct(logits), targets)  # Eq. 5
            return loss + self.config.beta_decay * self.beta.square() / 2

        return Calibration(
            memory.held_out_features,
            memory.held_out_targets,
            [self.alpha, self.beta],
            bias_loss,
            self.config.bias_epochs,
        )

    def predict(self, head: Head, features: Tensor) -> Tensor:
        return self.correct(head(features))  # (batch, seen)
