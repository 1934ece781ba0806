"""Naive head expansion: fine-tune the growing head on each experience's data alone.

The lower bound of class-incremental learning (called Finetune in PyCIL and FACIL,
Naive in Avalanche): new rows are appended, old rows kept and trained further, and the
objective is cross-entropy over all seen classes on the new data only. Nothing protects
old classes, so their rows and (with a bias) their biases are pushed down by every
experience. No paper to follow; bias: trained like the weights. With the replay flag
(`memory_size > 0`) it is iCaRL-style rehearsal, registered as `replay`.
"""

from __future__ import annotations

from dataclasses import dataclass

from strategies.base import HEAD_LOSSES, FreezeConfig, Strategy
from strategies.memory import ReplayConfig
from strategies.registry import register


@dataclass(frozen=True)
class NaiveConfig(FreezeConfig, ReplayConfig):
    """Naive has no hyperparameters of its own; `memory_size > 0` adds exemplar replay."""


@register("naive")
class Naive(Strategy):
    """Cross-entropy over all seen classes on the current experience's data."""

    paper = "Lower bound (fine-tuning); no paper"
    display_name = "Fine-tuning"
    Config = NaiveConfig
    head_losses = HEAD_LOSSES  # the base loss follows `[head] loss`
