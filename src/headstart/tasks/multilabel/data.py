"""A table of images with several labels each (a photo of a street: car, bicycle, person):
what a multi-label fit reads.

Two layouts of ``tags.csv``, both with a ``path`` column (and an optional ``split``)::

    path,labels                     path,car,bicycle,person
    street/1.jpg,car|person         street/1.jpg,1,0,1
    street/2.jpg,                   street/2.jpg,0,0,0

A labels column (``labels``, ``tags`` or ``label``, or named with ``label_column``) holds the
labels joined by a separator: given (``label_separator``), or found among ``|``, ``;``, ``,``
and a space, whichever the column uses. An empty cell is an image with none of the labels, a
real example for every label. Otherwise every column besides ``path`` and ``split`` is one
label, holding 1/0 (or true/false, yes/no; empty is 0).

Rows without a split are split here by iterative stratification (Sechidis et al. 2011): the
rarest label's images are dealt out first, each to the split furthest below its share, so
every label keeps its share of images in validation as far as its count allows.
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ...data.sources import SPLITS, Skipped, absolute_path, check_fractions, unreadable_images
from ...errors import HeadstartError

__all__ = ["SEPARATORS", "LabelSets", "LabelledImage", "read_label_sets", "require_learnable"]

#: Separators tried, in order, when none is given.
SEPARATORS = ("|", ";", ",", " ")
_LABEL_COLUMNS = ("labels", "tags", "label")
_YES, _NO = {"1", "true", "yes", "y"}, {"0", "false", "no", "n", ""}


@dataclass(frozen=True)
class LabelledImage:
    """One image and the labels it has (a sorted tuple; empty: none of them)."""

    path: Path  # absolute
    labels: tuple[str, ...]
    split: str


@dataclass(frozen=True)
class LabelSets:
    """The images of a multi-label fit, their labels and splits, and the rows set aside."""

    root: Path
    labels: tuple[str, ...]  # sorted: a label's index is its position
    samples: tuple[LabelledImage, ...]
    layout: str  # "separated" | "columns"
    separator: str | None = None
    skipped: tuple[Skipped, ...] = ()
    warnings: tuple[str, ...] = ()

    def split(self, name: str) -> list[LabelledImage]:
        if name not in SPLITS:
            raise ValueError(f"split={name!r}; expected one of {SPLITS}")
        return [sample for sample in self.samples if sample.split == name]

    def targets(self, name: str) -> np.ndarray:
        """The 0/1 rows of one split, ``(n, labels)`` float32, a column per label."""
        return self.rows(self.split(name))

    def rows(self, samples: Iterable[LabelledImage]) -> np.ndarray:
        index = {label: i for i, label in enumerate(self.labels)}
        samples = list(samples)
        rows = np.zeros((len(samples), len(self.labels)), dtype=np.float32)
        for row, sample in enumerate(samples):
            rows[row, [index[label] for label in sample.labels]] = 1
        return rows

    def counts(self) -> dict[str, dict[str, int]]:
        """Images with each label, per split (and, under ``"images"``, images per split)."""
        out = {}
        for split in SPLITS:
            samples = self.split(split)
            tally = Counter(label for s in samples for label in s.labels)
            out[split] = {"images": len(samples), **{label: tally[label] for label in self.labels}}
        return out

    def drop(self, skipped: Iterable[Skipped]) -> LabelSets:
        skipped = tuple(skipped)
        gone = {absolute_path(item.path) for item in skipped}
        samples = tuple(s for s in self.samples if s.path not in gone)
        return replace(self, samples=samples, skipped=self.skipped + skipped)

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "layout": self.layout,
            "task": "multi-label",
            "labels": list(self.labels),
            "separator": self.separator,
            "counts": self.counts(),
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
            "warnings": list(self.warnings),
        }


def read_label_sets(
    table: str | Path,
    *,
    column: str | None = None,
    separator: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    training: bool = True,
    known: tuple[str, ...] | None = None,
) -> LabelSets:
    """The images and label sets of ``table`` (a CSV file with a ``path`` column), split.

    ``known``: the labels of a trained model, for data only scored (``training=False``):
    a column layout then reads those columns, and a label it does not know is refused.

    Raises:
        HeadstartError: not a CSV file, no path column, no labels, a value that is not 0/1
            in a label column, a path listed twice, no readable image, or (``training``)
            fewer than two labels or a label without training images.
    """
    check_fractions(val_fraction, test_fraction)
    root = absolute_path(table)
    if not root.is_file() or root.suffix.lower() != ".csv":
        raise HeadstartError(
            f"{root}: a multi-label fit reads a CSV file with a path column and a column of "
            "labels (path,labels with car|person) or a 0/1 column per label"
        )
    found = _read(root, column, separator, known)
    rows, skipped = found["rows"], found["skipped"]
    bad = unreadable_images([path for path, _, _ in rows])
    gone = {item.path for item in bad}
    if rows and len(bad) == len(rows):
        raise HeadstartError(
            f"none of the {len(rows)} images listed in {root} can be read, e.g. "
            f"{bad[0].path}: {bad[0].reason}"
        )
    rows = [row for row in rows if row[0] not in gone]
    labels = (
        tuple(known)
        if known is not None
        else tuple(sorted({label for _, found, _ in rows for label in found}))
    )
    warnings = []
    if "val" in found["given"]:
        val_fraction = 0.0
    if "test" in found["given"]:
        test_fraction = 0.0
    samples = _assign_splits(rows, labels, val_fraction, test_fraction, seed)
    dataset = LabelSets(
        root,
        labels,
        tuple(samples),
        found["layout"],
        found["separator"],
        tuple(sorted(skipped + bad, key=lambda item: str(item.path))),
        tuple(warnings),
    )
    if training:
        require_learnable(dataset)
    return dataset


def _read(
    root: Path, column: str | None, separator: str | None, known: tuple[str, ...] | None
) -> dict:
    try:
        with open(root, newline="", encoding="utf-8-sig", errors="surrogateescape") as file:
            reader = csv.DictReader(file)
            names = [name for name in reader.fieldnames or [] if name]
            by_lower = {name.strip().lower(): name for name in names}
            if "path" not in by_lower:
                raise HeadstartError(
                    f"{root} needs a header line with a path column; its first line is: "
                    f"{','.join(names) or '(empty)'}"
                )
            table = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise HeadstartError(f"cannot read {root} as a CSV file: {error}") from None
    table = [
        (line, row)
        for line, row in table
        if any((v or "").strip() for v in row.values() if isinstance(v, str))
    ]
    if not table:
        raise HeadstartError(f"no images found: {root} has a header but no rows")
    labels_column = _labels_column(root, names, by_lower, column, known)
    if labels_column is not None:
        cells = [(row.get(labels_column) or "").strip() for _, row in table]
        separator = separator or _separator(cells)
        layout, read_labels = "separated", _separated(labels_column, separator)
    else:
        columns = [n for n in names if n.strip().lower() not in ("path", "split")]
        if known is not None:
            columns = [by_lower[label.lower()] for label in known if label.lower() in by_lower]
        if not columns:
            raise HeadstartError(f"{root} has no label columns besides path and split")
        layout, read_labels = "columns", _flags(root, columns)
    rows, skipped, given, first_line = [], [], set(), {}
    for line, row in table:
        where = (row.get(by_lower["path"]) or "").strip()
        if not where:
            raise HeadstartError(f"{root}, line {line}: the path is empty")
        path = absolute_path(root.parent / Path(where).expanduser())
        if path in first_line:
            raise HeadstartError(
                f"{root}, line {line}: {where} is listed again (first on line {first_line[path]})"
            )
        first_line[path] = line
        split = (row.get(by_lower.get("split", ""), "") or "").strip().lower() or None
        if split is not None and split not in SPLITS:
            raise HeadstartError(
                f"{root}, line {line}: split {split!r} is not one of {', '.join(SPLITS)} "
                "(leave it empty to have the row split here)"
            )
        labels = read_labels(row, line)
        if known is not None and set(labels) - set(known):
            unknown = ", ".join(sorted(set(labels) - set(known)))
            raise HeadstartError(f"{root}, line {line}: label(s) {unknown} unknown to the model")
        if not path.is_file():
            skipped.append(Skipped(path, "file not found"))
            continue
        if split is not None:
            given |= {split} - {"train"}
        rows.append((path, labels, split))
    if not rows:
        raise HeadstartError(
            f"none of the {len(skipped)} files listed in {root} exist, e.g. {skipped[0].path} "
            f"(relative paths are read from {root.parent})"
        )
    rows.sort(key=lambda r: str(r[0]))
    return {
        "rows": rows,
        "skipped": skipped,
        "given": given,
        "layout": layout,
        "separator": separator if labels_column is not None else None,
    }


def _labels_column(
    root: Path,
    names: list[str],
    by_lower: dict[str, str],
    column: str | None,
    known: tuple[str, ...] | None,
) -> str | None:
    """The column of separated labels; None for a column per label."""
    if column is not None:
        found = by_lower.get(column.strip().lower())
        if found is None:
            raise HeadstartError(
                f"{root} has no column {column!r}; its columns: {', '.join(names)}"
            )
        return found
    if known is not None and all(label.lower() in by_lower for label in known):
        return None
    return next((by_lower[name] for name in _LABEL_COLUMNS if name in by_lower), None)


def _separator(cells: list[str]) -> str:
    """The separator the cells use: the first of :data:`SEPARATORS` found in any of them
    (a space only where nothing else is); ``|`` when every cell holds one label."""
    for separator in SEPARATORS:
        if any(separator in cell for cell in cells):
            return separator
    return SEPARATORS[0]


def _separated(column: str, separator: str):
    def labels(row: dict, line: int) -> tuple[str, ...]:
        cell = (row.get(column) or "").strip()
        return tuple(sorted({part.strip() for part in cell.split(separator) if part.strip()}))

    return labels


def _flags(root: Path, columns: list[str]):
    def labels(row: dict, line: int) -> tuple[str, ...]:
        present = []
        for name in columns:
            value = (row.get(name) or "").strip().lower()
            if value in _YES:
                present.append(name.strip())
            elif value not in _NO:
                raise HeadstartError(
                    f"{root}, line {line}: column {name!r} holds {value!r}; a label column holds "
                    "1 or 0 (true/false, yes/no; empty for 0)"
                )
        return tuple(sorted(present))

    return labels


def _assign_splits(
    rows: list[tuple[Path, tuple[str, ...], str | None]],
    labels: tuple[str, ...],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> list[LabelledImage]:
    """Given splits kept; the rest dealt out by iterative stratification, at random from the
    seed and the paths."""
    samples = [LabelledImage(p, ls, s) for p, ls, s in rows if s is not None]
    free = [(p, ls) for p, ls, s in rows if s is None]
    random.Random(f"{seed}/multi-label").shuffle(free)
    shares = {"val": val_fraction, "test": test_fraction}
    shares["train"] = 1 - val_fraction - test_fraction
    splits = [name for name in ("train", "val", "test") if shares[name] > 0]
    wanted = {name: shares[name] * len(free) for name in splits}
    wanted_per_label = {
        (name, label): shares[name] * sum(label in ls for _, ls in free)
        for name in splits
        for label in labels
    }
    left = list(range(len(free)))
    while left:
        # The label with the fewest images still to deal; images without a label come last.
        remaining = Counter(label for i in left for label in free[i][1])
        rarest = min(remaining, key=lambda label: (remaining[label], label)) if remaining else None
        chosen = [i for i in left if rarest is None or rarest in free[i][1]]
        for i in chosen:
            # The split furthest below its share of the rarest label (then of all images).
            best = max(
                splits,
                key=lambda name, rarest=rarest: (
                    wanted_per_label[name, rarest] if rarest else 0,
                    wanted[name],
                ),
            )
            samples.append(LabelledImage(free[i][0], free[i][1], best))
            wanted[best] -= 1
            for label in free[i][1]:
                wanted_per_label[best, label] -= 1
        dealt = set(chosen)
        left = [i for i in left if i not in dealt]
    samples.sort(key=lambda s: (SPLITS.index(s.split), str(s.path)))
    return samples


def require_learnable(dataset: LabelSets) -> None:
    """Refuse labels a model cannot learn or be checked on: fewer than two labels, no
    validation images, a label without training images or on every one. Checked again once
    every image is decoded (a file may fail then)."""
    counts = dataset.counts()
    if len(dataset.labels) < 2:
        raise HeadstartError(
            f"{dataset.root}: found {len(dataset.labels)} label(s); a multi-label fit needs two "
            "at least (for one, fit a classifier of it against the rest)"
        )
    if not counts["val"]["images"]:
        raise HeadstartError(
            f"{dataset.root}: no validation images, which choose the thresholds and check the "
            "model: give val_fraction above 0, or rows with split val"
        )
    absent = [label for label in dataset.labels if not counts["train"][label]]
    if absent:
        raise HeadstartError(
            f"{dataset.root}: label(s) {', '.join(absent)} have no training images: every label "
            "needs some"
        )
    train = counts["train"]
    everywhere = [name for name in dataset.labels if train[name] == train["images"]]
    if everywhere:
        raise HeadstartError(
            f"{dataset.root}: every training image has {', '.join(everywhere)}: a label on every "
            "image teaches nothing; leave it out"
        )
