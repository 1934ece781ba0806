"""The training engine: one strategy, one seed, over every experience of a scenario.

Heads train on device-resident feature tensors: each epoch draws one index order (a
permutation, or class-balanced oversampling) and slices minibatches by index (no
DataLoader, no per-step host sync; the loss is summed on the device and read once per
experience). A strategy may add exemplars to the training set (`training_set`) and ask
for a second stage on other parameters (`calibration`, BiC's bias correction); the same
loop runs both. Evaluation after experience i fills row i of
the accuracy matrix over every class seen so far, with no task labels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from benchmarks.scenario import Scenario
from strategies import Experience, Head, Strategy
from strategies.base import make_head


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (too high a learning rate, usually)."""


@dataclass
class RunResult:
    accuracy_matrix: list[list[float | None]]  # R[i][j]; None where j > i (not yet seen)
    test_counts: list[int]  # test samples per experience
    newest_share: list[float]  # share of predictions on the newest experience's classes
    weight_norms: list[list[float]]  # per-class L2 norms of the head's rows, per experience
    train_loss: list[float | None]  # mean minibatch loss per experience; None: no training
    seconds: dict[str, float] = field(default_factory=dict)


def make_optimizer(parameters: list[Tensor], training: dict[str, Any]) -> torch.optim.Optimizer:
    if training["optimizer"] == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=training["lr"],
            momentum=training["momentum"],
            weight_decay=training["weight_decay"],
        )
    return torch.optim.Adam(parameters, lr=training["lr"], weight_decay=training["weight_decay"])


def _overrides(strategy: Strategy, hook: str) -> bool:
    return getattr(type(strategy), hook) is not getattr(Strategy, hook)


def run(
    strategy: Strategy,
    train_features: Tensor,
    train_targets: Tensor,
    test_features: Tensor,
    test_targets: Tensor,
    scenario: Scenario,
    training: dict[str, Any],
    bias: bool,
    seed: int,
    head_kind: str = "linear",
) -> RunResult:
    """Train and evaluate one strategy; targets are arrival-order ids on the device.

    Same inputs and seed on the CPU give a byte-identical accuracy matrix.
    """
    device = train_features.device
    torch.manual_seed(seed)  # head initialisation and memory draws use the global CPU generator
    shuffle = torch.Generator().manual_seed(seed)
    head = make_head(head_kind, train_features.shape[1], bias).to(device)
    strategy.to(device)
    boundaries = scenario.boundaries
    num_experiences = scenario.num_experiences
    experience_of_class = torch.repeat_interleave(
        torch.arange(num_experiences, device=device),
        torch.tensor(scenario.experience_sizes, device=device),
    )  # (classes,)
    test_experience = experience_of_class[test_targets]  # (test,)
    test_counts = torch.bincount(test_experience, minlength=num_experiences).tolist()
    if 0 in test_counts:
        raise ValueError(f"an experience has no test samples: test counts {test_counts}")
    rows, shares, norms, losses = [], [], [], []
    train_seconds = eval_seconds = 0.0

    for index in range(num_experiences):
        started = time.perf_counter()
        num_old, num_seen = boundaries[index], boundaries[index + 1]
        first = 0 if strategy.trains_on_all_seen else num_old
        selected = (train_targets >= first) & (train_targets < num_seen)
        features, targets = train_features[selected], train_targets[selected]  # (n, dim), (n,)
        experience = Experience(index, num_old, num_seen, features, targets)

        strategy.expand(head, num_seen - num_old)
        features, targets = strategy.training_set(experience)  # (n', dim), (n',)
        strategy.class_weights = class_weights(targets, num_seen, training)
        strategy.before_experience(head, experience)
        mean_loss = None
        if strategy.trains_head:
            mean_loss = train_loop(
                list(head.parameters()),
                lambda batch_features, batch_targets: strategy.loss(
                    head(batch_features), batch_targets, batch_features, head
                ),
                strategy.after_update if _overrides(strategy, "after_update") else None,
                head,
                features,
                targets,
                training,
                training["epochs"],
                training.get("sampling", "uniform"),
                shuffle,
            )
            _check_finite(strategy, mean_loss, index, training)
        strategy.after_experience(head, experience)
        calibration = strategy.calibration(head, experience)
        if calibration is not None:
            calibration_loss = train_loop(
                calibration.parameters,
                calibration.loss,
                None,
                head,
                calibration.features,
                calibration.targets,
                {**training, "weight_decay": 0.0},
                calibration.epochs,
                "uniform",
                shuffle,
            )
            _check_finite(strategy, calibration_loss, index, training)
        strategy.update_memory(experience)
        train_seconds += time.perf_counter() - started

        started = time.perf_counter()
        row, share, norm = evaluate(
            strategy,
            head,
            test_features,
            test_targets,
            test_experience,
            num_old,
            num_seen,
            num_experiences,
        )
        accuracies = [correct / total for correct, total in zip(row, test_counts, strict=True)][
            : index + 1
        ]
        rows.append(accuracies + [None] * (num_experiences - index - 1))
        shares.append(share)
        norms.append(norm)
        losses.append(mean_loss)
        eval_seconds += time.perf_counter() - started

    return RunResult(
        rows, test_counts, shares, norms, losses, {"train": train_seconds, "evaluate": eval_seconds}
    )


