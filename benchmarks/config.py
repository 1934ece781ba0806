"""Benchmark configs: TOML files with a default for every key, strict `--set` overrides,
and the resolved config (every default written out) that run records store.

Sections: [dataset] and [backbone] (keys depend on their `name`, see benchmarks.datasets
and benchmarks.backbones), [head], [scenario], [training], and one [strategies.NAME]
table per strategy to run (an empty table means the paper defaults).
"""

from __future__ import annotations

import copy
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.errors import UsageError

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class Option:
    """One config key: its default, accepted type(s) and a one-line meaning."""

    default: Any
    kind: type | tuple[type, ...]
    meaning: str
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive: tuple[bool, bool] = (False, False)  # (minimum, maximum) excluded

    def check(self, key: str, value: Any) -> Any:
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        accepted = " or ".join(k.__name__ for k in kinds)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise UsageError(f"{key} = {value!r} is not accepted; expected {accepted}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{key} = {value!r} is not accepted; expected a finite number")
        if self.choices and value not in self.choices:
            raise UsageError(f"{key} = {value!r} is not accepted; use one of {list(self.choices)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            low, high = self.minimum, self.maximum
            below = low is not None and (value <= low if self.exclusive[0] else value < low)
            above = high is not None and (value >= high if self.exclusive[1] else value > high)
            if below or above:
                raise UsageError(f"{key} = {value!r} is not accepted; {self.accepted_range()}")
        return value

    def accepted_range(self) -> str:
        """`must be >= 1`, `must be > 0`, `must be in [0, 1)`, or `must be in [1, 10000]`."""
        low, high = self.minimum, self.maximum
        if high is None:
            return f"must be {'>' if self.exclusive[0] else '>='} {low}"
        if low is None:
            return f"must be {'<' if self.exclusive[1] else '<='} {high}"
        opening, closing = "(["[not self.exclusive[0]], ")]"[not self.exclusive[1]]
        return f"must be in {opening}{low}, {high}{closing}"


# Papers train a head for 1-250 epochs per experience; 10^9 once ran with no end in sight.
MAX_EPOCHS = 10_000

FIXED_SECTIONS: dict[str, dict[str, Option]] = {
    "head": {
        "kind": Option(
            "linear",
            str,
            "linear (W x + b) or cosine (LUCIR: σ·cos, learned σ, no bias)",
            choices=("linear", "cosine"),
        ),
        "bias": Option(True, bool, "the head's bias vector (see README: it decides much)"),
        "loss": Option(
            "softmax",
            str,
            "softmax cross-entropy, or sigmoid: one-vs-rest binary cross-entropy per class",
            choices=("softmax", "sigmoid"),
        ),
    },
    "scenario": {
        "class_order": Option(
            "seed:1993",
            (str, list),
            '"identity", "seed:N", "icarl1993" or "podnet" (CIFAR-100) or [ids...]; '
            '"benchmark" (dataset avalanche: its own order, also when left out)',
        ),
        "initial_classes": Option(10, int, "B: classes in the first experience", minimum=2),
        "increment": Option(10, int, "classes per later experience", minimum=1),
        # Few-shot scenarios (benchmarks/shots.py): drawn per seed, or a published protocol.
        "shots": Option(
            "all",
            (str, int),
            'training samples kept per class after the first experience: "all" or K',
        ),
        "base_shots": Option(
            "all", (str, int), 'training samples kept per class of the first experience: "all" or K'
        ),
        "protocol": Option(
            "none",
            str,
            'published per-experience training samples: "none" or "fscil_cifar100" (TOPIC, CEC)',
            choices=("none", "fscil_cifar100"),
        ),
    },
    "training": {
        "optimizer": Option("sgd", str, "head optimizer", choices=("sgd", "adam")),
        # lr = 0 trains nothing; momentum >= 1 sums gradients without decay (diverges).
        "lr": Option(0.1, float, "learning rate", minimum=0, exclusive=(True, False)),
        "momentum": Option(
            0.9, float, "SGD momentum", minimum=0, maximum=1, exclusive=(False, True)
        ),
        "weight_decay": Option(0.0, float, "L2 weight decay", minimum=0),
        "batch_size": Option(64, int, "minibatch size", minimum=1),
        "epochs": Option(10, int, "epochs per experience", minimum=1, maximum=MAX_EPOCHS),
        "schedule": Option(
            "constant", str, "lr schedule per experience", choices=("constant", "cosine")
        ),
        "class_weighting": Option(
            "none",
            str,
            "cross-entropy weights: none, or balanced (w_c = n / (C n_c))",
            choices=("none", "balanced"),
        ),
        "sampling": Option(
            "uniform",
            str,
            "each sample once per epoch, or every class as often as the largest",
            choices=("uniform", "class_balanced"),
        ),
        "seeds": Option([0, 1, 2], list, "seed ids, one run per strategy and seed"),
    },
}
NAMED_SECTIONS = ("dataset", "backbone")
DEFAULT_NAMES = {"dataset": "features", "backbone": "identity"}


MAX_SEED = 2**32 - 1  # numpy's RandomState takes seeds below 2³²
MAX_SEEDS = 10_000  # one record each: far more than any table averages over


def _seed_range_error(what: str) -> UsageError:
    return UsageError(
        f"{what} is not accepted; seeds are ids 0..{MAX_SEED}, at most {MAX_SEEDS} of them"
    )


def parse_seeds(text: str) -> list[int]:
    """Seed ids from `0-4` (a range, inclusive), `0,2,7` (a list), `3`, or a mix `0-2,9`."""
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match or (match[2] is not None and int(match[2]) < int(match[1])):
            raise UsageError(
                f"seeds {text!r} not understood; accepted: a range 0-4, a list 0,2,7 or one id 3"
            )
        first, last = int(match[1]), int(match[2] or match[1])
        if last > MAX_SEED or len(seeds) + last - first + 1 > MAX_SEEDS:
            raise _seed_range_error(f"seeds {text!r}")
        seeds.extend(range(first, last + 1))
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"seeds {text!r} repeat an id; each seed runs once")
    return seeds


