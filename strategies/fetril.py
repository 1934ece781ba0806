"""FeTrIL: features of old classes are imitated by translating new-class features by the
difference of class means; a linear classifier is fit on real new and pseudo old features.

Petit et al., "FeTrIL: Feature Translation for Exemplar-Free Class-Incremental Learning",
WACV 2023, Eq. 1: f̂(C_o) = f(C_n) + μ(C_o) − μ(C_n), and the authors' code
(github.com/GregoirePetit/FeTrIL: codes/compute_distances.py, train_classifiers.py,
compute_predictions.py, configs/cifar100_b50_t10.cf), which fixes the details: every old
class takes all training features of the new class whose mean is nearest in Euclidean
distance (FeTrIL¹, the paper's default), class means are means of the raw features, the
features (real and translated) are L2-normalised, and the classifier is one linear SVM per
class against all others (scikit-learn's LinearSVC: squared hinge, L2 penalty, C = 1,
tolerance 1e-4, primal solver, an intercept), refit on all seen classes at every step; a
test feature is normalised and scored w_cᵀx + b_c.

`classifier = "svm"` (the default) is that: it is the paper's classifier, and scikit-learn
is one of headbench's dependencies. `classifier = "sgd"` trains the head instead, with the
run's `[training]` settings and cross-entropy over all seen classes, on the same real and
pseudo features; the head is re-initialised every experience, as the SVMs are refit from
scratch. Head-only version: the paper trains the backbone on the first task and freezes it;
here it is frozen from the start, so the first experience fits the classifier on its real
features only (as the authors' first state does). Class means are exact (a frozen backbone's
features do not move) and no old feature is kept: only the means (seen × d) are.
The authors' training script leaves the first 512 loaded features unnormalised (its first
minibatch); here all are normalised.
"""

from __future__ import annotations

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
    hyperparameter,
    initial_rows,
    require,
)
from strategies.ncm import class_means
from strategies.registry import register


@dataclass(frozen=True)
class FeTrILConfig:
    classifier: Literal["svm", "sgd"] = hyperparameter(
        "svm", "linear SVMs, one per class (the paper), or the head trained by the run's SGD"
    )
    svm_c: float = hyperparameter(1.0, "C of the linear SVMs (authors' `regul`)")
    svm_tolerance: float = hyperparameter(1e-4, "stopping tolerance of the SVMs (`toler`)")
    normalize: bool = hyperparameter(True, "L2-normalise real, pseudo and test features")

    def __post_init__(self) -> None:
        require(self.svm_c > 0, f"strategies.fetril.svm_c = {self.svm_c} must be > 0")
        require(
            self.svm_tolerance > 0,
            f"strategies.fetril.svm_tolerance = {self.svm_tolerance} must be > 0",
        )


def pseudo_features(
    features: Tensor, targets: Tensor, means: Tensor, num_old: int
) -> tuple[Tensor, Tensor]:
    """Eq. 1 for every old class: the features of the new class whose mean is nearest to the
    old class's mean, translated by μ(C_o) − μ(C_n).

    Args:
        features: the experience's features, of classes num_old .. seen − 1.
        targets: their classes.
        means: (seen, dim) class means, old classes first.
    """
    old_means, new_means = means[:num_old], means[num_old:]  # (old, dim), (new, dim)
    nearest = torch.cdist(old_means, new_means).argmin(dim=1) + num_old  # (old,)
    translated, labels = [], []
    for old_class, new_class in enumerate(nearest.tolist()):
        members = features[targets == new_class]  # (n_new, dim)
        shift = (means[old_class] - means[new_class]).to(features.dtype)  # (dim,)
        translated.append(members + shift)
        labels.append(torch.full_like(targets[: len(members)], old_class))
    if not translated:
        return features[:0], targets[:0]
    return torch.cat(translated), torch.cat(labels)  # (pseudo, dim), (pseudo,)


def linear_svms(features: Tensor, targets: Tensor, c: float, tolerance: float):
    """One-vs-rest linear SVMs (LinearSVC, the authors' settings): (classes, dim), (classes,)."""
    from sklearn.svm import LinearSVC

    svm = LinearSVC(C=c, tol=tolerance, dual=False, loss="squared_hinge", penalty="l2")
    svm.fit(features.double().cpu().numpy(), targets.cpu().numpy())
    weight = torch.from_numpy(svm.coef_).to(features)  # (classes or 1, dim)
    bias = torch.from_numpy(svm.intercept_).to(features)  # (classes or 1,)
    if weight.shape[0] == 1:  # two classes: class 0 against the rest is the mirror image
        weight, bias = torch.cat([-weight, weight]), torch.cat([-bias, bias])
    return weight, bias


@register("fetril")
class FeTrIL(Strategy):
    """Old classes' pseudo-features by mean translation; a linear classifier over all seen."""

    display_name = "FeTrIL"
    cite_keys = ("petit2023fetril",)

    paper = "Petit et al., FeTrIL, WACV 2023"
    Config = FeTrILConfig
    trains_head = False  # with the default SVMs; `classifier = "sgd"` trains the head
    head_losses = HEAD_LOSSES  # with `classifier = "sgd"`: the base loss

    def __init__(self, config: FeTrILConfig | None = None) -> None:
        super().__init__(config)
        self.trains_head = self.config.classifier == "sgd"
        self.register_buffer("means", None)  # (seen, dim) float64, μ
        self.register_buffer("weight", None)  # (seen, dim), the SVMs' w
        self.register_buffer("bias", None)  # (seen,), the SVMs' b

    def validate(self, experience_sizes: Sequence[int]) -> None:
        super().validate(experience_sizes)
        if self.config.classifier == "svm" and experience_sizes[0] < 2:
            raise HyperparameterError(
                "fetril: classifier = 'svm' cannot fit the first experience's single class; "
                "use an initial experience of at least 2 classes"
            )

    def _prepare(self, features: Tensor) -> Tensor:
        return F.normalize(features, dim=1) if self.config.normalize else features

    def expand(self, head: Head, num_new: int) -> None:
        num_seen = head.num_classes + num_new
        head.reset()  # a fresh classifier over all seen classes, as the SVMs are refit
        head.append_rows(initial_rows(num_seen, head.in_features))

    @torch.no_grad()
    def training_set(self, experience: Experience) -> tuple[Tensor, Tensor]:
        """The experience's real features and the old classes' pseudo-features, normalised."""
        features, targets = experience.features, experience.targets  # (n, dim), (n,)
        if self.means is None or len(self.means) < experience.num_seen:
            new_means = class_means(features, targets, experience.num_old, experience.num_seen)
            old_means = new_means[:0] if self.means is None else self.means
            self.means = torch.cat([old_means, new_means])  # (seen, dim)
        pseudo, pseudo_targets = pseudo_features(features, targets, self.means, experience.num_old)
        everything = torch.cat([features, pseudo])  # (n + pseudo, dim)
        return self._prepare(everything), torch.cat([targets, pseudo_targets])

    @torch.no_grad()
    def after_experience(self, head: Head, experience: Experience) -> None:
        if self.config.classifier == "sgd":
            return
        features, targets = self.training_set(experience)
        weight, bias = linear_svms(features, targets, self.config.svm_c, self.config.svm_tolerance)
        self.weight, self.bias = weight, bias
        head.weight.copy_(weight)
        if head.bias is not None:
            head.bias.copy_(bias)

    def predict(self, head: Head, features: Tensor) -> Tensor:
        features = self._prepare(features)  # (batch, dim)
        if self.config.classifier == "sgd":
            return head(features)  # (batch, seen)
        return F.linear(features, self.weight, self.bias)  # (batch, seen)
