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

__all__ = ["VIEWS", "Crops", "ImageLike", "ImageReader", "Preprocessing", "center_crop"]

#: The views a prediction can average: the image as it is, and its mirror image.
VIEWS = ("plain", "hflip")

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


@dataclass(frozen=True)
class Crops:
    """The evaluation crops of one batch of files, and the files of it that could not be read."""

    paths: list[Path]  # the files read, in the order given
    pixels: Any  # (len(paths), C, H, W) uint8: a NumPy array, or a tensor in InputPipeline
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

    def batch_array(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        """The evaluation crops of several images: ``(N, C, H, W)`` uint8, a view of an
        ``(N, H, W, C)`` array (channels-last memory, as the network on a CPU takes it)."""
        if not pixels:
            return np.zeros((0, self.channels, *self.crop_size), np.uint8)
        return np.stack([self.crop_array(p) for p in pixels]).transpose(0, 3, 1, 2)

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

        def crop(path: Path) -> tuple[Path, np.ndarray] | Skipped:
            try:
                return path, self.crop_array(decoder.get(path))
            except UnreadableImage as error:
                return Skipped(path, error.reason)

        batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
        for cropped in map_batches(crop, batches, overlap=overlap):
            good = [c for c in cropped if not isinstance(c, Skipped)]
            yield Crops(
                [path for path, _ in good],
                np.stack([p for _, p in good]).transpose(0, 3, 1, 2)
                if good
                else np.zeros((0, self.channels, *self.crop_size), np.uint8),
                [c for c in cropped if isinstance(c, Skipped)],
            )
