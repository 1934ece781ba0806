"""Nearest class mean: a class scores by the similarity of a feature to the mean of that
class's training features (its prototype); nothing is trained.

Mensink et al., "Distance-Based Image Classification: Generalizing to New Classes at
Near-Zero Cost", TPAMI 2013 (the nearest class mean classifier); Rebuffi et al., "iCaRL:
Incremental Classifier and Representation Learning", CVPR 2017
(nearest-mean-of-exemplars classification), as used on a frozen pretrained backbone by
Zhou et al., "Revisiting Class-Incremental Learning with Pre-Trained Models:
Generalizability and Adaptivity are All You Need", 2023 (SimpleCIL).

The defaults are SimpleCIL's: prototypes are means of the raw features and the score is the
cosine similarity between a feature and each prototype. iCaRL's classifier is
`normalize = true, metric = "euclidean"`: features are L2-normalised, the mean of a class's
normalised features is normalised again (iCaRL re-normalises the results of operations on
features, averages included), and the score is minus the Euclidean distance (on unit
vectors, the same ranking as cosine).

Head-only version: iCaRL averages a bounded exemplar set per class, recomputed as its
backbone changes; with a frozen backbone the mean over all of a class's training features
never changes, so it is taken once, in the class's experience, and no exemplars are kept
(as in SimpleCIL). The head's rows receive the prototypes (bias 0), so the run record's
per-class weight norms are the prototypes' norms; `predict` does not use the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from strategies.base import Experience, Head, Strategy, hyperparameter
from strategies.registry import register


@dataclass(frozen=True)
class NCMConfig:
    metric: Literal["cosine", "euclidean"] = hyperparameter(
        "cosine", "cosine similarity (SimpleCIL) or minus Euclidean distance (iCaRL)"
    )
    normalize: bool = hyperparameter(
        False, "L2-normalise features and renormalise the class means (iCaRL)"
    )


def class_means(features: Tensor, targets: Tensor, num_old: int, num_seen: int) -> Tensor:
    """Mean feature of each class num_old .. num_seen - 1, accumulated in float64.

    A one-hot matrix product rather than `index_add_`, whose atomic adds on a GPU would
    make the sums (and so the same-seed results) vary from run to run.
    """
    one_hot = F.one_hot(targets - num_old, num_seen - num_old).double()  # (samples, new)
    sums = one_hot.T @ features.double()  # (new, dim)
    return sums / one_hot.sum(dim=0)[:, None]  # (new, dim)


@register("ncm")
class NCM(Strategy):
    """Prototype classifier: class means of the features, nearest by cosine or distance."""

    paper = "Rebuffi et al., iCaRL, CVPR 2017; Zhou et al., SimpleCIL, 2023"
    display_name = "NCM"
    cite_keys = ("mensink2013distance", "rebuffi2017icarl", "zhou2024revisiting")
    Config = NCMConfig
    trains_head = False

    def __init__(self, config: NCMConfig | None = None) -> None:
        super().__init__(config)
        self.register_buffer("prototypes", None)  # (seen, dim)

    def _prepare(self, features: Tensor) -> Tensor:
        return F.normalize(features, dim=1) if self.config.normalize else features

    def expand(self, head: Head, num_new: int) -> None:
        head.append_rows(torch.zeros(num_new, head.in_features))  # filled after the experience

    @torch.no_grad()
    def after_experience(self, head: Head, experience: Experience) -> None:
        features = self._prepare(experience.features)  # (samples, dim)
        means = class_means(features, experience.targets, experience.num_old, experience.num_seen)
        means = self._prepare(means).to(features.dtype)  # (new, dim)
        old = means[:0] if self.prototypes is None else self.prototypes
        self.prototypes = torch.cat([old, means])  # (seen, dim)
        head.weight.copy_(self.prototypes)

    def predict(self, head: Head, features: Tensor) -> Tensor:
        features = self._prepare(features)  # (batch, dim)
        if self.config.metric == "cosine":
            prototypes = F.normalize(self.prototypes, dim=1)  # (seen, dim)
            return F.normalize(features, dim=1) @ prototypes.T  # (batch, seen)
        return -torch.cdist(features, self.prototypes)  # (batch, seen)
