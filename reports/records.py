"""Run records on disk, checked and grouped into benchmarks and strategies.

A results folder holds `runs/<run_id>.json` files written by `headbench run`, possibly
several such folders merged from different machines or benchmarks. This module finds
them, refuses anything that is not a readable run record (ReportError names the file and
what is accepted), and groups the runs: a *benchmark* is every run with the same config
apart from the strategy and the seed; inside it a *variant* is one strategy with one set
of hyperparameters, whose runs are its seeds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPPORTED_FORMATS = (1,)
REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": int,
    "benchmark": str,
    "strategy": str,
    "seed": int,
    "config": dict,
    "accuracy_matrix": list,
    "test_counts": list,
}


class ReportError(ValueError):
    """Bad input for a report: the message names the bad value and what is accepted."""


@dataclass(frozen=True)
class Run:
    """One run record and the file it came from."""

    path: Path
    record: dict[str, Any]

    @property
    def strategy(self) -> str:
        return self.record["strategy"]

    @property
    def seed(self) -> int:
        return self.record["seed"]

    @property
    def matrix(self) -> list[list[float | None]]:
        return self.record["accuracy_matrix"]

    @property
    def counts(self) -> list[int]:
        return self.record["test_counts"]

    @property
    def run_id(self) -> str:
        return str(self.record.get("run_id", self.path.stem))


@dataclass
class Variant:
    """One strategy with one set of hyperparameters; its runs are its seeds, in order."""

    label: str
    strategy: str
    hyperparameters: dict[str, Any]
    paper: str | None
    runs: list[Run] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]


@dataclass
class Benchmark:
    """Runs that share every config value but the strategy and the seed."""

    label: str
    name: str
    config: dict[str, Any]  # the shared config: no strategies, no seeds
    variants: list[Variant]
    notes: list[str] = field(default_factory=list)

    @property
    def first(self) -> Run:
        return self.variants[0].runs[0]

    @property
    def seeds(self) -> list[int]:
        """Every seed that any variant of this benchmark ran."""
        return sorted({seed for variant in self.variants for seed in variant.seeds})

    def missing_seeds(self, variant: Variant) -> list[int]:
        """The seeds other variants have and this one lacks (missing or failed runs)."""
        return [seed for seed in self.seeds if seed not in variant.seeds]

    @property
    def experiences(self) -> list[list[int]]:
        """Original class ids of each experience (from the record, else from the matrix)."""
        record = self.first.record
        if "experiences" in record:
            return record["experiences"]
        return [[index] for index in range(len(self.first.matrix))]

    @property
    def classes_seen(self) -> list[int]:
        """Number of classes seen after each experience."""
        sizes = [len(classes) for classes in self.experiences]
        return [sum(sizes[: index + 1]) for index in range(len(sizes))]


def find_record_files(results_dir: Path) -> list[Path]:
    """`*.json` in the folder itself and in every `runs/` folder below it, sorted."""
    candidates = set(results_dir.glob("*.json")) | set(results_dir.glob("**/runs/*.json"))
    return sorted(path for path in candidates if not path.name.startswith("."))


def _check_matrix(path: Path, matrix: Any, counts: Any) -> None:
    size = len(matrix)
    if size == 0 or any(not isinstance(row, list) or len(row) != size for row in matrix):
        raise ReportError(
            f"{path}: accuracy_matrix must be a non-empty square list of lists; "
            f"got {len(matrix)} rows of lengths {[len(r) for r in matrix if isinstance(r, list)]}"
        )
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            seen = j <= i
            valid = (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and 0.0 <= value <= 1.0
            )
            if seen and not valid:
                raise ReportError(
                    f"{path}: accuracy_matrix[{i}][{j}] = {value!r}; accepted: a number "
                    "in [0, 1] on and below the diagonal"
                )
            if not seen and value is not None:
                raise ReportError(
                    f"{path}: accuracy_matrix[{i}][{j}] = {value!r}; accepted: null above "
                    "the diagonal (experience not yet seen)"
                )
    if len(counts) != size or any(
        not isinstance(count, int) or isinstance(count, bool) or count <= 0 for count in counts
    ):
        raise ReportError(
            f"{path}: test_counts = {counts!r}; accepted: {size} positive integers, one per "
            "experience"
        )


def read_record(path: Path) -> Run:
    """Load and check one record; ReportError naming the file if it is not a run record."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ReportError(f"{path}: cannot be read ({error.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(
            f"{path}: not valid JSON ({error}); accepted: run records written by headbench run"
        ) from None
    if not isinstance(record, dict):
        raise ReportError(
            f"{path}: holds a JSON {type(record).__name__}; accepted: a run record (an object)"
        )
    for key, kind in REQUIRED_FIELDS.items():
        if key not in record:
            raise ReportError(
                f"{path}: not a run record, '{key}' is missing; accepted: records written by "
                f"headbench run (with {', '.join(REQUIRED_FIELDS)})"
            )
        value = record[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ReportError(f"{path}: '{key}' is {value!r}; accepted: a JSON {_json_type(kind)}")
    if record["format"] not in SUPPORTED_FORMATS:
        raise ReportError(
            f"{path}: record format {record['format']}; accepted: "
            f"{', '.join(map(str, SUPPORTED_FORMATS))}"
        )
    _check_matrix(path, record["accuracy_matrix"], record["test_counts"])
    return Run(path, record)


def _json_type(kind: type | tuple[type, ...]) -> str:
    return {int: "integer", str: "string", dict: "object", list: "array"}.get(kind, str(kind))


def load_runs(results_dir: Path) -> list[Run]:
    """Every run record under `results_dir`; ReportError if there is none or one is bad."""
    if not results_dir.exists():
        raise ReportError(
            f"RESULTS_DIR {results_dir}: no such directory; accepted: a folder of run records "
            "(the --out folder of headbench run, or several merged)"
        )
    if not results_dir.is_dir():
        raise ReportError(
            f"RESULTS_DIR {results_dir}: not a directory; accepted: a folder of run records"
        )
    paths = find_record_files(results_dir)
    if not paths:
        raise ReportError(
            f"RESULTS_DIR {results_dir}: no run records found; accepted: a folder with "
            "runs/*.json (as headbench run writes) or *.json run records"
        )
    return [read_record(path) for path in paths]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def _differences(configs: list[dict[str, Any]]) -> list[str]:
    """For each config, `key=value` of the keys whose values differ among them."""
    flats = [_flatten(config) for config in configs]
    keys = sorted({key for flat in flats for key in flat})
    varying = [key for key in keys if len({json.dumps(f.get(key)) for f in flats}) > 1]
    return [", ".join(f"{key}={json.dumps(flat.get(key))}" for key in varying) for flat in flats]


def _setup(record: dict[str, Any]) -> dict[str, Any]:
    config = {key: value for key, value in record["config"].items() if key != "strategies"}
    training = {k: v for k, v in config.get("training", {}).items() if k != "seeds"}
    return {**config, "training": training}


def _hyperparameters(record: dict[str, Any]) -> dict[str, Any]:
    return record["config"].get("strategies", {}).get(record["strategy"], {})


def group(runs: list[Run]) -> list[Benchmark]:
    """Benchmarks (by name, then config) holding variants (by strategy, then hyperparameters).

    Labels add the differing config keys when one name covers several configs. Two records
    of the same run (same run_id and matrix) count once, with a note; two different records
    for one variant and seed are refused: which one to report is the user's choice.
    """
    setups: dict[str, dict[str, Any]] = {}
    members: dict[str, list[Run]] = {}
    for run in runs:
        setup = {"name": run.record["benchmark"], "config": _setup(run.record)}
        key = json.dumps(setup, sort_keys=True)
        setups.setdefault(key, setup)
        members.setdefault(key, []).append(run)

    labels: dict[str, str] = {}
    names = sorted({setup["name"] for setup in setups.values()})
    for name in names:
        keys = sorted(k for k, setup in setups.items() if setup["name"] == name)
        differences = _differences([setups[k]["config"] for k in keys])
        for key, difference in zip(keys, differences, strict=True):
            labels[key] = f"{name} [{difference}]" if len(keys) > 1 else name

    benchmarks = []
    for key in sorted(setups, key=lambda k: labels[k]):
        benchmark_runs = members[key]
        notes: list[str] = []
        variants = _variants(benchmark_runs, labels[key], notes)
        shapes = {len(run.matrix) for variant in variants for run in variant.runs}
        if len(shapes) > 1:
            raise ReportError(
                f"benchmark {labels[key]}: runs have accuracy matrices of sizes "
                f"{sorted(shapes)} under one config; accepted: one scenario per benchmark"
            )
        benchmarks.append(
            Benchmark(labels[key], setups[key]["name"], setups[key]["config"], variants, notes)
        )
    return benchmarks


def _variants(runs: list[Run], benchmark: str, notes: list[str]) -> list[Variant]:
    by_key: dict[str, list[Run]] = {}
    for run in runs:
        key = json.dumps([run.strategy, _hyperparameters(run.record)], sort_keys=True)
        by_key.setdefault(key, []).append(run)
    strategies = sorted({run.strategy for run in runs})
    variants = []
    for strategy in strategies:
        keys = sorted(k for k in by_key if json.loads(k)[0] == strategy)
        differences = _differences([json.loads(k)[1] for k in keys])
        for key, difference in zip(keys, differences, strict=True):
            label = f"{strategy} [{difference}]" if len(keys) > 1 else strategy
            chosen: dict[int, Run] = {}
            for run in sorted(by_key[key], key=lambda r: (r.seed, str(r.path))):
                earlier = chosen.get(run.seed)
                if earlier is None:
                    chosen[run.seed] = run
                elif earlier.run_id == run.run_id and earlier.matrix == run.matrix:
                    notes.append(
                        f"{run.path.name} repeats {earlier.path.name} (same run); counted once"
                    )
                else:
                    raise ReportError(
                        f"benchmark {benchmark}: two different records for {label} seed "
                        f"{run.seed}: {earlier.path} and {run.path}; accepted: one record per "
                        "strategy, hyperparameters and seed (move one of them away)"
                    )
            first = next(iter(chosen.values())).record
            variants.append(
                Variant(
                    label,
                    strategy,
                    json.loads(key)[1],
                    first.get("paper"),
                    [chosen[seed] for seed in sorted(chosen)],
                )
            )
    return variants
