"""Class orders and the split of classes into experiences.

Classes are renumbered 0..C-1 in order of arrival, so experience i holds the contiguous
ids `boundaries[i] .. boundaries[i + 1] - 1` and the head's row c is the c-th class to
arrive. The explicit original order is kept for the run record.

A dataset that brings its own split (an Avalanche benchmark: `dataset.name = "avalanche"`,
or `benchmarks.from_avalanche`) gives its classes per experience instead;
`split_scenario` turns them into a Scenario and `configured_split` checks a config's
[scenario] table against them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.errors import UsageError

ORDER_FORMS = (
    '"identity", "seed:N" (numpy RandomState(N).permutation), a named order '
    '("icarl1993", "podnet"; CIFAR-100) or an explicit list'
)

# The two CIFAR-100 orders of the field, typed out so that they never depend on a generator.
# "icarl1993": numpy.random.seed(1993); numpy.random.permutation(100), the order of PyCIL,
# PILOT and FACIL's cifar100_icarl (equal to "seed:1993" on 100 classes).
ICARL_1993 = [
    68, 56, 78, 8, 23, 84, 90, 65, 74, 76, 40, 89, 3, 92, 55, 9, 26, 80, 43, 38,
    58, 70, 77, 1, 85, 19, 17, 50, 28, 53, 13, 81, 45, 82, 6, 59, 83, 16, 15, 44,
    91, 41, 72, 60, 79, 52, 20, 10, 31, 54, 37, 95, 14, 71, 96, 98, 97, 2, 64, 66,
    42, 22, 35, 86, 24, 34, 87, 21, 99, 0, 88, 27, 18, 94, 11, 12, 47, 25, 30, 46,
    62, 69, 36, 61, 7, 63, 75, 5, 32, 4, 51, 48, 73, 93, 39, 67, 29, 49, 57, 33,
]  # fmt: skip
# "podnet": the explicit list PODNet ships as "taken from original iCaRL implementation"
# (arthurdouillard/incremental_learning.pytorch, inclearn/lib/data/datasets.py,
# iCIFAR100.class_order); it is not a numpy permutation of any seed we know of.
PODNET = [
    87, 0, 52, 58, 44, 91, 68, 97, 51, 15, 94, 92, 10, 72, 49, 78, 61, 14, 8, 86,
    84, 96, 18, 24, 32, 45, 88, 11, 4, 67, 69, 66, 77, 47, 79, 93, 29, 50, 57, 83,
    17, 81, 41, 12, 37, 59, 25, 20, 80, 73, 1, 28, 6, 46, 62, 82, 53, 9, 31, 75,
    38, 63, 33, 74, 27, 22, 36, 3, 16, 21, 60, 19, 70, 90, 89, 43, 5, 42, 65, 76,
    40, 30, 23, 85, 2, 95, 56, 48, 71, 64, 98, 13, 99, 7, 34, 55, 54, 26, 35, 39,
]  # fmt: skip
NAMED_ORDERS = {"icarl1993": ICARL_1993, "podnet": PODNET}
# The class order of a dataset that brings its own experiences (an Avalanche benchmark).
BENCHMARK_ORDER = "benchmark"


def resolve_class_order(spec: Any, num_classes: int) -> list[int]:
    """The explicit order for a `scenario.class_order` value.

    "seed:N" is `numpy.random.RandomState(N).permutation(num_classes)`, the same as
    `numpy.random.seed(N); numpy.random.permutation(num_classes)`; "seed:1993" on 100
    classes is the order of PyCIL, PILOT and FACIL's iCaRL split. Named orders
    (`NAMED_ORDERS`) are explicit lists for a dataset of their length (CIFAR-100).
    """
    if spec == "identity":
        return list(range(num_classes))
    if spec == BENCHMARK_ORDER:
        raise UsageError(
            f'scenario.class_order = "{BENCHMARK_ORDER}" takes the order of a dataset that brings '
            'its own experiences (dataset "avalanche"); this dataset has none: use '
            f"{ORDER_FORMS}"
        )
    if isinstance(spec, str) and spec in NAMED_ORDERS:
        order = NAMED_ORDERS[spec]
        if len(order) != num_classes:
            raise UsageError(
                f"scenario.class_order = {spec!r} orders {len(order)} classes (CIFAR-100); this "
                f'dataset has {num_classes}; use "identity", "seed:N" or an explicit list'
            )
        return list(order)
    if isinstance(spec, str) and spec.startswith("seed:"):
        seed = spec.removeprefix("seed:")
        if not seed.isdigit() or int(seed) >= 2**32:
            raise UsageError(f"scenario.class_order = {spec!r}: N must be an integer in 0..2**32-1")
        return np.random.RandomState(int(seed)).permutation(num_classes).tolist()
    if isinstance(spec, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in spec):
            raise UsageError(f"scenario.class_order must list integer class ids; got {spec!r}")
        if sorted(spec) != list(range(num_classes)):
            missing = sorted(set(range(num_classes)) - set(spec))
            extra = sorted(set(spec) - set(range(num_classes)))
            repeated = sorted({c for c in spec if spec.count(c) > 1})
            details = "; ".join(
                f"{label} {values}"
                for label, values in (
                    ("missing", missing),
                    ("not classes", extra),
                    ("repeated", repeated),
                )
                if values
            )
            raise UsageError(
                f"scenario.class_order is not a permutation of the dataset's classes "
                f"0..{num_classes - 1}: {details}"
            )
        return list(spec)
    raise UsageError(f"scenario.class_order = {spec!r} is not accepted; use {ORDER_FORMS}")


@dataclass(frozen=True)
class Scenario:
    """A class order cut into experiences: `initial_classes`, then `increment` at a time."""

    class_order: list[int]
    initial_classes: int
    increment: int

    def __post_init__(self) -> None:
        num_classes = len(self.class_order)
        if not 2 <= self.initial_classes <= num_classes:
            raise UsageError(
                f"scenario.initial_classes = {self.initial_classes} is not accepted; use 2.."
                f"{num_classes} (a first experience of one class cannot train a classifier)"
            )
        remaining = num_classes - self.initial_classes
        if self.increment < 1 or remaining % self.increment:
            divisors = [d for d in range(1, remaining + 1) if remaining % d == 0] or ["any >= 1"]
            raise UsageError(
                f"initial_classes + k * increment must equal the {num_classes} classes: "
                f"{self.initial_classes} + k * {self.increment} does not; with initial_classes = "
                f"{self.initial_classes}, increment must be one of {divisors}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_order)

    @property
    def boundaries(self) -> list[int]:
        """[0, B, B + inc, ..., C]: experience i holds ids boundaries[i]..boundaries[i+1]-1."""
        return [0, *range(self.initial_classes, self.num_classes + 1, self.increment)]

    @property
    def num_experiences(self) -> int:
        return len(self.boundaries) - 1

    @property
    def experience_sizes(self) -> list[int]:
        bounds = self.boundaries
        return [bounds[i + 1] - bounds[i] for i in range(self.num_experiences)]

    def original_classes(self, experience: int) -> list[int]:
        """The dataset's own class ids arriving in an experience, in arrival order."""
        bounds = self.boundaries
        return self.class_order[bounds[experience] : bounds[experience + 1]]

    def remap(self, labels: np.ndarray) -> np.ndarray:
        """Dataset labels -> arrival-order ids 0..C-1."""
        position = np.empty(self.num_classes, dtype=np.int64)
        position[self.class_order] = np.arange(self.num_classes)
        return position[labels]


