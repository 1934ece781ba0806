"""FeCAM: each class a Gaussian with its own covariance; a feature goes to the class with the
smallest (shrunk, normalised) Mahalanobis distance. Nothing is trained.

Goswami et al., "FeCAM: Exploiting the Heterogeneity of Class Distributions in
Exemplar-Free Continual Learning", NeurIPS 2023, and the authors' code
(github.com/dipamgoswami/FeCAM: models/base.py, utils/maha_utils.py,
exps/FeCAM_cifar100.json), which fixes these details:
  - Tukey's power transform T(x) = x^β, β = 0.5 (`beta`), on the features of the
    covariance, on the prototype and on the test feature;
  - per-class covariance Σ_c = cov(T(x)) of the raw features of class c (unbiased, 1/(n−1));
  - shrinkage Σ ← Σ + γ1 V1 I + γ2 V2 (1 − I), V1 the mean diagonal, V2 the mean of the
    non-zero off-diagonal entries, γ1 = γ2 = 1; the code applies it twice (once when the
    covariance is computed, once more before normalising; "2 times to obtain better
    estimates"), so `shrink_passes = 2`; the paper's equation is one pass;
  - normalisation: Σ ← Σ / (σ σᵀ) with σ = √diag Σ (a correlation matrix);
  - distance (x̄ − μ̄)ᵀ Σ⁺ (x̄ − μ̄) with x̄ = T(x)/‖T(x)‖, μ̄ = T(μ)/‖T(μ)‖, μ the class
    mean of the raw features, Σ⁺ the pseudo-inverse (the code's `pinv`).
The authors' ViT script (FeCAM_vit_cifar100.py, pretrained frozen backbone) uses no Tukey
transform, γ2 = 0 and one pass: `beta = 1.0, gamma2 = 0.0, shrink_passes = 1` (it averages
normalised features instead of normalising the mean).

Head-only version: the paper trains the backbone on the first task and classifies the first
task by the trained head; with a frozen backbone that head plays no role, so FeCAM's
classifier runs from the first experience on and no head is trained. T is applied as
sign(x)|x|^β: the paper's features are non-negative (after a ReLU), where this is x^β;
signed features (a ViT's, a sentence encoder's) keep their sign. Statistics are float64;
the precision matrices are stored in float32, one d×d matrix per class (100 classes of
768-d features: 236 MB). The head's rows receive μ̄ (bias 0) for the run record's norms;
`predict` does not use the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from strategies.base import Experience, Head, HyperparameterError, Strategy, hyperparameter, require
from strategies.registry import register


@dataclass(frozen=True)
class FeCAMConfig:
    beta: float = hyperparameter(0.5, "β: Tukey's power transform x ↦ x^β (1: none)")
    gamma1: float = hyperparameter(1.0, "γ1: shrinkage towards the mean variance (diagonal)")
    gamma2: float = hyperparameter(1.0, "γ2: shrinkage towards the mean covariance (off-diag.)")
    shrink_passes: int = hyperparameter(2, "times the shrinkage is applied (authors' code: 2)")

    def __post_init__(self) -> None:
        require(0 < self.beta <= 1, f"strategies.fecam.beta = {self.beta} must be in (0, 1]")
        for name in ("gamma1", "gamma2"):
            value = getattr(self, name)
            require(value >= 0, f"strategies.fecam.{name} = {value} must be >= 0")
        require(
            self.shrink_passes >= 0,
            f"strategies.fecam.shrink_passes = {self.shrink_passes} must be >= 0",
        )


def tukey(features: Tensor, beta: float) -> Tensor:
    """Tukey's ladder of powers, sign-preserving: sign(x)|x|^β (x^β on x ≥ 0)."""
    return features.sign() * features.abs().pow(beta)


def shrink(covariance: Tensor, gamma1: float, gamma2: float) -> Tensor:
    """Σ + γ1 V1 I + γ2 V2 (1 − I) (the paper's covariance shrinkage)."""
    dim = covariance.shape[0]
    identity = torch.eye(dim, dtype=covariance.dtype, device=covariance.device)  # (dim, dim)
    off_diagonal = covariance * (1 - identity)  # (dim, dim)
    nonzero = (off_diagonal != 0).sum()
    mean_variance = covariance.diagonal().mean()  # V1
    mean_covariance = off_diagonal.sum() / nonzero.clamp(min=1)  # V2, over non-zero entries
    return (
        covariance + gamma1 * mean_variance * identity + gamma2 * mean_covariance * (1 - identity)
    )


def correlation(covariance: Tensor) -> Tensor:
    """Σ / (σ σᵀ), σ = √diag Σ; a zero matrix (one repeated sample) gives the identity."""
    deviations = covariance.diagonal().sqrt()  # (dim,)
    if bool((deviations == 0).all()):
        return torch.eye(len(deviations), dtype=covariance.dtype, device=covariance.device)
    return covariance / torch.outer(deviations, deviations)  # (dim, dim)


def mahalanobis(features: Tensor, means: Tensor, precisions: Tensor) -> Tensor:
    """(x − μ_c)ᵀ P_c (x − μ_c) for every feature and class, in chunks of classes so that
    the (classes, batch, dim) differences stay under 2^24 numbers."""
    batch, dim = features.shape
    chunk = max(1, 2**24 // max(1, batch * dim))
    distances = []
    for start in range(0, len(means), chunk):
        difference = features[None] - means[start : start + chunk, None]  # (chunk, batch, dim)
        weighted = torch.bmm(difference, precisions[start : start + chunk])  # (chunk, batch, dim)
        distances.append((weighted * difference).sum(dim=2).T)  # (batch, chunk)
    return torch.cat(distances, dim=1)  # (batch, seen)


@register("fecam")
class FeCAM(Strategy):
    """Per-class shrunk, normalised covariances; the nearest class by Mahalanobis distance."""

    display_name = "FeCAM"
    cite_keys = ("goswami2023fecam",)

    paper = "Goswami et al., FeCAM, NeurIPS 2023"
    Config = FeCAMConfig
    trains_head = False

    def __init__(self, config: FeCAMConfig | None = None) -> None:
        super().__init__(config)
        self.register_buffer("prototypes", None)  # (seen, dim), μ̄
        self.register_buffer("precisions", None)  # (seen, dim, dim), inverse of Σ_c

    def _transform(self, features: Tensor) -> Tensor:
        return F.normalize(tukey(features, self.config.beta), dim=-1)

    def expand(self, head: Head, num_new: int) -> None:
        head.append_rows(torch.zeros(num_new, head.in_features))  # filled after the experience

    @torch.no_grad()
    def after_experience(self, head: Head, experience: Experience) -> None:
        config = self.config
        features = experience.features.double()  # (n, dim)
        prototypes, precisions = [], []
        for label in range(experience.num_old, experience.num_seen):
            members = features[experience.targets == label]  # (n_c, dim)
            if len(members) < 2:
                raise HyperparameterError(
                    f"fecam: class {label} has {len(members)} training sample(s); a class "
                    "covariance needs at least 2"
                )
            covariance = torch.cov(tukey(members, config.beta).T)  # (dim, dim), 1/(n_c − 1)
            for _ in range(config.shrink_passes):
                covariance = shrink(covariance, config.gamma1, config.gamma2)
            precisions.append(torch.linalg.pinv(correlation(covariance), hermitian=True))
            prototypes.append(self._transform(members.mean(dim=0)))  # (dim,)
        new_prototypes = torch.stack(prototypes).to(experience.features.dtype)  # (new, dim)
        new_precisions = torch.stack(precisions).float()  # (new, dim, dim)
        if self.prototypes is not None:
            new_prototypes = torch.cat([self.prototypes, new_prototypes])
            new_precisions = torch.cat([self.precisions, new_precisions])
        self.prototypes, self.precisions = new_prototypes, new_precisions
        head.weight.copy_(self.prototypes)

    def predict(self, head: Head, features: Tensor) -> Tensor:
        transformed = self._transform(features)  # (batch, dim)
        return -mahalanobis(transformed, self.prototypes, self.precisions)  # (batch, seen)
