"""Joint training: the upper bound, a head trained from scratch on all data seen so far.

Not a continual method but the reference every table needs. At experience i the head is
re-initialised over all classes seen so far and trained on the union of experiences
0..i, with the same optimizer, epochs and batch size as the other strategies, so
row i of its accuracy matrix is what i.i.d. training on the same data and budget gives.
(Avalanche's JointTraining trains once on the whole stream; training after every
experience gives a full accuracy matrix.) Bias: trained like the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from strategies.base import HEAD_LOSSES, Head, Strategy, initial_rows
from strategies.registry import register


@dataclass(frozen=True)
class JointConfig:
    """Joint has no hyperparameters."""


@register("joint")
class Joint(Strategy):
    """Cross-entropy over all seen classes on all seen data, head re-initialised."""

    paper = "Upper bound (i.i.d. training on all seen data)"
    display_name = "Joint"
    Config = JointConfig
    trains_on_all_seen = True
    head_losses = HEAD_LOSSES  # the base loss follows `[head] loss`

    def expand(self, head: Head, num_new: int) -> None:
        num_seen = head.num_classes + num_new
        head.reset()
        head.append_rows(initial_rows(num_seen, head.in_features))
