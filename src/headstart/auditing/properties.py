"""Image properties: sizes, aspect ratios, modes, and the images that stand out.

The sizes and modes decide what preprocessing does to the data (a 40-pixel image is blown up
six times; a panorama loses most of itself to the centre crop; 16-bit scans and transparent
PNGs are converted), so they are worth seeing before training. Images that stand out are
listed: very small, very large, very elongated, blank, and outliers in feature space.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..data.sources import Sample
from .pixels import ImageStats

__all__ = [
    "BLANK_CONTRAST",
    "LARGE_MEGAPIXELS",
    "OUTLIER_SCORE",
    "SMALL_UPSCALE",
    "WIDE_ASPECT",
    "Flagged",
    "Properties",
    "image_properties",
]

#: Upscaling factor from which an image is "very small": the network sees its pixels blown
#: up more than 4 times, mostly blur (below 64 pixels for a 256-pixel resize).
SMALL_UPSCALE = 4.0
#: Megapixels from which an image is "very large": above any phone photo, more likely a scan
#: or a stitched panorama; worth checking it belongs, and slow to decode.
LARGE_MEGAPIXELS = 40.0
#: Long side over short side from which the centre crop keeps less than half of the image.
WIDE_ASPECT = 2.0
#: Contrast (standard deviation of a 32x32 grayscale thumbnail, 0..255) below which an image
#: is blank: a flat colour, an all-black frame, a failed scan. Natural photos measure 20 to 80;
#: the darkest real patches of the LFW set 2 to 10.
BLANK_CONTRAST = 2.0
#: Modified z-score (Iglewicz and Hoaglin's robust rule, which flags beyond 3.5) of how far an
#: image is from its nearest neighbours, beyond which it is an outlier in feature space.
OUTLIER_SCORE = 3.5
#: The neighbour whose similarity measures an image's isolation: the 5th nearest, so that a
#: few copies of an odd image do not hide it.
OUTLIER_NEIGHBOUR = 5

_QUANTILES = {"min": 0.0, "5%": 0.05, "median": 0.5, "95%": 0.95, "max": 1.0}


@dataclass(frozen=True)
class Flagged:
    """A file worth a look, and why."""

    sample: Sample
    note: str

    def to_dict(self) -> dict:
        return {"path": str(self.sample.path), "label": self.sample.label, "note": self.note}


@dataclass(frozen=True)
class Properties:
    summary: dict  # distributions: width, height, megapixels, aspect, common sizes, modes
    flagged: dict[str, tuple[Flagged, ...]]  # "very small", "blank", "outlier", ...

    def to_dict(self) -> dict:
        return {
            **self.summary,
            "flagged": {kind: [f.to_dict() for f in found] for kind, found in self.flagged.items()},
        }


def image_properties(
    stats: Mapping[Sample, ImageStats],
    resize_size: int,
    isolation: Mapping[Sample, float] | None = None,
) -> Properties:
    """Distributions and flagged images.

    Args:
        stats: per-image measurements (see :mod:`.pixels`).
        resize_size: the shortest side images are resized to for the network.
        isolation: each image's similarity to its OUTLIER_NEIGHBOUR-th nearest neighbour in
            feature space, where features were extracted; None: no outliers are sought.
    """
    samples = list(stats)
    widths = np.array([stats[s].width for s in samples], dtype=float)
    heights = np.array([stats[s].height for s in samples], dtype=float)
    summary = {
        "images": len(samples),
        "width": _quantiles(widths),
        "height": _quantiles(heights),
        "megapixels": _quantiles(widths * heights / 1e6, digits=3),
        "aspect": _quantiles(widths / np.maximum(heights, 1), digits=3),
        "common_sizes": {
            f"{w}x{h}": n
            for (w, h), n in Counter(
                (stats[s].width, stats[s].height) for s in samples
            ).most_common(5)
        },
        "modes": dict(Counter(stats[s].mode for s in samples).most_common()),
        "channels": dict(sorted(Counter(stats[s].bands for s in samples).items())),
    }

    flagged: dict[str, list[Flagged]] = {
        "very small": [],
        "very large": [],
        "elongated": [],
        "blank": [],
        "outlier": [],
    }
    for sample in samples:
        image = stats[sample]
        short, long = sorted((image.width, image.height))
        size = f"{image.width}x{image.height}"
        if resize_size / short > SMALL_UPSCALE:
            note = f"{size}: upscaled {resize_size / short:.0f}x for the network"
            flagged["very small"].append(Flagged(sample, note))
        megapixels = image.width * image.height / 1e6
        if megapixels >= LARGE_MEGAPIXELS:
            flagged["very large"].append(Flagged(sample, f"{size}: {megapixels:.0f} megapixels"))
        if long / short > WIDE_ASPECT:
            note = f"{size}: the centre crop keeps {short / long:.0%} of it"
            flagged["elongated"].append(Flagged(sample, note))
        if image.contrast < BLANK_CONTRAST:
            note = f"nearly one flat colour (contrast {image.contrast:.1f} of 255)"
            flagged["blank"].append(Flagged(sample, note))
    if isolation:
        flagged["outlier"] = _outliers(isolation)
    return Properties(summary, {kind: tuple(found) for kind, found in flagged.items()})


def _outliers(isolation: Mapping[Sample, float]) -> list[Flagged]:
    """Images much further from their neighbours than the others are, most isolated first."""
    samples = [s for s, value in isolation.items() if np.isfinite(value)]
    values = np.array([isolation[s] for s in samples])
    if len(values) < 3 * OUTLIER_NEIGHBOUR:
        return []  # too few images to say what "usual" is
    median = np.median(values)
    spread = np.median(np.abs(values - median))
    if spread == 0:
        return []
    scores = 0.6745 * (median - values) / spread  # high: less similar to its neighbours
    order = np.argsort(-scores)
    return [
        Flagged(
            samples[i],
            f"far from every other image: similarity {values[i]:.2f} to its "
            f"{OUTLIER_NEIGHBOUR}th nearest (typical {median:.2f})",
        )
        for i in order
        if scores[i] > OUTLIER_SCORE
    ]


def _quantiles(values: np.ndarray, digits: int = 0) -> dict[str, float]:
    if not len(values):
        return {}
    found = np.quantile(values, list(_QUANTILES.values()))
    return {
        name: (round(float(v), digits) if digits else round(float(v)))
        for name, v in zip(_QUANTILES, found, strict=True)
    }