def _check_finite(strategy: Strategy, mean_loss: float, index: int, training: dict) -> None:
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(
            f"{strategy.name}: the loss became {mean_loss} in experience {index}; "
            f"lower training.lr (now {training['lr']}) or the strategy's penalty weight"
        )


def class_weights(targets: Tensor, num_seen: int, training: dict[str, Any]) -> Tensor | None:
    """`training.class_weighting = "balanced"`: w_c = n / (C · n_c) over the C classes present.

    Every class present then carries the same total weight in the loss (King & Zeng 2001;
    scikit-learn's "balanced"); classes absent from the training set get weight 0, which
    cross-entropy never reads (it weighs each sample by its target's weight).
    """
    if training.get("class_weighting", "none") == "none":
        return None
    counts = torch.bincount(targets, minlength=num_seen).float()  # (seen,)
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = len(targets) / (present.sum() * counts[present])
    return weights


def epoch_order(targets: Tensor, sampling: str, shuffle: torch.Generator) -> Tensor:
    """One epoch's sample indices, shuffled.

    "uniform": each sample once. "class_balanced": every class present is drawn as often
    as the largest one (random oversampling): its samples are repeated whole as often as
    they fit, the rest drawn without replacement, so each class contributes equally.
    """
    if sampling == "uniform":
        return torch.randperm(len(targets), generator=shuffle)
    members = [
        torch.nonzero(targets.cpu() == label).squeeze(1) for label in targets.unique().tolist()
    ]
    largest = max(len(m) for m in members)
    drawn = []
    for indices in members:
        repeats, rest = divmod(largest, len(indices))
        extra = indices[torch.randperm(len(indices), generator=shuffle)[:rest]]
        drawn.append(torch.cat([indices.repeat(repeats), extra]))
    everything = torch.cat(drawn)
    return everything[torch.randperm(len(everything), generator=shuffle)]


def train_loop(
    parameters: list[Tensor],
    loss_of: Callable[[Tensor, Tensor], Tensor],
    after_update: Callable[[Head], None] | None,
    head: Head,
    features: Tensor,
    targets: Tensor,
    training: dict[str, Any],
    epochs: int,
    sampling: str,
    shuffle: torch.Generator,
) -> float:
    """The minibatch loop of one stage of one experience; returns the mean minibatch loss.

    One index order per epoch, minibatches sliced by index; the loss is summed on the
    device and read once at the end.
    """
    batch_size = training["batch_size"]
    optimizer = make_optimizer(parameters, training)
    orders = [epoch_order(targets, sampling, shuffle) for _ in range(epochs)]
    steps = sum(math.ceil(len(order) / batch_size) for order in orders)
    loss_sum = torch.zeros((), device=features.device)
    step = 0
    for order in orders:
        for batch in order.to(features.device).split(batch_size):
            if training["schedule"] == "cosine":
                for group in optimizer.param_groups:
                    group["lr"] = 0.5 * training["lr"] * (1 + math.cos(math.pi * step / steps))
            loss = loss_of(features[batch], targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if after_update is not None:
                after_update(head)
            loss_sum += loss.detach()
            step += 1
    return (loss_sum / steps).item()


@torch.no_grad()
def evaluate(
    strategy: Strategy,
    head: Head,
    test_features: Tensor,
    test_targets: Tensor,
    test_experience: Tensor,
    num_old: int,
    num_seen: int,
    num_experiences: int,
) -> tuple[list[float], float, list[float]]:
    """Correct predictions per experience, share on the newest classes, row norms."""
    seen = test_targets < num_seen
    predictions = strategy.predict(head, test_features[seen]).argmax(dim=1)  # (seen test,)
    correct = (predictions == test_targets[seen]).float()
    per_experience = torch.zeros(num_experiences, device=correct.device)
    per_experience.index_add_(0, test_experience[seen], correct)
    share = (predictions >= num_old).float().mean()
    return (
        per_experience.tolist(),
        share.item(),
        strategy.class_norms(head).tolist(),
    )
