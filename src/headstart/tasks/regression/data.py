"""A table of images and one number each (an age, a count, a score): what a regression fits.

``ages.csv``::

    path,age[,split]
    faces/0001.jpg,34
    faces/0002.jpg,61.5

The target column is named (``label_column``), or found: ``label`` or ``target`` when the
table has one, else the one column besides ``path`` and ``split``. Rows without a split are
split here, stratified by the target: the images ranked by their number are cut in five
groups of equal size, and each group is split on its own (so validation spans the range),
from the seed and the file names alone.
A row without a number is skipped and said; a value that is not a number is refused, with
its line (class names in a table that should hold numbers are the common cause).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...data.sources import SPLITS, Skipped, check_fractions, split_sizes
from ...errors import HeadstartError
from ..table import Row, Table, TableSamples, read_table, usable

__all__ = ["Measured", "TargetDataset", "read_targets", "require_learnable"]

#: The target's quantile bins the split is stratified by (fewer with few rows).
STRATA = 5
_TARGET_NAMES = ("label", "target")


@dataclass(frozen=True)
class Measured:
    """One image and its number."""

    path: Path  # absolute
    target: float
    split: str  # one of SPLITS


@dataclass(frozen=True)
class TargetDataset(TableSamples):
    """The images of a regression, their numbers and splits, and the rows set aside."""

    root: Path  # the table
    column: str  # the target's column, as the table spells it
    samples: tuple[Measured, ...]
    skipped: tuple[Skipped, ...] = ()
    warnings: tuple[str, ...] = ()
    layout: str = "csv"

    def targets(self, name: str) -> np.ndarray:
        """The numbers of one split, float64, in its order."""
        return np.array([sample.target for sample in self.split(name)], dtype=np.float64)

    def to_dict(self) -> dict:
        """What a run records about its data: counts and the target's spread per split."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "task": "regression",
            "target": self.column,
            "counts": {split: len(self.split(split)) for split in SPLITS},
            "targets": {split: describe(self.targets(split)) for split in SPLITS},
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
            "warnings": list(self.warnings),
        }


def describe(values: np.ndarray) -> dict:
    """The spread of some numbers, JSON-ready (empty for none)."""
    if not len(values):
        return {}
    return {
        "n": len(values),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "median": float(np.median(values)),
        "max": float(values.max()),
    }


def read_targets(
    table: str | Path,
    *,
    column: str | None = None,
    preferred: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    training: bool = True,
) -> TargetDataset:
    """The images and numbers of ``table`` (a CSV file with a ``path`` column), split.

    ``column`` names the target's column; without it, ``preferred`` when the table has that
    column (a model's own target, for new data to score), else it is found by name.
    ``training``: the data is to train on, so it needs two training images at least, a
    validation image and a target that varies; False for data only scored.

    Raises:
        HeadstartError: not a CSV file, no path or target column, a value that is not a
            number, a path listed twice, no readable image, or nothing to learn.
    """
    check_fractions(val_fraction, test_fraction)
    found = read_table(table, "regression", "a column of numbers (path,age for example)")
    target = _target_column(found, column, preferred)
    rows, skipped = found.answers(lambda row: _number(found.root, row, target), f"no {target}")
    rows, skipped = usable(found.root, rows, skipped)
    given = found.given(rows)
    warnings = []
    if "val" in given:
        val_fraction = 0.0
    if "test" in given:
        if test_fraction > 0:
            warnings.append(
                f"test_fraction={test_fraction} is ignored: the table gives a test split"
            )
        test_fraction = 0.0
    samples = _assign_splits(
        [(row.path, value, row.split) for row, value in rows], val_fraction, test_fraction, seed
    )
    dataset = TargetDataset(found.root, target, tuple(samples), tuple(skipped), tuple(warnings))
    if training:
        require_learnable(dataset)
    return dataset


def _target_column(table: Table, column: str | None, preferred: str | None) -> str:
    if column is not None:
        found = table.column(column)
        if found is None:
            raise HeadstartError(
                f"{table.root} has no column {column!r}; its columns: {', '.join(table.names)}"
            )
        return found
    others = table.others()
    if not others:
        raise HeadstartError(
            f"{table.root} has no column besides path and split: add the column of numbers"
        )
    if preferred and table.column(preferred) in others:
        return table.column(preferred)
    for name in _TARGET_NAMES:
        if table.column(name) in others:
            return table.column(name)
    if len(others) == 1:
        return others[0]
    how = f"name it {preferred!r}, as the model's target" if preferred else "--label-column"
    raise HeadstartError(
        f"{table.root}: which column holds the numbers? ({how}; columns: {', '.join(table.names)})"
    )


def _number(root: Path, row: Row, target: str) -> float | None:
    """The row's number; None for an empty cell (a row to skip).

    Raises:
        HeadstartError: a value that is not a finite number, with its line."""
    value = row.cells.get(target, "")
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise HeadstartError(
            f"{root}, line {row.line}: {target} {value!r} is not a number (a regression "
            "predicts numbers; for classes, fit without --task regression)"
        )
    return number


def _assign_splits(
    rows: list[tuple[Path, float, str | None]],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> list[Measured]:
    """Given splits kept; the rest split within each quantile bin of the target, at random
    from the seed and the paths."""
    samples = [Measured(path, value, split) for path, value, split in rows if split is not None]
    free = [(path, value) for path, value, split in rows if split is None]
    if free:
        values = np.array([value for _, value in free])
        strata = min(STRATA, max(1, len(free) // 10))
        edges = np.quantile(values, np.linspace(0, 1, strata + 1)[1:-1])
        bins = np.searchsorted(edges, values, side="right")
        for stratum in range(strata):
            members = sorted((free[i] for i in np.flatnonzero(bins == stratum)), key=_by_path)
            random.Random(f"{seed}/regression/{stratum}").shuffle(members)
            n_val, n_test = split_sizes(len(members), val_fraction, test_fraction)
            splits = ["val"] * n_val + ["test"] * n_test
            splits += ["train"] * (len(members) - len(splits))
            samples += [Measured(p, v, s) for (p, v), s in zip(members, splits, strict=True)]
    samples.sort(key=lambda s: (SPLITS.index(s.split), str(s.path)))
    return samples


def _by_path(row: tuple[Path, float]) -> str:
    return str(row[0])


def require_learnable(dataset: TargetDataset) -> None:
    """Refuse data a regression cannot learn from, or check: fewer than two training images,
    fewer than two validation images, or one number for every training (or validation)
    image. Checked again once every image is decoded (a file may fail then)."""
    counts = Counter(sample.split for sample in dataset.samples)
    if counts["train"] < 2:
        raise HeadstartError(
            f"{dataset.root}: {counts['train']} training image(s); a regression needs two at least"
        )
    if counts["val"] < 2:
        raise HeadstartError(
            f"{dataset.root}: {counts['val']} validation image(s); a regression needs two at "
            "least, with different numbers, to choose and check the model: give a larger "
            "val_fraction, or more rows with split val"
        )
    train = dataset.targets("train")
    if train.min() == train.max():
        raise HeadstartError(
            f"{dataset.root}: every training image has the same {dataset.column} "
            f"({train[0]:g}): there is nothing to learn"
        )
    val = dataset.targets("val")
    if val.min() == val.max():
        raise HeadstartError(
            f"{dataset.root}: every validation image has the same {dataset.column} "
            f"({val[0]:g}): validation cannot tell a good model from the mean"
        )
