"""`prepare` turns on torch's deterministic kernels in warn-only mode, and on a CPU-only
machine without importing torch's compiler stack (1.6 s of start-up)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from benchmarks import run

PROBE = (
    "import sys, torch; from benchmarks import run; run.deterministic(); "
    "print(torch.are_deterministic_algorithms_enabled(), "
    "torch.is_deterministic_algorithms_warn_only_enabled(), "
    "'torch._inductor.config' in sys.modules)"
)


def test_deterministic_mode_is_on_and_warns_only():
    before = torch.get_deterministic_debug_mode()
    torch.set_deterministic_debug_mode("default")
    try:
        run.deterministic()
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.get_deterministic_debug_mode() == 1  # "warn"
    finally:
        torch.set_deterministic_debug_mode(before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the inductor flag is set too")
def test_a_cpu_run_does_not_import_the_compiler_stack():
    # A fresh interpreter: this one may have imported torch._inductor for other tests.
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=os.environ
    )
    assert result.stdout.split() == ["True", "True", "False"]
