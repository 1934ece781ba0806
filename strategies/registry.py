"""The strategy registry: `@register("name")` on a Strategy class, and lookup by name.

Third-party strategies register through the `headbench.strategies` entry-point group
(each entry point names a module or class; importing it runs its `@register`).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from strategies.base import HyperparameterError, Strategy, build_config

_REGISTRY: dict[str, type[Strategy]] = {}
_ALIASES: dict[str, str] = {}
_BUILTIN = (
    "naive",
    "weight_aligning",
    "ewc",
    "lwf",
    "joint",
    "ncm",
    "slda",
    "ridge",
    "replay",
    "bic",
    "seq_star",
    "fecam",
    "fetril",
    "gdumb",
    "mas",
    "si",
    "new_label_detector",
    "icarl",
    "der",
)
_loaded = False


def register(name: str, *aliases: str):
    """Class decorator: make a strategy available under `name` (and its aliases)."""

    def decorate(cls: type[Strategy]) -> type[Strategy]:
        taken = set(_REGISTRY) | set(_ALIASES)
        for key in (name, *aliases):
            if key in taken and _REGISTRY.get(key) is not cls:
                raise ValueError(f"strategy name {key!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        _ALIASES.update({alias: name for alias in aliases})
        return cls

    return decorate


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN:
        importlib.import_module(f"strategies.{module}")
    for entry in entry_points(group="headbench.strategies"):
        entry.load()


def canonical_name(name: str) -> str:
    """The registry name for a name or alias; HyperparameterError listing the accepted."""
    _load()
    if name in _REGISTRY:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    raise HyperparameterError(
        f"unknown strategy {name!r}; accepted: {', '.join(list_strategies())}"
    )


def list_strategies() -> list[str]:
    """Registry names: the built-ins in their fixed order, then others as registered."""
    _load()
    builtin = [
        name
        for module in _BUILTIN
        for name in _REGISTRY
        if _REGISTRY[name].__module__ == f"strategies.{module}"
    ]
    return builtin + [name for name in _REGISTRY if name not in builtin]


def aliases_of(name: str) -> list[str]:
    return [alias for alias, target in _ALIASES.items() if target == name]


def get_strategy(name: str) -> type[Strategy]:
    return _REGISTRY[canonical_name(name)]


def create(name: str, hyperparameters: dict[str, Any] | None = None) -> Strategy:
    """A fresh strategy from its name and a (possibly partial) hyperparameter table."""
    cls = get_strategy(name)
    return cls(build_config(cls.name, cls.Config, hyperparameters or {}))
