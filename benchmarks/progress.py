"""Progress bars and log lines on stderr, both silenced by `--quiet`."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

Item = TypeVar("Item")


class _SilentBar:
    """What `Progress.bar` returns when quiet: counts nothing, prints nothing."""

    def update(self, count: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _SilentBar:
        return self

    def __exit__(self, *exception: object) -> None:
        pass


class Progress:
    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._bar: Any = None  # the latest `iterate` bar, which `status` annotates

    def status(self, text: str) -> None:
        """Show `text` after the latest `iterate` bar's count ("runs 1/4 ... experience 2/10,
        epoch 3/5"). Callers report at most per epoch, so redrawing at once costs nothing."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)

    def log(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def iterate(
        self, items: Iterable[Item], description: str, total: int | None = None
    ) -> Iterator[Item]:
        if self.quiet:
            return iter(items)
        from tqdm import tqdm

        self._bar = tqdm(
            items,
            desc=description,
            total=total,
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        return iter(self._bar)

    def bar(self, total: int, description: str, unit: str = "img") -> Any:
        """A bar counted by `update(count)` that shows the rate in `unit`/s (images/s).

        Use it as a context manager; it is silent when quiet.
        """
        if self.quiet:
            return _SilentBar()
        from tqdm import tqdm

        return tqdm(
            total=total,
            desc=description,
            unit=unit,
            unit_scale=True,
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )
