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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from reports.bibliography import ENTRIES, entry_key, legacy_name


class ReportError(ValueError):
    """Bad input for a report: the message names the bad value and what is accepted."""


SCHEMA_VERSION = 2
"""Version 2 added `schema_version` itself and `environment.threads` (torch's intra-op
thread count); a record without `schema_version` is version 1 (it said `"format": 1`)."""
SUPPORTED_VERSIONS = (1, 2)


@dataclass(frozen=True)
class RunRecord:
    """One run (one strategy, one seed) as `headbench run`, `sweep` and `tune` write it and
    `headbench report` and `reproduce` read it: `runs/<run_id>.json`.

    A record is data: it names a config, a strategy and a seed, never code to import.
    `RunRecord.parse` checks every field below (type, range and agreement with the
    accuracy matrix's size) and refuses a bad record with ReportError naming the file,
    the field and what is accepted. Fields after `test_counts` are optional on reading
    (records of older versions, or written by hand, may lack them); adding one such field
    keeps the schema version (as `display_name`, `seed_batch` and the task-aware matrix
    did): a reader that knows it checks it, an older reader never sees it.
    """

    benchmark: str  # the config's name
    strategy: str  # registry name
    seed: int  # in [0, 2**32)
    config: dict[str, Any]  # resolved config that reruns exactly this run
    accuracy_matrix: list[list[float | None]]  # (T, T): R[i][j] in [0, 1], null above
    test_counts: list[int]  # (T,) test samples per experience, positive
    schema_version: int = SCHEMA_VERSION
    run_id: str | None = None
    paper: str | None = None
    display_name: str | None = None  # how tables name the method (e.g. "WA")
    references: list[str] | None = None  # BibTeX entries of its papers, one each
    seed_batch: list[int] | None = None  # seeds trained with this one as one batch
    class_order: list[int] | None = None  # original class ids in order of arrival
    experiences: list[list[int]] | None = None  # (T, classes of experience i)
    class_names: list[str] | None = None
    metrics: dict[str, float | None] | None = None
    # (T, T) as accuracy_matrix, each sample scored among its own experience's classes only
    # (FACIL's task-aware accuracy); >= accuracy_matrix entry by entry, null above
    task_aware_accuracy_matrix: list[list[float | None]] | None = None
    task_aware_metrics: dict[str, float | None] | None = None  # `metrics` of the above
    newest_share: list[float] | None = None  # (T,) in [0, 1]
    weight_norms: list[list[float]] | None = None  # (T, classes seen after i)
    train_loss: list[float | None] | None = None  # (T,) >= 0, null: no training
    seconds: dict[str, float] | None = None
    data_fingerprint: str | None = None
    features_fingerprint: str | None = None
    features_cache: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None  # how `headbench tune` chose the variant
    # Per-class test counts for the old-label check (reports.old_labels; check_class_accuracy):
    # {"test_counts": (classes,), "correct": (T, seen after i), "to_newest": (T, old at i)}
    class_accuracy: dict[str, list] | None = None
    # A few-shot stream: {"source": "drawn" | a protocol, "indices": per experience the
    # sorted training-split indices it kept, null where it kept all}.
    train_subset: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as written: every field, optional ones left out when None."""
        required = ("benchmark", "strategy", "seed", "config", "accuracy_matrix", "test_counts")
        data = {"schema_version": self.schema_version}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name != "schema_version" and (item.name in required or value is not None):
                data[item.name] = value
        return data

    @classmethod
    def parse(cls, data: Any, path: Path | str) -> RunRecord:
        """Check a record read from JSON field by field; ReportError on the first bad field."""
        check_record(data, path)
        known = {item.name for item in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["schema_version"] = data.get("schema_version", 1)
        return cls(**values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _refuse(path: Path | str, field: str, value: Any, accepted: str) -> ReportError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ReportError(f"{path}: {field} = {shown}; accepted: {accepted}")


def _is_number_list(value: Any, size: int | None, low: float | None = None) -> bool:
    return (
        isinstance(value, list)
        and (size is None or len(value) == size)
        and all(_is_number(v) and (low is None or v >= low) for v in value)
    )


REQUIRED_FIELDS = ("benchmark", "strategy", "seed", "config", "accuracy_matrix", "test_counts")
CONFIG_TABLES = ("dataset", "backbone", "head", "scenario", "training", "strategies")


def check_record(data: Any, path: Path | str) -> None:
    """ReportError naming the file, the first bad field and what is accepted."""
    if not isinstance(data, dict):
        raise ReportError(
            f"{path}: holds a JSON {type(data).__name__}; accepted: a run record (an object)"
        )
    for key in REQUIRED_FIELDS:
        if key not in data:
            raise ReportError(
                f"{path}: not a run record, '{key}' is missing; accepted: records written by "
                f"headbench run (with {', '.join(REQUIRED_FIELDS)})"
            )
    version = data.get("schema_version", 1)
    if "schema_version" not in data and data.get("format", 1) != 1:
        raise _refuse(path, "format", data["format"], "1 (or schema_version 1 or 2)")
    if not _is_int(version) or version not in SUPPORTED_VERSIONS:
        raise _refuse(
            path, "schema_version", version, f"one of {', '.join(map(str, SUPPORTED_VERSIONS))}"
        )
    for key in ("benchmark", "strategy"):
        if not isinstance(data[key], str) or not data[key]:
            raise _refuse(path, key, data[key], "a non-empty string")
    for key in ("run_id", "paper", "data_fingerprint", "features_fingerprint"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise _refuse(path, key, data[key], "a string")
    name = data.get("display_name")
    if name is not None and not (
        isinstance(name, str)
        and name.strip()
        and len(name) <= 60
        and name.isprintable()
        and "|" not in name
    ):
        raise _refuse(
            path, "display_name", name,
            "a non-empty printable string of at most 60 characters, without '|'",
        )  # fmt: skip
    references = data.get("references")
    if references is not None and not (
        isinstance(references, list)
        and all(isinstance(e, str) and entry_key(e) is not None for e in references)
    ):
        raise _refuse(
            path, "references", references,
            "a list of BibTeX entries, each one '@type{key, ...}' with balanced braces",
        )  # fmt: skip
    seed = data["seed"]
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise _refuse(path, "seed", seed, "an integer in [0, 2**32)")
    if "seed_batch" in data:
        batch = data["seed_batch"]
        if not (isinstance(batch, list) and batch and all(_is_int(s) for s in batch)) or (
            seed not in batch or len(set(batch)) != len(batch)
        ):
            raise _refuse(
                path,
                "seed_batch",
                batch,
                f"a list of distinct integer seeds that holds seed {seed}",
            )
    config = data["config"]
    if not isinstance(config, dict):
        raise _refuse(path, "config", config, "an object (the resolved config)")
    for table in CONFIG_TABLES:
        if table in config and not isinstance(config[table], dict):
            raise _refuse(path, f"config.{table}", config[table], "an object (a TOML table)")
    for name, hyperparameters in config.get("strategies", {}).items():
        if not isinstance(hyperparameters, dict):
            raise _refuse(path, f"config.strategies.{name}", hyperparameters, "an object")
    _check_matrix(path, data["accuracy_matrix"], data["test_counts"])
    size = len(data["accuracy_matrix"])
    aware = data.get("task_aware_accuracy_matrix")
    if aware is not None:
        _check_task_aware(path, aware, data["accuracy_matrix"], data["test_counts"])
    experiences = data.get("experiences")
    if experiences is not None and not (
        isinstance(experiences, list)
        and len(experiences) == size
        and all(
            isinstance(e, list) and e and all(_is_int(c) and c >= 0 for c in e) for e in experiences
        )
    ):
        raise _refuse(
            path, "experiences", experiences,
            f"{size} non-empty lists of class ids, one per row of accuracy_matrix",
        )  # fmt: skip
    sizes = [len(e) for e in experiences] if experiences is not None else None
    total = sum(sizes) if sizes is not None else None
    class_order = data.get("class_order")
    if class_order is not None and not (
        isinstance(class_order, list)
        and all(_is_int(c) and c >= 0 for c in class_order)
        and len(set(class_order)) == len(class_order)
        and (total is None or len(class_order) >= total)
    ):
        raise _refuse(
            path, "class_order", class_order,
            "a list of distinct class ids (non-negative integers), at least one per class "
            "of the experiences",
        )  # fmt: skip
    names = data.get("class_names")
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) for n in names)
    ):
        raise _refuse(path, "class_names", names, "a list of strings, or null")
    shares = data.get("newest_share")
    if shares is not None and not (
        _is_number_list(shares, size, 0.0) and all(share <= 1 for share in shares)
    ):
        raise _refuse(
            path, "newest_share", shares, f"a list of {size} numbers in [0, 1], one per experience"
        )
    losses = data.get("train_loss")
    if losses is not None and not (
        isinstance(losses, list)
        and len(losses) == size
        and all(loss is None or (_is_number(loss) and loss >= 0) for loss in losses)
    ):
        raise _refuse(
            path, "train_loss", losses,
            f"a list of {size} numbers >= 0 (null for an experience without training), "
            "one per experience",
        )  # fmt: skip
    norms = data.get("weight_norms")
    if norms is not None:
        seen = [sum(sizes[: i + 1]) for i in range(size)] if sizes is not None else None
        if not (
            isinstance(norms, list)
            and len(norms) == size
            and all(
                _is_number_list(row, None if seen is None else seen[i], 0.0)
                for i, row in enumerate(norms)
            )
        ):
            expected = "" if seen is None else f" of lengths {seen}"
            raise _refuse(
                path, "weight_norms", norms,
                f"{size} lists{expected} (one norm >= 0 per class seen after each experience)",
            )  # fmt: skip
    for key in ("metrics", "task_aware_metrics", "seconds"):
        value = data.get(key)
        if value is not None and not (
            isinstance(value, dict) and all(v is None or _is_number(v) for v in value.values())
        ):
            raise _refuse(path, key, value, "an object of numbers (null where undefined)")
    for key in ("features_cache", "environment", "selection"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise _refuse(path, key, data[key], "an object")
    if data.get("class_accuracy") is not None:
        check_class_accuracy(path, data["class_accuracy"], data["accuracy_matrix"], data)
    _check_train_subset(path, data.get("train_subset"), size)


def _is_count_list(value: Any, size: int) -> bool:
    return (
        isinstance(value, list) and len(value) == size and all(_is_int(v) and v >= 0 for v in value)
    )


def check_class_accuracy(
    path: Path | str, value: Any, matrix: list[list[float]], data: dict[str, Any]
) -> None:
    """`class_accuracy` (optional; records before it read without it): per-class counts,
    classes in order of arrival, that agree with each other and with the accuracy matrix.

    test_counts[c]: test samples of class c (positive, summing to test_counts per
    experience); correct[i][c]: those predicted as c after experience i, one per class
    seen after i; to_newest[i][c]: those of class c, seen before experience i, predicted
    as one of experience i's classes (row 0 empty); correct + to_newest <= test_counts.
    """
    size = len(matrix)
    if not (
        isinstance(value, dict)
        and set(value) == {"test_counts", "correct", "to_newest"}
        and all(isinstance(value[k], list) for k in value)
        and len(value["correct"]) == size
        and len(value["to_newest"]) == size
        and all(isinstance(row, list) for row in value["correct"] + value["to_newest"])
    ):
        raise _refuse(
            path, "class_accuracy", value,
            f"an object with test_counts (one per class), correct and to_newest ({size} "
            "lists each, one per experience)",
        )  # fmt: skip
    experiences = data.get("experiences")
    if experiences is not None:
        sizes = [len(classes) for classes in experiences]
    else:
        lengths = [len(row) for row in value["correct"]]
        sizes = [b - a for a, b in zip([0, *lengths], lengths, strict=False)]
    seen = [sum(sizes[: i + 1]) for i in range(size)]
    counts = value["test_counts"]
    if (
        not (_is_count_list(counts, seen[-1]) and all(count > 0 for count in counts))
        or [sum(counts[a:b]) for a, b in zip([0, *seen], seen, strict=False)] != data["test_counts"]
    ):
        raise _refuse(
            path, "class_accuracy.test_counts", counts,
            f"{seen[-1]} positive integers that sum to test_counts per experience",
        )  # fmt: skip
    for i in range(size):
        old = seen[i - 1] if i else 0
        correct, to_newest = value["correct"][i], value["to_newest"][i]
        if not (
            _is_count_list(correct, seen[i])
            and _is_count_list(to_newest, old)
            and all(c <= n for c, n in zip(correct, counts, strict=False))
            and all(c + m <= n for c, m, n in zip(correct, to_newest, counts, strict=False))
        ):
            raise _refuse(
                path, f"class_accuracy row {i}", [correct, to_newest],
                f"correct: {seen[i]} counts, to_newest: {old} counts, with correct + "
                "to_newest at most the class's test samples",
            )  # fmt: skip
        for j in range(i + 1):
            start = seen[j - 1] if j else 0
            accuracy = sum(correct[start : seen[j]]) / data["test_counts"][j]
            if abs(accuracy - matrix[i][j]) > 1e-9:
                raise ReportError(
                    f"{path}: class_accuracy.correct[{i}] gives {accuracy!r} on experience "
                    f"{j}, accuracy_matrix[{i}][{j}] = {matrix[i][j]!r}; accepted: counts "
                    "that agree with the matrix"
                )


def _check_train_subset(path: Path | str, subset: Any, size: int) -> None:
    if subset is None:
        return
    indices = subset.get("indices") if isinstance(subset, dict) else None
    if not (
        isinstance(subset, dict)
        and set(subset) == {"source", "indices"}
        and isinstance(subset["source"], str)
        and subset["source"]
        and isinstance(indices, list)
        and len(indices) == size
        and all(
            kept is None
            or (
                isinstance(kept, list)
                and all(_is_int(i) and i >= 0 for i in kept)
                and all(a < b for a, b in zip(kept, kept[1:], strict=False))
            )
            for kept in indices
        )
    ):
        raise _refuse(
            path, "train_subset", subset,
            f'an object {{"source": a name, "indices": {size} entries, each null or a '
            "sorted list of distinct training-split indices}",
        )  # fmt: skip


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
    def task_aware_matrix(self) -> list[list[float | None]] | None:
        """The task-aware accuracy matrix; None in records written before it was stored."""
        return self.record.get("task_aware_accuracy_matrix")

    @property
    def counts(self) -> list[int]:
        return self.record["test_counts"]

    @property
    def run_id(self) -> str:
        return str(self.record.get("run_id", self.path.stem))


LOWER_BOUNDS = ("naive",)  # fine-tuning: listed first
UPPER_BOUNDS = ("joint",)  # retrains on all data seen: listed last
"""Reference points, not competitors: tables list them apart and never rank or bold them."""


def row_order(strategy: str) -> tuple[int, str]:
    """Lower bounds first, then the methods by name, then the upper bounds."""
    if strategy in LOWER_BOUNDS:
        return (0, strategy)
    return (2, strategy) if strategy in UPPER_BOUNDS else (1, strategy)


@dataclass
class Variant:
    """One strategy with one set of hyperparameters; its runs are its seeds, in order.

    `label` names it by registry key (`ewc [lam=100]`), `name` as papers do (`EWC
    [lam=100]`, from the records' `display_name`, reports.bibliography for older ones);
    `references` are the BibTeX entries of its papers.
    """

    label: str
    strategy: str
    hyperparameters: dict[str, Any]
    paper: str | None
    runs: list[Run] = field(default_factory=list)
    name: str = ""
    references: list[str] = field(default_factory=list)

    @property
    def cite_keys(self) -> list[str]:
        return [entry_key(entry) for entry in self.references]

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


def _check_task_aware(path: Path | str, aware: Any, matrix: list[list], counts: list) -> None:
    """The task-aware matrix: a valid accuracy matrix of the same size, and at least the
    task-agnostic entry everywhere: a sample right among all seen classes is right among
    its own experience's (engine.evaluate breaks ties alike in both)."""
    name = "task_aware_accuracy_matrix"
    if isinstance(aware, list) and len(aware) != len(matrix):
        raise _refuse(
            path, name, aware, f"{len(matrix)} rows, as accuracy_matrix (or null: not measured)"
        )
    _check_matrix(path, aware, counts, name)
    for i, row in enumerate(aware):
        for j in range(i + 1):
            if row[j] < matrix[i][j]:
                raise ReportError(
                    f"{path}: {name}[{i}][{j}] = {row[j]!r} is below accuracy_matrix[{i}][{j}] "
                    f"= {matrix[i][j]!r}; accepted: task-aware accuracy at least the "
                    "task-agnostic one"
                )


def _check_matrix(
    path: Path | str, matrix: Any, counts: Any, name: str = "accuracy_matrix"
) -> None:
    if not isinstance(matrix, list):
        raise _refuse(path, name, matrix, "a square list of lists (T rows)")
    if not isinstance(counts, list):
        raise _refuse(path, "test_counts", counts, "a list of positive integers")
    size = len(matrix)
    if size == 0 or any(not isinstance(row, list) or len(row) != size for row in matrix):
        raise ReportError(
            f"{path}: {name} must be a non-empty square list of lists; "
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
                    f"{path}: {name}[{i}][{j}] = {value!r}; accepted: a number "
                    "in [0, 1] on and below the diagonal"
                )
            if not seen and value is not None:
                raise ReportError(
                    f"{path}: {name}[{i}][{j}] = {value!r}; accepted: null above "
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
    """Load and check one record (`RunRecord.parse`); ReportError naming the file, the bad
    field and what is accepted if it is not a valid run record."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ReportError(f"{path}: cannot be read ({error.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(
            f"{path}: not valid JSON ({error}); accepted: run records written by headbench run"
        ) from None
    RunRecord.parse(record, path)
    return Run(path, record)


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
    strategies = sorted({run.strategy for run in runs}, key=row_order)
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
            hyperparameters = json.loads(key)[1]
            shown, references = _paper_name(first, hyperparameters)
            variants.append(
                Variant(
                    label,
                    strategy,
                    hyperparameters,
                    first.get("paper"),
                    [chosen[seed] for seed in sorted(chosen)],
                    f"{shown} [{difference}]" if len(keys) > 1 else shown,
                    references,
                )
            )
    names = [variant.name for variant in variants]
    for variant in variants:  # two strategies that print alike: tell them apart by key
        if names.count(variant.name) > 1:
            variant.name = f"{variant.name} ({variant.label})"
    # Methods in the order of their printed names (a paper's reader looks them up by it).
    return sorted(variants, key=lambda v: (row_order(v.strategy)[0], v.name.lower(), v.label))


def _paper_name(record: dict[str, Any], hyperparameters: dict[str, Any]) -> tuple[str, list[str]]:
    """(display name, BibTeX entries) as the record states them, else as
    reports.bibliography knows them for records written before they carried them."""
    if "display_name" in record:
        entries = record.get("references") or []
        return record["display_name"], [ENTRIES.get(entry_key(e), e.strip()) for e in entries]
    name, keys = legacy_name(record["strategy"], hyperparameters)
    return name, [ENTRIES[key] for key in keys]
