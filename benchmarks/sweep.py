"""`headbench sweep`: configs × grid points × strategies × seeds, resumable, in N processes.

Every run is planned (and so validated) before any starts. A run's id hashes its resolved
config, seed, data and code version, so the same run has the same id in every sweep:
runs whose record exists are skipped, a grid over one strategy's hyperparameter does not
repeat the others, and re-running a killed sweep finishes exactly the missing runs. Each
run is claimed and published through benchmarks.store, so sweeps sharing an OUT never
run a run twice. A run that raises is recorded as failed (error and traceback) and the
sweep goes on; `--retry-failed` runs those again.

Workers are processes ("spawn": a clean torch in each); each loads a benchmark's
features once (from the feature cache when the backbone computes them) and keeps them
for every run on that benchmark.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re
import tomllib
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks import run, store
from benchmarks.errors import UsageError
from benchmarks.progress import Progress


@dataclass(frozen=True)
class Settings:
    """What every run of a sweep shares (plain values, so workers can receive it)."""

    requested: tuple[str, ...]
    seeds: str | None
    device: str
    out: str
    cache_dir: str | None
    retry_failed: bool


@dataclass(frozen=True)
class Job:
    config: str
    overrides: tuple[str, ...]  # the sweep's --set values, then this grid point's
    strategy: str
    seed: int
    run_id: str


def split_values(text: str) -> list[str]:
    """`100,1000` -> ["100", "1000"]; commas inside [...] or quotes do not split."""
    values, depth, quote, current = [], 0, "", ""
    for character in text:
        if quote:
            quote = "" if character == quote else quote
        elif character in "\"'":
            quote = character
        elif character == "[":
            depth += 1
        elif character == "]":
            depth -= 1
        elif character == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += character
    values.append(current.strip())
    return values


def parse_grid(text: str) -> tuple[str, list[str]]:
    """`--grid strategies.ewc.lambda=100,1000` -> ("strategies.ewc.lambda", ["100", "1000"])."""
    key, sep, raw = text.partition("=")
    values = split_values(raw) if sep else []
    well_formed = re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+", key.strip())
    if not well_formed or not values or not all(values):
        raise UsageError(
            f"--grid {text!r} not understood; expected SECTION.KEY=VALUE,VALUE,... "
            "(e.g. strategies.ewc.lambda=100,1000)"
        )
    for value in values:  # TOML where it parses, else a bare string (as --set)
        try:
            tomllib.loads(f"value = {value}")
        except tomllib.TOMLDecodeError:
            if not re.fullmatch(r"[A-Za-z0-9_.:-]+", value):
                raise UsageError(f"--grid {text!r}: value {value!r} is not valid TOML") from None
    return key.strip(), values


def grid_points(grids: list[str]) -> list[tuple[str, ...]]:
    """The cartesian product of the --grid options, as --set strings per point."""
    axes = [parse_grid(text) for text in grids]
    keys = [key for key, _ in axes]
    if len(set(keys)) != len(keys):
        raise UsageError(f"--grid names a key twice: {keys}; give all its values in one --grid")
    return [
        tuple(f"{key}={value}" for key, value in zip(keys, point, strict=True))
        for point in itertools.product(*(values for _, values in axes))
    ]


def expand(
    configs: list[str], grids: list[str], overrides: list[str], settings: Settings
) -> list[Job]:
    """Every distinct run, in order; plans each (config, grid point), so bad input stops
    the sweep here, before anything is written."""
    jobs: dict[str, Job] = {}
    for config_name, point in itertools.product(configs, grid_points(grids)):
        job_overrides = (*overrides, *point)
        plan = run.plan(
            config_name,
            list(job_overrides),
            list(settings.requested),
            settings.seeds,
            settings.device,
            settings.out,
            settings.cache_dir,
        )
        for name in plan.config["strategies"]:
            for seed in plan.config["training"]["seeds"]:
                run_id, _ = run.run_identity(plan, name, seed)
                jobs.setdefault(run_id, Job(config_name, job_overrides, name, seed, run_id))
    return list(jobs.values())


# Per worker process: plans by (config, overrides), features by what determines them.
_PLANS: dict[tuple, run.Plan] = {}
_PREPARED: dict[str, run.Prepared] = {}


def _prepared(
    job: Job, settings: Settings, features: run.Prepared | None = None
) -> tuple[run.Plan, run.Prepared]:
    key = (job.config, job.overrides)
    if key not in _PLANS:
        _PLANS[key] = run.plan(
            job.config,
            list(job.overrides),
            list(settings.requested),
            settings.seeds,
            settings.device,
            settings.out,
            settings.cache_dir,
        )
    plan = _PLANS[key]
    features_key = run.features_key(plan)
    if features is not None:
        _PREPARED[features_key] = features
    elif features_key not in _PREPARED:
        _PREPARED[features_key] = run.prepare(plan, Progress(quiet=True))
    return plan, _PREPARED[features_key]


def run_job(job: Job, settings: Settings, features: run.Prepared | None = None) -> tuple[str, str]:
    """Run one job unless it is done or held elsewhere: (run_id, "done" | "skipped" |
    "failed: ..."). Exceptions of the run are recorded, not raised. `features`: the
    benchmark's, when the executor ships them (Ray's object store)."""
    out = Path(settings.out)
    claim = store.claim(out, job.run_id, settings.retry_failed)
    if claim is None:
        return job.run_id, "skipped"
    try:
        plan, prepared = _prepared(job, settings, features)
        try:
            record = run.run_one(plan, prepared, job.strategy, job.seed)
        except Exception as error:  # recorded and reported; the sweep goes on
            _, run_config = run.run_identity(plan, job.strategy, job.seed)
            _write_failure(
                out,
                {
                    "run_id": job.run_id,
                    "strategy": job.strategy,
                    "seed": job.seed,
                    "config": run_config,
                    "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc(),
                    "environment": prepared.environment,
                },
            )
            return job.run_id, f"failed: {type(error).__name__}: {error}"
        try:
            store.write_record(out / "runs", record)  # atomic: no partial record is left
            store.clear_failure(out, job.run_id)
        except OSError as error:  # store.atomic_write names the file itself
            raise UsageError(
                f"cannot write the record of {job.run_id} into {out / 'runs'}: "
                f"{error.strerror or error}; free space or give a writable --out"
            ) from None
        return job.run_id, "done"
    finally:
        claim.release()


def _write_failure(out: Path, record: dict) -> None:
    try:
        store.write_failure(out, record)  # atomic_write: a full disk is a UsageError
    except OSError as error:  # the folder cannot be made
        raise UsageError(
            f"cannot write the failure record of {record['run_id']} into {out / 'failed'}: "
            f"{error.strerror or error}; free space or give a writable --out"
        ) from None


@dataclass
class Outcome:
    total: int  # distinct runs in the sweep
    already: int  # recorded before it started (published, or failed unless retried)
    done: int = 0  # published by this sweep
    held: int = 0  # being run (or just finished) by another process
    failures: list[str] = field(default_factory=list)  # "run_id: error", this sweep's


@dataclass(frozen=True)
class Executor:
    """Where runs go: "local" (N processes here) or "ray" (tasks on a Ray cluster)."""

    kind: str = "local"
    workers: int = 1
    address: str = "auto"
    gpus_per_run: float | None = None  # Ray: None = 1/8 where the cluster has GPUs


def sweep(
    configs: list[str],
    grids: list[str],
    overrides: list[str],
    settings: Settings,
    executor: Executor,
    progress: Progress,
) -> Outcome:
    """Run every missing run of the sweep and count what happened."""
    workers = executor.workers
    if workers < 1:
        raise UsageError(f"--workers {workers}: accepted: 1 or more")
    if executor.gpus_per_run is not None and not 0 <= executor.gpus_per_run <= 1:
        raise UsageError(f"--gpus-per-run {executor.gpus_per_run}: accepted: 0..1")
    jobs = expand(configs, grids, overrides, settings)
    out = Path(settings.out)
    if executor.kind == "ray":  # refused before anything is written
        from benchmarks.ray_executor import connect

        connect(executor)
    created = [path for path in (out, out / "runs") if not path.exists()]
    store.prepare_out(out)
    created += [path for path in (out / "claims", out / "failed") if not path.exists()]
    try:
        return _sweep(jobs, settings, executor, progress)
    except (UsageError, KeyboardInterrupt):
        run.remove_empty(created)  # a full disk: no empty folders (whole records stay)
        raise


def _sweep(jobs: list[Job], settings: Settings, executor: Executor, progress: Progress) -> Outcome:
    workers, out = executor.workers, Path(settings.out)
    run.log_tidied(out, progress)
    published = {p.stem for p in (out / "runs").glob("*.json")}
    failed = {p.stem for p in (out / "failed").glob("*.json")}
    finished = published | (set() if settings.retry_failed else failed)
    todo = [job for job in jobs if job.run_id not in finished]
    where = (
        f"Ray at {executor.address}"
        if executor.kind == "ray"
        else f"{workers} worker{'s' if workers > 1 else ''}"
    )
    progress.log(
        f"sweep: {len(jobs)} runs; {len(jobs) - len(todo)} already recorded in {out}, "
        f"{len(todo)} to run on {where}"
    )
    if executor.kind == "ray":
        from benchmarks.ray_executor import ray_results  # connected in sweep()

        results = ray_results(todo, settings, executor, _prepare_groups(todo, settings))
    else:
        if workers > 1 and todo:
            _fill_feature_cache(todo, settings, progress)
        results = _results(todo, settings, workers)
    outcome = Outcome(len(jobs), len(jobs) - len(todo))
    for run_id, status in progress.iterate(results, "runs", total=len(todo)):
        if status == "done":
            outcome.done += 1
        elif status == "skipped":
            outcome.held += 1
        else:
            outcome.failures.append(f"{run_id}: {status.removeprefix('failed: ')}")
            progress.log(f"failed: {outcome.failures[-1]}")
    return outcome


def _results(todo: list[Job], settings: Settings, workers: int):
    if workers == 1 or not todo:  # nothing left to do needs no pool
        for job in todo:
            yield run_job(job, settings)
        return
    context = multiprocessing.get_context("spawn")
    workers = min(workers, len(todo))
    # N workers share the cores; oversubscribed torch threads slowed small head updates
    # several times over on a busy machine.
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=torch.set_num_threads, initargs=(threads,)
    ) as pool:
        futures = [pool.submit(run_job, job, settings) for job in todo]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _prepare_groups(todo: list[Job], settings: Settings) -> dict[tuple, run.Prepared]:
    """(config, overrides) -> its benchmark's features, each computed or loaded once."""
    groups = {}
    for job in {(job.config, job.overrides): job for job in todo}.values():
        groups[(job.config, job.overrides)] = _prepared(job, settings)[1]
    return groups


def _fill_feature_cache(todo: list[Job], settings: Settings, progress: Progress) -> None:
    """Load or compute each benchmark's features once here, so that workers find them in
    the feature cache instead of all computing them at once."""
    _prepare_groups(todo, settings)
    _PLANS.clear()  # the parent keeps no tensors while the workers run
    _PREPARED.clear()
    progress.log("features: ready for every benchmark of the sweep")
