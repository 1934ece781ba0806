"""Head strategies for class-incremental learning on a frozen backbone."""

from strategies.base import Experience, Head, HyperparameterError, Strategy
from strategies.registry import (
    aliases_of,
    canonical_name,
    create,
    get_strategy,
    list_strategies,
    register,
)

__all__ = [
    "Experience",
    "Head",
    "HyperparameterError",
    "Strategy",
    "aliases_of",
    "canonical_name",
    "create",
    "get_strategy",
    "list_strategies",
    "register",
]
