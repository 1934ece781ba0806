"""Deep Streaming LDA: running class means and one shared covariance, updated one sample at
a time; classes are scored by the linear discriminant they define.

Hayes & Kanan, "Lifelong Machine Learning with Deep Streaming Linear Discriminant
Analysis", CVPR Workshops 2020, and the authors' code (github.com/tyler-hayes/Deep_SLDA,
SLDA_Model.py), which fixes the details below. Sample t (t samples seen before it), of
class k with count c_k and running mean μ_k:
  Δ_t = t/(t+1) (z_t − μ_k)(z_t − μ_k)ᵀ,   Σ ← (t Σ + Δ_t)/(t+1),
  μ_k ← (c_k μ_k + z_t)/(c_k + 1),   c_k ← c_k + 1;
class k scores z ↦ w_kᵀz + b_k, w_k = Λ μ_k, b_k = −½ μ_kᵀ Λ μ_k, Λ = ((1 − ε) Σ + ε I)⁻¹,
ε = 1e-4, with no class prior. The first experience is the paper's base initialisation (the code's
`fit_base`): class means in batch and Σ the OAS shrinkage estimate (Chen et al. 2010) of
the class-centred features. `covariance = "fixed"` keeps that Σ (the paper's fixed
covariance variant); "streaming" (plastic; the default of the code's model class and of
Avalanche's StreamingLDA) updates it per sample.

As in the paper and code, t counts all samples, not the class's, and a class's mean is 0
before its first sample (which so adds t/(t+1) z zᵀ): Σ is the population covariance of a
single class streamed alone, but not exactly the pooled within-class covariance of
several. Head-only version: no deviation; the updates of one experience, in the order the
engine gives its samples, are applied in closed form (tΣ is a running sum, so
(t0+n) Σ = t0 Σ + Σ_s Δ_s), equal to the per-sample loop up to rounding. W and b are
copied into the head's rows and bias; `predict` uses the strategy's copy (a head without
bias would lose b).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from strategies.base import Experience, Head, Strategy, hyperparameter, require
from strategies.registry import register


@dataclass(frozen=True)
class SLDAConfig:
    shrinkage: float = hyperparameter(1e-4, "ε: Λ = ((1 − ε) Σ + ε I)⁻¹")
    covariance: Literal["streaming", "fixed"] = hyperparameter(
        "streaming", "Σ updated per sample (plastic) or fixed after the first experience"
    )

    def __post_init__(self) -> None:
        require(
            0 < self.shrinkage <= 1,
            f"strategies.slda.shrinkage = {self.shrinkage} must be in (0, 1]",
        )


def oas_covariance(residuals: Tensor) -> Tensor:
    """Oracle Approximating Shrinkage of zero-mean rows: scikit-learn's
    `OAS(assume_centered=True)`, which the authors' code fits at base initialisation."""
    samples, dim = residuals.shape
    empirical = residuals.T @ residuals / samples  # (dim, dim)
    mu = empirical.trace() / dim
    alpha = empirical.square().mean()
    denominator = (samples + 1) * (alpha - mu**2 / dim)
    ratio = ((alpha + mu**2) / denominator).clamp(max=1.0)
    shrinkage = torch.where(denominator == 0, torch.ones_like(ratio), ratio)  # ()
    identity = torch.eye(dim, dtype=residuals.dtype, device=residuals.device)  # (dim, dim)
    return (1 - shrinkage) * empirical + shrinkage * mu * identity  # (dim, dim)


def streaming_update(
    means: Tensor, counts: Tensor, covariance: Tensor | None, features: Tensor, targets: Tensor
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The paper's per-sample updates over `features` in order, in closed form.

    Each Δ needs only class k's running mean just before the sample: its old mean and
    count and the cumulative sum of the class's earlier samples in this batch.
    `covariance` None: means and counts only (fixed covariance).
    """
    means, counts = means.clone(), counts.clone()
    total = counts.sum()  # t0
    scatter = None if covariance is None else total * covariance  # (dim, dim)
    for k in targets.unique().tolist():
        rows = (targets == k).nonzero().squeeze(1)  # (n_k,) positions in the stream
        samples = features[rows]  # (n_k, dim)
        earlier = samples.cumsum(dim=0) - samples  # (n_k, dim)
        count = counts[k] + torch.arange(len(rows), device=rows.device)  # (n_k,)
        mean_before = (counts[k] * means[k] + earlier) / count.clamp(min=1)[:, None]  # (n_k, dim)
        if scatter is not None:
            deviation = samples - mean_before  # (n_k, dim)
            t = total + rows  # (n_k,) samples seen before each
            scatter = scatter + (deviation * (t / (t + 1))[:, None]).T @ deviation  # Σ_s Δ_s
        means[k] = (counts[k] * means[k] + samples.sum(dim=0)) / (counts[k] + len(rows))
        counts[k] += len(rows)
    return means, counts, None if scatter is None else scatter / counts.sum()


@register("slda")
class SLDA(Strategy):
    """Streaming class means and shared covariance; the linear discriminant scores."""

    paper = "Hayes & Kanan, Deep Streaming LDA, CVPR Workshops 2020"
    display_name = "SLDA"
    cite_keys = ("hayes2020lifelong",)
    Config = SLDAConfig
    trains_head = False

    def __init__(self, config: SLDAConfig | None = None) -> None:
        super().__init__(config)
        self.register_buffer("means", None)  # (seen, dim) float64, μ
        self.register_buffer("counts", None)  # (seen,) float64, c
        self.register_buffer("covariance", None)  # (dim, dim) float64, Σ
        self.register_buffer("weight", None)  # (seen, dim), W = Λ μ
        self.register_buffer("bias", None)  # (seen,), b = −½ μᵀ Λ μ

    def expand(self, head: Head, num_new: int) -> None:
        head.append_rows(torch.zeros(num_new, head.in_features))  # filled after the experience

    @torch.no_grad()
    def after_experience(self, head: Head, experience: Experience) -> None:
        features, targets = experience.features.double(), experience.targets  # (n, dim), (n,)
        if self.means is None:  # base initialisation: the whole first experience at once
            one_hot = F.one_hot(targets, experience.num_seen).double()  # (n, seen)
            self.counts = one_hot.sum(dim=0)  # (seen,)
            self.means = one_hot.T @ features / self.counts[:, None]  # (seen, dim)
            self.covariance = oas_covariance(features - self.means[targets])  # (dim, dim)
        else:
            zeros = self.means.new_zeros(experience.num_new, features.shape[1])  # (new, dim)
            means = torch.cat([self.means, zeros])  # (seen, dim)
            counts = torch.cat([self.counts, zeros[:, 0]])  # (seen,)
            plastic = self.covariance if self.config.covariance == "streaming" else None
            means, counts, covariance = streaming_update(means, counts, plastic, features, targets)
            self.means, self.counts = means, counts
            self.covariance = self.covariance if covariance is None else covariance
        epsilon, identity = self.config.shrinkage, features.new_ones(features.shape[1]).diag()
        shrunk = (1 - epsilon) * self.covariance + epsilon * identity  # (dim, dim)
        precision_means = torch.linalg.solve(shrunk, self.means.T)  # (dim, seen), Λ μ
        self.weight = precision_means.T.float()  # (seen, dim)
        self.bias = (-0.5 * (self.means * precision_means.T).sum(dim=1)).float()  # (seen,)
        head.weight.copy_(self.weight)
        if head.bias is not None:
            head.bias.copy_(self.bias)

    def predict(self, head: Head, features: Tensor) -> Tensor:
        return F.linear(features, self.weight, self.bias)  # (batch, seen)
