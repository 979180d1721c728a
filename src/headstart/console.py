"""Progress bars and messages on stderr; results go to stdout."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["ProgressBar", "err", "out", "progress_bar", "say"]

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


class ProgressBar:
    """A bar with a count, elapsed time and ETA on stderr; nothing at all when ``quiet``."""

    def __init__(self, description: str, total: int, *, quiet: bool = False):
        self._progress = None
        if quiet:
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        self._progress = Progress(*columns, console=err, transient=False)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self._progress is not None and n:
            self._progress.advance(self._task, n)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


@contextmanager
def progress_bar(
    description: str, total: int, *, quiet: bool = False
) -> Iterator[Callable[[int], None]]:
    """A :class:`ProgressBar` for the block; yields ``advance(n)``."""
    bar = ProgressBar(description, total, quiet=quiet)
    try:
        yield bar.advance
    finally:
        bar.close()


def say(quiet: bool, message: str) -> None:
    """A line about what is happening, on stderr (rich markup allowed), unless ``quiet``."""
    if not quiet:
        err.print(message)
