"""Progress bars and log lines on stderr, both silenced by `--quiet`."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")


class Progress:
    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def log(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def iterate(
        self, items: Iterable[Item], description: str, total: int | None = None
    ) -> Iterator[Item]:
        if self.quiet:
            return iter(items)
        from tqdm import tqdm

        return iter(
            tqdm(
                items,
                desc=description,
                total=total,
                leave=False,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        )
