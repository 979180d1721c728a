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

import csv
import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ...data.sources import (
    SPLITS,
    Skipped,
    absolute_path,
    check_fractions,
    split_sizes,
    unreadable_images,
)
from ...errors import HeadstartError

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
class TargetDataset:
    """The images of a regression, their numbers and splits, and the rows set aside."""

    root: Path  # the table
    column: str  # the target's column, as the table spells it
    samples: tuple[Measured, ...]
    skipped: tuple[Skipped, ...] = ()
    warnings: tuple[str, ...] = ()
    layout: str = "csv"

    def split(self, name: str) -> list[Measured]:
        if name not in SPLITS:
            raise ValueError(f"split={name!r}; expected one of {SPLITS}")
        return [sample for sample in self.samples if sample.split == name]

    def targets(self, name: str) -> np.ndarray:
        """The numbers of one split, float64, in its order."""
        return np.array([sample.target for sample in self.split(name)], dtype=np.float64)

    def drop(self, skipped: Iterable[Skipped]) -> TargetDataset:
        """A copy without the images at ``skipped``'s paths (found unreadable later)."""
        skipped = tuple(skipped)
        gone = {absolute_path(item.path) for item in skipped}
        samples = tuple(s for s in self.samples if s.path not in gone)
        return replace(self, samples=samples, skipped=self.skipped + skipped)

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
    root = absolute_path(table)
    if not root.is_file() or root.suffix.lower() != ".csv":
        raise HeadstartError(
            f"{root}: a regression reads a CSV file with a path column and a column of "
            "numbers (path,age for example)"
        )
    column, rows, skipped, given = _read_rows(root, column, preferred)
    bad = unreadable_images([path for path, _, _ in rows])
    if len(bad) == len(rows) and rows:
        raise HeadstartError(
            f"none of the {len(rows)} images listed in {root} can be read, e.g. "
            f"{bad[0].path}: {bad[0].reason}"
        )
    gone = {item.path for item in bad}
    rows = [row for row in rows if row[0] not in gone]
    skipped += bad
    if not rows:
        raise HeadstartError(f"no images to use in {root}: every row was skipped")
    warnings = []
    if "val" in given:
        val_fraction = 0.0
    if "test" in given:
        if test_fraction > 0:
            warnings.append(
                f"test_fraction={test_fraction} is ignored: the table gives a test split"
            )
        test_fraction = 0.0
    samples = _assign_splits(rows, val_fraction, test_fraction, seed)
    dataset = TargetDataset(
        root,
        column,
        tuple(samples),
        tuple(sorted(skipped, key=lambda item: str(item.path))),
        tuple(warnings),
    )
    if training:
        require_learnable(dataset)
    return dataset


def _read_rows(
    root: Path, column: str | None, preferred: str | None
) -> tuple[str, list[tuple[Path, float, str | None]], list[Skipped], set[str]]:
    """(the target column, (path, number, split or None) per usable row, rows skipped, the
    splits the table gives)."""
    rows: list[tuple[Path, float, str | None]] = []
    skipped: list[Skipped] = []
    given: set[str] = set()
    first_line: dict[Path, int] = {}
    try:
        # -sig: Excel's BOM; surrogateescape: file names that are not UTF-8 read back as the
        # same names (as headstart.data.sources reads a table of classes).
        with open(root, newline="", encoding="utf-8-sig", errors="surrogateescape") as file:
            reader = csv.DictReader(file)
            names = [name for name in reader.fieldnames or [] if name]
            by_lower = {name.strip().lower(): name for name in names}
            if "path" not in by_lower:
                raise HeadstartError(
                    f"{root} needs a header line with a path column and a column of numbers; "
                    f"its first line is: {','.join(names) or '(empty)'}"
                )
            target = _target_column(root, names, by_lower, column, preferred)
            for row in reader:
                line = reader.line_num
                if not any(isinstance(v, str) and v.strip() for v in row.values()):
                    continue  # a blank line
                where = (row.get(by_lower["path"]) or "").strip()
                if not where:
                    raise HeadstartError(f"{root}, line {line}: the path is empty")
                path = absolute_path(root.parent / Path(where).expanduser())
                if path in first_line:
                    raise HeadstartError(
                        f"{root}, line {line}: {where} is listed again (first on line "
                        f"{first_line[path]})"
                    )
                first_line[path] = line
                split = (row.get(by_lower.get("split", ""), "") or "").strip().lower() or None
                if split is not None and split not in SPLITS:
                    raise HeadstartError(
                        f"{root}, line {line}: split {split!r} is not one of "
                        f"{', '.join(SPLITS)} (leave it empty to have the row split here)"
                    )
                value = (row.get(target) or "").strip()
                if not value:
                    skipped.append(Skipped(path, f"no {target} (line {line})"))
                    continue
                number = _number(value)
                if number is None:
                    raise HeadstartError(
                        f"{root}, line {line}: {target} {value!r} is not a number (a "
                        "regression predicts numbers; for classes, fit without --task "
                        "regression)"
                    )
                if not path.is_file():
                    skipped.append(Skipped(path, "file not found"))
                    continue
                if split is not None:
                    given |= {split} - {"train"}
                rows.append((path, number, split))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise HeadstartError(f"cannot read {root} as a CSV file: {error}") from None
    if not rows and not skipped:
        raise HeadstartError(f"no images found: {root} has a header but no rows")
    if not rows:
        raise HeadstartError(
            f"none of the {len(skipped)} rows of {root} can be used, e.g. {skipped[0].path}: "
            f"{skipped[0].reason} (relative paths are read from {root.parent})"
        )
    return target, sorted(rows, key=lambda row: str(row[0])), skipped, given


def _target_column(
    root: Path,
    names: list[str],
    by_lower: dict[str, str],
    column: str | None,
    preferred: str | None,
) -> str:
    if column is not None:
        found = by_lower.get(column.strip().lower())
        if found is None:
            raise HeadstartError(
                f"{root} has no column {column!r}; its columns: {', '.join(names)}"
            )
        return found
    if preferred and preferred.strip().lower() in by_lower.keys() - {"path", "split"}:
        return by_lower[preferred.strip().lower()]
    for name in _TARGET_NAMES:
        if name in by_lower:
            return by_lower[name]
    others = [name for name in names if name.strip().lower() not in ("path", "split")]
    if len(others) == 1:
        return others[0]
    how = f"name it {preferred!r}, as the model's target" if preferred else "--label-column"
    raise HeadstartError(
        f"{root}: which column holds the numbers? ({how}; columns: {', '.join(names)})"
    )


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


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
