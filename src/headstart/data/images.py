"""Reading image files: any file a user may hand us becomes 8-bit RGB, or a one-line reason.

Pillow decodes many formats, but "decoded" is not yet "what the network saw in training":
16-bit scans, transparent PNGs, palette GIFs, CMYK JPEGs from print workflows and phone photos
stored sideways all need a decision. This module makes each decision once, says why, and turns
every failure (an empty file, a web page saved as ``.jpg``, a truncated download, a
decompression bomb) into :class:`UnreadableImage`, whose message names the file.
"""

from __future__ import annotations

import contextlib
import functools
import re
import stat
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import HeadstartError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "UnreadableImage",
    "load_image",
    "probe_image",
    "to_rgb",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
)
"""File name endings read as images (lower case; compare with ``suffix.lower()``)."""

MAX_PIXELS = 160_000_000
"""Largest image accepted, in pixels, judged from the header before any pixel is decoded.

160 megapixels is above any camera's single shot (the largest sensors give about 150) and below
Pillow's own hard limit (about 179, twice ``Image.MAX_IMAGE_PIXELS``), so this check, with its
clearer message, is the one users meet. It holds even where Pillow's limit has been raised or
disabled; Pillow's global is never changed here. Pillow still issues a
``DecompressionBombWarning`` for images above about 89 megapixels: silencing it would mean
changing the process-wide warning filters, which is not a library's call.
"""

# Modes `load_image` knows how to bring to RGB (see `_to_rgb`). Anything else, e.g. "La" or a
# 32-bit "RGBA;16" variant from an exotic TIFF, is refused at probe time, not mid-training.
_MODES = frozenset(
    {"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}  # plain colour conversions
    | {"LA", "PA", "RGBA", "RGBa"}  # with alpha
    | {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}  # more than 8 bits per pixel
)
_ALPHA_MODES = frozenset({"LA", "PA", "RGBA", "RGBa"})
_WHITE = (255, 255, 255, 255)


class UnreadableImage(HeadstartError):
    """A file that cannot be used as an image: ``str(error) == f"{path}: {reason}"``.

    ``reason`` is short and specific ("empty file (0 bytes)", "truncated or corrupt image
    data", ...), so callers can list skipped files as ``path, reason`` pairs.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        # The default pickles `args` (the message) and would call __init__ with one argument;
        # this keeps the error intact across process boundaries (DataLoader workers).
        return type(self), (self.path, self.reason)


def probe_image(path: str | Path) -> None:
    """Check that ``path`` looks like a usable image, from its header alone.

    Catches what discovery should set aside before training starts: missing and empty files,
    files that are not images whatever their name says, decompression bombs and unsupported
    modes. No pixel is decoded, so a truncated file passes here and fails in :func:`load_image`.

    Raises:
        UnreadableImage: with the reason the file cannot be used.
    """
    with _open(Path(path)):
        pass


def load_image(path: str | Path, *, draft_size: int | None = None) -> Image.Image:
    """Decode ``path`` to a fully loaded 8-bit RGB image, upright as its EXIF orientation says.

    Args:
        path: the image file. The first frame of a multi-frame file (GIF, TIFF, MPO) is used.
        draft_size: the shortest side the caller will resize to. A JPEG is then decoded at a
            reduced scale (1/2, 1/4 or 1/8, done inside the decoder) while keeping both sides
            at least ``draft_size``: a 12-megapixel photo needed at 256 pixels decodes several
            times faster. Other formats, and images already small, are decoded at full size.

    Colour decisions, so that every file means what it looks like:
        - transparent pixels (RGBA, LA, palette or colour-key transparency) are composited
          onto white: transparent areas are usually an empty background, and white is how
          viewers and browsers show them; the pixels stored under alpha 0 are often black
          or leftovers, and dropping alpha would show them;
        - 16-bit grayscale is scaled by the type's range (``value / 257``), so 65535 is 255
          and the full range survives; it is not clipped at 255;
        - 32-bit integer ("I") images holding values in 0..65535 are treated as 16-bit;
          other integer ranges, and float ("F") images outside 0..1, are stretched from
          their minimum to their maximum; floats within 0..1 are scaled by 255;
        - Lab is converted to sRGB colorimetrically; CMYK, YCbCr, HSV, palette, 1-bit and
          grayscale are converted by Pillow;
        - embedded ICC profiles are ignored, as in the torchvision and timm loaders that
          pretrained weights were trained with: the network expects the stored values.

    Raises:
        UnreadableImage: for any failure, with the path and a specific reason.
    """
    if draft_size is not None and (not isinstance(draft_size, int) or draft_size < 1):
        raise ValueError(f"draft_size={draft_size!r}; expected a positive int or None")
    path = Path(path)
    with _open(path) as image:
        try:
            if draft_size is not None:
                # A no-op for formats other than JPEG. Asking for a square keeps both sides,
                # hence the shortest one, at least `draft_size`.
                image.draft(None, (draft_size, draft_size))
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            # Raised for a later frame or tile, whose size the header check did not see.
            raise UnreadableImage(path, _pillow_bomb_reason(error)) from error
        except MemoryError:
            raise UnreadableImage(path, "too large to decode (out of memory)") from None
        except Exception as error:
            # Decoders report bad bytes with many types (OSError, SyntaxError, ValueError,
            # struct.error, zlib.error, EOFError, ...); to the user they all mean one thing.
            raise UnreadableImage(path, "truncated or corrupt image data") from error
        _apply_exif_orientation(image)
        try:
            rgb = _to_rgb(image)
        except MemoryError:
            raise UnreadableImage(path, "too large to decode (out of memory)") from None
        except (ValueError, OSError, ImageCms.PyCMSError) as error:
            raise UnreadableImage(path, f"unsupported mode {image.mode!r}") from error
    if rgb is image and getattr(image, "map", None) is not None:
        # Uncompressed files may be memory-mapped rather than read; copy, so the result owns
        # its pixels and the file can be moved or deleted (Windows refuses while it is mapped).
        rgb = image.copy()
    return rgb


def to_rgb(image: Image.Image) -> Image.Image:
    """An image already in memory made as :func:`load_image` makes a file: upright, with the
    same colour decisions, 8-bit RGB. ``image`` itself is not changed.

    Raises:
        ValueError: for a mode that has no RGB meaning.
    """
    with contextlib.suppress(Exception):  # a broken EXIF block: the pixels as stored
        image = ImageOps.exif_transpose(image)
    try:
        return _to_rgb(image)
    except (OSError, ImageCms.PyCMSError) as error:
        raise ValueError(f"unsupported mode {image.mode!r}") from error


def _open(path: Path) -> ImageFile.ImageFile:
    """``Image.open`` (header only), checked: size limit, supported mode, failures explained."""
    try:
        status = path.stat()
    except FileNotFoundError:
        raise UnreadableImage(path, "file not found") from None
    except OSError as error:
        raise UnreadableImage(path, f"cannot read file ({error.strerror or error})") from None
    if stat.S_ISDIR(status.st_mode):
        raise UnreadableImage(path, "a folder, not a file")
    if status.st_size == 0:
        raise UnreadableImage(path, "empty file (0 bytes)")
    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        raise UnreadableImage(path, _not_an_image(path)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # The warning arrives as an exception only where warnings are turned into errors.
        raise UnreadableImage(path, _pillow_bomb_reason(error)) from None
    except OSError as error:
        raise UnreadableImage(path, f"cannot read file ({error.strerror or error})") from None
    except Exception as error:
        # A plugin that recognised the format but choked on its header.
        raise UnreadableImage(path, "corrupt image header") from error
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise UnreadableImage(
            path,
            f"decompression bomb: {width}x{height} = {_megapixels(width * height)} megapixels "
            f"(limit {_megapixels(MAX_PIXELS)})",
        )
    if image.mode not in _MODES:
        image.close()
        raise UnreadableImage(path, f"unsupported mode {image.mode!r}")
    return image


def _not_an_image(path: Path) -> str:
    """Why Pillow found no image format in ``path``, as specifically as the first bytes allow."""
    try:
        with open(path, "rb") as file:
            head = file.read(512)
    except OSError:
        head = b""
    text = head.lstrip().lower()
    if text.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the image itself (run `git lfs pull`)"
    if text.startswith((b"<!doctype html", b"<html")):
        return "not an image (an HTML page, e.g. an error page saved by a download)"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "HEIC/AVIF image, which this installation cannot decode; convert it to JPEG"
    return "not an image (no known image format)"


_PILLOW_PIXELS = re.compile(r"\((\d+) pixels\)")


def _pillow_bomb_reason(error: Exception) -> str:
    """Our wording for Pillow's own size check, which gives the pixel count but not the sides."""
    match = _PILLOW_PIXELS.search(str(error))
    size = f"{_megapixels(int(match.group(1)))} megapixels" if match else "declared size"
    return f"decompression bomb: {size} (limit {_megapixels(MAX_PIXELS)})"


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f}".rstrip("0").rstrip(".")


def _apply_exif_orientation(image: Image.Image) -> None:
    """Turn ``image`` upright in place, as its EXIF orientation tag says (cameras, phones)."""
    # Broken EXIF is common (editors, messaging apps) and the pixels are still fine; without
    # a readable tag, the image is used as stored, which is what viewers do.
    with contextlib.suppress(Exception):
        ImageOps.exif_transpose(image, in_place=True)


def _to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB version of a loaded image; see :func:`load_image` for the decisions."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return _gray_to_rgb(_scale_16bit(np.asarray(image)))
    if mode == "I":
        values = np.asarray(image)
        in_16bit_range = values.size and values.min() >= 0 and values.max() <= 65535
        return _gray_to_rgb(_scale_16bit(values) if in_16bit_range else _stretch(values))
    if mode == "F":
        values = np.asarray(image)
        finite = values[np.isfinite(values)]
        if finite.size and finite.min() >= 0 and finite.max() <= 1:
            gray = np.rint(np.nan_to_num(values, nan=0.0) * 255).astype(np.uint8)
        else:
            gray = _stretch(values)
        return _gray_to_rgb(gray)
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    if mode == "RGB":
        return image
    if mode == "LAB":
        # Pillow's own LAB conversion copies the channels; a colour transform reads them as Lab.
        return ImageCms.applyTransform(image, _lab_to_srgb())
    if mode not in _MODES:
        raise ValueError(f"unsupported mode {mode!r}")
    return image.convert("RGB")


@functools.cache
def _lab_to_srgb() -> ImageCms.ImageCmsTransform:
    lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
    return ImageCms.buildTransform(lab, srgb, "LAB", "RGB")


def _scale_16bit(values: np.ndarray) -> np.ndarray:
    """0..65535 to 0..255 by ``round(value / 257)``: exact at both ends, nothing clipped."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _stretch(values: np.ndarray) -> np.ndarray:
    """Map the finite minimum..maximum to 0..255 (NaN and infinities to the nearest end)."""
    values = values.astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.max() == finite.min():
        return np.zeros(values.shape, dtype=np.uint8)  # no contrast to show
    low, high = finite.min(), finite.max()
    values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    return np.rint((values - low) * (255 / (high - low))).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(gray)).convert("RGB")
