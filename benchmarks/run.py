"""`headbench run`: plan (validate everything, write nothing), then execute.

Planning loads the config, the dataset and the scenario and builds every strategy, so
any bad input stops the run before a file is written. Executing extracts features once,
then trains every (strategy, seed) on them and writes one record per run atomically.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import strategies
from benchmarks import backbones, config, datasets, engine, shots, store
from benchmarks.cache import Cache, resolve_directory
from benchmarks.errors import UsageError
from benchmarks.progress import Progress
from benchmarks.scenario import Scenario, resolve_class_order
from reports import bibliography
from reports.metrics import all_metrics
from reports.records import RunRecord
from strategies.base import build_config, resolved_config


def named_options() -> dict[str, dict[str, dict[str, config.Option]]]:
    return {
        "dataset": {name: spec.options for name, spec in datasets.DATASETS.items()},
        "backbone": {name: spec.options for name, spec in backbones.BACKBONES.items()},
    }


@dataclass
class Plan:
    benchmark: str
    config: dict[str, Any]  # resolved; "strategies" holds the resolved tables of those that run
    data: datasets.Data
    scenario: Scenario
    device: torch.device
    out: Path
    cache_dir: Path | None = None  # the feature cache; None: compute, read and write nothing
    train_subset: shots.TrainSubset | None = None  # few-shot: the samples each experience keeps


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available here; accepted: cpu, auto")
    return torch.device(name)


def select_strategies(
    requested: list[str], configured: list[str], tables: dict[str, dict]
) -> dict[str, dict]:
    """Registry name -> resolved hyperparameters, for the strategies that will run.

    `--strategy` (repeatable, or `all`) picks them; otherwise the config file's
    [strategies.NAME] tables do; otherwise every registered strategy runs. A strategy
    takes its table when there is one (file and `--set`), else the paper defaults.
    """
    if "all" in requested:
        names = strategies.list_strategies()
    elif requested:
        names = list(dict.fromkeys(strategies.canonical_name(n) for n in requested))
    else:
        names = configured or strategies.list_strategies()
    for name, table in tables.items():  # check every table, run or not
        strategies.create(name, table)
    return {
        name: resolved_config(strategies.create(name, tables.get(name, {})).config)
        for name in names
    }


def plan(
    config_name: str,
    overrides: list[str] = (),
    requested: list[str] = (),
    seeds: str | None = None,
    device: str = "auto",
    out: str | None = None,
    cache_dir: str | None = None,
    use_cache: bool = True,
) -> Plan:
    path = config.find_config(config_name)
    raw = config.apply_overrides(config.load_file(path), [], strategies.canonical_name)
    # The file's tables pick the strategies; `--set strategies.X.KEY` only changes values.
    configured = list(raw.get("strategies", {}))
    raw = config.apply_overrides(raw, list(overrides), strategies.canonical_name)
    out_dir = Path(out) if out else Path("results") / path.stem
    return plan_config(
        raw, path.stem, configured, requested, seeds, device, out_dir, cache_dir, use_cache
    )


def plan_config(
    raw: dict[str, Any],
    benchmark: str,
    configured: list[str],
    requested: list[str] = (),
    seeds: str | None = None,
    device: str = "auto",
    out: Path = Path("results"),
    cache_dir: str | None = None,
    use_cache: bool = True,
) -> Plan:
    """`plan` from a config already read (a file with overrides, or a run record's)."""
    raw = copy.deepcopy(raw)
    if seeds is not None:
        raw.setdefault("training", {})["seeds"] = config.parse_seeds(seeds)
    resolved = config.resolve(raw, named_options())
    resolved["strategies"] = select_strategies(list(requested), configured, resolved["strategies"])
    data = datasets.load(resolved["dataset"])
    scenario_table = resolved["scenario"]
    if data.experiences is None:
        scenario = Scenario(
            resolve_class_order(scenario_table["class_order"], data.num_classes),
            scenario_table["initial_classes"],
            scenario_table["increment"],
        )
    else:  # the dataset brings its own split (an Avalanche benchmark): [scenario] must agree
        from benchmarks.scenario import configured_split

        scenario = configured_split(scenario_table, raw.get("scenario", {}), data.experiences)
        # The record holds the explicit order and sizes, so a rerun checks them again.
        scenario_table.update(
            class_order=scenario.class_order,
            initial_classes=scenario.initial_classes,
            increment=scenario.increment,
        )
    backbones.BACKBONES[resolved["backbone"]["name"]].check(data, resolved["backbone"])
    tested = set(np.unique(scenario.remap(data.test_targets)).tolist())
    untested = [c for c in range(data.num_classes) if c not in tested]
    if untested:
        raise UsageError(
            f"classes {[scenario.class_order[c] for c in untested][:10]} have no test samples; "
            "every class needs test data"
        )
    head = resolved["head"]
    if head["kind"] == "cosine" and head["bias"]:
        raise UsageError(
            "head.kind = 'cosine' has no bias (LUCIR's cosine head); set head.bias = false"
        )
    for name, hyperparameters in resolved["strategies"].items():
        strategy = strategies.create(name, hyperparameters)
        strategy.validate(scenario.experience_sizes)
        if head["kind"] not in strategy.head_kinds:
            raise UsageError(
                f"{name} is defined for a {' or '.join(strategy.head_kinds)} head, not "
                f"head.kind = {head['kind']!r}; run it in a config with another head"
            )
        if head["loss"] != "softmax" and not (
            strategy.trains_head and head["loss"] in strategy.head_losses
        ):
            accepted = ", ".join(strategies_with_loss(head["loss"]))
            raise UsageError(
                f"head.loss = {head['loss']!r} is not defined for {name} (statistics, or a "
                f"loss that assumes a softmax); accepted with it: {accepted}"
            )
    train_subset = shots.plan(
        scenario_table,
        scenario,
        data.train_targets,
        data.class_names,
        {n: strategies.get_strategy(n).trains_on_all_seen for n in resolved["strategies"]},
        resolved["backbone"]["name"],
    )
    target = resolve_device(device)
    cache = None
    if use_cache and resolved["backbone"]["name"] != "identity":  # identity computes nothing
        cache = Cache(resolve_directory(cache_dir))  # --cache-dir, $HEADBENCH_CACHE, default
        cache.check_writable()
    return Plan(
        benchmark,
        resolved,
        data,
        scenario,
        target,
        out,
        cache.directory if cache else None,
        train_subset,
    )


def strategies_with_loss(loss: str) -> list[str]:
    """Registered strategies whose default config trains the head with `[head] loss`."""
    names = []
    for name in strategies.list_strategies():
        strategy = strategies.create(name)
        if strategy.trains_head and loss in strategy.head_losses:
            names.append(name)
    return names


PACKAGES = ("torchvision", "scipy", "scikit-learn", "pandas", "avalanche-lib", "timm")


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def code_version() -> dict[str, Any]:
    """The package version and, in a git checkout, the commit and whether it is dirty."""
    try:
        commit = (
            subprocess.run(
                ["git", "describe", "--always", "--dirty", "--abbrev=12"],
                cwd=Path(__file__).parent,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "headbench": package_version("headbench"),
        "git": commit,
        "git_dirty": None if commit is None else commit.endswith("-dirty"),
    }


def environment(device: torch.device) -> dict[str, Any]:
    """The run record's manifest of where a run ran: versions, platform, device, code."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "packages": {name: package_version(name) for name in PACKAGES},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "threads": torch.get_num_threads(),  # float sums are ordered by the thread split
        **code_version(),
    }


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class Prepared:
    """What every run on one benchmark shares: its features and targets on the device."""

    features: backbones.Features
    train_targets: Tensor  # (train,) arrival-order ids
    test_targets: Tensor  # (test,)
    fingerprint: str  # of the features
    seconds: float  # to compute or load them
    environment: dict[str, Any]
    val_targets: Tensor | None = None  # (val,) the dataset's own validation split, if any


def deterministic() -> None:
    """Deterministic kernels for every run (cuBLAS needs its workspace set before use);
    an op without a deterministic version warns instead of failing the run."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch.use_deterministic_algorithms sets inductor's `deterministic` flag (torch.compile's
    # code only; importing torch._inductor.config costs ~1.6 s) and then the kernels' switch,
    # _C._set_deterministic_algorithms; set_deterministic_debug_mode("warn") is that switch
    # alone with warn_only=True (torch 2.x, torch/__init__.py). Nothing here compiles, so on
    # a CPU-only machine the switch is the whole guarantee; with CUDA set both, as before.
    if torch.cuda.is_available():
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.set_deterministic_debug_mode("warn")


def prepare(plan: Plan, progress: Progress) -> Prepared:
    """Compute the benchmark's features once (or read them from the feature cache)."""
    deterministic()
    data, scenario, device = plan.data, plan.scenario, plan.device
    started = time.perf_counter()
    cache = Cache(plan.cache_dir, progress.log) if plan.cache_dir is not None else None
    features = backbones.extract(plan.config["backbone"], data, scenario, device, progress, cache)
    seconds = time.perf_counter() - started
    splits = [features.train, features.test]
    if features.val is not None:  # (without one, the fingerprint is what it always was)
        splits.append(features.val)
    fingerprint = _hash([datasets.fingerprint(f.cpu().numpy()) for f in splits])[:16]
    progress.log(
        f"features: backbone {plan.config['backbone']['name']} (dim {features.train.shape[1]}, "
        f"{seconds:.1f} s, on {device}); reused by every run"
    )
    return Prepared(
        features,
        torch.from_numpy(scenario.remap(data.train_targets)).to(device),
        torch.from_numpy(scenario.remap(data.test_targets)).to(device),
        fingerprint,
        seconds,
        environment(device),
        None
        if data.val_targets is None
        else torch.from_numpy(scenario.remap(data.val_targets)).to(device),
    )


def features_key(plan: Plan) -> str:
    """What determines a plan's features: runs with equal keys can share one `prepare`."""
    tables = [plan.config[section] for section in ("dataset", "backbone", "scenario")]
    return json.dumps([*tables, str(plan.device)], sort_keys=True)


# Config keys added after records were first written, with the value every earlier run
# had: left out of the record's config and of the id while they hold it, so earlier runs
# keep their ids (a sweep resumes, a folder is not filled twice) and group with later ones
# in reports; any other value is written and hashed like every key. Reading a config
# (`reproduce`) fills them in again.
LATER_KEYS = {
    ("head", "loss"): "softmax",
    **{("scenario", key): value for key, value in shots.DEFAULTS.items()},
}


def run_identity(plan: Plan, name: str, seed: int) -> tuple[str, dict[str, Any]]:
    """(run id, the config that reruns exactly this run: one strategy, one seed).

    The config leaves out LATER_KEYS at their old value; the id hashes it, the seed, the
    data and the code version, so one run has one id in every `run`, `sweep` and
    `reproduce`.
    """
    shared = {key: value for key, value in plan.config.items() if key != "strategies"}
    training = {**plan.config["training"], "seeds": [seed]}
    run_config = copy.deepcopy(
        {**shared, "training": training, "strategies": {name: plan.config["strategies"][name]}}
    )
    for (section, key), value in LATER_KEYS.items():
        if run_config.get(section, {}).get(key, value) == value:
            run_config.get(section, {}).pop(key, None)
    identity = {
        "config": run_config,
        "seed": seed,
        "data": plan.data.fingerprint,
        "code": package_version("headbench"),
    }
    return f"{name}-seed{seed}-{_hash(identity)[:12]}", run_config


def run_one(plan: Plan, prepared: Prepared, name: str, seed: int) -> dict[str, Any]:
    """Train and evaluate one (strategy, seed); its record. Raises what the run raises
    (engine.TrainingDiverged when the loss diverges)."""
    return run_batch(plan, prepared, name, [seed])[0]


def run_batch(
    plan: Plan,
    prepared: Prepared,
    name: str,
    seeds: list[int],
    status: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Train several seeds of one strategy as one batched computation (`engine.run_seeds`;
    one seed: `engine.run`); their records. A batch's records name it (`seed_batch`), and
    `reproduce` re-runs them as that batch. `status` receives where the run is (experience,
    epoch; `engine.run_seeds`). Raises what a run raises."""
    instances = [strategies.create(name, plan.config["strategies"][name]) for _ in seeds]
    started = time.perf_counter()
    features = prepared.features
    kept = None if plan.train_subset is None else [kept_mask(plan, seed) for seed in seeds]
    results = engine.run_seeds(
        instances,
        features.train,
        prepared.train_targets,
        features.test,
        prepared.test_targets,
        plan.scenario,
        plan.config["training"],
        plan.config["head"]["bias"],
        seeds,
        plan.config["head"]["kind"],
        status,
        plan.config["head"]["loss"],
        kept,
    )
    seconds = (time.perf_counter() - started) / len(seeds)
    records = [
        _record(plan, prepared, name, seed, result, seconds)
        for seed, result in zip(seeds, results, strict=True)
    ]
    if len(seeds) > 1:
        for record in records:
            record["seed_batch"] = list(seeds)
    return records


def kept_mask(plan: Plan, seed: int) -> Tensor:
    """(train,) True for the training samples a seed's few-shot stream keeps."""
    arrival = plan.scenario.remap(plan.data.train_targets)  # (train,)
    mask = np.ones(len(arrival), dtype=bool)
    for index, indices in enumerate(plan.train_subset.indices_for(seed)):
        if indices is not None:  # the experience keeps only these of its classes' samples
            bounds = plan.scenario.boundaries[index : index + 2]
            mask[(arrival >= bounds[0]) & (arrival < bounds[1])] = False
            mask[indices] = True
    return torch.from_numpy(mask).to(plan.device)


def _metrics(matrix: list[list[float | None]] | None, counts: list[int]) -> dict | None:
    """A record's metrics of `matrix`, strict JSON: null where a metric is undefined (one
    experience); None without a matrix."""
    if matrix is None:
        return None
    return {
        key: None if math.isnan(value) else value
        for key, value in all_metrics(matrix, counts).items()
    }


def _record(
    plan: Plan,
    prepared: Prepared,
    name: str,
    seed: int,
    result: engine.RunResult,
    seconds: float,
) -> dict[str, Any]:
    data, scenario, features = plan.data, plan.scenario, prepared.features
    run_id, run_config = run_identity(plan, name, seed)
    cls = strategies.get_strategy(name)
    display_name, cite_keys = cls.paper_name(
        build_config(name, cls.Config, run_config["strategies"][name])
    )
    return RunRecord(
        run_id=run_id,
        benchmark=plan.benchmark,
        strategy=name,
        paper=cls.paper,
        display_name=display_name,
        references=bibliography.resolve(cite_keys, cls.bibtex),
        seed=seed,
        config=run_config,
        class_order=scenario.class_order,
        experiences=[scenario.original_classes(i) for i in range(scenario.num_experiences)],
        class_names=data.class_names,
        accuracy_matrix=result.accuracy_matrix,
        test_counts=result.test_counts,
        metrics=_metrics(result.accuracy_matrix, result.test_counts),
        task_aware_accuracy_matrix=result.task_aware_accuracy_matrix,
        task_aware_metrics=_metrics(result.task_aware_accuracy_matrix, result.test_counts),
        newest_share=result.newest_share,
        weight_norms=result.weight_norms,
        train_loss=result.train_loss,
        class_accuracy={
            "test_counts": result.class_test_counts,
            "correct": result.class_correct,
            "to_newest": result.class_to_newest,
        },
        seconds={
            "features": prepared.seconds,
            **result.seconds,
            "run": seconds,  # a batch's time shared equally by its seeds
        },
        data_fingerprint=data.fingerprint,
        features_fingerprint=prepared.fingerprint,
        features_cache=features.cache,  # per split: entry digest, checksum, source
        environment=prepared.environment,
        train_subset=None if plan.train_subset is None else plan.train_subset.record(seed),
    ).to_json()


def execute(
    plan: Plan, progress: Progress, batch_seeds: bool = False
) -> tuple[list[dict], list[str], str]:
    """Extract features once, run every (strategy, seed), write records and summaries.

    `batch_seeds`: each strategy's seeds train as one batched computation (`run_batch`);
    a batch in which a seed diverges is run again seed by seed, so the others still get
    their records. A run whose loss diverges is reported and left out (no record); the
    others go on. Returns the records, one line per failed run, and the summary printed.

    The summary (`summary.md`, `summary.csv`) is `headbench report`'s own, over every
    record in the output folder: a partial run (`--strategy ncm`) adds its rows and keeps
    the others'.
    """
    created = [path for path in (plan.out, plan.out / "runs") if not path.exists()]
    runs_dir = store.prepare_out(plan.out)
    try:
        return _execute(plan, progress, batch_seeds, runs_dir)
    except (UsageError, KeyboardInterrupt):
        # Weights that cannot be downloaded, a full disk, an interrupted extraction: no
        # empty results (records written before stay: each is whole).
        remove_empty(created)
        raise


def remove_empty(created: list[Path]) -> None:
    """Remove the folders of `created` (parents first in the list) that are still empty."""
    for path in reversed(created):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def log_tidied(out: Path, progress: Progress) -> None:
    """Clean what killed processes left in OUT (store.tidy) and say what went."""
    removed = store.tidy(out)
    if removed:
        names = ", ".join(str(path.relative_to(out)) for path in removed[:5])
        more = f" and {len(removed) - 5} more" if len(removed) > 5 else ""
        progress.log(
            f"{out}: removed {len(removed)} leftover file{'s' * (len(removed) != 1)} of "
            f"killed processes (unfinished writes, claims of published runs): {names}{more}"
        )


def _execute(
    plan: Plan, progress: Progress, batch_seeds: bool, runs_dir: Path
) -> tuple[list[dict], list[str], str]:
    log_tidied(plan.out, progress)
    data, scenario = plan.data, plan.scenario
    progress.log(
        f"dataset {plan.config['dataset']['name']}: {len(data.train_targets)} train / "
        f"{len(data.test_targets)} test samples, {data.num_classes} classes, "
        f"{scenario.num_experiences} experiences {scenario.experience_sizes}"
    )
    prepared = prepare(plan, progress)
    seeds = plan.config["training"]["seeds"]
    groups = [seeds] if batch_seeds and len(seeds) > 1 else [[seed] for seed in seeds]
    jobs = [(name, group) for name in plan.config["strategies"] for group in groups]
    records, failures = [], []
    for name, group in progress.iterate(jobs, "runs", total=len(jobs)):
        try:
            batch = run_batch(plan, prepared, name, group, progress.status)
        except engine.TrainingDiverged as error:
            if len(group) == 1:
                failures.append(f"{name} seed {group[0]}: {error}")
                progress.log(f"failed: {failures[-1]}")
                continue
            progress.log(f"{name}: a seed diverged in the batch; running its seeds one by one")
            batch = []
            for seed in group:
                try:
                    batch += run_batch(plan, prepared, name, [seed], progress.status)
                except engine.TrainingDiverged as error:
                    failures.append(f"{name} seed {seed}: {error}")
                    progress.log(f"failed: {failures[-1]}")
        for record in batch:
            store.write_record(runs_dir, record)
            records.append(record)
    return records, failures, write_summary(plan.out, failures)


def write_summary(out: Path, failures: list[str] = ()) -> str:
    """`summary.md` and `summary.csv` of every record under `out`, built by `headbench
    report`'s aggregation (the same tables and CSV schema as `OUT/report/`); the Markdown.
    A record there that the report refuses leaves no summary (an earlier one is removed:
    it would no longer describe the folder), and the text says which record and why."""
    from reports.records import ReportError
    from reports.report import build

    failed = ""
    if failures:
        failed = "\nFailed runs (not in the table):\n" + "".join(f"- {f}\n" for f in failures)
    try:
        report = build(out, ["csv"])
    except ReportError as error:
        for name in ("summary.md", "summary.csv"):
            (out / name).unlink(missing_ok=True)
        return f"(no summary table: {error})\n{failed}"
    store.atomic_write(out / "summary.csv", report.files["summary.csv"].decode())
    store.atomic_write(out / "summary.md", report.summary + failed)
    return report.summary + failed


def report_hint(out: Path) -> str:
    """The two lines after a run's table: the exact report command and what it makes."""
    return (
        f"next: headbench report {shlex.quote(str(out))}\n"
        f"  writes {out / 'report'}/: figures (PNG, PDF), LaTeX tables, an HTML page, "
        "report.md with 95% confidence intervals and ranks, and CSVs of every metric"
    )


def print_summary(plan: Plan, records: list[dict], table: str) -> None:
    out = plan.out
    print(table)
    total = len(list((out / "runs").glob("*.json")))
    summaries = f"{out}/summary.md, {out}/summary.csv (" if (out / "summary.md").exists() else ""
    print(
        f"results: {summaries}{total} record{'s' * (total != 1)} in {out}/runs/, "
        f"{len(records)} written now{')' if summaries else ''}"
    )
    print(report_hint(out))
    sys.stdout.flush()
