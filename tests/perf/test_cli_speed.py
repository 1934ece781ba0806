"""Start-up of `headbench run` against bare `python -c "import torch"`, both in fresh
subprocesses of the same session (issue 14: a single run is mostly start-up).

One naive seed on the test blobs, so the run itself is milliseconds and the difference is
the command's overhead: imports, deterministic mode, config, records. Read
`extra_info.overhead_seconds` and `extra_info.ratio_to_import_torch`, never bare seconds.
"""

import subprocess
import sys
import time

from conftest import write_config

IMPORT_TORCH = [sys.executable, "-c", "import torch"]


def test_cli_run_against_import_torch(benchmark, tmp_path, blobs_npz):
    config = write_config(tmp_path, blobs_npz, "[strategies.naive]\n")
    command = [sys.executable, "-m", "benchmarks.cli", "run", str(config), "--quiet"]
    command += ["--device", "cpu", "--out", str(tmp_path / "out")]
    bare = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(IMPORT_TORCH, check=True)
        bare.append(time.perf_counter() - started)
    benchmark.pedantic(
        subprocess.run,
        args=(command,),
        kwargs={"check": True, "capture_output": True},
        rounds=3,
        iterations=1,
    )
    baseline = min(bare)
    benchmark.extra_info["import_torch_seconds"] = baseline
    benchmark.extra_info["overhead_seconds"] = benchmark.stats.stats.min - baseline
    benchmark.extra_info["ratio_to_import_torch"] = benchmark.stats.stats.min / baseline
