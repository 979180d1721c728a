"""One cheap pass over every image: what the audit knows about a file apart from its features.

Everything here is computed from the file's header and from the decoded pixels that
:class:`~headstart.data.decoded.DecodedImages` keeps (and that feature extraction has just
filled), shrunk to a thumbnail: no full-size decode, a millisecond or so per image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.fft import dctn

from ..data.decoded import DecodedImages, prefetch
from ..data.images import UnreadableImage, stack_shape
from ..data.sources import Skipped

__all__ = ["THUMBNAIL_SIDE", "ImageStats", "measure", "perceptual_hash", "thumbnail"]

#: Shortest side of the grayscale thumbnail two images are compared on, in pixels: enough to
#: compare them pixel by pixel after aligning them (see :mod:`.duplicates`). Made when a pair
#: is checked, not kept for every image (4 KB an image: 200 MB at 50,000).
THUMBNAIL_SIDE = 64

_CHUNK = 32

# EXIF orientations 5 to 8 store the image on its side: width and height swap when upright.
_SIDEWAYS = {5, 6, 7, 8}


@dataclass(frozen=True)
class ImageStats:
    """What one image looks like, measured cheaply."""

    width: int  # upright, as the network sees it (EXIF orientation applied)
    height: int
    mode: str  # Pillow's mode of the stored file: "RGB", "L", "RGBA", "I;16", ...; for .npy
    # files and TIFFs of measured channels "<C>-channel stack"
    bands: int  # channels stored in the file (1 for "L" and palette images, 4 for "RGBA")
    contrast: float  # standard deviation of a 32x32 grayscale thumbnail, 0..255
    hash: int  # 64-bit perceptual hash (DCT), see `perceptual_hash`
    mirrored_hash: int  # the same for the image flipped left to right

    @property
    def aspect(self) -> float:
        """Width over height."""
        return self.width / self.height


def measure(
    paths: Sequence[Path],
    images: DecodedImages,
    *,
    on_image: Callable[[int], None] | None = None,
) -> tuple[dict[Path, ImageStats], list[Skipped]]:
    """:class:`ImageStats` of each readable file in ``paths``, and the files that failed.

    Pixels come from ``images`` (its disk cache, when feature extraction has filled it).
    """
    stats: dict[Path, ImageStats] = {}
    skipped: list[Skipped] = []

    def some(chunk: Sequence[Path]) -> list[ImageStats | Skipped]:
        found: list[ImageStats | Skipped] = []
        for path in chunk:
            try:
                found.append(_measure(path, images))
            except UnreadableImage as error:
                found.append(Skipped(path, error.reason))
        return found

    # Loading cached pixels and resizing them release the GIL: threads overlap them. Chunks
    # of files, because one file is too little work to be worth a hand-over between threads.
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    for chunk, results in zip(chunks, prefetch(some, chunks), strict=True):
        for path, result in zip(chunk, results, strict=True):
            if isinstance(result, Skipped):
                skipped.append(result)
            else:
                stats[path] = result
        if on_image:
            on_image(len(chunk))
    return stats, skipped


def perceptual_hash(gray: Image.Image) -> tuple[int, int]:
    """The 64-bit DCT perceptual hash of a grayscale image, plain and mirrored.

    The definition of the ``imagehash`` library's ``phash``, so that distances mean what they
    mean elsewhere: shrink to 32x32, take the 8x8 lowest frequencies of the 2-D DCT, one bit per
    coefficient above their median. Re-encoding, resizing and changes of brightness or contrast
    move few bits; another image moves about half of them.
    """
    pixels = np.asarray(gray.resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
    low = dctn(pixels, type=2, norm="ortho")[:8, :8]
    plain = low > np.median(low)
    # Mirroring negates the coefficients of odd horizontal frequency and leaves the rest.
    flipped = low * np.where(np.arange(8) % 2, -1.0, 1.0)
    return _bits(plain), _bits(flipped > np.median(flipped))


def _measure(path: Path, images: DecodedImages) -> ImageStats:
    width, height, mode, bands = _header(path)
    gray = grayscale(images.get(path))
    small = np.asarray(gray.resize((32, 32), Image.Resampling.BOX), dtype=np.float32)
    plain, mirrored = perceptual_hash(gray)
    return ImageStats(
        width=width,
        height=height,
        mode=mode,
        bands=bands,
        contrast=float(small.std()),
        hash=plain,
        mirrored_hash=mirrored,
    )


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """What duplicates are compared on: ``(h, w)`` uint8 grayscale of an image's cached
    pixels, its shortest side :data:`THUMBNAIL_SIDE`."""
    return shrink(grayscale(pixels), THUMBNAIL_SIDE)


def grayscale(pixels: np.ndarray) -> Image.Image:
    """What duplicates are compared and hashed on: an RGB image's luma (Pillow's "L"), a
    single channel as it is, and the mean of the channels of any other stack (every channel
    counts: two scans that differ in one channel only are not the same image)."""
    if pixels.shape[2] == 3:
        return Image.fromarray(pixels).convert("L")
    if pixels.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(pixels[..., 0]))
    return Image.fromarray(np.rint(pixels.mean(axis=2)).astype(np.uint8))


def shrink(gray: Image.Image, side: int) -> np.ndarray:
    """``gray`` with its shortest side resized to ``side`` (box filter), as a uint8 array."""
    width, height = gray.size
    scale = side / min(width, height)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))
    return np.asarray(gray.resize(size, Image.Resampling.BOX), dtype=np.uint8)


def _header(path: Path) -> tuple[int, int, str, int]:
    """Size (upright), mode and band count, from the header alone."""
    stack = stack_shape(path)
    if stack is not None:
        height, width, channels = stack
        return width, height, f"{channels}-channel stack", channels
    try:
        with Image.open(path) as image:
            width, height = image.size
            mode = image.mode
            try:
                orientation = image.getexif().get(0x0112)
            except Exception:  # broken EXIF is common; load_image ignores it as well
                orientation = None
    except (OSError, Image.DecompressionBombError) as error:
        raise UnreadableImage(path, f"cannot read header ({error})") from None
    if orientation in _SIDEWAYS:
        width, height = height, width
    return width, height, mode, Image.getmodebands(mode)


def _bits(flags: np.ndarray) -> int:
    return int.from_bytes(np.packbits(flags.ravel()).tobytes(), "big")
