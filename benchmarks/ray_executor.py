"""Sweep runs as tasks on a Ray cluster (`headbench sweep --executor ray --address ...`).

Each benchmark's features are put into Ray's object store once; a node fetches them once
and every task on it reads them from there. Runs are tasks with a fractional GPU, so many
head-only runs share one GPU. Records land in the same --out (a filesystem every node
shares) through the same claim/publish protocol as local workers (benchmarks.store): a
task whose node dies is retried elsewhere, the dead process's claim is released by the
kernel, and a run that was published before its node died is skipped, not run twice.
Ray is an optional extra; nothing else imports this module.
"""

from __future__ import annotations

from collections.abc import Iterator

from benchmarks import run
from benchmarks.errors import UsageError
from benchmarks.sweep import Executor, Job, Settings, run_job

DEFAULT_GPUS_PER_RUN = 0.125


def _task(job: Job, settings: Settings, features: run.Prepared) -> tuple[str, str]:
    import torch

    torch.set_num_threads(1)  # one CPU per task, as the task requests
    return run_job(job, settings, features)


def connect(executor: Executor) -> None:
    """Import Ray and connect to the cluster; UsageError if either fails (the sweep calls
    this before it writes anything)."""
    try:
        import ray
    except ImportError:
        raise UsageError(
            "--executor ray needs Ray; install it with pip install 'headbench[ray]'"
        ) from None
    try:
        ray.init(address=executor.address, ignore_reinit_error=True, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise UsageError(
            f"--address {executor.address}: no Ray cluster to connect to ({error}); "
            "start one with `ray start --head` or use --executor local"
        ) from None


def ray_results(
    todo: list[Job],
    settings: Settings,
    executor: Executor,
    groups: dict[tuple, run.Prepared],
) -> Iterator[tuple[str, str]]:
    connect(executor)  # a no-op when connected already (ignore_reinit_error)
    import ray

    fraction = executor.gpus_per_run
    if fraction is None:  # eight head-only runs per GPU, unless told otherwise
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        fraction = DEFAULT_GPUS_PER_RUN if has_gpus and settings.device != "cpu" else 0.0
    task = ray.remote(num_cpus=1, num_gpus=fraction, max_retries=3)(_task)
    references = {key: ray.put(features) for key, features in groups.items()}
    pending = [task.remote(job, settings, references[(job.config, job.overrides)]) for job in todo]
    while pending:
        finished, pending = ray.wait(pending, num_returns=1)
        yield ray.get(finished[0])
