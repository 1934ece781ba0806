"""Reading local weight files, shared by the torchvision and timm families."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from benchmarks.errors import UsageError
from benchmarks.progress import Progress


def load_state_dict(path: Path, label: str) -> dict[str, Tensor]:
    """A state dict from a checkpoint (plain, or under "state_dict" / "model")."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UsageError(
                f"{path}: reading .safetensors needs `pip install safetensors`"
            ) from None
        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise UsageError(
                f"backbone.weights = {str(path)!r} cannot be read as a torch checkpoint "
                f"({type(error).__name__}); give a .pth file saved with torch.save(state_dict)"
            ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise UsageError(f"backbone.weights = {str(path)!r} holds no state dict for {label}")
    return {key.removeprefix("module."): value for key, value in state.items()}


def fit_state_dict(network: nn.Module, state: dict[str, Tensor], path: Path, label: str) -> None:
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        missing = sorted(set(network.state_dict()) - set(state))
        unexpected = sorted(set(state) - set(network.state_dict()))
        details = (
            "; ".join(
                f"{name} {keys[:3]}"
                for name, keys in (("missing", missing), ("unexpected", unexpected))
                if keys
            )
            or str(error).splitlines()[0]
        )
        raise UsageError(
            f"backbone.weights = {str(path)!r} does not fit {label} ({details}); give weights "
            "saved from the same architecture"
        ) from None


@contextlib.contextmanager
def download_messages(progress: Progress) -> Iterator[None]:
    """Download notices and bars go to stderr, or nowhere when quiet: stdout keeps the table
    and a failed download stays one line."""
    import io

    if progress.quiet:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    else:
        with contextlib.redirect_stdout(sys.stderr):
            yield
