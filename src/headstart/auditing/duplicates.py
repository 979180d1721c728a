"""Exact and near duplicates, grouped, with the groups that leak across splits flagged.

Exact duplicates share their bytes (the content hash). Near duplicates are found in two
steps, the way image-retrieval systems do it: cheap signals *propose* candidate pairs, and a
pixel comparison *confirms* them.

- Candidates come from perceptual hashes (same layout of light and dark: re-encodes, resizes,
  mirror images) and from the backbone's cached features (same content, also when cropped).
- A candidate is confirmed when one image, shrunk to a small thumbnail, lies inside the other
  at some zoom and shift with pixels that differ by less than a shift of one pixel would
  explain (the mean absolute difference divided by the mean absolute gradient, ``misalignment``
  below). A copy differs from its source by resampling and compression noise; a different
  image differs by its content.

Neither signal alone is safe. In the planted tests (``tests/test_audit.py``) features put
crops of 8 to 15% at cosine 0.85 to 0.93, but distinct near-featureless patches of the LFW
set (dark backgrounds, one edge) at up to 0.98, and distinct faces at up to 0.84; JPEG at
quality 40 of a small face fell to 0.67. The pixel check separates them all: every planted
copy is below 0.5 "pixels" of misalignment, every distinct pair above 1.3.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from ..data.sources import SPLITS, Sample
from .neighbours import Neighbours
from .pixels import ImageStats, shrink

__all__ = [
    "FEATURE_SIMILARITY",
    "HASH_DISTANCE",
    "MAX_ZOOM",
    "MISALIGNMENT",
    "TINY_MISALIGNMENT",
    "DuplicateGroup",
    "find_duplicates",
]

#: Perceptual-hash distance (bits of 64) up to which a pair is a candidate. Re-encoded,
#: resized and mirrored copies measured 0 to 2 in the planted tests; distinct images 10 or more
#: in 30,000 pairs of aligned faces, patches and photos. Candidates are verified, so the margin
#: only costs time.
HASH_DISTANCE = 8
#: Cosine similarity of centred features from which a pair is a candidate: crops that keep
#: 85% of each side scored 0.85 and more; distinct photos of the same kind 0.84 at most.
FEATURE_SIMILARITY = 0.85
#: Most candidates proposed per image by its features (its most similar): bounds the pixel
#: checks inside a dense cluster of look-alikes; a group of copies still links up through them.
CANDIDATES_PER_IMAGE = 10
#: Largest zoom tried between two images: a crop keeping 1/1.36 = 74% of the shortest side.
MAX_ZOOM = 1.36
_ZOOMS = np.round(np.arange(1.0, MAX_ZOOM + 1e-9, 0.03), 2)
#: Pixel residual after alignment, in units of the image's mean gradient (roughly, pixels of
#: misalignment), up to which a pair is confirmed. Copies: 0.06 to 0.48; distinct pairs: 1.36
#: and more (planted tests); 1.0 sits between with room on both sides.
MISALIGNMENT = 1.0
#: The same for images stored smaller than the 32-pixel comparison, compared at the size they
#: are stored. On scikit-learn's 8x8 digits, re-encoded and smoothly resized copies measured
#: 0.05 to 0.10 and the closest distinct digits (by different writers, seven to twelve gray
#: levels apart per pixel) 0.13 and more. Nearest-neighbour enlargements (up to 0.19) are
#: missed: tiny images leave no margin for them.
TINY_MISALIGNMENT = 0.1
#: Mean gradient (gray levels per pixel of the 32-pixel thumbnail) below which an image has
#: too little detail to tell a copy from a look-alike: blank and near-blank images only count
#: as duplicates when their bytes are identical.
MIN_DETAIL = 1.0
_SIDE = 32  # thumbnail side for the pixel check; THUMBNAIL_SIDE leaves room to zoom
# How close to the limit the best of every third zoom must come for the zooms between to be
# tried: a zoom off by 0.045 (half the coarse step) added up to 0.4 to planted crops.
_PROMISING = 2.0
_EVIDENCE = ("identical bytes", "perceptual hash", "features")


@dataclass(frozen=True)
class DuplicateGroup:
    """Files that are copies of one another (two or more), in path order.

    ``kind`` is "exact" when every file has the same bytes, else "near". ``evidence`` names
    what linked them: "identical bytes", "perceptual hash", "features".
    """

    samples: tuple[Sample, ...]
    kind: str
    evidence: tuple[str, ...]

    @property
    def splits(self) -> tuple[str, ...]:
        present = {s.split for s in self.samples}
        return tuple(split for split in SPLITS if split in present)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(sorted({s.label for s in self.samples}))

    @property
    def leaks(self) -> bool:
        """A copy in train and another in val or test: the held-out score is flattered."""
        return "train" in self.splits and len(self.splits) > 1

    @property
    def conflicting_labels(self) -> bool:
        return len(self.labels) > 1

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "evidence": list(self.evidence),
            "leaks": self.leaks,
            "crosses_splits": len(self.splits) > 1,
            "conflicting_labels": self.conflicting_labels,
            "files": [
                {"path": str(s.path), "label": s.label, "split": s.split} for s in self.samples
            ],
        }


def find_duplicates(
    samples: Sequence[Sample],
    keys: Mapping[Sample, str],
    stats: Mapping[Sample, ImageStats],
    neighbours: Neighbours | None = None,
    rows: Sequence[Sample] = (),
) -> list[DuplicateGroup]:
    """Group ``samples`` into duplicate groups; samples without a copy are left out.

    Args:
        keys: each sample's content hash (samples without one are only compared by pixels).
        stats: each sample's :class:`~.pixels.ImageStats` (samples without are not compared).
        neighbours: feature-space neighbours of ``rows`` (indices into ``rows``), or None
            when there are no features: then near duplicates come from hashes alone.

    Groups are ordered leaks first, then conflicting labels, then by size.
    """
    links = _Links()
    evidence: list[tuple[Sample, str]] = []  # (a member, what linked it to a copy)

    by_key: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        if sample in keys:
            by_key[keys[sample]].append(sample)
    for copies in by_key.values():
        for other in copies[1:]:
            links.join(copies[0], other)
            evidence.append((other, "identical bytes"))

    # Candidates, each pair once (ordered by path), the hash's claim first.
    candidates: dict[tuple[Sample, Sample], tuple[str, bool]] = {}
    for a, b, mirrored in _hash_pairs([s for s in samples if s in stats], stats):
        candidates[_ordered(a, b)] = ("perceptual hash", mirrored)
    if neighbours is not None:
        for i, j, _ in neighbours.pairs:
            if rows[i] in stats and rows[j] in stats:
                candidates.setdefault(_ordered(rows[i], rows[j]), ("features", False))

    check = _PixelCheck(stats)
    for (a, b), (source, mirrored) in candidates.items():
        if a in keys and keys.get(a) == keys.get(b):
            continue  # identical bytes: linked above
        if links.together(a, b):
            continue  # already linked through other copies
        if check.same(a, b, mirrored=mirrored):
            links.join(a, b)
            evidence.append((a, source))

    found: dict[Sample, set[str]] = defaultdict(set)
    for member, how in evidence:
        found[links.find(member)].add(how)
    order = {sample: i for i, sample in enumerate(samples)}
    groups = []
    for root, members in links.groups().items():
        members.sort(key=order.__getitem__)
        contents = {keys.get(s) for s in members}
        kind = "exact" if len(contents) == 1 and None not in contents else "near"
        how = tuple(h for h in _EVIDENCE if h in found[root])
        groups.append(DuplicateGroup(tuple(members), kind, how))
    groups.sort(key=lambda g: (not g.leaks, not g.conflicting_labels, -len(g.samples)))
    return groups


def _hash_pairs(
    samples: Sequence[Sample], stats: Mapping[Sample, ImageStats]
) -> list[tuple[Sample, Sample, bool]]:
    """Pairs within HASH_DISTANCE of each other, straight or mirrored: ``(a, b, mirrored)``.

    At most CANDIDATES_PER_IMAGE per image (its closest), as for features: a folder of
    look-alikes (one product, one form) would otherwise make every pair a candidate.
    """
    plain = np.array([stats[s].hash for s in samples], dtype=np.uint64)
    flipped = np.array([stats[s].mirrored_hash for s in samples], dtype=np.uint64)
    found: dict[tuple[int, int], bool] = {}
    step = max(1, 4_000_000 // max(len(samples), 1))  # about 64 MB of distances at a time
    take = min(CANDIDATES_PER_IMAGE, len(samples) - 1)
    for start in range(0, len(samples) if take > 0 else 0, step):
        straight = np.bitwise_count(plain[start : start + step, None] ^ plain[None, :])
        mirrored = np.bitwise_count(plain[start : start + step, None] ^ flipped[None, :])
        distance = np.minimum(straight, mirrored).astype(np.int16)
        rows = np.arange(len(distance))
        distance[rows, start + rows] = 64 + 1  # an image is not its own copy
        closest = np.argpartition(distance, take - 1, axis=1)[:, :take]
        near = np.take_along_axis(distance, closest, axis=1) <= HASH_DISTANCE
        for row, column in zip(*np.nonzero(near), strict=True):
            i, j = start + int(row), int(closest[row, column])
            found[min(i, j), max(i, j)] = bool(mirrored[row, j] < straight[row, j])
    return [(samples[i], samples[j], flip) for (i, j), flip in sorted(found.items())]


class _PixelCheck:
    """Does one image lie inside the other, up to a zoom of MAX_ZOOM and any shift?"""

    def __init__(self, stats: Mapping[Sample, ImageStats]):
        self.stats = stats
        self._zoomed: dict[tuple[Sample, float, bool], np.ndarray] = {}

    def same(self, a: Sample, b: Sample, *, mirrored: bool = False) -> bool:
        # An image stored smaller than the thumbnail is compared at the size it is stored:
        # enlarged, its blur makes any difference look like a fraction of a pixel's shift.
        side = min(_SIDE, *(min(self.stats[s].width, self.stats[s].height) for s in (a, b)))
        limit = MISALIGNMENT if side == _SIDE else TINY_MISALIGNMENT
        directions = (  # b is a zoomed-in part of a; then a of b
            lambda zoom: _misalignment(self._at(a, side, zoom), self._at(b, side, 1.0, mirrored)),
            lambda zoom: _misalignment(self._at(b, side, zoom, mirrored), self._at(a, side, 1.0)),
        )
        for misalignment in directions:
            # Every third zoom first, then the zooms around the best of them if it came
            # within PROMISING of the limit: a third of the work for the many look-alikes
            # that are far from a copy at every zoom.
            tried = {}
            for zoom in _ZOOMS[::3]:
                tried[zoom] = misalignment(zoom)
                if tried[zoom] <= limit:
                    return True
            best = min(tried, key=tried.__getitem__)
            if tried[best] > _PROMISING * limit:
                continue
            for zoom in _ZOOMS[np.abs(_ZOOMS - best) < 0.07]:
                if zoom not in tried and misalignment(zoom) <= limit:
                    return True
        return False

    def _at(self, sample: Sample, side: int, zoom: float, mirrored: bool = False) -> np.ndarray:
        size = round(side * zoom)
        key = (sample, size, mirrored)
        if key not in self._zoomed:
            thumbnail = self.stats[sample].thumbnail
            if mirrored:
                thumbnail = thumbnail[:, ::-1]
            self._zoomed[key] = shrink(Image.fromarray(thumbnail), size).astype(np.float32)
        return self._zoomed[key]


def _misalignment(outer: np.ndarray, inner: np.ndarray) -> float:
    """Smallest mean |difference| of ``inner`` placed inside ``outer``, over its mean gradient.

    Where ``inner`` does not fit (another aspect ratio), its centre is used. Images with too
    little detail to align (see MIN_DETAIL) never match.
    """
    height, width = min(inner.shape[0], outer.shape[0]), min(inner.shape[1], outer.shape[1])
    top, left = (inner.shape[0] - height) // 2, (inner.shape[1] - width) // 2
    inner = inner[top : top + height, left : left + width]
    detail = _detail(inner)
    if detail < MIN_DETAIL:
        return np.inf
    differences = sliding_window_view(outer, inner.shape) - inner
    np.abs(differences, out=differences)
    residual = differences.sum(axis=(-2, -1)).min() / inner.size
    return float(residual / detail)


def _detail(pixels: np.ndarray) -> float:
    """Mean absolute difference between neighbouring pixels (gray levels per pixel)."""
    down = np.abs(pixels[1:] - pixels[:-1]).sum() / max(pixels[1:].size, 1)
    across = np.abs(pixels[:, 1:] - pixels[:, :-1]).sum() / max(pixels[:, 1:].size, 1)
    return float(down + across) / 2


def _ordered(a: Sample, b: Sample) -> tuple[Sample, Sample]:
    return (a, b) if str(a.path) <= str(b.path) else (b, a)


class _Links:
    """Union-find over samples: which belong to the same group."""

    def __init__(self):
        self.parent: dict[Sample, Sample] = {}

    def find(self, item: Sample) -> Sample:
        self.parent.setdefault(item, item)
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]  # path halving
            item = self.parent[item]
        return item

    def together(self, a: Sample, b: Sample) -> bool:
        """Are ``a`` and ``b`` already in one group?"""
        return a in self.parent and b in self.parent and self.find(a) == self.find(b)

    def join(self, a: Sample, b: Sample) -> None:
        self.parent[self.find(a)] = self.find(b)

    def groups(self) -> dict[Sample, list[Sample]]:
        """Each group of two or more, by its root."""
        members: dict[Sample, list[Sample]] = defaultdict(list)
        for item in list(self.parent):
            members[self.find(item)].append(item)
        return {root: group for root, group in members.items() if len(group) > 1}
