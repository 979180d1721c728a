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

__all__ = ["err", "out", "progress_bar"]

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


@contextmanager
def progress_bar(
    description: str, total: int, *, quiet: bool = False
) -> Iterator[Callable[[int], None]]:
    """A bar with a count, elapsed time and ETA; yields ``advance(n)``."""
    if quiet:
        yield lambda n: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
