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
import time
from pathlib import Path
from typing import Any

from benchmarks.errors import UsageError
from reports.atomic import atomic_write_bytes

FOLDERS = ("runs", "failed", "claims")  # what OUT holds besides the summaries
# A writer creates its temporary file, then locks it (microseconds apart): a file younger
# than this may be one whose lock is not taken yet.
TMP_GRACE_SECONDS = 10.0


def atomic_write(path: Path, text: str) -> None:
    """Write text atomically (temporary file, fsync, rename): see reports.atomic. A full
    disk or any other failure is a UsageError naming the file; nothing of it is left."""
    try:
        atomic_write_bytes(path, text.encode("utf-8"))
    except OSError as error:
        raise _unwritable(path, error) from None


def prepare_out(out: Path) -> Path:
    """Create OUT/runs and prove it writable; UsageError (nothing left behind) if not."""
    runs = out / "runs"
    if out.is_symlink() and not out.exists():
        raise UsageError(
            f"--out {out} is a symbolic link to {os.readlink(out)}, which does not exist; "
            "give a directory, or a link to one"
        )
    for folder in (out / name for name in FOLDERS):
        if (folder.is_symlink() or folder.exists()) and not folder.is_dir():
            raise UsageError(
                f"{folder} exists and is not a folder; accepted: a folder or none "
                f"(--out holds {', '.join(FOLDERS)})"
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
    except OSError as error:
        raise _unwritable(claims, error) from None
    path = claims / f"{run_id}.lock"
    # Never follow a link planted in claims/: truncating it would overwrite its target.
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o666)
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.EISDIR):
            raise _unwritable(path, error) from None
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
        if record_path(out, run_id).exists():
            _unlink_if_held(path, descriptor)  # published: no one needs this claim again
        os.close(descriptor)
        return None
    try:
        os.ftruncate(descriptor, 0)
        owner = json.dumps({"pid": os.getpid(), "host": os.uname().nodename}).encode()
        if os.write(descriptor, owner) != len(owner):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError as error:  # a full disk: no claim, not even an empty one, is left
        _unlink_if_held(path, descriptor)
        os.close(descriptor)
        raise _unwritable(path, error) from None
    return Claim(path, descriptor)


def _unwritable(path: Path, error: OSError) -> UsageError:
    full = error.errno in (errno.ENOSPC, errno.EDQUOT)
    hint = "free space or give a writable --out" if full else "give a writable --out"
    return UsageError(f"cannot write {path}: {error.strerror or error}; {hint}")


def _unlink_if_held(path: Path, descriptor: int) -> bool:
    """Remove `path` if it is still the file locked through `descriptor` (not one a newer
    claimant created after an earlier holder removed ours)."""
    try:
        if os.stat(path, follow_symlinks=False).st_ino != os.fstat(descriptor).st_ino:
            return False
        path.unlink()
    except OSError:
        return False
    return True


def tidy(out: Path) -> list[Path]:
    """Remove what killed processes left in OUT: temporary files of atomic writes that no
    live writer holds (reports.atomic locks them while writing), and claims of published
    runs that no one holds. Returns the paths removed.

    A claim of a run without a record is kept: its run is still to be done, and the next
    claimant takes it over. Only files are locked and checked here, so a concurrent sweep
    or writer is never disturbed."""
    removed = []
    for folder in (out, *(out / name for name in FOLDERS)):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(".*.tmp")):
            if _remove_unheld(path, lambda path=path: _older_than(path, TMP_GRACE_SECONDS)):
                removed.append(path)
    claims = out / "claims"
    if claims.is_dir():
        for path in sorted(claims.glob("*.lock")):
            published = record_path(out, path.stem)
            if _remove_unheld(path, published.exists):
                removed.append(path)
    return removed


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except OSError:
        return False


def _remove_unheld(path: Path, condition) -> bool:
    """Lock `path` without waiting; if no one holds it and `condition()`, remove it."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False  # gone meanwhile, a link, unreadable: leave it
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: a live writer or claimant
        return condition() and _unlink_if_held(path, descriptor)
    finally:
        os.close(descriptor)


def write_failure(out: Path, record: dict[str, Any]) -> Path:
    """A failed run's record (error and traceback) in OUT/failed/; not read by reports."""
    path = failure_path(out, record["run_id"])
    path.parent.mkdir(exist_ok=True)
    atomic_write(path, json.dumps(record, indent=1, allow_nan=False) + "\n")
    return path


def clear_failure(out: Path, run_id: str) -> None:
    failure_path(out, run_id).unlink(missing_ok=True)
