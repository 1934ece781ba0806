"""Run records on disk: OUT/runs/<run_id>.json, written atomically, and the summaries.

Several processes (sweep workers, two sweeps on one OUT, machines on a shared
filesystem) may run into the same run. A run is claimed before it starts by holding an
exclusive `flock` on OUT/claims/<run_id>.lock, and published by renaming its finished
record into OUT/runs/ while the lock is still held. The kernel drops the lock of a
process that dies (even by SIGKILL), so a stale claim is recovered by the next claimant
without any timeout; a claimant checks for the record after locking, so a run that was
published meanwhile is never run twice. A run that raised is recorded in
OUT/failed/<run_id>.json (error and traceback) instead.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
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
    if out.is_symlink() and not out.exists():
        raise UsageError(
            f"--out {out} is a symbolic link to {os.readlink(out)}, which does not exist; "
            "give a directory, or a link to one"
        )
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


def record_path(out: Path, run_id: str) -> Path:
    return out / "runs" / f"{run_id}.json"


def failure_path(out: Path, run_id: str) -> Path:
    return out / "failed" / f"{run_id}.json"


class Claim:
    """The exclusive right to run one run: an open, flock-ed file under OUT/claims/."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path, self.descriptor = path, descriptor

    def release(self) -> None:
        """Remove the claim file, then drop the lock (in this order: see the module doc)."""
        self.path.unlink(missing_ok=True)
        os.close(self.descriptor)


def claim(out: Path, run_id: str, retry_failed: bool = False) -> Claim | None:
    """Claim a run; None when it is published, failed (unless retried) or held by a live
    process. The caller runs it, publishes or records its failure, then releases."""
    claims = out / "claims"
    try:
        claims.mkdir(exist_ok=True)
    except FileExistsError:
        raise UsageError(
            f"{claims} exists and is not a folder; accepted: a folder of claims or none"
        ) from None
    path = claims / f"{run_id}.lock"
    # Never follow a link planted in claims/: truncating it would overwrite its target.
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o666)
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.EISDIR):
            raise
        kind = "a symbolic link" if error.errno == errno.ELOOP else "a directory"
        raise UsageError(
            f"claim {path} is {kind}; accepted: a regular file or none (remove it and run again)"
        ) from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise UsageError(f"claim {path} is not a regular file; accepted: a regular file or none")
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    done = record_path(out, run_id).exists()
    if not done and failure_path(out, run_id).exists():
        done = not retry_failed
    if done:
        os.close(descriptor)  # leave the file: its holder may still be releasing it
        return None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, json.dumps({"pid": os.getpid(), "host": os.uname().nodename}).encode())
    return Claim(path, descriptor)


def write_failure(out: Path, record: dict[str, Any]) -> Path:
    """A failed run's record (error and traceback) in OUT/failed/; not read by reports."""
    path = failure_path(out, record["run_id"])
    path.parent.mkdir(exist_ok=True)
    atomic_write(path, json.dumps(record, indent=1, allow_nan=False) + "\n")
    return path


def clear_failure(out: Path, run_id: str) -> None:
    failure_path(out, run_id).unlink(missing_ok=True)
