"""A split without leaks, written as a CSV that ``headstart fit`` reads; no file is touched.

Every duplicate group is put in one split: train when any of its copies is in train (the model
learns from that image anyway; a held-out copy would only measure memory), else the group's
first held-out split. Identical copies (same bytes, same label) are listed once: a second copy
adds weight, not information. Near copies stay, together. Files that cannot be read are left
out, as ``fit`` would leave them out.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..data.sources import SPLITS, Dataset, Sample
from .duplicates import DuplicateGroup

__all__ = ["fixed_split", "write_split"]


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
