"""A CSV table of images, as every task reads it: a ``path`` column (relative to the table's
folder, or absolute), an optional ``split`` column, and the task's own columns.

Read once and checked row by row, with the line of any fault: an empty path, a path listed
twice, a split that is not one. Then each task reads its answer from the rows
(:meth:`Table.answers`), and the images that are missing or unreadable are set aside with the
reason (:func:`usable`).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from ..data.sources import SPLITS, Skipped, absolute_path, unreadable_images
from ..errors import HeadstartError

__all__ = ["Row", "Table", "TableSamples", "read_table", "usable"]


@dataclass(frozen=True)
class Row:
    """One row of the table: its line, its image, the split it gives (None: split here),
    and every cell by column."""

    line: int
    path: Path
    split: str | None
    cells: dict[str, str]


_Samples = TypeVar("_Samples", bound="TableSamples")


class TableSamples:
    """What the datasets read from a table share (a base of frozen dataclasses holding
    ``samples``, each with its ``path`` and ``split``, and the ``skipped`` rows): the samples
    of a split, and a copy without images found unreadable later."""

    samples: tuple
    skipped: tuple[Skipped, ...]

    def split(self, name: str) -> list:
        if name not in SPLITS:
            raise ValueError(f"split={name!r}; expected one of {SPLITS}")
        return [sample for sample in self.samples if sample.split == name]

    def drop(self: _Samples, skipped: Iterable[Skipped]) -> _Samples:
        """A copy without the images at ``skipped``'s paths (found unreadable later)."""
        skipped = tuple(skipped)
        gone = {absolute_path(item.path) for item in skipped}
        samples = tuple(s for s in self.samples if s.path not in gone)
        return replace(self, samples=samples, skipped=self.skipped + skipped)


@dataclass
class Table:
    root: Path  # the CSV file
    names: list[str]  # the columns, as the header spells them
    rows: list[Row]
    by_lower: dict[str, str] = field(default_factory=dict)  # a column by its lower-case name

    def column(self, name: str) -> str | None:
        """The column called ``name`` in any letter case, as the header spells it."""
        return self.by_lower.get(name.strip().lower())

    def others(self) -> list[str]:
        """The columns besides ``path`` and ``split``."""
        return [n for n in self.names if n.strip().lower() not in ("path", "split")]

    def given(self, rows: list[tuple[Row, object]]) -> set[str]:
        """The held-out splits the rows give themselves ("val", "test")."""
        return {row.split for row, _ in rows if row.split not in (None, "train")}

    def answers(
        self, read: Callable[[Row], object | None], missing: str
    ) -> tuple[list[tuple[Row, object]], list[Skipped]]:
        """Each row with the answer ``read`` finds in it; a row where it finds none (None) is
        skipped with ``missing`` and its line."""
        found, skipped = [], []
        for row in self.rows:
            answer = read(row)
            if answer is None:
                skipped.append(Skipped(row.path, f"{missing} (line {row.line})"))
            else:
                found.append((row, answer))
        return found, skipped


def read_table(table: str | Path, task: str, wants: str) -> Table:
    """The rows of the CSV file ``table``; ``task`` and ``wants`` (its columns, in words) say
    what a wrong file should have been.

    Raises:
        HeadstartError: not a CSV file, unreadable, no ``path`` column, no rows, an empty
            path, a path listed twice, or a split that is not train, val or test.
    """
    root = absolute_path(table)
    if not root.is_file() or root.suffix.lower() != ".csv":
        raise HeadstartError(f"{root}: a {task} reads a CSV file with a path column and {wants}")
    try:
        # -sig: Excel's BOM; surrogateescape: file names that are not UTF-8 read back as the
        # same names (as headstart.data.sources reads a table of classes).
        with open(root, newline="", encoding="utf-8-sig", errors="surrogateescape") as file:
            reader = csv.DictReader(file)
            names = [name for name in reader.fieldnames or [] if name]
            lines = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise HeadstartError(f"cannot read {root} as a CSV file: {error}") from None
    by_lower = {name.strip().lower(): name for name in names}
    if "path" not in by_lower:
        raise HeadstartError(
            f"{root} needs a header line with a path column and {wants}; its first line is: "
            f"{','.join(names) or '(empty)'}"
        )
    rows, first_line = [], {}
    for line, raw in lines:
        if raw.get(None):  # csv puts the fields beyond the header's under None
            raise HeadstartError(
                f"{root}, line {line}: {len(names) + len(raw[None])} fields for the header's "
                f"{len(names)} (a cell holding commas needs quotes, or another separator)"
            )
        cells = {k: (v or "").strip() for k, v in raw.items() if isinstance(k, str)}
        if not any(cells.values()):
            continue  # a blank line
        where = cells.get(by_lower["path"], "")
        if not where:
            raise HeadstartError(f"{root}, line {line}: the path is empty")
        try:
            path = absolute_path(root.parent / Path(where).expanduser())
        except RuntimeError:  # "~someone/...", and no such user
            raise HeadstartError(f"{root}, line {line}: cannot expand {where!r}") from None
        if path in first_line:
            raise HeadstartError(
                f"{root}, line {line}: {where} is listed again (first on line {first_line[path]})"
            )
        first_line[path] = line
        split = cells.get(by_lower.get("split", ""), "").lower() or None
        if split is not None and split not in SPLITS:
            raise HeadstartError(
                f"{root}, line {line}: split {split!r} is not one of {', '.join(SPLITS)} "
                "(leave it empty to have the row split here)"
            )
        rows.append(Row(line, path, split, cells))
    if not rows:
        raise HeadstartError(f"no images found: {root} has a header but no rows")
    return Table(root, names, rows, by_lower)


def usable(
    root: Path, found: list[tuple[Row, object]], skipped: list[Skipped]
) -> tuple[list[tuple[Row, object]], list[Skipped]]:
    """The rows whose image exists and reads (by its header), sorted by path; the others
    added to ``skipped`` with the reason.

    Raises:
        HeadstartError: no row left, saying why for the first.
    """
    total = len(found) + len(skipped)
    missing = [row for row, _ in found if not row.path.is_file()]
    skipped = skipped + [Skipped(row.path, "file not found") for row in missing]
    present = [(row, answer) for row, answer in found if row.path.is_file()]
    bad = unreadable_images([row.path for row, _ in present])
    gone = {item.path for item in bad}
    kept = sorted(
        ((r, a) for r, a in present if r.path not in gone), key=lambda ra: str(ra[0].path)
    )
    skipped = sorted(skipped + bad, key=lambda item: str(item.path))
    if not kept:
        first = skipped[0] if skipped else None
        why = f", e.g. {first.path}: {first.reason}" if first else ""
        raise HeadstartError(
            f"none of the {total} rows of {root} can be used{why} (relative paths are read "
            f"from {root.parent})"
        )
    return kept, skipped
