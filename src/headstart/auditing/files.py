"""Files that cannot be used, each with its cause, counted by cause.

The causes are found where files are read (:mod:`headstart.data.images`): discovery reads each
header (empty files, files that are not images, decompression bombs, unsupported modes), and
decoding catches the rest (truncated or corrupt data). The audit gathers both.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from ..data.sources import Skipped

__all__ = ["causes", "unusable"]

# A reason's cause is its text before any detail: "decompression bomb: 200 megapixels (limit
# 160)" -> "decompression bomb", "not an image (an HTML page, ...)" -> "not an image".
_DETAIL = re.compile(r"\s*[:(].*$")


def unusable(*found: Iterable[Skipped]) -> list[Skipped]:
    """Every unusable file once (the first reason found for it), in path order."""
    seen: dict[str, Skipped] = {}
    for items in found:
        for item in items:
            seen.setdefault(str(item.path), item)
    return [seen[path] for path in sorted(seen)]


def causes(files: Iterable[Skipped]) -> dict[str, int]:
    """How many files fail for each cause, most frequent first."""
    return dict(Counter(_DETAIL.sub("", f.reason) or f.reason for f in files).most_common())
