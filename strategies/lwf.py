"""Learning without Forgetting: distil the old head's responses while learning new classes.

Li & Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI 2018. Objective (the
paper's Algorithm 1): λ_o · L_old(Y_o, Ŷ_o) + L_new(Y_n, Ŷ_n), with L_old the
distillation of the recorded old-class responses at temperature T = 2 and λ_o = 1.

Head-only version: the snapshot is the head as it was before the experience, and Ŷ_o its
logits on the new data. The paper's new task has its own output layer, so L_new is
cross-entropy over the new classes' logits only (`ce_scope = "new"`, the paper's choice,
also PyCIL's and FACIL's); `"seen"` is Avalanche's. With one new class per experience
"new" has zero gradient and is refused. L_old is written as a KL divergence (same
gradient as the paper's soft cross-entropy, 0 at the snapshot), without T² by default as
in the paper and Avalanche. Deviation: the optional warm-up step (train the new rows
alone first) is not run; the paper reports it is not crucial. LwF keeps no data; the
replay flag (`memory_size`) adds exemplars for comparisons (then `ce_scope = "seen"`).
Bias: the snapshot's bias is part of the old logits; all biases are trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from strategies.base import (
    CrossEntropyScope,
    DistillingStrategy,
    FreezeConfig,
    Head,
    check_scope,
    classification_loss,
    distillation_kl,
    hyperparameter,
    require,
)
from strategies.memory import ReplayConfig
from strategies.registry import register


@dataclass(frozen=True)
class LwFConfig(FreezeConfig, ReplayConfig):
    alpha: float = hyperparameter(1.0, "λ_o: weight of the distillation term")
    temperature: float = hyperparameter(2.0, "T: distillation temperature")
    t_squared: bool = hyperparameter(False, "multiply the distillation term by T² (Hinton)")
    ce_scope: CrossEntropyScope = hyperparameter("new", "cross-entropy over new or all seen")

    def __post_init__(self) -> None:
        require(self.alpha >= 0, f"strategies.lwf.alpha = {self.alpha} must be >= 0")
        require(
            self.temperature > 0, f"strategies.lwf.temperature = {self.temperature} must be > 0"
        )


@register("lwf")
class LwF(DistillingStrategy):
    """Cross-entropy on new data plus distillation towards the head's previous outputs."""

    paper = "Li & Hoiem, Learning without Forgetting, ECCV 2016"
    display_name = "LwF"
    cite_keys = ("li2018learning",)
    Config = LwFConfig

    def validate(self, experience_sizes: Sequence[int]) -> None:
        super().validate(experience_sizes)
        check_scope(self.name, self.config.ce_scope, experience_sizes, self.memory is not None)

    def loss(self, logits: Tensor, targets: Tensor, features: Tensor, head: Head) -> Tensor:
        config = self.config
        loss = classification_loss(
            logits, targets, self.num_old, config.ce_scope, self.class_weights
        )
        if self.num_old == 0 or config.alpha == 0:
            return loss
        distillation = distillation_kl(
            logits[:, : self.num_old],
            self.old_logits(features, head),
            config.temperature,
            config.t_squared,
        )
        return loss + config.alpha * distillation
