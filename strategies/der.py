"""Dark Experience Replay: a reservoir memory of samples with the logits the head gave them,
replayed through an MSE to those logits (DER) and a cross-entropy to their labels (DER++).

Buzzega, Boschini, Porrello, Abati & Calderara, "Dark Experience for General Continual
Learning: a Strong, Simple Baseline", NeurIPS 2020. Eq. 4: L = CE(current batch)
+ α·E_{(x, z) ~ M} ‖z − h(x)‖²; Eq. 6 (DER++) adds β·E_{(x', y') ~ M} CE(y', h(x')) on a
second, independent draw from the memory. The memory is filled by reservoir sampling (the
paper's Algorithm 2): the n-th sample of the stream is stored with probability M/n in a slot
drawn uniformly, so at every moment each sample seen so far is in the memory with
probability M/n. As in the authors' code (mammoth, `models/der.py`, `utils/buffer.py`) every
training step draws the memory minibatches (uniformly, without replacement; as many as the
current minibatch) from the memory as it was before the step, then stores the step's samples
with the logits computed in that step's forward pass; the memory is used from the second
step on, within the first experience too, and every epoch's presentation of a sample counts
as a new sample of the stream. The MSE is averaged over samples and logit columns
(`F.mse_loss`, as mammoth). Defaults: α = 0.3 is DER's value for Seq-CIFAR-10 at every
buffer size in the paper's best hyperparameters (mammoth's `utils/best_args.py`) and
mammoth's value for Seq-CIFAR-100 with buffers 500 and 2000; β = 0.5 is DER++'s value for
Seq-CIFAR-10 and Seq-TinyImageNet with buffer 500 and for Seq-CIFAR-100 with 500 and 2000.
The paper tunes DER++'s α separately (0.1 or 0.2 in those tables): one `alpha` serves both
variants here, so `plus = true` at the defaults is not a row of the paper's tables.
M = 2000 is mammoth's largest Seq-CIFAR-100 buffer and the suite's memory size.
`sampling = "class_balanced"` replaces the reservoir by GDumb's greedy class-balanced rule
(Prabhu et al., ECCV 2020; strategies/gdumb.py), applied sample by sample as they arrive.

Head-only version: a stored sample is its cached feature vector. Mammoth's network has an
output for every class of the dataset from the start, so its stored logits have every
column, those of classes not yet seen included, and the MSE covers them all; headbench's
head grows, so a stored vector has the columns of the classes seen when it was stored and
the MSE is taken over those columns only (averaged over the entries compared). No class
weights in the memory terms (`training.class_weighting` weighs the current minibatch's
cross-entropy only). The memory's random draws come from a stream of its own, seeded from
the run's seed and kept in a buffer, so a run is reproducible and `state_dict` carries it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from strategies.base import (
    Experience,
    Head,
    HyperparameterError,
    Strategy,
    classification_loss,
    hyperparameter,
    require,
)
from strategies.registry import register

Sampling = Literal["reservoir", "class_balanced"]


@dataclass(frozen=True)
class DERConfig:
    capacity: int = hyperparameter(2000, "M: samples the memory holds")
    alpha: float = hyperparameter(0.3, "α: weight of the MSE to stored logits, Eq. 4")
    beta: float = hyperparameter(0.5, "β: weight of DER++'s cross-entropy on stored labels")
    plus: bool = hyperparameter(False, "DER++: add β·CE on a second memory minibatch, Eq. 6")
    sampling: Sampling = hyperparameter("reservoir", "reservoir (the paper) or class-balanced")

    def __post_init__(self) -> None:
        require(self.capacity >= 1, f"strategies.der.capacity = {self.capacity} must be >= 1")
        require(self.alpha >= 0, f"strategies.der.alpha = {self.alpha} must be >= 0")
        require(self.beta >= 0, f"strategies.der.beta = {self.beta} must be >= 0")


def reservoir_slots(num_seen: int, capacity: int, uniforms: Tensor) -> list[tuple[int, int]]:
    """Algorithm R for a minibatch: (slot, position in the batch) of each stored sample.

    The sample at batch position k is the (num_seen + k + 1)-th of the stream: stored in
    slot num_seen + k while the memory has room, else in slot r = ⌊u·(num_seen + k + 1)⌋ when
    r < capacity (probability capacity / (num_seen + k + 1)). A later sample of the batch
    drawn into the same slot replaces an earlier one, as it would one by one.
    """
    stored: dict[int, int] = {}
    for position, uniform in enumerate(uniforms.tolist()):
        seen = num_seen + position
        slot = seen if seen < capacity else int(uniform * (seen + 1))
        if slot < capacity:
            stored[slot] = position
    return sorted(stored.items())


def dark_mse(outputs: Tensor, stored_logits: Tensor, columns: Tensor) -> Tensor:
    """Mean squared difference over the columns each stored vector has.

    Args:
        outputs: (batch, seen) the head's logits now.
        stored_logits: (batch, width) logits at storage time, zero-padded to width ≤ seen.
        columns: (batch,) how many classes the head had when each was stored.
    """
    width = stored_logits.shape[1]
    mask = torch.arange(width, device=columns.device)[None, :] < columns[:, None]  # (batch, width)
    squared = (outputs[:, :width] - stored_logits).square() * mask  # (batch, width)
    return squared.sum() / mask.sum()


@register("der")
class DER(Strategy):
    """Cross-entropy plus an MSE to the logits stored with replayed samples (and their CE)."""

    paper = "Buzzega et al., Dark Experience for General Continual Learning, NeurIPS 2020"
    display_name = "DER"
    cite_keys = ("buzzega2020dark",)
    bibtex = (
        """@inproceedings{buzzega2020dark,
  author = {Buzzega, Pietro and Boschini, Matteo and Porrello, Angelo and Abati, Davide
    and Calderara, Simone},
  title = {Dark Experience for General Continual Learning: a Strong, Simple Baseline},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  volume = {33},
  pages = {15920--15930},
  year = {2020}
}""",
    )
    Config = DERConfig
    batchable: ClassVar[bool] = False  # the loss draws from and writes to the memory

    def __init__(self, config: DERConfig | None = None) -> None:
        super().__init__(config)
        for name in ("memory_features", "memory_targets", "memory_logits", "memory_columns"):
            self.register_buffer(name, None)  # (stored, dim), (stored,), (stored, seen), (stored,)
        self.register_buffer("num_seen", torch.zeros((), dtype=torch.long))  # n: stream so far
        self.register_buffer("random_state", None)  # the memory's own random stream

    @classmethod
    def paper_name(cls, config: DERConfig) -> tuple[str, tuple[str, ...]]:
        return ("DER++" if config.plus else "DER"), cls.cite_keys

    def validate(self, experience_sizes: Sequence[int]) -> None:
        super().validate(experience_sizes)
        if self.config.capacity < sum(experience_sizes):
            raise HyperparameterError(
                f"der: capacity = {self.config.capacity} cannot keep a sample of each of "
                f"{sum(experience_sizes)} classes; use capacity >= {sum(experience_sizes)}"
            )

    @property
    def stored(self) -> int:
        return 0 if self.memory_targets is None else len(self.memory_targets)

    def before_experience(self, head: Head, experience: Experience) -> None:
        if self.random_state is None:  # seeded from the run's stream (the engine seeds it)
            seed = int(torch.randint(2**62, ()))
            self.random_state = torch.Generator().manual_seed(seed).get_state()
        if self.memory_logits is not None:  # stored vectors keep their columns; pad the rest
            self.memory_logits = F.pad(
                self.memory_logits, (0, head.num_classes - self.memory_logits.shape[1])
            )

    def _draw(self, count: int, generator: torch.Generator) -> Tensor:
        """Indices of min(count, stored) memory samples, uniformly without replacement."""
        order = torch.randperm(self.stored, generator=generator)[:count]
        return order.to(self.memory_targets.device)  # (drawn,)

    def loss(self, logits: Tensor, targets: Tensor, features: Tensor, head: Head) -> Tensor:
        config = self.config
        loss = classification_loss(logits, targets, class_weights=self.class_weights)
        generator = torch.Generator()
        generator.set_state(self.random_state.cpu())  # a CPU stream on any device
        if self.stored > 0:
            drawn = self._draw(len(targets), generator)
            outputs = head(self.memory_features[drawn])  # (drawn, seen)
            mse = dark_mse(outputs, self.memory_logits[drawn], self.memory_columns[drawn])
            loss = loss + config.alpha * mse
            if config.plus:
                drawn = self._draw(len(targets), generator)
                outputs = head(self.memory_features[drawn])  # (drawn, seen)
                loss = loss + config.beta * F.cross_entropy(outputs, self.memory_targets[drawn])
        self._store(features, targets, logits.detach(), generator)
        self.random_state = generator.get_state()
        return loss

    @torch.no_grad()
    def _store(
        self, features: Tensor, targets: Tensor, logits: Tensor, generator: torch.Generator
    ) -> None:
        if self.memory_targets is None:
            self.memory_features = features[:0].clone()
            self.memory_targets = targets[:0].clone()
            self.memory_logits = logits[:0].clone()
            self.memory_columns = targets[:0].clone()
        num_seen = int(self.num_seen)
        if self.config.sampling == "reservoir":
            uniforms = torch.rand(len(targets), generator=generator, dtype=torch.float64)
            pairs = reservoir_slots(num_seen, self.config.capacity, uniforms)
        else:
            pairs = self._class_balanced_slots(targets, generator)
        self.num_seen += len(targets)
        if not pairs:
            return
        slots, positions = torch.tensor(pairs, device=targets.device).T  # (stored now,) each
        grow = int(slots.max()) + 1 - self.stored
        if grow > 0:
            self.memory_features = torch.cat([self.memory_features, features[:1].expand(grow, -1)])
            self.memory_targets = torch.cat([self.memory_targets, targets[:1].expand(grow)])
            self.memory_logits = torch.cat([self.memory_logits, logits[:1].expand(grow, -1)])
            self.memory_columns = torch.cat([self.memory_columns, targets[:1].expand(grow)])
        self.memory_features[slots] = features[positions]
        self.memory_targets[slots] = targets[positions]
        self.memory_logits[slots] = logits[positions]
        self.memory_columns[slots] = logits.shape[1]

    def _class_balanced_slots(
        self, targets: Tensor, generator: torch.Generator
    ) -> list[tuple[int, int]]:
        """GDumb's rule per arriving sample: added while there is room; afterwards a sample of
        class y only when y holds fewer than M / |Y| (|Y| the classes stored, y included),
        replacing a uniformly drawn sample of the largest class (the first of tied ones)."""
        capacity, size = self.config.capacity, self.stored
        slots_of: dict[int, list[int]] = {}
        for slot, label in enumerate(self.memory_targets.tolist()):
            slots_of.setdefault(label, []).append(slot)
        stored: dict[int, int] = {}
        for position, label in enumerate(targets.tolist()):
            if size < capacity:
                slot, size = size, size + 1
            else:
                classes = len(slots_of) + (0 if label in slots_of else 1)
                if len(slots_of.get(label, ())) >= capacity / classes:
                    continue
                largest = max(sorted(slots_of), key=lambda c: len(slots_of[c]))
                members = slots_of[largest]
                slot = members.pop(int(torch.randint(len(members), (), generator=generator)))
                if not members:
                    del slots_of[largest]
            slots_of.setdefault(label, []).append(slot)
            stored[slot] = position
        return sorted(stored.items())
