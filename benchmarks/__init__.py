"""Datasets, scenarios, backbones, the training engine, run records and the CLI."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so that importing benchmarks does not import Avalanche (slow, and warns).
    if name == "from_avalanche":
        from benchmarks.avalanche import from_avalanche

        return from_avalanche
    raise AttributeError(f"module 'benchmarks' has no attribute {name!r}")
