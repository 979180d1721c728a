"""Splits without leaks: copies of one image on one side.

Where headstart chose the split itself (class folders, CSV rows without a split, a val or test
split carved from train), :func:`keep_together` moves the held-out copies of a duplicate group
into train, where the other copy already is: the held-out score then measures generalisation,
not memory. A split the data gives is never changed; its leaks are reported, and ``fit``
refuses them unless told otherwise.

For those, :func:`fixed_split` proposes a split without leaks, written as a CSV that
``headstart fit`` reads (no file is touched): every duplicate group in one split, train when
any of its copies is in train, else the group's first held-out split. Identical copies (same
bytes, same label) are listed once: a second copy adds weight, not information. Near copies
stay, together. Files that cannot be read are left out, as ``fit`` would leave them out.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..data.sources import SPLITS, Dataset, Sample
from .duplicates import DuplicateGroup

__all__ = ["fixed_split", "keep_together", "write_split"]


def keep_together(
    dataset: Dataset, groups: Sequence[DuplicateGroup]
) -> tuple[Dataset, list[DuplicateGroup], int]:
    """``dataset`` with the held-out copies that headstart placed (``dataset.split_here``) of
    every group that leaks (:attr:`~.duplicates.DuplicateGroup.leaks`) moved into train; the
    groups as they now stand, and how many files moved. Groups with a held-out copy the data
    placed are left as they are, and so are copies that only disagree on the label."""
    moved: dict[Sample, Sample] = {}
    for group in groups:
        held_out = [s for s in group.samples if s.split != "train"]
        if not group.leaks or any(s.path not in dataset.split_here for s in held_out):
            continue
        moved.update({s: replace(s, split="train") for s in held_out})
    if not moved:
        return dataset, list(groups), 0
    # The same order as before, each sample in its place: only some splits changed.
    samples = tuple(moved.get(s, s) for s in dataset.samples)
    regrouped = [
        replace(group, samples=tuple(moved.get(s, s) for s in group.samples)) for group in groups
    ]
    return replace(dataset, samples=samples), regrouped, len(moved)


def fixed_split(
    dataset: Dataset, groups: Sequence[DuplicateGroup], keys: dict[Sample, str] | None = None
) -> list[Sample]:
    """The samples of ``dataset`` with every group in one split and identical copies once.

    ``keys`` (content hashes) tell identical copies apart from near ones inside a group;
    without them every copy is kept.
    """
    keys = keys or {}
    moved: dict[Sample, str] = {}
    dropped: set[Sample] = set()
    for group in groups:
        target = "train" if "train" in group.splits else group.splits[0]
        kept: set[tuple[str, str]] = set()
        for sample in group.samples:
            identity = (keys.get(sample) or str(sample.path), sample.label)
            if identity in kept:
                dropped.add(sample)
            kept.add(identity)
            moved[sample] = target
    samples = [replace(s, split=moved.get(s, s.split)) for s in dataset.samples if s not in dropped]
    samples.sort(key=lambda s: (SPLITS.index(s.split), s.label, str(s.path)))
    return samples


def write_split(samples: Sequence[Sample], path: str | Path) -> Path:
    """Write ``path,label,split`` rows; paths relative to the CSV's folder where possible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = Path(os.path.abspath(path.parent))  # not resolved: as discover reads paths
    partial = path.with_suffix(".partial")
    # surrogateescape: a file name that is not UTF-8 is written as its bytes, not refused.
    with open(partial, "w", newline="", encoding="utf-8", errors="surrogateescape") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label", "split"])
        for sample in samples:
            writer.writerow([_relative(sample.path, base), sample.label, sample.split])
    partial.replace(path)
    return path


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive (Windows): only an absolute path can say where
        return str(path)
