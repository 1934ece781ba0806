"""Synaptic Intelligence on the head: EWC's quadratic penalty with an importance that is each
parameter's contribution to the drop of the loss along the training trajectory.

Zenke, Poole & Ganguli, "Continual Learning Through Synaptic Intelligence", ICML 2017, and
the authors' code (github.com/ganguli-lab/pathint: pathint/protocols.py, optimizers.py,
fig_transfer_cifar/train.py). Per optimizer step t: ω_k += −g_k(t) Δθ_k(t), g the gradient
of the unregularised loss (`unreg_grads`) and Δθ the step's update (Eq. 3, the path integral
as a sum over steps). After the experience: Ω_k ← relu(Ω_k + ω_k / ((Δ_k)² + ξ)) (Eq. 5, the
code's `omega_decay = "sum"`), Δ_k the parameter's total change over the experience and
ξ = 1e-3 the damping (split MNIST and split CIFAR); the loss is L + c Σ_k Ω_k (θ_k − θ̃_k)²
(Eq. 4), θ̃ the parameters at the end of the previous experience, c = 0.1 (the value the
code's split-CIFAR script keeps).

Head-only version: θ is the head's weight and bias (and a cosine head's scale). The engine
calls `after_step` after every optimizer step with the step's gradient of the whole loss in
each parameter's `.grad`; the penalty's own gradient 2cΩ(θ − θ̃) at the step's starting point
is subtracted, which leaves the unregularised gradient. Weight decay and momentum enter Δθ,
not g, as in the code. Rows added in an experience start their path there; rows added after
an importance was taken get no penalty from it. The penalty, its bookkeeping, the replay and
frozen-rows flags and the stability check are EWC's (strategies.ewc; online mode, γ = 1);
only the importance and the factor c (not c/2) differ. Not inside the Avalanche plugin,
which does not hand the step's gradients to `after_step`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from strategies.base import Experience, Head, hyperparameter, require
from strategies.ewc import EWC, PARAMETERS, EWCConfig, _pad_rows
from strategies.registry import register


@dataclass(frozen=True)
class SIConfig(EWCConfig):
    lambda_: float = hyperparameter(0.1, "c, Eq. 4: weight of the penalty")
    mode: Literal["separate", "online"] = hyperparameter(
        "online", "Ω summed with one anchor (the paper), or one anchor per experience"
    )
    gamma: float = hyperparameter(1.0, "γ: decay of the running Ω in online mode")
    damping: float = hyperparameter(1e-3, "ξ, Eq. 5: added to the squared total change")

    def __post_init__(self) -> None:
        require(self.lambda_ >= 0, f"strategies.si.lambda = {self.lambda_} must be >= 0")
        require(0 <= self.gamma <= 1, f"strategies.si.gamma = {self.gamma} must be in [0, 1]")
        require(self.damping > 0, f"strategies.si.damping = {self.damping} must be > 0")


def _parameters(head: Head) -> dict[str, Tensor]:
    present = {name: getattr(head, name, None) for name in PARAMETERS}
    return {name: value for name, value in present.items() if value is not None}


@register("si")
class SI(EWC):
    """Cross-entropy plus c · Σ Ω (θ − θ̃)², Ω from the path integral of the loss's drop."""

    display_name = "SI"
    cite_keys = ("zenke2017continual",)

    @classmethod
    def paper_name(cls, config: SIConfig) -> tuple[str, tuple[str, ...]]:
        return cls.display_name, cls.cite_keys  # one name in either mode

    paper = "Zenke, Poole & Ganguli, Synaptic Intelligence, ICML 2017"
    Config = SIConfig
    penalty_factor: ClassVar[float] = 1.0  # c, Eq. 4
    needs_step_gradients: ClassVar[bool] = True  # reads `.grad` in `after_step`

    def __init__(self, config: SIConfig | None = None) -> None:
        super().__init__(config)
        for name in PARAMETERS:
            self.register_buffer(f"path_{name}", None)  # ω
            self.register_buffer(f"start_{name}", None)  # θ when the experience began
            self.register_buffer(f"previous_{name}", None)  # θ before the current step

    def before_experience(self, head: Head, experience: Experience) -> None:
        super().before_experience(head, experience)
        for name, parameter in _parameters(head).items():
            value = parameter.detach()
            setattr(self, f"path_{name}", torch.zeros_like(value))
            setattr(self, f"start_{name}", value.clone())
            setattr(self, f"previous_{name}", value.clone())

    def needs_after_step(self) -> bool:
        return True

    def penalty_gradient(self, name: str, parameter: Tensor) -> Tensor:
        """∂/∂θ of c Σ A (θ − μ)² at θ = `parameter` (zero where no importance is held)."""
        importance = getattr(self, f"importance_{name}")
        if importance is None or self.config.lambda_ == 0:
            return torch.zeros_like(parameter)
        anchor = getattr(self, f"anchor_{name}")
        rows = parameter if importance.dim() == 0 else parameter[: importance.shape[0]]
        gradient = 2 * self.penalty_factor * self.config.lambda_ * importance * (rows - anchor)
        return _pad_rows(gradient, parameter.shape[0]) if parameter.dim() else gradient

    @torch.no_grad()
    def after_step(self, head: Head) -> None:
        super().after_step(head)  # any held old rows are back before Δθ is measured
        for name, parameter in _parameters(head).items():
            previous = getattr(self, f"previous_{name}")
            unregularised = parameter.grad - self.penalty_gradient(name, previous)
            getattr(self, f"path_{name}").sub_(unregularised * (parameter - previous))  # −g·Δθ
            previous.copy_(parameter)

    @torch.no_grad()
    def importance(self, head: Head, experience: Experience) -> dict[str, Tensor]:
        """ω / (Δ² + ξ), written as the increment that makes EWC's online sum the code's
        relu(Ω + ω / (Δ² + ξ))."""
        new = {}
        for name, parameter in _parameters(head).items():
            change = parameter.detach() - getattr(self, f"start_{name}")  # Δ
            increment = getattr(self, f"path_{name}") / (change.square() + self.config.damping)
            old = getattr(self, f"importance_{name}")
            if old is None or self.config.mode == "separate":
                new[name] = increment.clamp(min=0)
            else:
                rows = parameter.shape[0] if parameter.dim() else 0
                held = self.config.gamma * _pad_rows(old, rows)
                new[name] = (held + increment).clamp(min=0) - held
        return new
