"""Class orders and the split of classes into experiences.

Classes are renumbered 0..C-1 in order of arrival, so experience i holds the contiguous
ids `boundaries[i] .. boundaries[i + 1] - 1` and the head's row c is the c-th class to
arrive. The explicit original order is kept for the run record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.errors import UsageError

ORDER_FORMS = '"identity", "seed:N" (numpy RandomState(N).permutation) or an explicit list'


def resolve_class_order(spec: Any, num_classes: int) -> list[int]:
    """The explicit order for a `scenario.class_order` value.

    "seed:N" is `numpy.random.RandomState(N).permutation(num_classes)`, the same as
    `numpy.random.seed(N); numpy.random.permutation(num_classes)`; "seed:1993" on 100
    classes is the order of PyCIL, PILOT and FACIL's iCaRL split.
    """
    if spec == "identity":
        return list(range(num_classes))
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
