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

import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...data.sources import SPLITS, Skipped, check_fractions
from ...errors import HeadstartError
from ..table import Row, Table, TableSamples, read_table, usable

__all__ = [
    "JOIN",
    "SEPARATORS",
    "LabelSets",
    "LabelledImage",
    "read_label_sets",
    "require_learnable",
]

#: Separators tried, in order, when none is given.
SEPARATORS = ("|", ";", ",", " ")
#: What joins an image's labels where a run writes them (splits.csv, predictions.csv).
JOIN = "|"
_LABEL_COLUMNS = ("labels", "tags", "label")
_YES, _NO = {"1", "true", "yes", "y"}, {"0", "false", "no", "n", ""}


@dataclass(frozen=True)
class LabelledImage:
    """One image and the labels it has (a sorted tuple; empty: none of them)."""

    path: Path  # absolute
    labels: tuple[str, ...]
    split: str


@dataclass(frozen=True)
class LabelSets(TableSamples):
    """The images of a multi-label fit, their labels and splits, and the rows set aside."""

    root: Path
    labels: tuple[str, ...]  # sorted: a label's index is its position
    samples: tuple[LabelledImage, ...]
    layout: str  # "separated" | "columns"
    separator: str | None = None
    skipped: tuple[Skipped, ...] = ()
    warnings: tuple[str, ...] = ()

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
    found = read_table(
        table,
        "multi-label fit",
        "a column of labels (path,labels with car|person) or a 0/1 column per label",
    )
    layout, separator, read = _layout(found, column, separator, known)
    rows, skipped = usable(found.root, [(row, read(row)) for row in found.rows], [])
    if known is not None:
        for row, labels in rows:
            if set(labels) - set(known):
                unknown = ", ".join(sorted(set(labels) - set(known)))
                raise HeadstartError(
                    f"{found.root}, line {row.line}: label(s) {unknown} unknown to the model"
                )
    labels = (
        tuple(known)
        if known is not None
        else tuple(sorted({label for _, present in rows for label in present}))
    )
    joined = [label for label in labels if JOIN in label]
    if joined:
        raise HeadstartError(
            f"{found.root}: label {joined[0]!r} holds {JOIN!r}, which a run uses to join an "
            "image's labels: rename it"
        )
    given = found.given(rows)
    samples = _assign_splits(
        [(row.path, present, row.split) for row, present in rows],
        labels,
        0.0 if "val" in given else val_fraction,
        0.0 if "test" in given else test_fraction,
        seed,
    )
    dataset = LabelSets(found.root, labels, tuple(samples), layout, separator, tuple(skipped))
    if training:
        require_learnable(dataset)
    return dataset


def _layout(
    table: Table, column: str | None, separator: str | None, known: tuple[str, ...] | None
) -> tuple[str, str | None, Callable[[Row], tuple[str, ...]]]:
    """How the table holds its labels: ("separated", the separator, a reader) or
    ("columns", None, a reader)."""
    labels_column = _labels_column(table, column, known)
    if labels_column is not None:
        separator = separator or _separator(
            [row.cells.get(labels_column, "") for row in table.rows]
        )
        return "separated", separator, _separated(labels_column, separator)
    # Each label column, as the header spells it, and the label it stands for (a model's own
    # spelling when scoring for one).
    columns = {name: name.strip() for name in table.others()}
    if known is not None:
        absent = [label for label in known if table.column(label) is None]
        if absent:
            raise HeadstartError(
                f"{table.root} has no column for the model's label(s) {', '.join(absent)}"
            )
        columns = {table.column(label): label for label in known}
    if not columns:
        raise HeadstartError(f"{table.root} has no label columns besides path and split")
    return "columns", None, _flags(table.root, columns)


def _labels_column(table: Table, column: str | None, known: tuple[str, ...] | None) -> str | None:
    """The column of separated labels; None for a column per label."""
    if column is not None:
        found = table.column(column)
        if found is None:
            raise HeadstartError(
                f"{table.root} has no column {column!r}; its columns: {', '.join(table.names)}"
            )
        return found
    if known is not None and all(table.column(label) for label in known):
        return None
    return next((table.column(n) for n in _LABEL_COLUMNS if table.column(n)), None)


def _separator(cells: list[str]) -> str:
    """The separator the cells use: the first of :data:`SEPARATORS` found in any of them
    (a space only where nothing else is); ``|`` when every cell holds one label."""
    for separator in SEPARATORS:
        if any(separator in cell for cell in cells):
            return separator
    return SEPARATORS[0]


def _separated(column: str, separator: str) -> Callable[[Row], tuple[str, ...]]:
    def labels(row: Row) -> tuple[str, ...]:
        cell = row.cells.get(column, "")
        return tuple(sorted({part.strip() for part in cell.split(separator) if part.strip()}))

    return labels


def _flags(root: Path, columns: dict[str, str]) -> Callable[[Row], tuple[str, ...]]:
    def labels(row: Row) -> tuple[str, ...]:
        present = []
        for name, label in columns.items():
            value = row.cells.get(name, "").lower()
            if value in _YES:
                present.append(label)
            elif value not in _NO:
                raise HeadstartError(
                    f"{root}, line {row.line}: column {name!r} holds {value!r}; a label column "
                    "holds 1 or 0 (true/false, yes/no; empty for 0)"
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
    if not dataset.samples:
        raise HeadstartError(
            f"{dataset.root}: no image left to learn from: every one was skipped (the reasons "
            "are listed with the run's data, dataset.json)"
        )
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
