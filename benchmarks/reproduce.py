"""`headbench reproduce RECORD_OR_DIR`: re-run recorded runs and compare cell by cell.

A record holds the resolved config of exactly one run (one strategy, one seed) and a
manifest of where it ran. Re-running it here gives a new accuracy matrix; every cell
that differs by more than the tolerance is listed, with the manifest entries that differ
(package versions, code, device, data and feature fingerprints) to say why. Runs are
deterministic on the CPU, so a CPU record reproduces exactly (tolerance 0). On CUDA,
feature extraction under autocast and non-deterministic kernels may move predictions
near a decision boundary: a CUDA record is compared with a tolerance of 1 percentage
point per cell unless `--tolerance` says otherwise. Records trained as one batch of
seeds (`headbench run --batch-seeds`, their `seed_batch`) are re-run as that batch.

A record is data: `reproduce` exists to check records other people send, so a record
must never choose code to run. Before anything runs, every record is searched for the
fields that would make this process import, call or unpickle something the record names
(`code_fields`); a record with one is refused unless `--trust-record` is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import strategies
from benchmarks import run
from benchmarks.datasets import TEXT_DATASETS
from benchmarks.errors import UsageError
from benchmarks.progress import Progress
from reports.records import ReportError, RunRecord

CUDA_TOLERANCE = 0.01  # accuracy as a fraction: 1 percentage point
VALUE_TOLERANCE = 1e-5
"""Relative bound on a weight norm or a training loss of a CPU run re-run on a CPU.

