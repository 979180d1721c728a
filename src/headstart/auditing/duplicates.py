"""Exact and near duplicates, grouped, with the groups that leak across splits flagged.

Exact duplicates share their bytes (the content hash). Near duplicates are found in two
steps, the way image-retrieval systems do it: cheap signals *propose* candidate pairs, and a
pixel comparison *confirms* them.

- Candidates come from perceptual hashes (same layout of light and dark: re-encodes, resizes,
  mirror images) and from the backbone's cached features (same content, also when cropped).
- A candidate is confirmed when one image, shrunk to a small thumbnail, lies inside the other
  at some zoom and shift with *every region* close: in each of the 4 x 4 blocks of the
  thumbnail, the difference that a shift of half a pixel does not explain averages less than
  REGION_DIFFERENCE of the image's mean gradient. A copy (re-encoded, resized, slightly
  cropped, mirrored) differs from its source by resampling and compression noise, thin and
  everywhere, strongest along edges, where half a pixel's shift explains it; another photo
  differs by its content, and a lot somewhere.

The worst region decides, not the mean over the image: two photos of one scene often differ
in one place only (a hand with one more finger raised, an object moved on a table), and a
plain background dilutes that place in a mean. The first version of this check took the mean
(of the plain difference) and confirmed 50 groups of distinct photos in sign_language_digits
(hands on a white wall), 16 of them across splits; photos of one scene with a corner (a
sixteenth of the image) replaced measured 0.12 to 0.27 in it, below planted copies' 0.48.

Neither signal alone is safe. In the planted tests (``tests/test_audit.py``) features put
crops of 8 to 15% at cosine 0.85 to 0.93, but distinct near-featureless patches of the LFW
set (dark backgrounds, one edge) at up to 0.98, and distinct faces at up to 0.84; JPEG at
quality 40 of a small face fell to 0.67. The pixel check separates them all, with the
numbers given at REGION_DIFFERENCE.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from scipy.ndimage import maximum_filter, minimum_filter

from ..data.decoded import DecodedImages
from ..data.images import UnreadableImage
from ..data.sources import SPLITS, Sample
from .neighbours import Neighbours
from .pixels import ImageStats, shrink, thumbnail

__all__ = [
    "FEATURE_SIMILARITY",
    "HASH_DISTANCE",
    "MAX_ZOOM",
    "REGIONS",
    "REGION_DIFFERENCE",
    "SHIFT_TOLERANCE",
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
#: Difference between aligned thumbnails, in units of the image's mean gradient (gray levels
#: per pixel), up to which a pair is confirmed: the mean over the worst of REGIONS x REGIONS
#: blocks of the part a shift of SHIFT_TOLERANCE pixels does not explain. Measured over every
#: zoom and shift:
#:
#: - planted tests: copies 0.00 to 0.14 (crops the highest); distinct pairs 1.37 and more
#:   (1,875 pairs, each image's ten closest within 16 bits of hash or 0.75 of cosine);
#: - sign_language_digits: 144 copies made of 16 of its photos (JPEG at quality 40 and 70,
#:   resized to 50% and 150%, mirrored, cropped to 85 to 92%) 0.00 to 0.27 (crops; the others
#:   0.06 at most); its 1,039 candidate pairs, all distinct photos (looked at), 0.53 and more;
#: - photos of one scene with a corner replaced (the tests): 0.81 to 2.81.
#:
#: 0.4 sits between copies and distinct photos with room on both sides (x1.5 above the
#: farthest copy, /1.3 below the closest distinct photo).
REGION_DIFFERENCE = 0.4
#: Blocks per side of the 32-pixel thumbnail: 8 x 8 pixels, a sixteenth of the image each,
#: large enough to average out noise, small enough for a raised finger to fill much of one.
#: 8 per side separated the sets above less well (closest distinct over farthest copy 1.79,
#: against 1.98); 1 (the whole image) dilutes a difference in one place sixteen times.
REGIONS = 4
#: Fraction of a pixel by which the thumbnails may still be misaligned: zoom and shift move in
#: whole pixels of the thumbnail, so a crop or resize is off by up to half a pixel, which
#: leaves a difference along every edge. 0.35 left copies at up to 0.49 and distinct hand photos
#: at 0.76 and more (ratio 1.54); 0.75 took them to 0.15 and 0.24 (1.59): a shift near a pixel
#: also explains away thin things (a finger is 3 pixels wide at 32). Letting each block shift
#: by a pixel of its own (for photos taken a moment apart, the camera moved) took distinct
#: hand photos to 0.34 and copies to 0.22: not done.
SHIFT_TOLERANCE = 0.5
#: The same for images stored smaller than the 32-pixel comparison, compared at the size they
#: are stored, and without tolerance or regions (half a pixel is too much of an 8-pixel image
#: to forgive): the mean difference over the whole image. On scikit-learn's 8x8 digits,
#: re-encoded and smoothly resized copies measured 0.05 to 0.10 and the closest distinct digits
#: (by different writers, seven to twelve gray levels apart per pixel) 0.13 and more.
#: Nearest-neighbour enlargements (up to 0.19) are missed: tiny images leave no margin for them.
TINY_MISALIGNMENT = 0.1
#: Mean gradient (gray levels per pixel of the 32-pixel thumbnail) below which an image has
#: too little detail to tell a copy from a look-alike: blank and near-blank images only count
#: as duplicates when their bytes are identical.
MIN_DETAIL = 1.0
_SIDE = 32  # thumbnail side for the pixel check; THUMBNAIL_SIDE leaves room to zoom
# How close to the limit the best of every third zoom must come for the zooms between to be
# tried: one zoom step from their own, crops at 0.03 to 0.20 measured up to 0.69 (1.7 limits).
_PROMISING = 3.0
#: Thumbnails and zoomed thumbnails kept for the pixel check, the latest used, of each (4 and
#: about 10 KB each): 30 MB at most.
_ZOOMED_KEPT = 2048
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
        """A copy in train and another in val or test *with the same label*: the held-out
        score is flattered, since a model that remembers the training copy gets it right.

        Copies across splits that disagree on the label do not flatter it (remembering the
        training copy's label gets the held-out copy wrong): they are conflicting labels,
        reported as such, not a leak.
        """
        return self.leaking_pair is not None

    @property
    def leaking_pair(self) -> tuple[Sample, Sample] | None:
        """A copy in train and one in val or test with its label (the first such), or None."""
        held_out = [s for s in self.samples if s.split != "train"]
        for train in (s for s in self.samples if s.split == "train"):
            for other in held_out:
                if other.label == train.label:
                    return train, other
        return None

    @property
    def conflicting_labels(self) -> bool:
        """Copies filed under different labels: at least one of them is labelled wrong."""
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
    images: DecodedImages,
    neighbours: Neighbours | None = None,
    rows: Sequence[Sample] = (),
) -> list[DuplicateGroup]:
    """Group ``samples`` into duplicate groups; samples without a copy are left out.

    Args:
        images: the decoded-pixel cache: candidate pairs are compared on its pixels.
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

    check = _PixelCheck(stats, images)
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

    def __init__(self, stats: Mapping[Sample, ImageStats], images: DecodedImages):
        self.stats = stats
        self.images = images
        # The thumbnails and zooms most recently used: candidates come ordered by their first
        # image, so these serve most comparisons, and memory stays bounded at any image count
        # (keeping all the zooms grew by about 70 KB an image: 0.7 GB for 10,000 images).
        self._thumbnails = _Latest(_ZOOMED_KEPT)
        self._zoomed = _Latest(_ZOOMED_KEPT)

    def same(self, a: Sample, b: Sample, *, mirrored: bool = False) -> bool:
        # An image stored smaller than the thumbnail is compared at the size it is stored:
        # enlarged, its blur makes any difference look like a fraction of a pixel's shift.
        side = min(_SIDE, *(min(self.stats[s].width, self.stats[s].height) for s in (a, b)))
        if side == _SIDE:
            limit, tolerance, regions = REGION_DIFFERENCE, SHIFT_TOLERANCE, REGIONS
        else:  # a few pixels: the whole image's mean difference, as TINY_MISALIGNMENT says
            limit, tolerance, regions = TINY_MISALIGNMENT, 0.0, 1

        def inside(outer: np.ndarray, inner: np.ndarray) -> float:
            return _unexplained(outer, inner, tolerance=tolerance, regions=regions)

        try:  # read first: a file gone or damaged since it was measured is no copy found
            for sample in (a, b):
                self._thumbnail(sample)
        except UnreadableImage:
            return False
        directions = (  # b is a zoomed-in part of a; then a of b
            lambda zoom: inside(self._at(a, side, zoom), self._at(b, side, 1.0, mirrored)),
            lambda zoom: inside(self._at(b, side, zoom, mirrored), self._at(a, side, 1.0)),
        )
        for difference in directions:
            # Every third zoom first, then the zooms around the best of them if it came
            # within PROMISING of the limit: a third of the work for the many look-alikes
            # that are far from a copy at every zoom.
            tried = {}
            for zoom in _ZOOMS[::3]:
                tried[zoom] = difference(zoom)
                if tried[zoom] <= limit:
                    return True
            best = min(tried, key=tried.__getitem__)
            if tried[best] > _PROMISING * limit:
                continue
            for zoom in _ZOOMS[np.abs(_ZOOMS - best) < 0.07]:
                if zoom not in tried and difference(zoom) <= limit:
                    return True
        return False

    def _at(self, sample: Sample, side: int, zoom: float, mirrored: bool = False) -> np.ndarray:
        size = round(side * zoom)

        def zoomed() -> np.ndarray:
            gray = self._thumbnail(sample)
            gray = gray[:, ::-1] if mirrored else gray
            return shrink(Image.fromarray(gray), size).astype(np.float32)

        return self._zoomed.get((sample, size, mirrored), zoomed)

    def _thumbnail(self, sample: Sample) -> np.ndarray:
        """The sample's thumbnail, made from the pixel cache."""
        return self._thumbnails.get(sample, lambda: thumbnail(self.images.get(sample.path)))


class _Latest:
    """Values by key, the ``size`` most recently used kept (the least recent dropped)."""

    def __init__(self, size: int):
        self.size = size
        self._values: OrderedDict = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], np.ndarray]) -> np.ndarray:
        """The value of ``key``, made by ``make()`` unless it is kept."""
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key]
        value = self._values[key] = make()
        if len(self._values) > self.size:
            self._values.popitem(last=False)
        return value