def check_seeds(value: Any) -> list[int]:
    if isinstance(value, str):
        return parse_seeds(value)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not value or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value
    ):
        raise UsageError(f"training.seeds = {value!r} is not accepted; expected non-negative ids")
    if max(value) > MAX_SEED or len(value) > MAX_SEEDS:
        shown = value if len(value) <= 10 else f"[{value[0]}, ... ({len(value)} ids)]"
        raise _seed_range_error(f"training.seeds = {shown}")
    if len(set(value)) != len(value):
        raise UsageError(f"training.seeds = {value!r} repeats an id; each seed runs once")
    return list(value)


def check_shots(key: str, value: Any) -> None:
    """`scenario.shots` and `base_shots`: "all", or a number of samples per class >= 1."""
    if value != "all" and not (
        isinstance(value, int) and not isinstance(value, bool) and value >= 1
    ):
        raise UsageError(f'{key} = {value!r} is not accepted; use "all" or an integer >= 1')


def find_config(name_or_path: str) -> Path:
    """A config file by path, or a shipped config by name (`digits_b5_inc1`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{name_or_path.removesuffix('.toml')}.toml"
    if path.suffix != ".toml" or not path.parent.parts:
        if shipped.is_file():
            return shipped
    names = ", ".join(p.stem for p in shipped_configs())
    raise UsageError(
        f"config file {name_or_path} not found; give a path or a shipped config: {names}"
    )


def shipped_configs() -> list[Path]:
    return sorted(CONFIG_DIR.glob("*.toml"))


def load_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"config {path} is not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise UsageError(
            f"config {path} is not UTF-8 (byte {error.start}); accepted: a UTF-8 TOML file"
        ) from None
    except OSError as error:
        raise UsageError(f"config {path} cannot be read: {error.strerror}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` -> (["section", "key"], value); value parsed as TOML, else text."""
    key, sep, raw = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+", key.strip()):
        raise UsageError(f"--set {text!r} not understood; expected SECTION.KEY=VALUE")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip().split("."), value


def apply_overrides(
    raw: dict[str, Any], overrides: list[str], strategy_name: Callable[[str], str]
) -> dict[str, Any]:
    """A copy of a raw config with `--set` values written in (checked later, on resolve).

    `strategy_name` maps an alias to its registry name, so [strategies.weight_aligning]
    and `--set strategies.wa.KEY=...` address the same table.
    """
    config = copy.deepcopy(raw)
    tables = config.get("strategies", {})
    if isinstance(tables, dict):
        config["strategies"] = {}
        for key, table in tables.items():
            name = strategy_name(key)
            if name in config["strategies"]:
                raise UsageError(f"[strategies.{key}] repeats strategy {name!r} under another name")
            config["strategies"][name] = table
    for text in overrides:
        path, value = parse_override(text)
        if path[0] == "strategies" and len(path) > 2:
            path[1] = strategy_name(path[1])
        table = config
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise UsageError(f"--set {text!r}: {part} is a value, not a table")
        table[path[-1]] = value
    return config


def resolve_table(section: str, values: Any, options: dict[str, Option]) -> dict[str, Any]:
    """Check a table's keys and types; fill in every default."""
    if not isinstance(values, dict):
        raise UsageError(f"[{section}] must be a table; got {values!r}")
    unknown = sorted(set(values) - set(options))
    if unknown:
        accepted = ", ".join(options) or "none"
        raise UsageError(f"unknown config key {section}.{unknown[0]}; accepted: {accepted}")
    return {
        key: option.check(f"{section}.{key}", values[key])
        if key in values
        else copy.deepcopy(option.default)
        for key, option in options.items()
    }


def resolve(
    raw: dict[str, Any], named_options: dict[str, dict[str, dict[str, Option]]]
) -> dict[str, Any]:
    """The full config with all defaults; strategies are resolved by benchmarks.run.

    Args:
        raw: the parsed TOML with overrides applied.
        named_options: for "dataset" and "backbone", the options of each registered name.
    """
    known = {*FIXED_SECTIONS, *NAMED_SECTIONS, "strategies"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UsageError(
            f"unknown config section [{unknown[0]}]; accepted: {', '.join(sorted(known))}"
        )
    resolved: dict[str, Any] = {}
    for section in NAMED_SECTIONS:
        table = dict(raw.get(section, {}))
        name = table.pop("name", DEFAULT_NAMES[section])
        registry = named_options[section]
        if name not in registry:
            raise UsageError(f"unknown {section} {name!r}; accepted: {', '.join(registry)}")
        resolved[section] = {"name": name, **resolve_table(section, table, registry[name])}
    for section, options in FIXED_SECTIONS.items():
        resolved[section] = resolve_table(section, raw.get(section, {}), options)
    resolved["training"]["seeds"] = check_seeds(resolved["training"]["seeds"])
    for key in ("shots", "base_shots"):
        check_shots(f"scenario.{key}", resolved["scenario"][key])
    strategies = raw.get("strategies", {})
    if not isinstance(strategies, dict) or not all(
        isinstance(t, dict) for t in strategies.values()
    ):
        raise UsageError("[strategies] must hold one table per strategy, e.g. [strategies.ewc]")
    resolved["strategies"] = copy.deepcopy(strategies)
    return resolved
