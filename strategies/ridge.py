"""Analytic ridge-regression head: least squares on one-hot targets over fixed random ReLU
features, updated so that it always equals the ridge fit on all data seen so far.

McDonnell et al., "RanPAC: Random Projections and Pre-trained Models for Continual
Learning", NeurIPS 2023 (`method = "ranpac"`, the default): h = ReLU(xᵀ P), P ~ N(0, 1);
G = Σ h hᵀ, Q = Σ h yᵀ accumulated; W = (G + λ I)⁻¹ Q, λ chosen after every experience
from 10^-8 .. 10^8 by the least mean squared error on a random 20 % of its samples when
fitted on the other 80 % (the authors' code, github.com/RanPAC/RanPAC). M = 0: h = x.

Zhuang et al., "ACIL: Analytic Class-Incremental Learning with Absolute Memorization and
Privacy Protection", NeurIPS 2022 (`method = "acil"`): the same fit by recursive least
squares from R = I/γ, γ = 0.1 (the authors' code), Eq. 10 R ← R − R Xᵀ(I + X R Xᵀ)⁻¹X R,
Eq. 9 W ← W + R Xᵀ(Y − X W); ACIL labels a phase's new classes only, which with W's new
columns started at 0 is Y one-hot over all seen classes. Its buffer layer is this random
ReLU expansion, P ~ U(−1/√dim, 1/√dim) (an nn.Linear's init); blocks of 4096 samples, as
in its code (exact, and bounds the matrix inverted).

Deviations: M defaults to 2048, not RanPAC's 10000 or ACIL's 8192: G (or R) is M × M in
float64 (800 MB at 10000) and a solve costs M³, seconds on a CPU per experience; set
`projection_dim` for the papers' values. RanPAC's optional first-session tuning of the
backbone is outside a head-only suite. P is drawn on the CPU from the global generator at
the first experience. No bias, as in both papers. Without projection W is copied into the
head's rows; with it W lives in the M-dimensional space, the head's rows stay 0 and the
per-class norms reported are those of W's columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from strategies.base import Experience, Head, Strategy, hyperparameter, require
from strategies.registry import register

RLS_CHUNK = 4096  # samples per recursive step (ACIL's code: IL batch size 4096)
# 10x RanPAC's largest M (10,000); beyond it the (samples, M) expansion and the M x M Gram
# matrix outgrow memory (M = 10^9 asked for terabytes).
MAX_PROJECTION_DIM = 100_000
FIT_SHARE = 0.8  # RanPAC: λ is fitted on 80 % of an experience's samples, scored on the rest


@dataclass(frozen=True)
class RidgeConfig:
    method: Literal["ranpac", "acil"] = hyperparameter(
        "ranpac", "RanPAC: Gram matrix, λ chosen per experience; ACIL: recursion, fixed γ"
    )
    projection_dim: int = hyperparameter(2048, "M: width of the random ReLU expansion; 0: none")
    gamma: float = hyperparameter(0.1, "γ: ACIL's fixed regulariser (RanPAC chooses its λ)")

    def __post_init__(self) -> None:
        width = (
            f"strategies.ridge.projection_dim = {self.projection_dim} must be in "
            f"[0, {MAX_PROJECTION_DIM}]"
        )
        require(0 <= self.projection_dim <= MAX_PROJECTION_DIM, width)
        require(self.gamma > 0, f"strategies.ridge.gamma = {self.gamma} must be > 0")


def held_out_predictions(
    fit: Tensor,
    fit_targets: Tensor,
    held: Tensor,
    candidates: Tensor,
    gram: Tensor | None = None,
) -> Tensor:
    """Every candidate λ's ridge fit W = (FᵀF + λI)⁻¹FᵀY on `fit`, applied to `held`.

    One symmetric eigendecomposition serves all candidates: FᵀF = V diag(e) Vᵀ gives
    W = V diag(1 / (e + λ)) VᵀFᵀY, matrix products per λ instead of an M × M solve. With
    fewer samples than features the same W is Fᵀ(FFᵀ + λI)⁻¹Y (push-through identity), so
    the smaller of FᵀF and FFᵀ is decomposed. `gram`: FᵀF + HᵀH, the Gram matrix of
    `fit` and `held` together, when the caller has it; FᵀF is then that less HᵀH (a quarter
    of the products of computing it anew with RanPAC's 80/20 split, equal to it within
    float64 roundoff).
    """
    if len(fit) < fit.shape[1]:
        eigenvalues, vectors = torch.linalg.eigh(fit @ fit.T)  # (n,), (n, n)
        held_coordinates = held @ fit.T @ vectors  # (held, n)
        target_coordinates = vectors.T @ fit_targets  # (n, seen)
    else:
        fit_gram = fit.T @ fit if gram is None else gram - held.T @ held  # (M, M)
        eigenvalues, vectors = torch.linalg.eigh(fit_gram)  # (M,), (M, M)
        held_coordinates = held @ vectors  # (held, M)
        target_coordinates = vectors.T @ (fit.T @ fit_targets)  # (M, seen)
    # A Gram matrix has no negative eigenvalue; roundoff can make a zero one slightly negative.
    shrunk = 1 / (eigenvalues.clamp(min=0) + candidates[:, None])  # (candidates, rank)
    return held_coordinates @ (shrunk[:, :, None] * target_coordinates)  # (candidates, held, seen)


def choose_lambda(
    fit: Tensor,
    fit_targets: Tensor,
    held: Tensor,
    held_targets: Tensor,
    gram: Tensor | None = None,
) -> Tensor:
    """RanPAC's λ: least held-out mean squared error of the ridge fit (fitᵀfit + λI)⁻¹ fitᵀY."""
    candidates = 10.0 ** torch.arange(-8, 9, dtype=fit.dtype, device=fit.device)  # (17,)
    predictions = held_out_predictions(fit, fit_targets, held, candidates, gram)  # (17, held, seen)
    errors = (predictions - held_targets).square().mean(dim=(1, 2))  # (17,)
    return candidates[errors.argmin()]


