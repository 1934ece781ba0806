"""Run records on disk: OUT/runs/<run_id>.json, written atomically, and the summaries."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.errors import UsageError
from reports.atomic import atomic_write_bytes


def atomic_write(path: Path, text: str) -> None:
    """Write text atomically (temporary file, fsync, rename): see reports.atomic."""
    atomic_write_bytes(path, text.encode("utf-8"))


def prepare_out(out: Path) -> Path:
    """Create OUT/runs and prove it writable; UsageError (nothing left behind) if not."""
    runs = out / "runs"
    created = [p for p in (out, runs) if not p.exists()]
    try:
        runs.mkdir(parents=True, exist_ok=True)
        probe, name = tempfile.mkstemp(dir=runs, prefix=".probe.")
        os.close(probe)
        os.unlink(name)
    except OSError as error:
        for path in reversed(created):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        raise UsageError(
            f"--out {out} is not writable ({error.strerror}); give a writable directory"
        ) from None
    return runs


def write_record(runs: Path, record: dict[str, Any]) -> Path:
    path = runs / f"{record['run_id']}.json"
    atomic_write(path, json.dumps(record, indent=1, allow_nan=False) + "\n")
    return path
