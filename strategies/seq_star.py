"""SEQ*: sequential fine-tuning of the head with the old classes' rows frozen.

Zheng, Qiu & Ma, "Learn or Recall? Revisiting Incremental Learning with Pre-trained
Language Models", ACL 2024 (code: zzz47zzz/codebase-for-incremental-learning-with-llm).
Their finding: most of what sequential fine-tuning forgets is drift of the classifier, not
of the frozen encoder's features. SEQ* freezes the encoder after a warm-up on the first
task, trains each new task's classifier with cross-entropy over all seen classes on the
new data while the old classifiers stay fixed (`SEQ_fix_old_classifier`: their
learning rate is set to 0), and uses a cosine classifier for class-incremental learning
without old data.

Head-only version: the encoder is frozen from the start (headbench's backbone); the
first experience trains as `naive`; afterwards the old rows, their biases and a cosine
head's σ are held (`freeze_old_rows`, strategies.base.FreezeConfig, the same flag as on
naive, replay, ewc, lwf, weight_aligning and bic). Not head-only, so not done: the
warm-up (fine-tuning the encoder on the first task) and pre-allocated classifiers for
future classes (`SEQ_preallocated_classifier`: logits of classes not yet seen take part
in the softmax). The head kind is the run's `[head] kind`: set "cosine" for the paper's
choice without old data; a linear head is accepted. Their cosine classifier has no scale
(logits are plain cosines); headbench's learns σ on the first experience and holds it
afterwards, since it multiplies the old classes' logits too (one positive factor shared
by every logit never changes a prediction; it sets the softmax's sharpness). Their
optimizer (AdamW, classifier lr 1e-3) is the run's `[training]` table here. Bias: their
linear classifier has one (nn.Linear); old biases are held with the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from strategies.base import hyperparameter
from strategies.naive import Naive, NaiveConfig
from strategies.registry import register


@dataclass(frozen=True)
class SeqStarConfig(NaiveConfig):
    freeze_old_rows: bool = hyperparameter(
        True, "keep old classes' rows, biases (a cosine head's σ) fixed (false: naive)"
    )


@register("seq_star")
class SeqStar(Naive):
    """Cross-entropy over all seen classes on new data; only the new rows train."""

    paper = "Zheng, Qiu & Ma, Learn or Recall? (SEQ*), ACL 2024"
    display_name = "SEQ*"
    cite_keys = ("zheng2024learn",)
    Config = SeqStarConfig