def recursive_least_squares(
    inverse: Tensor, weight: Tensor, features: Tensor, targets: Tensor
) -> tuple[Tensor, Tensor]:
    """ACIL's Eqs. 10 and 9 for one block of samples: R and W after learning it."""
    inverse_features = inverse @ features.T  # (M, block)
    kernel = features @ inverse_features  # (block, block)
    kernel.diagonal().add_(1)  # I + X R Xᵀ
    inverse = inverse - inverse_features @ torch.linalg.solve(kernel, inverse_features.T)  # (M, M)
    weight = weight + inverse @ features.T @ (targets - features @ weight)  # (M, seen)
    return inverse, weight


@register("ridge")
class Ridge(Strategy):
    """Ridge regression on one-hot targets over random ReLU features, exact at every step."""

    paper = "McDonnell et al., RanPAC, NeurIPS 2023; Zhuang et al., ACIL, NeurIPS 2022"
    display_name = "RanPAC"
    cite_keys = ("mcdonnell2023ranpac",)
    Config = RidgeConfig
    trains_head = False

    @classmethod
    def paper_name(cls, config: RidgeConfig) -> tuple[str, tuple[str, ...]]:
        if config.method == "acil":
            return "ACIL", ("zhuang2022acil",)
        return cls.display_name, cls.cite_keys

    def __init__(self, config: RidgeConfig | None = None) -> None:
        super().__init__(config)
        self.register_buffer("projection", None)  # (dim, M), P
        self.register_buffer("gram", None)  # (M, M) float64, G (RanPAC)
        self.register_buffer("correlation", None)  # (M, seen) float64, Q (RanPAC)
        self.register_buffer("inverse", None)  # (M, M) float64, R (ACIL)
        self.register_buffer("weight", None)  # (M, seen) float64, W
        self.register_buffer("lambda_chosen", None)  # (), λ of the last experience (RanPAC)

    def expand(self, head: Head, num_new: int) -> None:
        head.append_rows(torch.zeros(num_new, head.in_features))  # filled after the experience

    def before_experience(self, head: Head, experience: Experience) -> None:
        shape = (head.in_features, self.config.projection_dim)
        if self.projection is None and shape[1] > 0:
            if self.config.method == "ranpac":
                projection = torch.randn(shape)  # (dim, M)
            else:
                bound = 1 / math.sqrt(shape[0])
                projection = torch.empty(shape).uniform_(-bound, bound)  # (dim, M)
            self.projection = projection.to(experience.features.device)

    def expanded(self, features: Tensor) -> Tensor:
        """h = ReLU(xᵀ P), or x itself without projection."""
        if self.projection is None:
            return features
        return torch.relu(features @ self.projection.to(features.dtype))  # (batch, M)

    @torch.no_grad()
    def after_experience(self, head: Head, experience: Experience) -> None:
        inputs = self.expanded(experience.features.double())  # (n, M)
        targets = F.one_hot(experience.targets, experience.num_seen).double()  # (n, seen)
        width = inputs.shape[1]
        identity = torch.eye(width, dtype=inputs.dtype, device=inputs.device)  # (M, M)
        if self.weight is None:
            self.weight = inputs.new_zeros(width, 0)
            if self.config.method == "ranpac":
                self.gram, self.correlation = 0 * identity, self.weight
            else:
                self.inverse = identity / self.config.gamma
        new_columns = inputs.new_zeros(width, experience.num_new)
        self.weight = torch.cat([self.weight, new_columns], dim=1)  # (M, seen)
        if self.config.method == "ranpac":
            experience_gram = inputs.T @ inputs  # (M, M)
            self.gram = self.gram + experience_gram
            self.correlation = torch.cat([self.correlation, new_columns], dim=1)  # (M, seen)
            self.correlation = self.correlation + inputs.T @ targets
            cut = int(FIT_SHARE * len(inputs))
            order = torch.randperm(len(inputs)).to(inputs.device)  # RanPAC's shuffled loader
            fit, held = order[:cut], order[cut:]
            self.lambda_chosen = choose_lambda(
                inputs[fit], targets[fit], inputs[held], targets[held], experience_gram
            )  # ()
            regularised = self.gram + self.lambda_chosen * identity  # (M, M), G + λI
            self.weight = torch.linalg.solve(regularised, self.correlation)  # (M, seen)
        else:
            for start in range(0, len(inputs), RLS_CHUNK):
                rows = slice(start, start + RLS_CHUNK)
                self.inverse, self.weight = recursive_least_squares(
                    self.inverse, self.weight, inputs[rows], targets[rows]
                )
        if self.projection is None:
            head.weight.copy_(self.weight.T)

    def class_norms(self, head: Head) -> Tensor:
        return self.weight.norm(dim=0).float()  # (seen,): one column of W per class

    def predict(self, head: Head, features: Tensor) -> Tensor:
        return self.expanded(features) @ self.weight.to(features.dtype)  # (batch, seen)
