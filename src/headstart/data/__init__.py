"""Data on disk: reading image files, and finding a labelled dataset's files and splits.

>>> from headstart.data import discover, load_image
>>> dataset = discover("photos/", val_fraction=0.2)        # doctest: +SKIP
>>> image = load_image(dataset.split("train")[0].path)     # doctest: +SKIP
"""

from .images import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    UnreadableImage,
    detect_channels,
    load_image,
    load_pixels,
    probe_image,
)
from .sources import SPLITS, Dataset, Sample, Skipped, discover

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "SPLITS",
    "Dataset",
    "Sample",
    "Skipped",
    "UnreadableImage",
    "detect_channels",
    "discover",
    "load_image",
    "load_pixels",
    "probe_image",
]
