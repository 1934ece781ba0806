"""Exemplar memory: stored features of past classes, replayed with each experience's data.

iCaRL (Rebuffi, Kolesnikov, Sperl & Lampert, CVPR 2017): a memory of K exemplars in
total, m = K / t per class once t classes are seen, chosen by herding (Algorithm 4) so
that the mean of the first k exemplars stays closest to the class mean for every k;
shrinking the memory keeps each class's first m (Algorithm 5). The training set of an
experience is its new data together with the memory (iCaRL, BiC, WA and PyCIL train on
the union, shuffled, so every minibatch mixes old and new). As in iCaRL's Algorithm 2
(and PyCIL's and FACIL's `build_rehearsal_memory` after training), the memory an
experience trains with is the one left by the previous experience, K / (t − n) per class
for the n new classes; it shrinks to K / t after training, when the new classes' exemplars
are added.

Head-only version: the backbone is frozen, so an exemplar is its cached feature vector
(no images are kept) and the herding order of a class never changes. `per_class` budgets
keep m exemplars per class whatever the number of classes (FACIL's option). A held-out
share of each class's exemplars (`holdout`, BiC's 9:1 split) is kept apart, never
trained on, for a strategy's second stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from strategies.base import Experience, GrowingBuffers, HyperparameterError, hyperparameter

MemoryBudget = Literal["total", "per_class"]
MemorySelection = Literal["herding", "random"]


@dataclass(frozen=True)
class ReplayConfig:
    """The replay flag: inherit it in a strategy's config to let it train with exemplars."""

    memory_size: int = hyperparameter(0, "K: exemplars kept (0: no replay)")
    memory_budget: MemoryBudget = hyperparameter("total", "K in total (iCaRL) or per class")
    memory_selection: MemorySelection = hyperparameter("herding", "iCaRL herding or random")


def herding_order(features: Tensor, count: int) -> Tensor:
    """iCaRL's herding (Algorithm 4) on L2-normalised features: `count` indices, in order.

    The k-th pick minimises ‖μ − (φ(x) + Σ_{j<k} φ(p_j)) / k‖ over samples not yet picked,
    with μ the mean of the normalised features.
    """
    normalised = F.normalize(features, dim=1)  # (samples, dim)
    mean = normalised.mean(dim=0)  # (dim,)
    picked_sum = torch.zeros_like(mean)
    available = torch.ones(len(features), dtype=torch.bool, device=features.device)
    order = []
    for k in range(1, min(count, len(features)) + 1):
        distances = (mean - (picked_sum + normalised) / k).norm(dim=1)  # (samples,)
        distances[~available] = math.inf
        index = int(distances.argmin())
        order.append(index)
        available[index] = False
        picked_sum += normalised[index]
    return torch.tensor(order, dtype=torch.long, device=features.device)


def _first_per_class(targets: Tensor, keep: int) -> Tensor:
    """Mask of each class's first `keep` entries in a class-sorted, priority-ordered memory."""
    positions = torch.arange(len(targets), device=targets.device)
    is_start = torch.ones_like(targets, dtype=torch.bool)
    is_start[1:] = targets[1:] != targets[:-1]
    starts = torch.cummax(torch.where(is_start, positions, 0), dim=0).values  # (memory,)
    return positions - starts < keep


class ExemplarMemory(GrowingBuffers):
    """Features and targets of stored exemplars, sorted by class, best first within a class."""

    def __init__(
        self,
        size: int,
        budget: MemoryBudget = "total",
        selection: MemorySelection = "herding",
        holdout: float = 0.0,
    ) -> None:
        super().__init__()
        self.size, self.budget, self.selection, self.holdout = size, budget, selection, holdout
        for name in ("features", "targets", "held_out_features", "held_out_targets"):
            self.register_buffer(name, None)
        self.kept: Tensor | None = None  # this experience's samples not held out

    def per_class(self, num_seen: int) -> tuple[int, int]:
        """(trained-on, held-out) exemplars per class once `num_seen` classes are seen."""
        total = self.size if self.budget == "per_class" else self.size // num_seen
        held_out = math.ceil(self.holdout * total)
        return total - held_out, held_out

    def validate(self, strategy: str, experience_sizes: Sequence[int]) -> None:
        num_classes = sum(experience_sizes)
        trained, held_out = self.per_class(num_classes)
        least = 1 if self.holdout == 0 else 2
        if trained < 1 or (self.holdout > 0 and held_out < 1):
            accepted = least if self.budget == "per_class" else least * num_classes
            raise HyperparameterError(
                f"{strategy}: memory_size = {self.size} ({self.budget}) leaves "
                f"{trained + held_out} exemplars per class after {num_classes} classes; "
                f"use memory_size >= {accepted}"
            )

    def training_set(self, experience: Experience) -> tuple[Tensor, Tensor]:
        """Hold out new classes' samples and return the experience's remaining data followed
        by the stored exemplars (the previous experience's budget: shrunk in `update`).

        The held-out slice shrinks to the new budget here, before any second stage, so that
        it has the same number of samples for every class (BiC's balanced validation set)."""
        trained, held_out = self.per_class(experience.num_seen)
        if self.held_out_targets is not None:
            keep = _first_per_class(self.held_out_targets, held_out)
            self.held_out_features = self.held_out_features[keep]
            self.held_out_targets = self.held_out_targets[keep]
        targets = experience.targets
        self.kept = torch.ones_like(targets, dtype=torch.bool)
        for label in range(experience.num_old, experience.num_seen) if held_out else ():
            members = torch.nonzero(targets == label).squeeze(1)  # (class samples,)
            # A class smaller than its budget holds out the same share of what it has, and
            # keeps at least one sample to train on.
            count = min(math.ceil(self.holdout * min(len(members), held_out + trained)), held_out)
            count = min(count, len(members) - 1)
            # Random, from the global generator the engine seeds (BiC's paper says no more).
            chosen = members[torch.randperm(len(members))[:count].to(members.device)]
            self.kept[chosen] = False
            self.held_out_features = _append(self.held_out_features, experience.features[chosen])
            self.held_out_targets = _append(self.held_out_targets, targets[chosen])
        features, targets = experience.features[self.kept], targets[self.kept]
        if self.targets is None:
            return features, targets
        return torch.cat([features, self.features]), torch.cat([targets, self.targets])

    @torch.no_grad()
    def update(self, experience: Experience) -> None:
        """Shrink the old classes to the new budget (Algorithm 5) and select each new class's
        exemplars among its samples that were not held out (Algorithm 4)."""
        trained, _ = self.per_class(experience.num_seen)
        if self.targets is not None:
            keep = _first_per_class(self.targets, trained)
            self.features, self.targets = self.features[keep], self.targets[keep]
        kept = self.kept if self.kept is not None else torch.ones_like(experience.targets).bool()
        for label in range(experience.num_old, experience.num_seen):
            members = torch.nonzero(kept & (experience.targets == label)).squeeze(1)
            if self.selection == "herding":
                order = members[herding_order(experience.features[members], trained)]
            else:
                order = members[torch.randperm(len(members))[:trained].to(members.device)]
            self.features = _append(self.features, experience.features[order])
            self.targets = _append(self.targets, experience.targets[order])
        self.kept = None


def _append(stored: Tensor | None, new: Tensor) -> Tensor:
    return new.clone() if stored is None else torch.cat([stored, new])
