"""Any headbench strategy as an Avalanche plugin, inside a stock Avalanche training loop.

`as_plugin("lwf", alpha=0.5)` returns an `avalanche.core.SupervisedPlugin` that drives one
headbench Strategy from Avalanche's callbacks: the Avalanche strategy (e.g.
`avalanche.training.Naive`) keeps its DataLoader, optimizer, epochs and evaluation, and
the headbench strategy supplies the head's growth, the loss and its own bookkeeping. The
model must hold one `avalanche.models.IncrementalClassifier` (the head); everything
before it is the backbone, frozen (`requires_grad = False`) and kept in eval mode, so
its batch-norm statistics never move although Avalanche's `train()` calls
`model.train()`.

Avalanche's head has one row per class id up to the largest seen (`max(id) + 1`) and
masks the rows of unseen classes; headbench's head has one row per class in arrival
order. The plugin keeps the map between them (classes arrive in the benchmark's
`classes_order` when it has one, else as `classes_in_this_experience` lists them) and
hands every hook a head whose row c is the c-th class to arrive: a differentiable gather
of Avalanche's rows for the loss, a copy written back for the hooks that change the head.
The strategy's loss replaces Avalanche's criterion during training; evaluation scores
come from the strategy's `predict` (so NCM, SLDA and ridge work), unseen classes at the
head's mask value. The head's optimizer state (momentum) is reset at each experience, as
headbench's engine builds a fresh optimizer per experience. Every hook runs on a random
stream of the plugin's own, seeded like headbench's engine, so a run draws the same
initial rows as `benchmarks.engine.run`.

Refused (one-line HyperparameterError): strategies that train on all seen data
(`joint`; Avalanche's `Cumulative` is the stock equivalent), an exemplar memory
(`memory_size > 0`, `replay`, `bic`, `icarl`: Avalanche's loop draws inputs, not stored
features), a memory written from inside the loss (`der`: Avalanche has its own DER),
a training set of the strategy's own (`fetril`'s pseudo-features, `gdumb`'s memory),
a second training stage (`calibration`, BiC), a path integral over the optimizer's steps
(`si` reads each step's gradients), and strategies without a linear head.
`training.class_weighting` has no Avalanche counterpart: `class_weights` stays None.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from avalanche.core import SupervisedPlugin
from avalanche.models import IncrementalClassifier
from torch import Tensor, nn
from torch.utils.data import DataLoader

import strategies
from strategies.base import Experience, Head, HyperparameterError, Strategy


def refusal(strategy: Strategy) -> str | None:
    """Why a strategy cannot run inside Avalanche's loop, or None when it can."""
    if strategy.trains_on_all_seen:
        return "trains on all seen data (use Avalanche's Cumulative strategy instead)"
    if strategy.memory is not None:
        return "trains on an exemplar memory of stored features, which Avalanche's loop cannot draw"
    if strategy.overrides("training_set"):
        return (
            "builds its own training set (stored or generated features), which Avalanche's "
            "loop cannot draw"
        )
    if not strategy.batchable:
        return (
            "writes its own memory from inside its loss, which the plugin does not drive "
            "(for DER, Avalanche has its own avalanche.training.DER)"
        )
    if getattr(strategy, "needs_step_gradients", False):
        return (
            "reads each optimizer step's gradients after the step, which the plugin does not pass"
        )
    if strategy.overrides("calibration"):
        return "has a second training stage (calibration) that Avalanche's loop does not run"
    if "linear" not in strategy.head_kinds:
        return f"is defined for heads {list(strategy.head_kinds)}, not IncrementalClassifier's"
    return None


def supported() -> list[str]:
    """Registered strategies that run inside Avalanche with their default hyperparameters."""
    return [
        name for name in strategies.list_strategies() if refusal(strategies.create(name)) is None
    ]


def arrival_order(experience: Any) -> list[int]:
    """An Avalanche experience's class ids in arrival order: as its benchmark's
    `classes_order` lists them when it has one (nc_benchmark, SplitCIFAR100), else as
    `classes_in_this_experience` does (sorted)."""
    classes = list(experience.classes_in_this_experience)
    order = getattr(getattr(experience, "benchmark", None), "classes_order", None)
    if order is not None:
        position = {label: index for index, label in enumerate(order)}
        classes.sort(key=position.__getitem__)
    return classes