def _unexplained(outer: np.ndarray, inner: np.ndarray, *, tolerance: float, regions: int) -> float:
    """How far ``inner`` is from lying inside ``outer``, over ``inner``'s mean gradient.

    At each place ``inner`` fits, the difference a misalignment of ``tolerance`` pixels does not
    explain is averaged over each of ``regions`` x ``regions`` blocks; the worst block counts,
    at the best place. With no tolerance and one region: the mean absolute difference.

    Where ``inner`` does not fit (another aspect ratio), its centre is used. Images with too
    little detail to align (see MIN_DETAIL) never match.
    """
    height, width = min(inner.shape[0], outer.shape[0]), min(inner.shape[1], outer.shape[1])
    top, left = (inner.shape[0] - height) // 2, (inner.shape[1] - width) // 2
    inner = inner[top : top + height, left : left + width]
    detail = _detail(inner)
    if detail < MIN_DETAIL:
        return np.inf
    darkest, brightest = _envelope(outer, tolerance)
    below = sliding_window_view(darkest, inner.shape) - inner  # one window per shift
    above = inner - sliding_window_view(brightest, inner.shape)
    excess = np.maximum(below, above, out=below)
    np.maximum(excess, 0, out=excess)
    worst = _block_means(excess, regions).max(axis=(-2, -1))
    return float(worst.min() / detail)


def _envelope(pixels: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """The darkest and brightest each pixel can look when the image moves by up to
    ``tolerance`` of a pixel: that fraction of the way to its darkest and brightest neighbour."""
    if tolerance == 0:
        return pixels, pixels
    darkest = minimum_filter(pixels, size=3, mode="nearest")
    brightest = maximum_filter(pixels, size=3, mode="nearest")
    return pixels - tolerance * (pixels - darkest), pixels + tolerance * (brightest - pixels)


def _block_means(pixels: np.ndarray, blocks: int) -> np.ndarray:
    """Means of ``blocks`` x ``blocks`` near-equal blocks of the last two axes."""
    height, width = pixels.shape[-2:]
    rows = np.linspace(0, height, blocks + 1).round().astype(int)
    columns = np.linspace(0, width, blocks + 1).round().astype(int)
    sums = np.add.reduceat(np.add.reduceat(pixels, rows[:-1], axis=-2), columns[:-1], axis=-1)
    return sums / np.outer(np.diff(rows), np.diff(columns))


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
