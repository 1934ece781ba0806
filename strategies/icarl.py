"""iCaRL: sigmoid outputs trained with binary cross-entropy on new data plus herded exemplars,
the previous head's outputs as targets for old classes, and a nearest-mean-of-exemplars
classifier.

Rebuffi, Kolesnikov, Sperl & Lampert, "iCaRL: Incremental Classifier and Representation
Learning", CVPR 2017. Algorithm 3: on the new classes' data together with the exemplar sets,
minimise −Σ_i [Σ_{y new} δ_{y=y_i} log g_y(x_i) + (1 − δ_{y=y_i}) log(1 − g_y(x_i))
+ Σ_{y old} q_i^y log g_y(x_i) + (1 − q_i^y) log(1 − g_y(x_i))], g_y = sigmoid of logit y and
q_i^y = g_y(x_i) under the network as it was before the experience (every sample, exemplars
included, is distilled on the old classes; its label is used only among the new ones).
Algorithm 1: a sample goes to the class whose mean of L2-normalised exemplar features,
renormalised, is nearest. Memory (Algorithms 2, 4, 5): K = 2000 exemplars in total, herding,
in strategies/memory.py; the class means are taken after the memory is updated, from the
exemplars only, as the paper does. `classifier = "head"` is the paper's "iCaRL-CNN" (the
sigmoid outputs' argmax, i.e. the logits').

Head-only version: the backbone is frozen, so φ(x) is the cached feature and only the head
(W, b) learns; exemplars are feature vectors. The loss sums over the seen classes and
averages over the minibatch (the paper's sum over samples, taken per minibatch); the
authors' Theano code averages over all 100 output units, unseen ones included with target 0,
a constant factor their learning rate absorbs. The paper and its code also average each
exemplar's features with those of its horizontally flipped image for the class means: cached
features have no flipped image, so the means are of the exemplars' features alone. With
`training.class_weighting`, each sample's loss is weighted by its class's weight (the
weighted mean `classification_loss` uses). Bias: the snapshot's bias is part of q.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from strategies.base import (
    DistillingStrategy,
    Experience,
    FreezeConfig,
    Head,
    hyperparameter,
    require,
)
from strategies.memory import ReplayConfig
from strategies.ncm import class_means
from strategies.registry import register

Classifier = Literal["nme", "head"]


@dataclass(frozen=True)
class ICaRLConfig(FreezeConfig, ReplayConfig):
    memory_size: int = hyperparameter(2000, "K: exemplars kept in total (the paper's CIFAR-100)")
    classifier: Classifier = hyperparameter(
        "nme", "nearest mean of exemplars (iCaRL) or the head's argmax (iCaRL-CNN)"
    )

    def __post_init__(self) -> None:
        require(
            self.memory_size >= 1,
            f"strategies.icarl.memory_size = {self.memory_size} must be >= 1 (iCaRL's "
            "exemplar sets hold its class means)",
        )


def icarl_loss(
    logits: Tensor,
    targets: Tensor,
    old_probabilities: Tensor,
    class_weights: Tensor | None = None,
) -> Tensor:
    """Algorithm 3's binary cross-entropy, summed over the seen classes, averaged over the batch.

    Args:
        logits: (batch, seen) the head's logits.
        targets: (batch,) class ids.
        old_probabilities: (batch, old) the previous head's sigmoid outputs, q.
        class_weights: (seen,) optional per-class weights of the samples.
    """
    num_old = old_probabilities.shape[1]
    classes = torch.arange(logits.shape[1], device=logits.device)
    one_hot = (targets[:, None] == classes).to(logits.dtype)  # (batch, seen)
    soft_targets = torch.cat([old_probabilities, one_hot[:, num_old:]], dim=1)  # (batch, seen)
    per_sample = F.binary_cross_entropy_with_logits(logits, soft_targets, reduction="none")
    per_sample = per_sample.sum(dim=1)  # (batch,)
    if class_weights is None:
        return per_sample.mean()
    weights = class_weights[targets]  # (batch,)
    return (weights * per_sample).sum() / weights.sum()


def exemplar_means(features: Tensor, targets: Tensor, num_seen: int) -> Tensor:
    """Algorithm 1's μ_y: the mean of each class's L2-normalised exemplar features, renormalised
    ("the results of any operation on feature vectors, e.g. averages, are also re-normalized")."""
    means = class_means(F.normalize(features, dim=1), targets, 0, num_seen)  # (seen, dim)
    return F.normalize(means, dim=1).to(features.dtype)


@register("icarl")
class ICaRL(DistillingStrategy):
    """Sigmoid BCE with the old head's outputs as targets; nearest mean of exemplars."""

    paper = "Rebuffi, Kolesnikov, Sperl & Lampert, iCaRL, CVPR 2017"
    display_name = "iCaRL"
    cite_keys = ("rebuffi2017icarl",)
    Config = ICaRLConfig

    def __init__(self, config: ICaRLConfig | None = None) -> None:
        super().__init__(config)
        self.register_buffer("means", None)  # (seen, dim) μ_y of the exemplars

    @classmethod
    def paper_name(cls, config: ICaRLConfig) -> tuple[str, tuple[str, ...]]:
        name = "iCaRL" if config.classifier == "nme" else "iCaRL-CNN"
        return name, cls.cite_keys

    def loss(self, logits: Tensor, targets: Tensor, features: Tensor, head: Head) -> Tensor:
        if self.num_old == 0:
            old_probabilities = logits[:, :0]
        else:
            old_probabilities = torch.sigmoid(self.old_logits(features, head))  # (batch, old)
        return icarl_loss(logits, targets, old_probabilities.detach(), self.class_weights)

    @torch.no_grad()
    def update_memory(self, experience: Experience) -> None:
        super().update_memory(experience)
        memory = self.memory
        self.means = exemplar_means(memory.features, memory.targets, experience.num_seen)

    def predict(self, head: Head, features: Tensor) -> Tensor:
        if self.config.classifier == "head":
            return head(features)  # (batch, seen)
        return -torch.cdist(F.normalize(features, dim=1), self.means)  # (batch, seen)
