"""`headbench tune`: choose hyperparameters on a validation split, then test the choice.

Tuning on the test set is the field's most common sin. Here every grid point is scored
on a validation split: the dataset's own when it has one (CLINC150's `val`, a `text`
dataset's `val` file, an .npz's X_val/y_val; the whole training split then trains), else
one held out from the training data (a stratified fraction of each class, fixed by its
own seed; `--validation-fraction` and `--validation-seed` are refused with an own split,
which they would not change), optionally on the first k experiences only (the protocol of
Chaudhry et al., "Efficient Lifelong Learning with A-GEM", ICLR 2019: tune on the first
tasks, then evaluate on the whole stream), averaged over the seeds. The best point by
the criterion (ties: the first in grid order) then runs on the test split over the same
seeds, and each of its records states how it was chosen (`selection`).

The backbone is the benchmark's own (features are computed once, from the whole training
split); a `base-task` backbone has therefore seen the validation samples of the base
classes during its training, as it has seen every training sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import strategies
from benchmarks import engine, run, store, sweep
from benchmarks.datasets import Data
from benchmarks.errors import UsageError
from benchmarks.progress import Progress
from benchmarks.scenario import Scenario
from reports.metrics import METRICS, all_metrics

DEFAULT_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0


@dataclass(frozen=True)
class Protocol:
    # Of each class's training samples held out for validation; None: the dataset's own
    # validation split when it has one, else DEFAULT_FRACTION.
    fraction: float | None
    split_seed: int | None  # of that held-out split; None: DEFAULT_SPLIT_SEED
    criterion: str  # a METRICS key
    first_experiences: int | None  # tune on the first k experiences only


def validation_split(targets: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of held-out training samples: round(fraction · n_c) of each class
    (at least one, and at least one left to train on), drawn by RandomState(seed)."""
    generator = np.random.RandomState(seed)
    held_out = np.zeros(len(targets), dtype=bool)
    for label in np.unique(targets):
        members = generator.permutation(np.flatnonzero(targets == label))
        count = min(max(1, round(fraction * len(members))), len(members) - 1)
        held_out[members[:count]] = True
    return held_out


def resolve_protocol(protocol: Protocol, data: Data) -> Protocol:
    """The protocol with its split settled: the dataset's own validation split (fraction and
    seed None) or a held-out one (the defaults filled in). Giving a fraction or a seed for
    a dataset with its own split is refused: they would silently change nothing."""
    if data.val_targets is not None:
        given = [
            flag
            for flag, value in (
                ("--validation-fraction", protocol.fraction),
                ("--validation-seed", protocol.split_seed),
            )
            if value is not None
        ]
        if given:
            raise UsageError(
                f"{given[0]} is not accepted: dataset {data.name!r} has its own validation "
                f"split ({len(data.val_targets)} samples), which tune scores on; leave out "
                "--validation-fraction and --validation-seed"
            )
        return protocol
    return replace(
        protocol,
        fraction=DEFAULT_FRACTION if protocol.fraction is None else protocol.fraction,
        split_seed=DEFAULT_SPLIT_SEED if protocol.split_seed is None else protocol.split_seed,
    )


def _check(protocol: Protocol, num_experiences: int) -> None:
    if protocol.fraction is not None and not 0 < protocol.fraction < 1:
        raise UsageError(
            f"--validation-fraction {protocol.fraction} is not accepted; use a value in (0, 1)"
        )
    if protocol.criterion not in METRICS:
        raise UsageError(
            f"--criterion {protocol.criterion!r} is not accepted; use one of {list(METRICS)}"
        )
    k = protocol.first_experiences
    if k is not None and not 2 <= k <= num_experiences:
        raise UsageError(
            f"--first-experiences {k} is not accepted; use 2..{num_experiences} (the "
            "benchmark's experiences; one experience has no forgetting to tune against)"
        )


def score(plan: run.Plan, prepared: run.Prepared, protocol: Protocol) -> dict[str, float]:
    """The criterion on the validation split for each seed, keyed by seed: the dataset's
    own (`protocol.fraction` None) or one held out of the training split."""
    scenario = plan.scenario
    num_experiences = protocol.first_experiences or scenario.num_experiences
    num_classes = scenario.boundaries[num_experiences]
    truncated = Scenario(list(range(num_classes)), scenario.initial_classes, scenario.increment)
    features, all_targets = prepared.features.train, prepared.train_targets
    kept = all_targets < num_classes  # (train,)
    if protocol.fraction is None:
        val_features, val_targets = own_validation(plan, prepared, truncated)
    else:
        targets = all_targets.cpu().numpy()
        held_out = validation_split(targets, protocol.fraction, protocol.split_seed)
        held_out = torch.from_numpy(held_out).to(kept.device)
        val_features, val_targets = features[kept & held_out], all_targets[kept & held_out]
        kept = kept & ~held_out
    (name,) = plan.config["strategies"]
    scores = {}
    for seed in plan.config["training"]["seeds"]:
        seed_kept = kept  # a few-shot stream trains on the seed's shots only
        if plan.train_subset is not None:
            seed_kept = kept & run.kept_mask(plan, seed)
        result = engine.run(
            strategies.create(name, plan.config["strategies"][name]),
            features[seed_kept],
            all_targets[seed_kept],
            val_features,
            val_targets,
            truncated,
            plan.config["training"],
            plan.config["head"]["bias"],
            seed,
            plan.config["head"]["kind"],
            head_loss=plan.config["head"]["loss"],
        )
        scores[str(seed)] = all_metrics(result.accuracy_matrix, result.test_counts)[
            protocol.criterion
        ]
    return scores


