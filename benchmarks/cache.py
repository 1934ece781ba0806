"""The on-disk cache of frozen features and base-task backbones, under a content hash.

A frozen backbone maps an image to the same features forever, so features are computed
once per (dataset fingerprint, split, backbone and weights, preprocessing, precision,
dtype, augmented views) and every later run, strategy and seed reads them from here.

Layout: `DIR/<kind>/<digest>.pt` holds the tensors with their key and a checksum;
`DIR/<kind>/<digest>.json` beside it describes the entry for `headbench cache ls`. Both
are written atomically (temporary file in the same folder, fsync, `os.replace`), so an
interrupted write leaves no entry at all. A truncated or altered entry is detected on
read (it does not load, or its key or checksum differs), reported in one log line,
deleted and recomputed. An entry's modification time is its last use; `headbench cache
clear --older-than DAYS` removes the entries not used for that long.

The directory is `--cache-dir`, else the environment variable `HEADBENCH_CACHE`, else
`headbench` under the user cache directory (`$XDG_CACHE_HOME` or `~/.cache` on Linux,
`~/Library/Caches` on macOS, `%LOCALAPPDATA%` on Windows).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.errors import UsageError
from reports.atomic import atomic_write_with

CACHE_FORMAT = 1
ENVIRONMENT_VARIABLE = "HEADBENCH_CACHE"
KINDS = ("features", "backbones")


def user_cache_root() -> Path:
    """The platform's per-user cache folder (no dependency on platformdirs)."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def resolve_directory(option: str | None = None) -> Path:
    """`--cache-dir`, else $HEADBENCH_CACHE, else the user cache dir's `headbench`."""
    if option:
        return Path(option).expanduser()
    if os.environ.get(ENVIRONMENT_VARIABLE):
        return Path(os.environ[ENVIRONMENT_VARIABLE]).expanduser()
    return user_cache_root() / "headbench"


def canonical(key: dict[str, Any]) -> str:
    """The key as canonical JSON: what is hashed and what an entry carries."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def digest_of(key: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(key).encode()).hexdigest()[:32]


def tensor_checksum(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and raw bytes of the tensors, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    """One cache entry as `headbench cache ls` shows it."""

    kind: str
    digest: str
    path: Path
    size: int  # bytes of the .pt and .json together
    last_used: float  # seconds since the epoch
    description: str


class Cache:
    """Read and write entries of one cache directory; `log` gets the one-line reports."""

    def __init__(self, directory: Path, log: Callable[[str], None] = lambda message: None):
        self.directory = Path(directory)
        self.log = log

    def path(self, kind: str, key: dict[str, Any]) -> Path:
        return self.directory / kind / f"{digest_of(key)}.pt"

    def check_writable(self) -> None:
        """Create the directory and prove it writable; UsageError naming it if not."""
        created = [p for p in (self.directory, *self.directory.parents) if not p.exists()]
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe, name = tempfile.mkstemp(dir=self.directory, prefix=".probe.")
            os.close(probe)
            os.unlink(name)
        except OSError as error:
            for path in created:
                if path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
            raise UsageError(
                f"feature cache {self.directory} is not writable ({error.strerror}); give a "
                f"writable --cache-dir or set {ENVIRONMENT_VARIABLE}, or run with --no-cache"
            ) from None

    def load(self, kind: str, key: dict[str, Any]) -> tuple[dict[str, Tensor], str] | None:
        """(tensors, checksum) stored under `key`, or None if absent or damaged (deleted)."""
        path = self.path(kind, key)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT:
                raise ValueError(f"not a format-{CACHE_FORMAT} entry")
            if entry["key"] != canonical(key):
                raise ValueError("it holds another key")
            if tensor_checksum(entry["tensors"]) != entry["checksum"]:
                raise ValueError("its checksum does not match its contents")
        except Exception as error:  # a truncated zip, unpickling errors, missing fields
            reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
            self.log(f"cache: {kind} entry {path} is corrupted ({reason}); recomputing it")
            self.remove(path)
            return None
        os.utime(path)  # last use, for `cache clear --older-than`
        return entry["tensors"], entry["checksum"]

    def save(
        self, kind: str, key: dict[str, Any], tensors: dict[str, Tensor], description: str
    ) -> tuple[str, str]:
        """Store `tensors` under `key` atomically; returns (digest, checksum)."""
        path = self.path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        stored = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
        checksum = tensor_checksum(stored)
        entry = {
            "format": CACHE_FORMAT,
            "key": canonical(key),
            "checksum": checksum,
            "tensors": stored,
        }
        sidecar = {
            "key": key,
            "checksum": checksum,
            "description": description,
            "created": time.time(),
        }
        text = json.dumps(sidecar, indent=1, sort_keys=True).encode()
        try:
            atomic_write_with(path, lambda stream: torch.save(entry, stream))
            atomic_write_with(path.with_suffix(".json"), lambda stream: stream.write(text))
        except OSError as error:  # a full disk: no entry without its sidecar is left
            self.remove(path)
            raise UsageError(
                f"feature cache: cannot write {path}: {error.strerror or error}; free space, "
                f"give another --cache-dir or run with --no-cache"
            ) from None
        return path.stem, checksum

    @staticmethod
    def remove(path: Path) -> int:
        """Delete an entry's .pt and .json; returns the bytes freed."""
        freed = 0
        for file in (path.with_suffix(".pt"), path.with_suffix(".json")):
            try:
                freed += file.stat().st_size
                file.unlink()
            except FileNotFoundError:
                pass
        return freed

    def entries(self) -> list[Entry]:
        """Every entry, newest use first; an entry without its .json is listed as such."""
        found = []
        for kind in KINDS:
            folder = self.directory / kind
            if not folder.is_dir():
                continue
            for path in folder.glob("*.pt"):
                sidecar = path.with_suffix(".json")
                try:
                    description = json.loads(sidecar.read_text())["description"]
                    size = sidecar.stat().st_size
                except (OSError, ValueError, KeyError, TypeError):
                    description, size = "(no description)", 0
                stat = path.stat()
                found.append(
                    Entry(kind, path.stem, path, stat.st_size + size, stat.st_mtime, description)
                )
        return sorted(found, key=lambda entry: -entry.last_used)

    def clear(self, older_than_days: float | None = None) -> tuple[int, int]:
        """Remove entries (all, or those unused for more than N days) and stray temporaries.

        Returns (entries removed, bytes freed).
        """
        cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
        removed = freed = 0
        for entry in self.entries():
            if cutoff is None or entry.last_used < cutoff:
                freed += self.remove(entry.path)
                removed += 1
        for kind in KINDS:
            folder = self.directory / kind
            if folder.is_dir():
                for stray in [*folder.glob(".*.tmp"), *folder.glob("*.json")]:
                    if stray.suffix == ".json" and stray.with_suffix(".pt").exists():
                        continue
                    if cutoff is None or stray.stat().st_mtime < cutoff:
                        freed += stray.stat().st_size
                        stray.unlink(missing_ok=True)
        return removed, freed


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover


def human_age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def listing(cache: Cache) -> str:
    """The text of `headbench cache ls`."""
    entries = cache.entries()
    lines = [f"feature cache {cache.directory}:"]
    if not entries:
        return lines[0] + " empty"
    now = time.time()
    for entry in entries:
        lines.append(
            f"  {entry.kind:<9} {entry.digest[:12]}  {human_size(entry.size):>9}  "
            f"used {human_age(now - entry.last_used):>9} ago  {entry.description}"
        )
    total = sum(entry.size for entry in entries)
    lines.append(f"{len(entries)} entries, {human_size(total)}")
    return "\n".join(lines)
