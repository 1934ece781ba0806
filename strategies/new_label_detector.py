"""New-label detectors: freeze the deployed head and add one sigmoid binary detector per new
label, trained one-vs-rest with binary cross-entropy; a detector that fires overrides the head.

Not a paper: the recipe practitioners follow to add a label to a classifier in production,
common practice in transfer-learning guides (e.g. Keras's "Transfer learning & fine-tuning"
guide: freeze the trained layers, put a new `Dense(1)` unit on top and train it with
`BinaryCrossentropy(from_logits=True)`) and in forum answers on adding a class without
retraining. Every choice headbench makes, since no paper fixes them:

- Experience 1 trains the head as `naive` does (the run's `[head] loss`). From then on
  every existing row and bias is held bit-identical (`hold_old_rows`, copied back after
  every optimizer step), so earlier detectors are frozen like the first head.
- A new class's detector is its own row and bias of the head, z_c = w_cᵀx + b_c, and
  p_c = σ(z_c). The detectors of one experience are trained together by the engine's
  minibatch loop on the sum of their binary cross-entropies (`one_vs_rest_bce` over the
  new columns): their parameters are disjoint and SGD's and Adam's updates elementwise,
  so each follows exactly the trajectory of training it alone on the same minibatches.
- Positives of detector c: its class's training samples. Negatives: everything else in the
  training set: the other new classes of the experience, the exemplar memory
  (`memory_size > 0`, strategies.memory, iCaRL's herding by default), and Gaussian
  pseudo-negatives (`pseudo_negatives > 0`): for each old class, round(r · n̄) draws from
  N(μ_k, Σ), n̄ the experience's mean number of samples per new class, μ_k the class's
  training mean and Σ the pooled within-class covariance of all classes seen before
  (Σ_k Σ_i (x_i − μ_k)(x_i − μ_k)ᵀ / N, the maximum-likelihood estimate SLDA also keeps:
  statistics only, no sample is stored). Draws use the engine's seeded global generator,
  on the CPU. Both kinds of negatives may be on at once; the resolved config in the run
  record says which were used. A detector with no negatives (a single new class, no memory,
  `pseudo_negatives = 0`) is refused. The BCE is unweighted unless `training.
  class_weighting = "balanced"` weights samples by class, as for every strategy.
- Prediction over all seen classes: c* = the detector with the largest logit among all
  detectors ever added (every later experience's detectors join; none is retired). If
  p_{c*} > t_{c*} the prediction is c*; otherwise it is the argmax of the frozen head's
  first-experience rows (earlier detectors never take part in that argmax: a detector
  speaks only through its threshold). p > t is tested as z > log(t / (1 − t)), the same
  test without float32's rounding of σ to 1. Ties go to the earliest class.
- `threshold` is one value for every detector (default 0.5, the sigmoid's even odds), or
  "calibrated": before training, `calibration_share` of every class in the training set
  (new classes, exemplars, pseudo-negatives; at least 1 sample, never a class's last) is
  held out; after training each new detector takes the threshold on its logit that
  maximises balanced accuracy (TPR + TNR) on that slice, among the midpoints between
  consecutive distinct held-out logits (ties: the one nearest even odds, then the lower).
  No test data is touched. A detector whose slice lacks positives or negatives keeps 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from strategies.base import (
    HEAD_LOSSES,
    Experience,
    Head,
    HyperparameterError,
    Strategy,
    classification_loss,
    hyperparameter,
    one_vs_rest_bce,
    require,
)
from strategies.memory import ReplayConfig
from strategies.registry import register


@dataclass(frozen=True)
class NewLabelDetectorConfig(ReplayConfig):
    threshold: float | Literal["calibrated"] = hyperparameter(
        0.5, "t in (0, 1): a detector wins when its probability exceeds t; or 'calibrated'"
    )
    pseudo_negatives: float = hyperparameter(
        1.0, "r: Gaussian negatives per old class, × mean samples per new class (0: none)"
    )
    calibration_share: float = hyperparameter(
        0.2, "with threshold = 'calibrated': share of each class held out to choose it"
    )

    def __post_init__(self) -> None:
        if self.threshold != "calibrated":
            require(
                0 < self.threshold < 1,
                f"strategies.new_label_detector.threshold = {self.threshold} is not accepted; "
                "use a probability in (0, 1) or 'calibrated'",
            )
        require(
            self.pseudo_negatives >= 0,
            f"strategies.new_label_detector.pseudo_negatives = {self.pseudo_negatives} "
            "must be >= 0",
        )
        require(
            0 < self.calibration_share < 1,
            f"strategies.new_label_detector.calibration_share = {self.calibration_share} "
            "must be in (0, 1)",
        )


def gaussian_samples(means: Tensor, covariance: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """`count` draws from N(μ_k, Σ) for every row μ_k of `means`, and their classes k.

    Σ = V Λ Vᵀ (eigendecomposition, so a singular Σ, e.g. a constant feature, is fine);
    x = μ_k + V Λ^½ ε with ε ~ N(0, I) from the global generator, on the CPU in float64.
    """
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance.cpu().double())  # (dim,), (dim, dim)
    root = eigenvectors * eigenvalues.clamp(min=0).sqrt()  # (dim, dim), root rootᵀ = Σ
    noise = torch.randn(len(means), count, len(covariance), dtype=torch.float64)  # (k, n, dim)
    samples = means.cpu().double()[:, None, :] + noise @ root.T  # (k, n, dim)
    classes = torch.arange(len(means)).repeat_interleave(count)  # (k·n,)
    return samples.reshape(-1, len(covariance)).to(means.device), classes.to(means.device)


def calibrated_threshold(positives: Tensor, negatives: Tensor) -> float:
    """The logit threshold with the highest TPR + TNR (fire when z > threshold), among the
    midpoints of consecutive distinct scores; ties: nearest 0 (even odds), then the lower.
    0.0 (p = 0.5) when either side is empty or all scores are equal."""
    scores = torch.cat([positives, negatives]).double().unique(sorted=True)  # (m,)
    if len(positives) == 0 or len(negatives) == 0 or len(scores) < 2:
        return 0.0
    candidates = (scores[1:] + scores[:-1]) / 2  # (m - 1,)
    positives, negatives = positives.double().sort().values, negatives.double().sort().values
    fired = len(positives) - torch.searchsorted(positives, candidates, right=True)  # z > c
    rejected = torch.searchsorted(negatives, candidates, right=True)  # z <= c
    balanced = fired / len(positives) + rejected / len(negatives)  # (m - 1,)
    best = torch.nonzero(balanced == balanced.max()).squeeze(1)  # (ties,)
    nearest = best[candidates[best].abs().argmin()]  # first of equal |c|: the lower one
    return float(candidates[nearest])


@register("new_label_detector")
class NewLabelDetector(Strategy):
    """Frozen head; one sigmoid detector per new class; a confident detector overrides."""

    paper = "Common practice (frozen head + one sigmoid detector per new label); no paper"
    display_name = "New-label detectors"
    Config = NewLabelDetectorConfig
    head_kinds = ("linear",)  # a detector is one row and bias, scored on its own
    head_losses = HEAD_LOSSES  # the first experience's head; detectors are always sigmoid

    def __init__(self, config: NewLabelDetectorConfig | None = None) -> None:
        super().__init__(config)
        self.register_buffer("means", None)  # (seen, dim) float64, μ_k
        self.register_buffer("counts", None)  # (seen,) float64
        self.register_buffer("scatter", None)  # (dim, dim) float64, Σ_k Σ_i (x − μ_k)(x − μ_k)ᵀ
        self.register_buffer("threshold_logits", None)  # (detectors,) log(t / (1 − t))
        self.base_classes = 0  # classes of the first experience: the frozen head's own
        self.num_old = 0
        self._held_out: tuple[Tensor, Tensor] | None = None  # this experience's slice

    @property
    def freezes_old_rows(self) -> bool:
        return True  # every row before the experience: the head and earlier detectors

    def get_extra_state(self) -> dict[str, int]:
        return {"base_classes": self.base_classes, "num_old": self.num_old}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.base_classes, self.num_old = state["base_classes"], state["num_old"]

    def validate(self, experience_sizes: Sequence[int]) -> None:
        super().validate(experience_sizes)
        if self.memory is None and self.config.pseudo_negatives == 0:
            for index, size in enumerate(experience_sizes[1:], start=1):
                if size == 1:
                    raise HyperparameterError(
                        f"new_label_detector: experience {index}'s single new class has no "
                        "negatives with memory_size = 0 and pseudo_negatives = 0; use "
                        "pseudo_negatives > 0, memory_size > 0 or increments of at least 2"
                    )

    @property
    def covariance(self) -> Tensor:
        return self.scatter / self.counts.sum()  # (dim, dim), pooled within-class Σ

    def training_set(self, experience: Experience) -> tuple[Tensor, Tensor]:
        """New data and exemplars (the replay flag), then pseudo-negatives; with a calibrated
        threshold, less the held-out slice."""
        features, targets = super().training_set(experience)  # (n, dim), (n,)
        self._held_out = None
        if experience.num_old == 0:
            return features, targets
        ratio = self.config.pseudo_negatives
        if ratio > 0:
            count = max(1, round(ratio * len(experience.targets) / experience.num_new))
            drawn, classes = gaussian_samples(self.means, self.covariance, count)
            features = torch.cat([features, drawn.to(features.dtype)])
            targets = torch.cat([targets, classes])
        if self.config.threshold != "calibrated":
            return features, targets
        held = torch.zeros_like(targets, dtype=torch.bool)
        for label in targets.unique().tolist():
            members = torch.nonzero(targets == label).squeeze(1)  # (class samples,)
            share = math.ceil(self.config.calibration_share * len(members))
            count = min(max(share, 1), len(members) - 1)
            held[members[torch.randperm(len(members))[:count].to(members.device)]] = True
        self._held_out = features[held], targets[held]
        return features[~held], targets[~held]

    def before_experience(self, head: Head, experience: Experience) -> None:
        self.num_old = experience.num_old
        if experience.index == 0:
            self.base_classes = experience.num_seen

    def loss(self, logits: Tensor, targets: Tensor, features: Tensor, head: Head) -> Tensor:
        num_old = self.num_old
        if num_old == 0:  # the first experience: the head, as naive
            return classification_loss(
                logits, targets, class_weights=self.class_weights, loss=self.head_loss
            )
        return one_vs_rest_bce(logits[:, num_old:], targets, num_old, self.class_weights)

    @torch.no_grad()
    def after_experience(self, head: Head, experience: Experience) -> None:
        if self.config.pseudo_negatives > 0:
            self._add_statistics(experience)
        if experience.num_old == 0:
            self.threshold_logits = head.weight.new_zeros(0)
            return
        new = experience.num_new
        if self.config.threshold != "calibrated":
            value = math.log(self.config.threshold / (1 - self.config.threshold))
            chosen = torch.full((new,), value)
        else:
            features, targets = self._held_out
            logits = head(features)  # (held out, seen)
            chosen = torch.tensor(
                [
                    calibrated_threshold(
                        logits[targets == label, label], logits[targets != label, label]
                    )
                    for label in range(experience.num_old, experience.num_seen)
                ]
            )
        chosen = chosen.to(self.threshold_logits)  # (new,)
        self.threshold_logits = torch.cat([self.threshold_logits, chosen])
        self._held_out = None

    def _add_statistics(self, experience: Experience) -> None:
        """Means of the experience's classes and their within-class scatter."""
        features, targets = experience.features.double(), experience.targets  # (n, dim), (n,)
        labels = targets - experience.num_old  # (n,) in 0 .. new − 1
        one_hot = F.one_hot(labels, experience.num_new).double()  # (n, new)
        counts = one_hot.sum(dim=0)  # (new,)
        means = one_hot.T @ features / counts[:, None]  # (new, dim)
        residuals = features - means[labels]  # (n, dim)
        scatter = residuals.T @ residuals  # (dim, dim)
        if self.means is None:
            self.means, self.counts, self.scatter = means, counts, scatter
        else:
            self.means = torch.cat([self.means, means])
            self.counts = torch.cat([self.counts, counts])
            self.scatter = self.scatter + scatter

    def predict(self, head: Head, features: Tensor) -> Tensor:
        """Scores whose argmax is the decision rule: the losing block (the head's columns
        when a detector fires, the detectors' otherwise) is shifted below the row's minimum."""
        logits = head(features)  # (batch, seen)
        base = self.base_classes
        if logits.shape[1] <= base:
            return logits
        best, which = logits[:, base:].max(dim=1)  # (batch,): first of tied maxima
        fires = best > self.threshold_logits[which]  # (batch,)
        span = logits.max(dim=1).values - logits.min(dim=1).values + 1  # (batch,)
        is_detector = torch.arange(logits.shape[1], device=logits.device) >= base  # (seen,)
        loses = is_detector[None, :] != fires[:, None]  # (batch, seen)
        return logits - loses * span[:, None]  # (batch, seen)
