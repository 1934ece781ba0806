"""Exemplar replay: fine-tune the head on each experience's data plus stored exemplars.

The rehearsal baseline of class-incremental learning: iCaRL's memory (Rebuffi et al.,
"iCaRL: Incremental Classifier and Representation Learning", CVPR 2017) with K = 2000
exemplars in total chosen by herding, the budget papers use on CIFAR-100, trained with
cross-entropy over all seen classes on the union of new data and memory (PyCIL's and
FACIL's "Finetune + exemplars"; Avalanche's Naive with a ReplayPlugin). This is naive
with the replay flag on; `wa`, `lwf` and `ewc` take the same `memory_*` keys. Head-only
version: exemplars are cached feature vectors (strategies.memory). iCaRL's own
classifier (nearest mean of exemplars) is `ncm`; its distillation loss is not used here.
"""

from __future__ import annotations

from dataclasses import dataclass

from strategies.base import FreezeConfig, hyperparameter
from strategies.memory import ReplayConfig
from strategies.naive import Naive
from strategies.registry import register


@dataclass(frozen=True)
class ReplayStrategyConfig(FreezeConfig, ReplayConfig):
    memory_size: int = hyperparameter(2000, "K: exemplars kept (iCaRL's CIFAR-100 budget)")


@register("replay")
class Replay(Naive):
    """Cross-entropy over all seen classes on new data plus the exemplar memory."""

    paper = "Rebuffi et al., iCaRL, CVPR 2017 (exemplar memory and herding)"
    display_name = "Replay"
    cite_keys = ("rebuffi2017icarl",)
    Config = ReplayStrategyConfig
