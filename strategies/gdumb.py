"""GDumb: a greedy class-balanced memory of k samples, and a head trained from scratch on the
memory alone after every experience.

Prabhu, Torr & Dokania, "GDumb: A Simple Approach that Questions Our Progress in Continual
Learning", ECCV 2020, Sec. 3: samples arrive one at a time; while fewer than k are stored a
sample is added; once the memory is full, a sample of class y is added only when class y has
fewer than k / |Y| stored (|Y| the classes seen so far, y included), and then a randomly
chosen stored sample of the largest class is removed. The learner is re-initialised and
trained on the memory only; the stream's data are not trained on. k = 2000 is the paper's
CIFAR-100 memory (the authors' scripts: `--memory_size 2000`).

Head-only version: a stored sample is its cached feature vector; the model re-initialised
is the head (all seen classes' rows drawn anew), trained with the run's `[training]` table
(the paper: SGD with warm restarts, cutmix, 256 passes; those belong to a backbone's
training). Samples arrive in the order the experience's data are stored, as in the authors'
loader, which keeps each class's first samples (`[:num_memory_samples]`); among the largest
classes the first in arrival order gives up a sample (the paper does not say which), drawn
uniformly from the global generator the engine seeds. The memory is kept sorted by class,
each class in arrival order, so with k at least the training set GDumb is `joint`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from strategies.base import (
    HEAD_LOSSES,
    Experience,
    Head,
    HyperparameterError,
    Strategy,
    hyperparameter,
    initial_rows,
    require,
)
from strategies.registry import register


@dataclass(frozen=True)
class GDumbConfig:
    capacity: int = hyperparameter(2000, "k: samples the greedy class-balanced memory holds")

    def __post_init__(self) -> None:
        require(self.capacity >= 1, f"strategies.gdumb.capacity = {self.capacity} must be >= 1")


def greedy_class_balanced(
    stored: Sequence[int], arriving: Sequence[int], capacity: int
) -> list[list[int]]:
    """The paper's sampler over a stream: which samples each class keeps.

    Args:
        stored: classes of the samples already in memory (positions 0 .. len − 1).
        arriving: classes of the stream's samples (positions len(stored) onwards).
        capacity: k.

    Returns:
        For each class seen (index = class), the positions it keeps, in arrival order.
    """
    kept: list[list[int]] = []
    size = 0
    for position, label in enumerate([*stored, *arriving]):
        while len(kept) <= label:
            kept.append([])
        if position < len(stored) or size < capacity:
            kept[label].append(position)
            size += 1
            continue
        seen = sum(1 for members in kept if members) + (0 if kept[label] else 1)
        if len(kept[label]) >= capacity / seen:
            continue
        largest = max(range(len(kept)), key=lambda c: len(kept[c]))  # the first of the largest
        evicted = int(torch.randint(len(kept[largest]), ()))
        kept[largest].pop(evicted)
        kept[label].append(position)
    return kept


@register("gdumb")
class GDumb(Strategy):
    """Greedy class-balanced memory; the head re-initialised and trained on it alone."""

    display_name = "GDumb"
    cite_keys = ("prabhu2020gdumb",)

    paper = "Prabhu, Torr & Dokania, GDumb, ECCV 2020"
    Config = GDumbConfig
    head_losses = HEAD_LOSSES  # the base loss follows `[head] loss`

    def __init__(self, config: GDumbConfig | None = None) -> None:
        super().__init__(config)
        self.register_buffer("memory_features", None)  # (stored, dim)
        self.register_buffer("memory_targets", None)  # (stored,)

    def validate(self, experience_sizes: Sequence[int]) -> None:
        super().validate(experience_sizes)
        if self.config.capacity < sum(experience_sizes):
            raise HyperparameterError(
                f"gdumb: capacity = {self.config.capacity} cannot keep a sample of each of "
                f"{sum(experience_sizes)} classes; use capacity >= {sum(experience_sizes)}"
            )

    def expand(self, head: Head, num_new: int) -> None:
        num_seen = head.num_classes + num_new
        head.reset()  # the paper re-initialises the learner before training on the memory
        head.append_rows(initial_rows(num_seen, head.in_features))

    @torch.no_grad()
    def training_set(self, experience: Experience) -> tuple[Tensor, Tensor]:
        """Pass the experience's samples through the sampler; train on the memory alone."""
        features, targets = experience.features, experience.targets  # (n, dim), (n,)
        if self.memory_targets is not None:
            features = torch.cat([self.memory_features, features])  # (stored + n, dim)
            targets = torch.cat([self.memory_targets, targets])  # (stored + n,)
        stored = 0 if self.memory_targets is None else len(self.memory_targets)
        labels = targets.tolist()
        kept = greedy_class_balanced(labels[:stored], labels[stored:], self.config.capacity)
        positions = torch.tensor([p for members in kept for p in members], dtype=torch.long)
        positions = positions.to(features.device)  # (memory,)
        self.memory_features, self.memory_targets = features[positions], targets[positions]
        return self.memory_features, self.memory_targets