class _ArrivalOrderRows(Head):
    """Avalanche's rows gathered in arrival order, as plain tensors: gradients of a loss on
    this head flow back into the IncrementalClassifier's parameters."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        nn.Module.__init__(self)
        self.in_features = weight.shape[1]
        self.weight = weight  # (seen, dim)
        self.bias = bias  # (seen,)


class HeadbenchPlugin(SupervisedPlugin):
    """Drives one headbench Strategy from a stock Avalanche strategy's callbacks.

    Attributes:
        strategy: the headbench strategy (its buffers hold the state across experiences).
        arrival: Avalanche class ids in arrival order (headbench's row c is arrival[c]).
        weight_norms: per experience, the per-class norms (`Strategy.class_norms`) in
            arrival order, as the run record's diagnostic.
    """

    def __init__(self, strategy: Strategy, seed: int = 0) -> None:
        super().__init__()
        reason = refusal(strategy)
        if reason is not None:
            raise HyperparameterError(
                f"as_plugin: strategy {strategy.name!r} {reason}; "
                f"supported inside Avalanche: {', '.join(supported())}"
            )
        self.strategy = strategy
        self.arrival: list[int] = []
        self.weight_norms: list[list[float]] = []
        self._random_state = torch.Generator().manual_seed(seed).get_state()
        self._sizes: list[int] = []
        self._position: Tensor | None = None  # Avalanche class id -> arrival-order id
        self._classifier: IncrementalClassifier | None = None
        self._hook: Any = None
        self._features: Tensor | None = None  # the head's input of the last forward pass
        self._experience: Experience | None = None
        self._avalanche: Any = None
        self._avalanche_criterion: Any = None

    # -- the map between Avalanche's rows and headbench's ------------------------------

    @property
    def _linear(self) -> nn.Linear:
        # IncrementalClassifier replaces its nn.Linear when it grows: look it up each time.
        return self._classifier.classifier

    def _rows(self, count: int | None = None) -> Tensor:
        """Avalanche row indices of the first `count` arrived classes."""
        rows = torch.tensor(self.arrival[:count], dtype=torch.long)
        return rows.to(self._linear.weight.device)  # (count,)

    def _positions(self, class_ids: Tensor) -> Tensor:
        """Avalanche class ids -> arrival-order ids (the table is rebuilt when classes arrive)."""
        if self._position is None:
            position = torch.full((max(self.arrival) + 1,), -1, dtype=torch.long)
            position[self.arrival] = torch.arange(len(self.arrival))
            self._position = position.to(class_ids.device)
        return self._position[class_ids]  # (batch,)

    def _head(self, count: int) -> Head:
        """A headbench Head holding copies of the first `count` arrived classes' rows."""
        rows = self._rows(count)
        head = Head(self._linear.in_features).to(self._linear.weight.device)
        head.weight = nn.Parameter(self._linear.weight.detach()[rows].clone())  # (count, dim)
        head.bias = nn.Parameter(self._linear.bias.detach()[rows].clone())  # (count,)
        return head

    @torch.no_grad()
    def _write_back(self, head: Head) -> None:
        rows = self._rows(head.num_classes)
        self._linear.weight[rows] = head.weight.detach()
        self._linear.bias[rows] = 0.0 if head.bias is None else head.bias.detach()

    def _view(self) -> _ArrivalOrderRows:
        rows = self._rows()
        return _ArrivalOrderRows(self._linear.weight[rows], self._linear.bias[rows])

    @contextmanager
    def _random_stream(self) -> Iterator[None]:
        """Run hooks on the plugin's own stream of the global generator (initial rows,
        random projections), so Avalanche's own draws (its DataLoader's shuffling, new
        nn.Linear rows) neither shift nor are shifted by them."""
        saved = torch.random.get_rng_state()
        torch.random.set_rng_state(self._random_state)
        try:
            yield
        finally:
            self._random_state = torch.random.get_rng_state()
            torch.random.set_rng_state(saved)

    # -- frozen backbone ---------------------------------------------------------------

    def _freeze_backbone(self, model: nn.Module) -> None:
        """Only the head trains: the backbone's modules in eval mode (batch-norm statistics
        and dropout fixed), the head's in the mode Avalanche gave the model."""
        head_modules = set(self._classifier.modules())
        for module in model.modules():
            if module not in head_modules:
                module.training = False

    def _find_classifier(self, model: nn.Module) -> IncrementalClassifier:
        found = [m for m in model.modules() if isinstance(m, IncrementalClassifier)]
        if len(found) != 1:
            raise ValueError(
                f"as_plugin needs a model with exactly one IncrementalClassifier (the head); "
                f"this {type(model).__name__} has {len(found)}"
            )
        return found[0]

    def _capture(self, module: nn.Module, args: tuple) -> None:
        self._features = args[0]

    # -- Avalanche callbacks -----------------------------------------------------------

    def before_training(self, strategy: Any, **kwargs: Any) -> None:
        if self._classifier is None:
            self._classifier = self._find_classifier(strategy.model)
            self._hook = self._classifier.register_forward_pre_hook(self._capture)
            head_parameters = set(self._classifier.parameters())
            for parameter in strategy.model.parameters():
                if parameter not in head_parameters:
                    parameter.requires_grad_(False)
        self.strategy.to(strategy.device)
        self._avalanche = strategy
        self._avalanche_criterion = strategy._criterion
        strategy._criterion = self._criterion

    def after_training(self, strategy: Any, **kwargs: Any) -> None:
        strategy._criterion = self._avalanche_criterion

    def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        classes = arrival_order(strategy.experience)
        repeated = sorted(set(classes) & set(self.arrival))
        if repeated:
            raise ValueError(
                f"experience {len(self._sizes)} brings classes {repeated} again; headbench "
                "strategies are class-incremental (each class arrives in one experience)"
            )
        num_old = len(self.arrival)
        self.arrival += classes
        self._position = None
        self._sizes.append(len(classes))
        self.strategy.validate(self._sizes)
        features, targets = self._experience_data(strategy)
        self._experience = Experience(
            len(self._sizes) - 1, num_old, len(self.arrival), features, targets
        )
        head = self._head(num_old)
        with self._random_stream():
            self.strategy.expand(head, len(classes))
            self.strategy.class_weights = None
            self.strategy.before_experience(head, self._experience)
        self.strategy.hold_old_rows(head, num_old)
        self._write_back(head)
        self._freeze_backbone(strategy.model)
        # headbench builds a fresh optimizer per experience; Avalanche keeps the momentum of
        # a head that did not grow (its new classes' rows already existed).
        for parameter in self._classifier.parameters():
            strategy.optimizer.state.pop(parameter, None)

    def before_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
        if not self.strategy.trains_head:
            strategy.stop_training()  # statistics-only: no minibatch loop
        self._freeze_backbone(strategy.model)

    def _criterion(self, output: Tensor, targets: Tensor) -> Tensor:
        if not self._avalanche.is_training:
            return self._avalanche_criterion(output, targets)
        head = self._view()
        features = self._features  # (batch, dim)
        return self.strategy.loss(head(features), self._positions(targets), features, head)

    def after_update(self, strategy: Any, **kwargs: Any) -> None:
        if self.strategy.needs_after_step():
            head = self._head(len(self.arrival))
            self.strategy.after_step(head)
            self._write_back(head)

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        head = self._head(len(self.arrival))
        with self._random_stream():
            self.strategy.after_experience(head, self._experience)
            self.strategy.update_memory(self._experience)
        self._write_back(head)
        self.weight_norms.append(self.strategy.class_norms(head).tolist())
        self._experience = None

    def after_eval_forward(self, strategy: Any, **kwargs: Any) -> None:
        if not self.arrival:
            return
        with torch.no_grad():
            scores = self.strategy.predict(self._view(), self._features)  # (batch, seen)
        output = torch.full_like(strategy.mb_output, float(self._classifier.mask_value))
        output[:, self._rows()] = scores
        strategy.mb_output = output  # (batch, Avalanche's rows)

    @torch.no_grad()
    def _experience_data(self, strategy: Any) -> tuple[Tensor, Tensor]:
        """The experience's training features (the head's input, backbone in eval mode) and
        arrival-order targets, in the dataset's order: what the engine's hooks receive."""
        dataset = strategy.experience.dataset.eval()
        loader = DataLoader(
            dataset,
            batch_size=strategy.eval_mb_size,
            collate_fn=getattr(dataset, "collate_fn", None),
        )
        was_training = strategy.model.training
        strategy.model.eval()
        features, targets = [], []
        for batch in loader:
            strategy.model(batch[0].to(strategy.device))
            features.append(self._features)
            targets.append(batch[1].to(strategy.device))
        strategy.model.train(was_training)
        targets = self._positions(torch.cat(targets))
        return torch.cat(features), targets  # (samples, dim), (samples,)


def as_plugin(name: str, *, seed: int = 0, **hyperparameters: Any) -> HeadbenchPlugin:
    """A registered strategy, by name or alias, as an Avalanche plugin.

    Args:
        name: registry name or alias (`headbench list strategies`).
        seed: seeds the plugin's random stream (new rows, random projections) as
            `benchmarks.engine.run(..., seed=...)` seeds its own.
        **hyperparameters: the strategy's config keys (`**{"lambda": 100.0}` for EWC's λ).

    Raises:
        HyperparameterError: unknown strategy or hyperparameter, or a strategy whose
            mechanics Avalanche's loop cannot run (the message lists the supported ones).
    """
    return HeadbenchPlugin(strategies.create(name, hyperparameters), seed=seed)
