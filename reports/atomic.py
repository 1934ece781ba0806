"""Atomic file writes, shared by run records (benchmarks/) and reports."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_with(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through `write(stream)` into a temporary file beside `path`, fsync, then
    rename it over `path`.

    A crash or Ctrl-C leaves either the old file or the new one, never half of one. The
    file gets the usual permissions (mkstemp's 0600 would hide shared results). The
    temporary file is flock-ed until it is renamed, so a cleaner (benchmarks.store.tidy)
    removes only those whose writer died (a SIGKILL skips the cleanup below).
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    lock = os.dup(handle)  # holds the lock after the stream closes, until the rename
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:  # a filesystem without locks: the cleaner's 10 s grace still holds
            pass
        os.chmod(temporary, 0o666 & ~_UMASK)
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    finally:
        os.close(lock)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`data` written atomically (see atomic_write_with)."""
    atomic_write_with(path, lambda stream: stream.write(data))