On the same machine, code path and thread count the run is bit-identical and every value
compares equal. What may change elsewhere is the order of float32 additions: torch splits
a reduction (a matrix product over the batch or the features) by thread count and by the
CPU's vector width, and the batched-seed path uses other kernels. One reordered sum of n
terms moves its result by about sqrt(n)·u relative (u = 2⁻²⁴ ≈ 6e-8, random-walk
rounding; n·u in the worst case), and SGD carries each step's rounding into the next
weights without amplifying it while training is stable (the step contracts the error
with the loss's curvature). For the head's reductions (n up to a few thousand: batch
size × features) and the tens to hundreds of steps of an experience this gives about
1e-6 to 1e-5; measured: 4e-7 between the batched and per-seed paths (issue 13). 1e-5 is
the bound; an absolute 1e-7 floor covers values near zero. Accuracy cells have their own
rule (exact on CPU: a prediction flips only on a tie at this precision). CUDA records
are compared but not held to it (features under autocast are not the same numbers)."""
TRUST_FLAG = "--trust-record"


def code_fields(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, what it would do) for each field of a record that leads to running code.

    - `config.dataset.benchmark` (the `avalanche` dataset): a `module:callable` that is
      imported and called with `config.dataset.arguments`; any callable, `os:system` too.
    - `config.dataset.verify_checksums = false`: torchvision's CIFAR loaders unpickle
      the dataset files, and only the MD5 check stands between a crafted file and its
      code running (not for the text datasets, `TEXT_DATASETS`: their files are parsed
      as JSON or CSV, never unpickled).
    Everything else a record names is looked up, never imported: strategies and
    backbones by registry name (an unknown name is refused), datasets by name, and
    checkpoints are read with `torch.load(weights_only=True)` or safetensors.
    """
    config = record.get("config")
    dataset = config.get("dataset") if isinstance(config, dict) else None
    if not isinstance(dataset, dict):
        return []
    found = []
    if dataset.get("name") == "avalanche" or "benchmark" in dataset:
        found.append(
            (
                f"config.dataset.benchmark = {str(dataset.get('benchmark', ''))!r}",
                "names code to import and call",
            )
        )
    if dataset.get("verify_checksums") is False and dataset.get("name") not in TEXT_DATASETS:
        found.append(
            (
                "config.dataset.verify_checksums = false",
                "lets the dataset files be unpickled unchecked (a crafted file runs code)",
            )
        )
    return found


def refuse_code(path: Path, record: dict[str, Any]) -> None:
    """UsageError (one line: the record, the field, the flag) if the record names code."""
    found = code_fields(record)
    if found:
        field, effect = found[0]
        raise UsageError(
            f"{path}: {field} {effect}; reproduce runs such a record only with {TRUST_FLAG} "
            "(records are data: trust it only if you would run its config yourself)"
        )


def find_records(path: Path) -> list[Path]:
    """A record file, or the records in DIR/runs/ (an --out folder) or in DIR itself."""
    if path.is_file():
        return [path]
    if path.is_dir():
        folder = path / "runs" if (path / "runs").is_dir() else path
        found = sorted(folder.glob("*.json"))
        if found:
            return found
        raise UsageError(f"{path}: no run records (*.json) in {folder}")
    raise UsageError(f"{path} not found; give a run record (.json) or a results folder")


def _load(path: Path) -> dict[str, Any]:
    """A record read and checked field by field (`RunRecord.parse`), its strategy known to
    the registry; UsageError naming the file, the field and what is accepted."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"{path} cannot be read as a run record: {error}") from None
    try:
        RunRecord.parse(record, path)
    except ReportError as error:
        raise UsageError(str(error)) from None
    if record["strategy"] not in strategies.list_strategies():
        raise UsageError(
            f"{path}: strategy = {record['strategy']!r} is not registered here; accepted: "
            f"{', '.join(strategies.list_strategies())}"
        )
    if record["strategy"] not in record["config"].get("strategies", {}):
        raise UsageError(
            f"{path}: config.strategies has no table for strategy {record['strategy']!r}; "
            "accepted: the config that reruns exactly this run (as headbench run writes it)"
        )
    return record


@dataclass
class Comparison:
    run_id: str
    differences: list[str]  # "R[i][j]: recorded a, now b (+d)" beyond the tolerance
    largest: float  # the largest absolute cell difference
    manifest: list[str]  # "key: recorded → now" for manifest entries that differ
    values: list[str] = field(default_factory=list)  # weight norms / losses beyond tolerance
    largest_relative: float = 0.0  # the largest relative difference of those values
    values_binding: bool = True  # False on CUDA: values listed, not counted as a failure

    @property
    def reproduced(self) -> bool:
        return not self.differences and not (self.values and self.values_binding)

    @property
    def exact(self) -> bool:
        return self.largest == 0 and self.largest_relative == 0


def compare_values(name: str, recorded: Any, now: Any) -> tuple[list[str], float]:
    """Weight norms or losses (nested lists, null where absent) compared within
    VALUE_TOLERANCE relative; the differences beyond it and the largest relative one."""
    if recorded is None or now is None:  # an old record without them, or NCM's null losses
        return [], 0.0
    differences, largest = [], 0.0

    def walk(old: Any, new: Any, where: str) -> None:
        nonlocal largest
        if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
            for index, (a, b) in enumerate(zip(old, new, strict=True)):
                walk(a, b, f"{where}[{index}]")
            return
        if old is None or new is None or isinstance(old, list) or isinstance(new, list):
            if old != new:
                differences.append(f"{where}: recorded {old}, now {new}")
            return
        scale = max(abs(old), abs(new))
        relative = abs(new - old) / scale if scale > 0 else 0.0
        largest = max(largest, relative)
        if abs(new - old) > VALUE_TOLERANCE * scale + 1e-7:
            differences.append(
                f"{where}: recorded {old:.9g}, now {new:.9g} ({relative:.1e} relative)"
            )

    walk(recorded, now, name)
    return differences, largest


def compare_matrices(recorded: list, now: list, tolerance: float) -> tuple[list[str], float]:
    differences, largest = [], 0.0
    for i, (old_row, new_row) in enumerate(zip(recorded, now, strict=True)):
        for j, (old, new) in enumerate(zip(old_row, new_row, strict=True)):
            if old is None or new is None:
                if old != new:
                    differences.append(f"R[{i}][{j}]: recorded {old}, now {new}")
                continue
            delta = new - old
            largest = max(largest, abs(delta))
            if abs(delta) > tolerance:
                differences.append(
                    f"R[{i}][{j}]: recorded {100 * old:.2f}, now {100 * new:.2f} "
                    f"({100 * delta:+.2f})"
                )
    return differences, largest


def _manifest(record: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    def flat(record: dict[str, Any]) -> dict[str, Any]:
        environment = dict(record.get("environment", {}))
        packages = environment.pop("packages", {}) or {}
        environment.pop("device_name", None)
        return {
            **environment,
            **{f"packages.{k}": v for k, v in packages.items()},
            "data_fingerprint": record.get("data_fingerprint"),
            "features_fingerprint": record.get("features_fingerprint"),
        }

    old, new = flat(record), flat(fresh)
    return [
        f"{key}: {old.get(key)} → {new.get(key)}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def reproduce(
    paths: list[Path],
    device: str,
    cache_dir: str | None,
    tolerance: float | None,
    progress: Progress,
    trust_record: bool = False,
) -> list[tuple[Comparison, float]]:
    """Re-run every record; (comparison, tolerance used) per record. Records on one
    benchmark share one feature extraction. Every record is read and checked first:
    UsageError, nothing run, if one is not a run record or (without `trust_record`)
    names code to run (`code_fields`)."""
    records = [_load(path) for path in paths]
    if not trust_record:
        for path, record in zip(paths, records, strict=True):
            refuse_code(path, record)
    prepared: dict[str, run.Prepared] = {}
    batches: dict[tuple, list[dict]] = {}  # a batch's fresh records, run once for its seeds
    results = []
    pairs = list(zip(paths, records, strict=True))
    for path, record in progress.iterate(pairs, "runs", total=len(pairs)):
        raw = record["config"]
        plan = run.plan_config(
            raw,
            record.get("benchmark", "reproduced"),
            list(raw.get("strategies", {})),
            device=device,
            cache_dir=cache_dir,
        )
        if len(record["accuracy_matrix"]) != plan.scenario.num_experiences:
            raise UsageError(
                f"{path}: accuracy_matrix has "
                f"{len(record['accuracy_matrix'])} rows but its config makes "
                f"{plan.scenario.num_experiences} experiences; accepted: one row per experience"
            )
        key = run.features_key(plan)
        if key not in prepared:
            prepared[key] = run.prepare(plan, progress)
        if "seed_batch" in record:  # trained with other seeds as one batch: the same again
            shared = {**raw, "training": {**raw["training"], "seeds": record["seed_batch"]}}
            batch = (key, record["strategy"], json.dumps(shared, sort_keys=True))
            if batch not in batches:
                batches[batch] = run.run_batch(
                    plan, prepared[key], record["strategy"], record["seed_batch"]
                )
            fresh = batches[batch][record["seed_batch"].index(record["seed"])]
        else:
            fresh = run.run_one(plan, prepared[key], record["strategy"], record["seed"])
        recorded_device = record.get("environment", {}).get("device", "cpu")
        limit = tolerance
        if limit is None:
            limit = CUDA_TOLERANCE if "cuda" in (recorded_device, str(plan.device)) else 0.0
        differences, largest = compare_matrices(
            record["accuracy_matrix"], fresh["accuracy_matrix"], limit
        )
        run_id = record.get("run_id", fresh["run_id"])
        comparison = Comparison(run_id, differences, largest, _manifest(record, fresh))
        for name in ("weight_norms", "train_loss"):
            found, relative = compare_values(name, record.get(name), fresh.get(name))
            comparison.values += found
            comparison.largest_relative = max(comparison.largest_relative, relative)
        if record.get("train_subset") != fresh.get("train_subset"):  # few-shot samples
            comparison.values.append(
                "train_subset: the training samples recorded differ from those drawn now"
            )
        comparison.values_binding = "cuda" not in (recorded_device, str(plan.device))
        results.append((comparison, limit))
    return results


def render(results: list[tuple[Comparison, float]]) -> tuple[str, bool]:
    """The report printed on stdout and whether every run reproduced."""
    lines = []
    for comparison, limit in results:
        if not comparison.reproduced:
            if comparison.differences:
                lines.append(
                    f"{comparison.run_id}: {len(comparison.differences)} cells differ by more "
                    f"than {100 * limit:.2f} points (largest {100 * comparison.largest:.2f})"
                )
            if comparison.values:
                lines.append(
                    f"{comparison.run_id}: {len(comparison.values)} weight norms or losses "
                    f"differ by more than {VALUE_TOLERANCE:g} relative (largest "
                    f"{comparison.largest_relative:.1e})"
                )
            lines += [f"  {difference}" for difference in comparison.differences]
            lines += [f"  {difference}" for difference in comparison.values]
            lines += [f"  manifest differs: {entry}" for entry in comparison.manifest]
            continue
        if comparison.exact:
            exact = "identical"
        else:
            exact = (
                f"within {100 * limit:.2f} points, weight norms and losses within "
                f"{max(comparison.largest_relative, 0):.1e} relative"
            )
        lines.append(f"{comparison.run_id}: reproduced ({exact})")
        if comparison.values:  # CUDA: listed, not counted
            lines += [f"  (not counted on CUDA) {difference}" for difference in comparison.values]
    reproduced = sum(c.reproduced for c, _ in results)
    every_exact = all(c.exact for c, _ in results)
    total = len(results)
    if reproduced == total:
        detail = (
            "every accuracy-matrix cell, weight norm and loss identical"
            if every_exact
            else "within tolerance"
        )
        lines.append(f"{reproduced} of {total} runs reproduced: {detail}")
    else:
        lines.append(f"{reproduced} of {total} runs reproduced; {total - reproduced} differ")
    return "\n".join(lines), reproduced == total
