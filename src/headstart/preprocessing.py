"""How an image must look when it enters the network, and the road to it, without PyTorch.

:class:`Preprocessing` is timm's eval transform of a set of weights, as data: every bundle
carries it. :class:`ImageReader` decodes, resizes and centre-crops images as the network's
input, in NumPy and Pillow alone, so that a bundle exported to ONNX predicts where PyTorch is
not installed, from the very pixels the PyTorch model sees (the training side,
:class:`~headstart.inputs.InputPipeline`, is built on it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .data.decoded import DecodedImages, map_batches, resize_shortest_side
from .data.images import UnreadableImage, to_rgb
from .data.sources import Skipped
from .errors import HeadstartError

__all__ = [
    "CROPS",
    "CROP_SETS",
    "VIEWS",
    "Crops",
    "ImageLike",
    "ImageReader",
    "Preprocessing",
    "center_crop",
    "crop",
]

#: The views a prediction can average: the image as it is, and its mirror image.
VIEWS = ("plain", "hflip")
#: The crops of a resized image a prediction can average (test-time augmentation): the centre
#: crop the network is evaluated on; "wide", the central square of the resized image scaled
#: down to the input size (a wider field of view: the centre crop drops ``1 - crop_pct`` of
#: it); and the four corners of that square at the input size (shifted views). Each crop is
#: seen in every view (mirrored too, under test-time flip). With ``crop_pct`` 1 every crop is
#: the centre crop; with ``crop_pct`` above 1, "wide" is scaled up, not down.
CROPS = ("centre", "wide", "top-left", "top-right", "bottom-left", "bottom-right")
#: The sets of crops ``fit --tta`` chooses from, by name.
CROP_SETS = {
    "none": CROPS[:1],
    "wide": CROPS[:2],
    "five-crop": (CROPS[0], *CROPS[2:]),
    "six-crop": CROPS,
}

ImageLike = str | Path | Image.Image | np.ndarray


@dataclass(frozen=True)
class Preprocessing:
    """How an image must look when it enters the network: timm's eval transform, as data.

    Resize the shortest side to :attr:`resize_size` (``interpolation``), centre-crop to
    ``input_size``, scale to [0, 1], then normalise with ``mean`` and ``std``.
    """

    input_size: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str  # "bicubic" | "bilinear" | "nearest" ...
    crop_pct: float

    @property
    def resize_size(self) -> int:
        """The shortest side before the centre crop, as timm computes it."""
        return math.floor(self.input_size[1] / self.crop_pct)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for run folders and model bundles."""
        return {
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        """The inverse of :meth:`to_dict`; extra keys (a timm data config's ``crop_mode``) are
        ignored, so timm's ``resolve_data_config`` output is accepted as is."""
        missing = {"input_size", "mean", "std", "interpolation", "crop_pct"} - set(d)
        if missing:
            raise HeadstartError(f"preprocessing lacks {', '.join(sorted(missing))}: {dict(d)}")
        return cls(
            input_size=tuple(int(x) for x in d["input_size"]),
            mean=tuple(float(x) for x in d["mean"]),
            std=tuple(float(x) for x in d["std"]),
            interpolation=str(d["interpolation"]),
            crop_pct=float(d["crop_pct"]),
        )


def center_crop(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centre ``(height, width)`` of an ``(H, W, C)`` array, as torchvision cuts it.

    Torchvision's ``center_crop`` to the pixel: the same rounding of the offsets, and images
    smaller than the crop (a ``crop_pct`` above 1 can ask for more than the resize gives)
    padded with zeros, the odd pixel of padding at the bottom and right.
    """
    rows, columns = pixels.shape[:2]
    if height > rows or width > columns:
        top, left = max(0, height - rows) // 2, max(0, width - columns) // 2
        padded = np.zeros((max(rows, height), max(columns, width), *pixels.shape[2:]), pixels.dtype)
        padded[top : top + rows, left : left + columns] = pixels
        pixels, rows, columns = padded, *padded.shape[:2]
    top, left = round((rows - height) / 2.0), round((columns - width) / 2.0)
    return pixels[top : top + height, left : left + width]


def crop(pixels: np.ndarray, name: str, height: int, width: int, interpolation: str) -> np.ndarray:
    """The ``(height, width)`` crop of resized ``(H, W, C)`` pixels that :data:`CROPS` names."""
    if name == "centre":
        return center_crop(pixels, height, width)
    # The central square of the resized image, widened to the crop where the crop is wider.
    side = min(pixels.shape[:2])
    rows, columns = max(side, height), max(side, width)
    region = center_crop(pixels, rows, columns)
    if name == "wide":
        scaled = resize_shortest_side(region, max(height, width), interpolation)
        return center_crop(scaled, height, width)
    vertical, horizontal = name.split("-")
    top = 0 if vertical == "top" else rows - height
    left = 0 if horizontal == "left" else columns - width
    return region[top : top + height, left : left + width]


@dataclass(frozen=True)
class Crops:
    """The evaluation crops of one batch of files, and the files of it that could not be read."""

    paths: list[Path]  # the files read, in the order given
    pixels: Any  # (len(paths) * K, C, H, W) uint8, K test-time crops a file: NumPy, or a tensor
    skipped: list[Skipped]

    def __len__(self) -> int:
        """Files handled, read or not: what a progress bar counts."""
        return len(self.paths) + len(self.skipped)


@dataclass(frozen=True)
class ImageReader:
    """Images to the network's input for one set of weights: decoded, resized, centre-cropped
    ``(N, C, H, W)`` uint8 batches, and the views whose predictions are averaged."""

    preprocessing: Preprocessing
    #: Predictions average the image with its mirror (the plan decides, from the probe).
    test_time_flip: bool = False
    #: The crops whose logits a prediction averages (validation decides: ``fit --tta``).
    test_time_crops: tuple[str, ...] = CROPS[:1]

    def __post_init__(self) -> None:
        unknown = [name for name in self.test_time_crops if name not in CROPS]
        if unknown or not self.test_time_crops:
            raise HeadstartError(
                f"test-time crops {list(self.test_time_crops)}; expected some of {list(CROPS)}"
            )

    @property
    def channels(self) -> int:
        return self.preprocessing.input_size[0]

    @property
    def crop_size(self) -> tuple[int, int]:
        """``(height, width)`` of the network's input."""
        _, height, width = self.preprocessing.input_size
        return height, width

    @property
    def views(self) -> tuple[str, ...]:
        """The views whose logits a prediction averages."""
        return VIEWS if self.test_time_flip else VIEWS[:1]

    def decoder(self, cache: Path | None = None) -> DecodedImages:
        """Files to resized pixels, cached under ``cache`` (None: nothing is written)."""
        preprocessing = self.preprocessing
        return DecodedImages(
            preprocessing.resize_size,
            preprocessing.interpolation,
            cache,
            channels=self.channels,
        )

    def pixels(self, image: ImageLike, decoder: DecodedImages | None = None) -> np.ndarray:
        """Resized ``(H, W, C)`` uint8 pixels of a file, a PIL image or an array, as a file of
        the same picture would give (EXIF rotation, transparency and 16-bit included).

        Raises :class:`~headstart.data.UnreadableImage` for a file that cannot be used and
        :class:`~headstart.errors.HeadstartError` for an array or image of the wrong kind.
        """
        size, interpolation = self.preprocessing.resize_size, self.preprocessing.interpolation
        if isinstance(image, str | Path):
            return (decoder or self.decoder()).get(image)
        channels = self.channels
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != channels or image.dtype != np.uint8:
                kind = "RGB" if channels == 3 else f"with {channels} channels"
                raise HeadstartError(
                    f"an array image must be (H, W, {channels}) uint8 {kind}, "
                    f"got {image.shape} {image.dtype}"
                )
            if channels != 3:  # a stack: already the channels the network takes
                return resize_shortest_side(image, size, interpolation)
            image = Image.fromarray(image)
        elif channels != 3:
            raise HeadstartError(
                f"this model takes {channels}-channel images: pass a file or an "
                f"(H, W, {channels}) uint8 array, not a PIL image"
            )
        try:
            rgb = to_rgb(image)
        except ValueError as error:
            raise HeadstartError(f"cannot classify this image: {error}") from None
        return resize_shortest_side(rgb, size, interpolation)

    def crop_array(self, pixels: np.ndarray) -> np.ndarray:
        """The evaluation crop of resized pixels: ``(H, W, C)`` uint8."""
        return center_crop(pixels, *self.crop_size)

    def crop_arrays(self, pixels: np.ndarray) -> list[np.ndarray]:
        """The test-time crops of resized pixels, in :attr:`test_time_crops` order."""
        interpolation = self.preprocessing.interpolation
        return [crop(pixels, name, *self.crop_size, interpolation) for name in self.test_time_crops]

    def batch_array(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        """The evaluation crops of several images: ``(N * K, C, H, W)`` uint8 for ``K`` test-time
        crops an image (an image's crops together), a view of an ``(N * K, H, W, C)`` array
        (channels-last memory, as the network on a CPU takes it)."""
        if not pixels:
            return np.zeros((0, self.channels, *self.crop_size), np.uint8)
        return np.stack([c for p in pixels for c in self.crop_arrays(p)]).transpose(0, 3, 1, 2)

    def batches(self, pixels: Sequence[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
        """The evaluation crops of already decoded pixels, ``batch_size`` images at a time
        (see :meth:`batch_array`)."""
        for start in range(0, len(pixels), batch_size):
            yield self.batch_array(pixels[start : start + batch_size])

    def read_arrays(
        self,
        paths: Sequence[Path],
        decoder: DecodedImages,
        batch_size: int,
        *,
        overlap: bool = True,
    ) -> Iterator[Crops]:
        """The evaluation crops of ``paths`` as NumPy batches (see :meth:`batch_array`),
        ``batch_size`` files at a time, in order, decoded in worker threads: ``overlap``, while
        the caller runs the network on the batch before (a network on a GPU); else between
        the caller's forward passes, on every core (see
        :func:`~headstart.data.decoded.map_batches`).
        """

        def crops(path: Path) -> tuple[Path, list[np.ndarray]] | Skipped:
            try:
                return path, self.crop_arrays(decoder.get(path))
            except UnreadableImage as error:
                return Skipped(path, error.reason)

        batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
        for cropped in map_batches(crops, batches, overlap=overlap):
            good = [c for c in cropped if not isinstance(c, Skipped)]
            yield Crops(
                [path for path, _ in good],
                np.stack([c for _, each in good for c in each]).transpose(0, 3, 1, 2)
                if good
                else np.zeros((0, self.channels, *self.crop_size), np.uint8),
                [c for c in cropped if isinstance(c, Skipped)],
            )