def split_scenario(experiences: Sequence[Sequence[int]]) -> Scenario:
    """The Scenario of a dataset's own split: its classes per experience, in arrival order.

    Raises:
        UsageError: a class in two experiences (not class-incremental), or sizes other than
            a first experience of any size and then equal increments.
    """
    class_order = [label for classes in experiences for label in classes]
    repeated = sorted({c for c in class_order if class_order.count(c) > 1})
    if repeated:
        raise UsageError(
            f"classes {repeated[:10]} appear in more than one experience; headbench takes "
            "class-incremental benchmarks (each class in exactly one experience)"
        )
    sizes = [len(classes) for classes in experiences]
    later = set(sizes[1:])
    if len(later) > 1:
        raise UsageError(
            f"experiences bring {sizes} classes; headbench's scenarios take a first "
            "experience of any size, then equal increments"
        )
    return Scenario(class_order, sizes[0], later.pop() if later else 1)


def abridged(order: Sequence[int], shown: int = 12) -> str:
    """A long class order shortened for one-line messages: its first ids and its length."""
    if len(order) <= shown:
        return str(list(order))
    return f"[{', '.join(map(str, order[:shown]))}, ... ({len(order)} classes)]"


def configured_split(
    table: dict[str, Any], given: Collection[str], experiences: Sequence[Sequence[int]]
) -> Scenario:
    """A dataset's own split, checked against the [scenario] keys a config sets.

    The benchmark decides the class order and the experience sizes; a key the config
    leaves out takes the benchmark's value, a key it sets must agree with it.
    `class_order = "benchmark"` always agrees; any other form (a list, "seed:N", ...)
    must resolve to the benchmark's exact order.

    Args:
        table: the resolved [scenario] table.
        given: the keys of [scenario] that the config (file or --set) sets.
        experiences: the dataset's classes per experience, in arrival order.

    Raises:
        UsageError: naming the configured value and the benchmark's.
    """
    scenario = split_scenario(experiences)
    spec = table["class_order"]
    if "class_order" in given and spec != BENCHMARK_ORDER:
        order = resolve_class_order(spec, scenario.num_classes)
        if order != scenario.class_order:
            shown = repr(spec) if isinstance(spec, str) else abridged(spec)
            resolved = f" (that is {abridged(order)})" if isinstance(spec, str) else ""
            raise UsageError(
                f"scenario.class_order = {shown}{resolved} contradicts the benchmark's class "
                f"order {abridged(scenario.class_order)}; leave it out or set "
                f'"{BENCHMARK_ORDER}" (the benchmark decides the order)'
            )
    checks = [("initial_classes", scenario.initial_classes, "its first experience brings")]
    if scenario.num_experiences > 1:  # one experience: no increment to contradict
        checks.append(("increment", scenario.increment, "its later experiences bring"))
    for key, value, what in checks:
        if key in given and table[key] != value:
            raise UsageError(
                f"scenario.{key} = {table[key]} contradicts the benchmark: {what} {value} "
                f"classes (experiences {scenario.experience_sizes}); leave it out or set {value}"
            )
    return scenario
