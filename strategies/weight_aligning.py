"""Weight Aligning: after each experience, rescale the new classes' weight vectors so
their mean norm equals the old classes' mean norm.

Zhao, Xiao, Gan, Zhang & Xia, "Maintaining Discrimination and Fairness in Class
Incremental Learning", CVPR 2020. Training: (1 − λ)·L_CE + λ·L_KD with
λ = n / (n + m) for n old and m new classes, L_KD the distillation of the old model's
logits at T = 2. Weight aligning: γ = mean_old ‖w‖ / mean_new ‖w‖, then
W_new ← γ·W_new, so the corrected logits are (o_old, γ·o_new). After each optimizer step
the FC weights are clipped to be non-negative, since the features come out of a ReLU.

Head-only version: no exemplars by default, so L_CE sees only the new classes' data; the
paper's exemplar memory is the replay flag (`memory_size`, strategies.memory). New rows are
selected by class id (classes are numbered in arrival order), not assumed to be "the
last rows" of some other layout. Bias: the paper's FC layer has none (o = Wᵀφ(x)); with
`[head] bias = true` the new classes' biases are scaled by γ too (`align_bias`), which
keeps the paper's o_new → γ·o_new; PyCIL scales the weights only (`align_bias = false`).
Weight clipping assumes non-negative features (a ReLU backbone): `weight_clipping = "auto"`
(the default) clips only when every training feature of the first experience is >= 0, the
decision kept in the `clips` buffer; on signed features (a ViT's, a sentence encoder's)
clipping would zero every weight that a negative feature needs. `true`/`false` force it.
L_KD is written as a KL divergence (same gradient as the paper's soft cross-entropy);
PyCIL weights it as L_CE + 2·L_KD instead of (1 − λ, λ). Refused on a cosine head, which
normalises the aligned norms away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from strategies.base import (
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


@dataclass(frozen=True)
class WeightAligningConfig(FreezeConfig, ReplayConfig):
    distillation: bool = hyperparameter(True, "add L_KD, weighted λ = n/(n+m) against L_CE")
    temperature: float = hyperparameter(2.0, "T: distillation temperature")
    t_squared: bool = hyperparameter(False, "multiply L_KD by T² (Hinton)")
    weight_clipping: Literal["auto", True, False] = hyperparameter(
        "auto", "clip head weights to >= 0 after each step; auto: iff the features are >= 0"
    )
    align_bias: bool = hyperparameter(True, "scale new classes' biases by γ too")

    def __post_init__(self) -> None:
        require(self.temperature > 0, f"strategies.wa.temperature = {self.temperature} must be > 0")


def alignment_factor(weight: Tensor, num_old: int) -> Tensor:
    """γ = mean of the old rows' L2 norms / mean of the new rows' L2 norms ."""
    norms = weight.norm(dim=1)  # (seen,)
    return norms[:num_old].mean() / norms[num_old:].mean()


@register("weight_aligning", "wa")
class WeightAligning(DistillingStrategy):
    """Distillation while training; new rows rescaled to the old rows' mean norm after."""

    paper = "Zhao et al., Maintaining Discrimination and Fairness in CIL, CVPR 2020"
    display_name = "WA"
    cite_keys = ("zhao2020maintaining",)
    Config = WeightAligningConfig
    head_kinds = ("linear",)  # a cosine head normalises the aligned norms away

    def __init__(self, config: WeightAligningConfig | None = None) -> None:
        super().__init__(config)
        self.register_buffer("clips", None)  # the resolved weight_clipping, a bool tensor

    def before_experience(self, head: Head, experience: Experience) -> None:
        super().before_experience(head, experience)
        if self.clips is None:
            setting = self.config.weight_clipping
            clips = bool((experience.features >= 0).all()) if setting == "auto" else setting
            self.clips = torch.tensor(bool(clips), device=experience.features.device)

    def loss(self, logits: Tensor, targets: Tensor, features: Tensor, head: Head) -> Tensor:
        config = self.config
        loss = classification_loss(logits, targets, class_weights=self.class_weights)
        num_old = self.num_old
        if num_old == 0 or not config.distillation:
            return loss
        distillation = distillation_kl(
            logits[:, :num_old],
            self.old_logits(features, head),
            config.temperature,
            config.t_squared,
        )
        balance = num_old / head.num_classes  # λ = n / (n + m)
        return (1 - balance) * loss + balance * distillation

    @torch.no_grad()
    def after_update(self, head: Head) -> None:
        # Before any experience (a hook called on its own) only an explicit setting decides.
        clips = self.config.weight_clipping is True if self.clips is None else bool(self.clips)
        if clips:
            head.weight.clamp_(min=0)

    @torch.no_grad()
    def after_experience(self, head: Head, experience: Experience) -> None:
        if experience.num_old == 0:
            return
        gamma = alignment_factor(head.weight, experience.num_old)
        head.weight[experience.num_old :] *= gamma
        if head.bias is not None and self.config.align_bias:
            head.bias[experience.num_old :] *= gamma
