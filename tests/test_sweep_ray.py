"""`headbench sweep --executor ray` on a local Ray cluster started by the test (a head and
two worker nodes on this machine), with one worker node killed mid-sweep."""

from __future__ import annotations

import threading
import time

import pytest
from test_sweep import records, slow_config

from benchmarks import sweep
from benchmarks.progress import Progress

ray = pytest.importorskip("ray")


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    # The head takes no tasks, so every run lands on a worker node that can be killed.
    local = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    workers = [local.add_node(num_cpus=1) for _ in range(2)]
    local.wait_for_nodes()
    yield local, workers
    ray.shutdown()
    local.shutdown()


def test_a_ray_sweep_finishes_every_run_once_when_a_worker_node_dies(cluster, tmp_path, blobs_npz):
    local, workers = cluster
    config, out = slow_config(tmp_path, blobs_npz), tmp_path / "out"
    settings = sweep.Settings((), "0-5", "cpu", str(out), None, False)
    executor = sweep.Executor("ray", address=local.address)
    outcome = {}

    def sweeping():
        outcome["result"] = sweep.sweep([str(config)], [], [], settings, executor, Progress(True))

    thread = threading.Thread(target=sweeping)
    thread.start()
    deadline = time.time() + 240
    while len(records(out)) < 3 and time.time() < deadline:
        time.sleep(0.1)
    at_kill = len(records(out))
    local.remove_node(workers[0], allow_graceful=False)  # its tasks are retried elsewhere
    thread.join(timeout=300)
    result = outcome["result"]
    assert len(records(out)) == 24  # 4 strategies × 6 seeds, each recorded once
    assert result.failures == []
    # A task killed after publishing is retried and finds its record: skipped, not rerun.
    assert 3 <= at_kill < 24  # the node died mid-sweep
    assert result.done + result.held == 24