def check_own_validation(plan: run.Plan, protocol: Protocol) -> None:
    """Every scored experience needs samples in the dataset's own validation split."""
    scenario = plan.scenario
    num_experiences = protocol.first_experiences or scenario.num_experiences
    targets = scenario.remap(plan.data.val_targets)  # (val,) arrival-order ids
    targets = targets[targets < scenario.boundaries[num_experiences]]
    experience = np.searchsorted(scenario.boundaries, targets, "right") - 1
    counts = np.bincount(experience, minlength=num_experiences).tolist()
    if 0 in counts:
        empty = counts.index(0)
        raise UsageError(
            f"dataset {plan.data.name!r}: its validation split has no samples of experience "
            f"{empty + 1} (classes {scenario.original_classes(empty)[:10]}); every scored "
            "experience needs validation samples"
        )


def own_validation(
    plan: run.Plan, prepared: run.Prepared, truncated: Scenario
) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's validation features and arrival-order targets of the scored classes."""
    features, targets = prepared.features.val, prepared.val_targets
    if features is None or targets is None:
        raise UsageError(
            f"dataset {plan.data.name!r} has a validation split but backbone "
            f"{plan.config['backbone']['name']!r} gave no features for it"
        )
    kept = targets < truncated.num_classes  # (val,)
    return features[kept], targets[kept]


def tune(
    config_name: str,
    strategy: str,
    grids: list[str],
    overrides: list[str],
    protocol: Protocol,
    settings: sweep.Settings,
    progress: Progress,
) -> tuple[list[tuple[tuple[str, ...], float]], tuple[str, ...], list[dict[str, Any]]]:
    """Score every grid point on validation, run the best on test; returns the scores
    (point, mean over seeds), the chosen point and the test records written."""
    points = sweep.grid_points(grids)
    plans = [
        run.plan(
            config_name,
            [*overrides, *point],
            [strategy],
            settings.seeds,
            settings.device,
            settings.out,
            settings.cache_dir,
        )
        for point in points
    ]
    protocol = resolve_protocol(protocol, plans[0].data)
    _check(protocol, plans[0].scenario.num_experiences)
    if plans[0].train_subset is not None and protocol.fraction is not None:
        raise UsageError(
            "tune with scenario.shots, base_shots or protocol scores on a dataset's own "
            f"validation split (clinc150 has one); dataset {plans[0].data.name!r} has none, "
            "and a split held out of its training data would take samples of the few shots"
        )
    if protocol.fraction is None:
        check_own_validation(plans[0], protocol)
    (name,) = plans[0].config["strategies"]
    _check_grid_keys(points[0], name)
    out = Path(settings.out)
    created = [path for path in (out, out / "runs") if not path.exists()]
    store.prepare_out(out)
    try:
        return _tune(points, plans, name, protocol, out, progress)  # an alias resolved
    except (UsageError, KeyboardInterrupt):
        run.remove_empty(created)  # every point diverged, a full disk: no empty folders
        raise


def _check_grid_keys(point: tuple[str, ...], name: str) -> None:
    """A grid over another strategy's hyperparameter changes nothing tune runs: its
    "choice" would be noise recorded as a selection."""
    for setting in point:
        key = setting.partition("=")[0]
        parts = key.split(".")
        other = strategies.canonical_name(parts[1]) if parts[0] == "strategies" else name
        if other != name:
            raise UsageError(
                f"--grid {key} sets a hyperparameter of {other!r}, but tune runs only "
                f"{name!r}; accepted: strategies.{name}.KEY or keys of [training], [head]"
            )


def _tune(
    points: list[tuple[str, ...]],
    plans: list[run.Plan],
    strategy: str,
    protocol: Protocol,
    out: Path,
    progress: Progress,
) -> tuple[list[tuple[tuple[str, ...], float]], tuple[str, ...], list[dict[str, Any]]]:
    run.log_tidied(out, progress)
    prepared = run.prepare(plans[0], progress)  # the grid varies the strategy and training
    higher_is_better = METRICS[protocol.criterion][1]
    scores = []
    for point, plan in progress.iterate(list(zip(points, plans, strict=True)), "validation"):
        if run.features_key(plan) != run.features_key(plans[0]):
            prepared = run.prepare(plan, progress)
        try:
            per_seed = score(plan, prepared, protocol)
            mean = float(np.mean(list(per_seed.values())))
        except engine.TrainingDiverged as error:
            progress.log(f"validation: {' '.join(point)} diverged ({error})")
            mean = math.nan
        scores.append((point, mean))
    finite = [(p, s) for p, s in scores if math.isfinite(s)]
    if not finite:
        raise UsageError("every grid point diverged on the validation split; widen the grid")
    pick = max if higher_is_better else min
    chosen = pick(finite, key=lambda item: item[1])[0]  # max/min keep the first of ties
    plan = plans[points.index(chosen)]
    if run.features_key(plan) != run.features_key(plans[0]):
        prepared = run.prepare(plan, progress)
    own = protocol.fraction is None
    selection = {
        "method": "grid search on the dataset's own validation split"
        if own
        else "grid search on a validation split of the training data",
        "validation_split": "dataset" if own else "held_out",
        "validation_fraction": protocol.fraction,  # null: the dataset's own split
        "validation_seed": protocol.split_seed,
        "criterion": protocol.criterion,
        "first_experiences": protocol.first_experiences,
        "seeds": plan.config["training"]["seeds"],
        # strict JSON: null for a point that diverged
        "scores": {" ".join(p): None if math.isnan(v) else v for p, v in scores},
        "chosen": " ".join(chosen),
    }
    records = []
    for seed in plan.config["training"]["seeds"]:
        record = run.run_one(plan, prepared, strategy, seed)
        record["selection"] = selection
        store.write_record(out / "runs", record)
        records.append(record)
    return scores, chosen, records
