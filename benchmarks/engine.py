"""The training engine: one strategy over every experience of a scenario, for one seed
(`run`) or several trained as one batched computation (`run_seeds`).

Heads train on device-resident feature tensors: each epoch draws one index order (a
permutation, or class-balanced oversampling), gathers the training set in that order
once and takes its minibatches as contiguous views (no DataLoader, no per-step host
sync; the loss is summed on the device and read once per experience). A strategy may
add exemplars to the training set (`training_set`) and ask for a second stage on other
parameters (`calibration`, BiC's bias correction); the same loop runs both. Evaluation
after experience i fills row i of the accuracy matrix over every class seen so far, with
no task labels, and row i of the task-aware matrix from the same scores, each sample's
argmax taken among its own experience's classes only (`evaluate`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

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
    # The old-label check (`class_counts`): per experience, correct test predictions per
    # seen class and, per old class, its test samples predicted as the newest classes.
    class_correct: list[list[int]] = field(default_factory=list)
    class_to_newest: list[list[int]] = field(default_factory=list)
    class_test_counts: list[int] = field(default_factory=list)  # (classes,) arrival order
    # R_aware[i][j]: as accuracy_matrix, each sample scored among its experience's classes
    task_aware_accuracy_matrix: list[list[float | None]] | None = None


class HeadSGD:
    """SGD with momentum and weight decay for a head's few parameters: torch.optim.SGD's
    update, written out.

    The same tensor operations in the same order as `torch.optim.SGD`'s per-tensor path
    with dampening 0 and no Nesterov (weight decay added to the gradient, the momentum
    buffer a copy of the first gradient then `buf·μ + g`, the parameter moved by
    `−lr·buf`), so every result is bit-identical to it (tests/test_engine.py compares
    them, step by step). What it leaves out is torch.optim's per-step bookkeeping (the
    profiler range, step hooks, the group and state dictionaries), about a quarter of a
    naive step on a 100 × 512 head on CPU (docs/development.md). Parameters without a
    gradient are skipped, as torch.optim does.
    """

    def __init__(self, parameters: list[Tensor], lr: float, momentum: float, weight_decay: float):
        self.parameters = parameters
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.buffers: list[Tensor | None] = [None] * len(parameters)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for index, parameter in enumerate(self.parameters):
            gradient = parameter.grad
            if gradient is None:
                continue
            if self.weight_decay != 0:
                gradient = gradient.add(parameter, alpha=self.weight_decay)
            if self.momentum != 0:
                buffer = self.buffers[index]
                if buffer is None:
                    buffer = self.buffers[index] = gradient.detach().clone()
                else:
                    buffer.mul_(self.momentum).add_(gradient)
                gradient = buffer
            parameter.add_(gradient, alpha=-self.lr)


def make_optimizer(
    parameters: list[Tensor], training: dict[str, Any]
) -> HeadSGD | torch.optim.Adam:
    if training["optimizer"] == "sgd":
        return HeadSGD(
            parameters,
            lr=training["lr"],
            momentum=training["momentum"],
            weight_decay=training["weight_decay"],
        )
    return torch.optim.Adam(parameters, lr=training["lr"], weight_decay=training["weight_decay"])


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
    progress: Callable[[str], None] | None = None,
    head_loss: str = "softmax",
    train_kept: Tensor | None = None,
) -> RunResult:
    """Train and evaluate one strategy; targets are arrival-order ids on the device.

    Same inputs and seed on the CPU give a byte-identical accuracy matrix.
    """
    data = (train_features, train_targets, test_features, test_targets)
    kept = None if train_kept is None else [train_kept]
    return run_seeds(
        [strategy], *data, scenario, training, bias, [seed], head_kind, progress, head_loss, kept
    )[0]


def run_seeds(
    strategies: list[Strategy],
    train_features: Tensor,
    train_targets: Tensor,
    test_features: Tensor,
    test_targets: Tensor,
    scenario: Scenario,
    training: dict[str, Any],
    bias: bool,
    seeds: list[int],
    head_kind: str = "linear",
    progress: Callable[[str], None] | None = None,
    head_loss: str = "softmax",
    train_kept: list[Tensor] | None = None,
) -> list[RunResult]:
    """`run` for several seeds of one strategy (one fresh instance per seed, same config),
    with the minibatch loops of all seeds trained as one batched computation.

    Hooks and evaluation run per seed, each on its own random stream (as `run` seeds it).
    Each experience's head training runs once for all seeds (`batched_train_loop`:
    `torch.func.vmap` over the seeds' stacked heads and strategy buffers) when the seeds'
    training sets have equal sizes and the strategies agree on every attribute their
    loss may read other than buffers (`class_weights`, `num_old`, ...); otherwise, and
    for calibration stages, seed after seed. Gradients and optimizer steps are per seed,
    so each seed follows `run`'s trajectory within float32 rounding: vmap's batched
    kernels may sum in another order than the per-seed ones (which order depends on the
    CPU's vector width), so weights and mean losses agree within a bound derived from the
    number of steps, not bit for bit, and the accuracy matrices of every tested case are
    equal (tests/test_engine_seeds.py). What is shared is the per-step overhead:
    1.05-1.4x per seed on 2 CPU cores, where the step is close to compute-bound; on a GPU
    it is expected to pay more, which has not been measured (docs/running.md, "Several
    seeds as one batch").

    `progress` receives "experience k/T" as each experience starts and, for strategies
    that train the head, "experience k/T, epoch e/E" as each epoch starts. `head_loss`
    (`[head] loss`) is set on every strategy as `head_loss` before the first experience.

    `train_kept`: per seed, a (train,) mask of the training samples its stream keeps (a
    few-shot scenario, benchmarks/shots.py); samples outside it are never trained on.
    """
    if len(strategies) != len(seeds) or len(train_kept or seeds) != len(seeds):
        raise ValueError(f"{len(strategies)} strategies for {len(seeds)} seeds")
    if len({type(strategy) for strategy in strategies}) > 1:
        raise ValueError("run_seeds takes instances of one strategy, one per seed")
    for strategy in strategies:
        strategy.head_loss = head_loss
    runs = [
        _SeedRun(strategy, seed, train_features.shape[1], bias, head_kind, train_features.device)
        for strategy, seed in zip(strategies, seeds, strict=True)
    ]
    experience_of_class = torch.repeat_interleave(
        torch.arange(scenario.num_experiences, device=train_features.device),
        torch.tensor(scenario.experience_sizes, device=train_features.device),
    )  # (classes,)
    test_experience = experience_of_class[test_targets]  # (test,)
    test_counts = torch.bincount(test_experience, minlength=scenario.num_experiences).tolist()
    class_test_counts = torch.bincount(test_targets, minlength=len(experience_of_class)).tolist()
    if 0 in test_counts:
        raise ValueError(f"an experience has no test samples: test counts {test_counts}")
    strategy = strategies[0]

    for index in range(scenario.num_experiences):
        started = time.perf_counter()
        where = f"experience {index + 1}/{scenario.num_experiences}"
        on_epoch = None if progress is None else _epoch_reporter(progress, where, training)
        if progress is not None:
            progress(where)
        num_old, num_seen = scenario.boundaries[index], scenario.boundaries[index + 1]
        first = 0 if strategy.trains_on_all_seen else num_old
        selected = (train_targets >= first) & (train_targets < num_seen)
        if train_kept is None:  # (n, dim), (n,): shared by the seeds
            data = [(train_features[selected], train_targets[selected])] * len(runs)
        else:  # each seed's own few shots
            data = [(train_features[selected & k], train_targets[selected & k]) for k in train_kept]
        sets = [
            r.begin(Experience(index, num_old, num_seen, *d), training)
            for r, d in zip(runs, data, strict=True)
        ]
        losses: list[float | None] = [None] * len(runs)
        if strategy.trains_head:
            orders = [
                [
                    epoch_order(targets, training.get("sampling", "uniform"), r.shuffle)
                    for _ in range(training["epochs"])
                ]
                for r, (_, targets) in zip(runs, sets, strict=True)
            ]
            if len(runs) > 1 and batchable(runs, sets, orders):
                losses = batched_train_loop(runs, sets, orders, training, on_epoch)
            else:
                losses = [
                    train_loop(
                        list(r.head.parameters()),
                        r.objective,
                        r.strategy.after_step if r.strategy.needs_after_step() else None,
                        r.head,
                        features,
                        targets,
                        training,
                        order,
                        on_epoch,
                    )
                    for r, (features, targets), order in zip(runs, sets, orders, strict=True)
                ]
        elapsed = (time.perf_counter() - started) / len(runs)
        for r, loss in zip(runs, losses, strict=True):
            r.seconds["train"] += elapsed
            r.finish(
                index,
                loss,
                training,
                test_features,
                test_targets,
                test_experience,
                experience_of_class,
                scenario,
            )
            r.losses.append(loss)
    return [r.result(test_counts, class_test_counts) for r in runs]


def _epoch_reporter(
    progress: Callable[[str], None], where: str, training: dict[str, Any]
) -> Callable[[int], None]:
    """What the training loops call as epoch `epoch` (from 0) starts: "<where>, epoch e/E"."""
    return lambda epoch: progress(f"{where}, epoch {epoch + 1}/{training['epochs']}")


class _SeedRun:
    """One seed's strategy, head, random streams and results, experience by experience."""

    def __init__(
        self,
        strategy: Strategy,
        seed: int,
        dim: int,
        bias: bool,
        head_kind: str,
        device: torch.device,
    ) -> None:
        self.strategy = strategy
        # Head initialisation and memory draws use the global CPU generator, seeded per
        # run; each seed's state is swapped in around its hooks (`own_stream`).
        torch.manual_seed(seed)
        self.random_state = torch.get_rng_state()
        self.shuffle = torch.Generator().manual_seed(seed)  # minibatch orders
        with self.own_stream():
            self.head = make_head(head_kind, dim, bias).to(device)
        strategy.to(device)
        self.rows: list[list[float | None]] = []
        self.aware_rows: list[list[float | None]] = []
        self.shares: list[float] = []
        self.norms: list[list[float]] = []
        self.losses: list[float | None] = []
        self.class_correct: list[list[int]] = []
        self.class_to_newest: list[list[int]] = []
        self.seconds = {"train": 0.0, "evaluate": 0.0}

    @contextmanager
    def own_stream(self) -> Iterator[None]:
        torch.set_rng_state(self.random_state)
        try:
            yield
        finally:
            self.random_state = torch.get_rng_state()

    def objective(self, features: Tensor, targets: Tensor) -> Tensor:
        return self.strategy.loss(self.head(features), targets, features, self.head)

    def begin(self, experience: Experience, training: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Grow the head and run the hooks before training; returns the training set."""
        strategy = self.strategy
        self.experience = experience
        with self.own_stream():
            strategy.expand(self.head, experience.num_new)
            features, targets = strategy.training_set(experience)  # (n', dim), (n',)
            strategy.class_weights = class_weights(targets, experience.num_seen, training)
            strategy.before_experience(self.head, experience)
        strategy.hold_old_rows(self.head, experience.num_old)
        if training["optimizer"] == "sgd":
            problem = strategy.stability_error(training["lr"], training["momentum"])
            if problem is not None:
                raise TrainingDiverged(f"{problem} (before experience {experience.index})")
        return features, targets

    def finish(
        self,
        index: int,
        mean_loss: float | None,
        training: dict[str, Any],
        test_features: Tensor,
        test_targets: Tensor,
        test_experience: Tensor,
        experience_of_class: Tensor,
        scenario: Scenario,
    ) -> None:
        """The hooks after training, any calibration stage, the memory, and row `index`."""
        strategy, head, experience = self.strategy, self.head, self.experience
        started = time.perf_counter()
        if mean_loss is not None:
            _check_finite(strategy, mean_loss, index, training)
        with self.own_stream():
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
                    [
                        epoch_order(calibration.targets, "uniform", self.shuffle)
                        for _ in range(calibration.epochs)
                    ],
                )
                _check_finite(strategy, calibration_loss, index, training)
            strategy.update_memory(experience)
        self.seconds["train"] += time.perf_counter() - started

        started = time.perf_counter()
        num_experiences = scenario.num_experiences
        scores = seen_scores(strategy, head, test_features, test_targets, experience.num_seen)
        predictions = scores.argmax(dim=1)  # (seen test,)
        row, aware_row, share, norm = evaluate(
            strategy,
            head,
            test_features,
            test_targets,
            test_experience,
            experience.num_old,
            experience.num_seen,
            num_experiences,
            experience_of_class,
            scores,
            predictions,
        )
        seen_targets = test_targets[test_targets < experience.num_seen]  # (seen test,)
        correct, to_newest = class_counts(
            predictions, seen_targets, experience.num_old, experience.num_seen
        )
        if not all(math.isfinite(value) for value in norm):
            # Weights that overflowed (or whose norm does) predict nothing meaningful, even
            # where the mean loss stayed finite: a diverged run, like a NaN loss.
            raise TrainingDiverged(
                f"{strategy.name}: the head's weights overflowed in experience {index}; "
                f"lower training.lr (now {training['lr']}) or the strategy's penalty weight"
            )
        unseen = [None] * (num_experiences - index - 1)
        self.rows.append(row[: index + 1] + unseen)
        self.aware_rows.append(aware_row[: index + 1] + unseen)
        self.shares.append(share)
        self.norms.append(norm)
        self.class_correct.append(correct)
        self.class_to_newest.append(to_newest)
        self.seconds["evaluate"] += time.perf_counter() - started

    def result(self, test_counts: list[int], class_test_counts: list[int]) -> RunResult:
        def fractions(rows: list[list[float | None]]) -> list[list[float | None]]:
            return [
                [None if c is None else c / n for c, n in zip(row, test_counts, strict=True)]
                for row in rows
            ]

        return RunResult(
            fractions(self.rows),
            test_counts,
            self.shares,
            self.norms,
            self.losses,
            self.seconds,
            self.class_correct,
            self.class_to_newest,
            class_test_counts,
            task_aware_accuracy_matrix=fractions(self.aware_rows),
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
    after_step: Callable[[Head], None] | None,
    head: Head,
    features: Tensor,
    targets: Tensor,
    training: dict[str, Any],
    orders: list[Tensor],
    on_epoch: Callable[[int], None] | None = None,
) -> float:
    """The minibatch loop of one stage of one experience; returns the mean minibatch loss.

    `orders`: one index order per epoch (`epoch_order`); each epoch gathers the data in
    its order once, and the loss is summed on the device and read once at the end.
    """
    batch_size = training["batch_size"]
    optimizer = make_optimizer(parameters, training)
    steps = sum(math.ceil(len(order) / batch_size) for order in orders)
    loss_sum = torch.zeros((), device=features.device)
    step = 0
    for epoch, order in enumerate(orders):
        if on_epoch is not None:
            on_epoch(epoch)
        order = order.to(features.device)
        # One gather per epoch; the minibatches are then contiguous views.
        epoch_features, epoch_targets = features[order], targets[order]
        for batch_features, batch_targets in zip(
            epoch_features.split(batch_size), epoch_targets.split(batch_size), strict=True
        ):
            _schedule(optimizer, training, step, steps)
            loss = loss_of(batch_features, batch_targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step(head)
            loss_sum += loss.detach()
            step += 1
    return (loss_sum / steps).item()


def _schedule(
    optimizer: HeadSGD | torch.optim.Adam, training: dict[str, Any], step: int, steps: int
) -> None:
    if training["schedule"] == "cosine":
        lr = 0.5 * training["lr"] * (1 + math.cos(math.pi * step / steps))
        if isinstance(optimizer, HeadSGD):
            optimizer.lr = lr
        else:
            for group in optimizer.param_groups:
                group["lr"] = lr


def _loss_state(strategy: Strategy) -> dict[str, Any]:
    """A strategy's attributes that are neither buffers, parameters nor submodules: what
    its loss reads from the instance itself (`class_weights`, `num_old`, its config)."""
    return {name: value for name, value in vars(strategy).items() if not name.startswith("_")}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (
            isinstance(a, Tensor)
            and isinstance(b, Tensor)
            and a.shape == b.shape
            and bool(torch.equal(a, b))
        )
    return a == b


def batchable(
    runs: list[_SeedRun], sets: list[tuple[Tensor, Tensor]], orders: list[list[Tensor]]
) -> bool:
    """Whether the seeds' loops can run as one batched computation: a strategy whose loss
    changes no state (`batchable`), equal training-set and epoch sizes, buffers of equal
    shapes, and equal non-buffer loss state."""
    first = runs[0]
    if not first.strategy.batchable:
        return False
    if any(len(features) != len(sets[0][0]) for features, _ in sets):
        return False
    if any([len(o) for o in order] != [len(o) for o in orders[0]] for order in orders):
        return False
    buffers = dict(first.strategy.named_buffers())
    state = _loss_state(first.strategy)
    for other in runs[1:]:
        other_buffers = dict(other.strategy.named_buffers())
        if other_buffers.keys() != buffers.keys() or any(
            other_buffers[name].shape != buffer.shape for name, buffer in buffers.items()
        ):
            return False
        other_state = _loss_state(other.strategy)
        if other_state.keys() != state.keys() or not all(
            _same(state[name], other_state[name]) for name in state
        ):
            return False
    return True


class _Objective(nn.Module):
    """One seed's loss, or its after-step hooks, as a module `functional_call` can run
    with another seed's head parameters and strategy buffers swapped in."""

    def __init__(self, strategy: Strategy, head: Head) -> None:
        super().__init__()
        self.strategy, self.head = strategy, head

    def forward(self, features: Tensor | None, targets: Tensor | None) -> Tensor | None:
        if features is None:
            self.strategy.after_step(self.head)
            return None
        return self.strategy.loss(self.head(features), targets, features, self.head)


def batched_train_loop(
    runs: list[_SeedRun],
    sets: list[tuple[Tensor, Tensor]],
    orders: list[list[Tensor]],
    training: dict[str, Any],
    on_epoch: Callable[[int], None] | None = None,
) -> list[float]:
    """`train_loop` for S seeds at once; returns each seed's mean minibatch loss.

    The heads' parameters are stacked into (S, ...) leaves and the strategies' buffers
    into (S, ...) tensors; each step evaluates the first seed's loss under
    `torch.func.vmap` with seed s's parameters, buffers and minibatch in slot s, and
    back-propagates the sum of the S losses, whose gradient in slot s is seed s's own.
    One optimizer then steps all slots; its updates are elementwise (SGD, Adam), so
    each slot follows its seed's trajectory. `after_step` runs per seed on views of
    its slot, each holding its slot's gradient in `.grad` (SI reads it). The trained slots
    are copied back into each seed's head.
    """
    first = runs[0]
    device = sets[0][0].device
    parameters = {
        name: torch.stack(
            [dict(r.head.named_parameters())[name].detach() for r in runs]
        ).requires_grad_()
        for name, _ in first.head.named_parameters()
    }  # name: (S, ...)
    buffers = {
        name: torch.stack([dict(r.strategy.named_buffers())[name] for r in runs])
        for name, _ in first.strategy.named_buffers()
    }
    objective = _Objective(first.strategy, first.head)

    def loss_of_one(slot_parameters, slot_buffers, features, targets):
        named = {f"head.{k}": v for k, v in slot_parameters.items()}
        named.update({f"strategy.{k}": v for k, v in slot_buffers.items()})
        return torch.func.functional_call(objective, named, (features, targets))

    losses_of = torch.func.vmap(loss_of_one)
    after_step = None
    if first.strategy.needs_after_step():
        after_step = [_Objective(r.strategy, r.head) for r in runs]
    shared = all(features is sets[0][0] for features, _ in sets)
    features = sets[0][0] if shared else torch.stack([f for f, _ in sets])  # (n, d) | (S, n, d)
    targets = torch.stack([t for _, t in sets])  # (S, n)
    slots = torch.arange(len(runs), device=device)[:, None]  # (S, 1)

    batch_size = training["batch_size"]
    optimizer = make_optimizer(list(parameters.values()), training)
    epochs = [torch.stack(epoch).to(device) for epoch in zip(*orders, strict=True)]  # (S, n)
    steps = sum(math.ceil(epoch.shape[1] / batch_size) for epoch in epochs)
    loss_sum = torch.zeros(len(runs), device=device)
    step = 0
    for number, epoch in enumerate(epochs):
        if on_epoch is not None:
            on_epoch(number)
        for batch in epoch.split(batch_size, dim=1):  # (S, b)
            _schedule(optimizer, training, step, steps)
            batch_features = features[batch] if shared else features[slots, batch]  # (S, b, d)
            with warnings.catch_warnings():  # torch's note that kl_div runs seed by seed
                warnings.filterwarnings("ignore", "There is a performance drop", UserWarning)
                losses = losses_of(parameters, buffers, batch_features, targets[slots, batch])
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            if after_step is not None:
                for slot, module in enumerate(after_step):
                    views = {f"head.{k}": v.detach()[slot] for k, v in parameters.items()}
                    for k, v in parameters.items():  # the step's gradient, as `train_loop`'s
                        views[f"head.{k}"].grad = v.grad[slot]
                    torch.func.functional_call(module, views, (None, None))
            loss_sum += losses.detach()
            step += 1
    with torch.no_grad():
        for slot, r in enumerate(runs):
            for name, parameter in r.head.named_parameters():
                parameter.copy_(parameters[name][slot])
    return (loss_sum / steps).tolist()


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
    experience_of_class: Tensor,
    scores: Tensor | None = None,
    predictions: Tensor | None = None,
) -> tuple[list[float], list[float], float, list[float]]:
    """Correct predictions per experience, among all seen classes (task-agnostic) and among
    each sample's own experience's classes (task-aware), share on the newest classes, row
    norms.

    Both come from the same scores, `strategy.predict` (every strategy's evaluation path:
    a head's logits, or the negative distances and discriminants of prototype and
    statistics methods). Task-aware is the accuracy FACIL reports beside the task-agnostic
    one (Masana et al., "Class-incremental learning: survey and performance evaluation on
    image classification", TPAMI 2022): argmax over the scores restricted to the sample's
    experience's class ids, as if a task label were given at test time. Ties go to the
    lowest class id in both, so a sample right among all seen classes is right among its
    own experience's: task-aware >= task-agnostic, entry by entry.
    `experience_of_class` (classes,): the experience of each arrival-order class id.
    `scores`, `predictions`: `seen_scores`'s and their argmax, when the caller has them.
    """
    seen = test_targets < num_seen
    targets, experiences = test_targets[seen], test_experience[seen]  # (seen test,)
    if scores is None:
        scores = seen_scores(strategy, head, test_features, test_targets, num_seen)
    if predictions is None:
        predictions = scores.argmax(dim=1)  # (seen test,)
    own = experience_of_class[:num_seen][None, :] == experiences[:, None]  # (seen test, seen)
    aware = scores.masked_fill(~own, -math.inf).argmax(dim=1)  # (seen test,)
    # A sample whose own scores are all -inf: the argmax of its own slice, its first class.
    first_class = torch.searchsorted(experience_of_class, experiences)  # (seen test,)
    aware = torch.where(own.gather(1, aware[:, None]).squeeze(1), aware, first_class)
    per_experience = torch.zeros(2, num_experiences, device=scores.device)
    per_experience[0].index_add_(0, experiences, (predictions == targets).float())
    per_experience[1].index_add_(0, experiences, (aware == targets).float())
    share = (predictions >= num_old).float().mean()
    correct, aware_correct = per_experience.tolist()
    return correct, aware_correct, share.item(), strategy.class_norms(head).tolist()


@torch.no_grad()
def seen_scores(
    strategy: Strategy, head: Head, test_features: Tensor, test_targets: Tensor, num_seen: int
) -> Tensor:
    """(seen test, seen): the scores over the seen classes of every test sample of one."""
    return strategy.predict(head, test_features[test_targets < num_seen])


def class_counts(
    predictions: Tensor, targets: Tensor, num_old: int, num_seen: int
) -> tuple[list[int], list[int]]:
    """What the old-label check reads, for one experience (classes in arrival order,
    experience's classes num_old..num_seen-1):

    correct[c], c < num_seen: test samples of class c predicted as c;
    to_newest[c], c < num_old: test samples of old class c predicted as one of the
    newest experience's classes (ids >= num_old).
    """
    correct = torch.bincount(targets[predictions == targets], minlength=num_seen)  # (seen,)
    old = targets < num_old
    absorbed = targets[old & (predictions >= num_old)]  # (old samples predicted as new,)
    to_newest = torch.bincount(absorbed, minlength=num_old)[:num_old]  # (old,)
    return correct.tolist(), to_newest.tolist()
