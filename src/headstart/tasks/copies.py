"""Copies of one image (the same content, whatever the file's name) in a table of images:
groups that cross splits flatter the held-out scores, and groups whose answers differ are
noise no model can remove. Shared by the audits of every task."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from ..data.decoded import DecodedImages
from ..data.images import UnreadableImage

__all__ = ["copies"]


def copies(
    samples: Sequence, images: DecodedImages, answer: Callable[[object], object], name: str
) -> tuple[list[dict], set[Path]]:
    """The groups of copies among ``samples`` (each with ``path`` and ``split``): their
    paths, splits and ``answer`` (listed under ``name``); and the held-out copies of training
    images."""
    by_content = defaultdict(list)
    for sample in samples:
        try:
            by_content[images.key(sample.path)].append(sample)
        except UnreadableImage:
            continue  # unreadable: set aside elsewhere, with the reason
    groups = [group for group in by_content.values() if len(group) > 1]
    found = [
        {
            "paths": [str(s.path) for s in group],
            "splits": [s.split for s in group],
            name: [answer(s) for s in group],
        }
        for group in groups
    ]
    leaked = {
        s.path
        for group in groups
        if any(s.split == "train" for s in group)
        for s in group
        if s.split != "train"
    }
    return found, leaked
