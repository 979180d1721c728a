"""Reading image files: any file a user may hand us becomes 8-bit RGB, or a one-line reason.

Images that are not photographs, stacks of ``C`` measured channels (an X-ray and an MRI slice,
a satellite's bands, a 4-channel microscope scan), are read as stored with
:func:`load_pixels`, ``(H, W, C)`` uint8, for a backbone whose first layer takes ``C``
channels; :func:`detect_channels` says which ``C`` a dataset holds.

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
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import HeadstartError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "UNSUPPORTED_IMAGES",
    "UnreadableImage",
    "detect_channels",
    "load_image",
    "load_pixels",
    "probe_image",
    "stack_shape",
    "to_rgb",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".npy"}
)
"""File name endings read as images (lower case; compare with ``suffix.lower()``). A GIF is
read as its first frame, as a still photo of it would be."""

UNSUPPORTED_IMAGES: dict[str, str] = {
    **dict.fromkeys((".heic", ".heif", ".avif", ".jxl"), "a format Pillow cannot read here"),
    **dict.fromkeys(
        (".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2"),
        "a camera raw file: develop it to JPEG or TIFF first",
    ),
    ".svg": "a vector drawing: render it to PNG first",
    ".psd": "a layered Photoshop file: export it to PNG or JPEG first",
}
"""Image files headstart cannot read, by ending, with the reason: they are listed as skipped
rather than passed over in silence."""

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
# Photos with one channel: kept as one by `load_pixels(path, channels=1)`.
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_TIFF_SUFFIXES = (".tif", ".tiff")
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
    path = Path(path)
    if _stack_header(path) is None:  # a photo (a stack's header was checked just now)
        with _open(path):
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

    A ``.npy`` file or a TIFF stack (see :func:`load_pixels`) holding one or three channels is
    read as a grayscale or RGB image.

    Raises:
        UnreadableImage: for any failure, with the path and a specific reason.
    """
    path = Path(path)
    stack = _read_stack(path)
    if stack is not None:
        return Image.fromarray(_match_channels(path, stack, 3))
    return _load_photo(path, draft_size)[0]


def load_pixels(
    path: str | Path, channels: int = 3, *, draft_size: int | None = None
) -> np.ndarray:
    """Decode ``path`` to an ``(H, W, channels)`` uint8 array, for a network that takes
    ``channels`` input channels.

    Two kinds of file:

    - *photos* (JPEG, PNG, ..., and TIFFs whose samples Pillow reads, RGBA and CMYK
      included): with ``channels=3``, exactly ``np.array(load_image(path))``; with
      ``channels=1``, grayscale files (8-bit, 16-bit, float, with or without alpha) keep
      their one channel, with the same value decisions as :func:`load_image`;
    - *stacks* of measured channels, as stored: a ``.npy`` array of shape ``(H, W)``,
      ``(H, W, C)`` or ``(C, H, W)`` (the channel axis is the smaller of the first and the
      last, the last on a tie), or a TIFF whose first page holds ``C`` samples that are not
      a colour model (e.g. 4 channels with ``photometric="minisblack"``), contiguous or
      planar; later pages are frames, not channels, as for any multi-frame file. Reading
      such TIFFs needs the ``tifffile`` package, because Pillow cannot. A one-channel stack is
      accepted with ``channels=3`` and repeated, as a grayscale photo is.

    Stack values become uint8 by their type's range where one exists, as 16-bit photos do:
    uint8 as is; integers within 0..255 as is; other integers within 0..65535 as 16-bit,
    ``round(value / 257)``; floats within 0..1 times 255; booleans 0 or 255. Anything else
    (negative values, larger integers, floats beyond 0..1) is stretched from its minimum to
    its maximum, channel by channel: the channels of a stack are often different
    measurements (X-ray and MRI), and one shared range would flatten the smaller one.

    Raises:
        UnreadableImage: any failure :func:`load_image` reports, and a file with another
            channel count than ``channels`` ("4 channels, expected 3 (--in-chans 3)").
        HeadstartError: ``channels`` is not a positive int.
    """
    _check_channels(channels)
    path = Path(path)
    stack = _read_stack(path)
    if stack is not None:
        return _match_channels(path, stack, channels)
    rgb, mode = _load_photo(path, draft_size)
    found = 1 if mode in _GRAY_MODES else 3
    if channels == 3:
        return np.array(rgb)
    if channels == found == 1:
        return np.array(rgb)[..., :1]  # the three channels of a gray image are equal
    raise UnreadableImage(path, _mismatch(found, channels, f"{mode} image"))


def detect_channels(paths: Sequence[str | Path], *, sample: int = 256) -> int:
    """The input channels a network needs for ``paths``, judged from headers alone.

    Photos count as 3 (grayscale ones too: pretrained RGB weights see them as gray RGB, which
    is what they were trained on); stacks (see :func:`load_pixels`) as their ``C``. Up to
    ``sample`` files, evenly spread, are looked at; unreadable ones are passed over (discovery
    lists them). One-channel stacks among photos count as 3, as they are read that way.

    Raises:
        HeadstartError: the files hold different channel counts (with examples of each), or
            ``sample`` is not a positive int.
    """
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise HeadstartError(f"sample={sample!r} is not allowed: expected a positive int")
    paths = [Path(path) for path in paths]
    if len(paths) > sample:
        paths = [paths[i * len(paths) // sample] for i in range(sample)]
    found: dict[int, list[Path]] = defaultdict(list)
    for path in paths:
        try:
            header = _stack_header(path)
        except UnreadableImage:
            continue
        found[3 if header is None else header.channels].append(path)
    if set(found) == {1, 3}:
        return 3
    if len(found) > 1:
        examples = "; ".join(
            f"{count} channel{'s' * (count != 1)}: {', '.join(map(str, files[:3]))}"
            + (f" and {len(files) - 3} more" if len(files) > 3 else "")
            for count, files in sorted(found.items())
        )
        raise HeadstartError(
            f"the images hold different numbers of channels ({examples}); one network takes "
            "one number: convert the files to one kind, or choose with --in-chans and the "
            "others are skipped"
        )
    return next(iter(found), 3)


def stack_shape(path: str | Path) -> tuple[int, int, int] | None:
    """``(H, W, C)`` of a stack (see :func:`load_pixels`) from its header; ``None`` for a photo.

    Raises:
        UnreadableImage: a stack whose header is unusable.
    """
    header = _stack_header(Path(path))
    return None if header is None else tuple(header)


def _load_photo(path: Path, draft_size: int | None) -> tuple[Image.Image, str]:
    """:func:`load_image`'s decoding of a photo, and the mode it was stored in."""
    if draft_size is not None and (not isinstance(draft_size, int) or draft_size < 1):
        raise ValueError(f"draft_size={draft_size!r}; expected a positive int or None")
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
        mode = image.mode
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
    return rgb, mode


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
    _check_file(path)
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


def _check_file(path: Path) -> None:
    """Refuse what is not a non-empty, readable file, before any decoder sees it."""
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


def _not_an_image(path: Path, otherwise: str = "not an image (no known image format)") -> str:
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
    return otherwise


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
        rgba = image if mode == "RGBA" else image.convert("RGBA")  # no copy: 576 MB at 144 MP
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


# --- Stacks: arrays of measured channels --------------------------------------------------


class _Stack(NamedTuple):
    """A stack's size and channel count, as its header gives them."""

    height: int
    width: int
    channels: int


def _check_channels(channels: int) -> None:
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise HeadstartError(
            f"channels={channels!r} is not allowed: expected a positive int, the number of "
            "channels the network takes (3 for RGB)"
        )


def _mismatch(found: int, expected: int, what: str) -> str:
    return (
        f"{found} channel{'s' * (found != 1)} ({what}), expected {expected} (--in-chans {expected})"
    )


def _match_channels(path: Path, stack: np.ndarray, channels: int) -> np.ndarray:
    """``stack`` if it has ``channels`` channels; one channel repeated to three, as a
    grayscale photo is; otherwise the file is refused."""
    found = stack.shape[2]
    if found == channels:
        return stack
    if found == 1 and channels == 3:
        return np.repeat(stack, 3, axis=2)
    what = ".npy array" if path.suffix.lower() == ".npy" else "TIFF stack"
    raise UnreadableImage(path, _mismatch(found, channels, what))


def _stack_header(path: Path) -> _Stack | None:
    """A stack's header, checked; ``None`` for a photo (whose header is not read)."""
    found = _stack(path, read=False)
    return None if found is None else found[0]


def _read_stack(path: Path) -> np.ndarray | None:
    """A stack's ``(H, W, C)`` uint8 pixels; ``None`` for a photo."""
    found = _stack(path, read=True)
    return None if found is None else _stack_to_uint8(found[1])


def _stack(path: Path, *, read: bool) -> tuple[_Stack, np.ndarray | None] | None:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _npy(path, read=read)
    if suffix in _TIFF_SUFFIXES and not _pillow_reads_all(path):
        return _tiff(path, read=read)
    return None


def _npy(path: Path, *, read: bool) -> tuple[_Stack, np.ndarray | None]:
    """A ``.npy`` file's header and, if ``read``, its values as ``(H, W, C)``."""
    _check_file(path)
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            if version not in readers:
                raise UnreadableImage(path, f".npy format version {version} is not supported")
            shape, _, dtype = readers[version](file)
    except OSError as error:
        raise UnreadableImage(path, f"cannot read file ({error.strerror or error})") from None
    except ValueError:
        reason = _not_an_image(path, "not a NumPy array (no .npy header)")
        raise UnreadableImage(path, reason) from None
    if dtype.kind not in "biuf":  # object arrays would need pickle: never loaded
        raise UnreadableImage(path, f"an array of {dtype}, not pixel values")
    if len(shape) == 2:
        header = _Stack(shape[0], shape[1], 1)
        channels_last = True
    elif len(shape) == 3:
        channels_last = shape[2] <= shape[0]  # an image is larger than its channel count
        height, width, channels = shape if channels_last else (*shape[1:], shape[0])
        header = _Stack(height, width, channels)
    else:
        raise UnreadableImage(
            path, f"an array of shape {shape}, expected (H, W), (H, W, C) or (C, H, W)"
        )
    _check_size(path, header)
    if not read:
        return header, None
    try:
        values = np.load(path, allow_pickle=False)
    except MemoryError:
        raise UnreadableImage(path, "too large to decode (out of memory)") from None
    except (OSError, ValueError) as error:
        raise UnreadableImage(path, "truncated or corrupt array data") from error
    values = values.reshape(header.height, header.width, -1) if values.ndim == 2 else values
    return header, (values if channels_last else np.moveaxis(values, 0, -1))


def _pillow_reads_all(path: Path) -> bool:
    """Whether Pillow reads every sample of a TIFF's first page (RGB, RGBA, CMYK, gray...)."""
    _check_file(path)
    try:
        with Image.open(path) as image:
            bands = Image.getmodebands(image.mode)
            samples = getattr(image, "tag_v2", {}).get(277, bands)  # SamplesPerPixel
            return image.mode in _MODES and bands == samples
    except Exception:  # not read by Pillow at all: tifffile may, or will say why not
        return False


def _tiff(path: Path, *, read: bool) -> tuple[_Stack, np.ndarray | None]:
    """A TIFF stack's header and, if ``read``, its first page as ``(H, W, C)``, via tifffile."""
    try:
        import tifffile
    except ImportError:
        with _open(path):  # Pillow's own reason when the file is no TIFF at all
            pass
        raise UnreadableImage(
            path, "a TIFF with channels Pillow cannot read; `pip install tifffile` reads it"
        ) from None
    try:
        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages.first
            axes, shape, dtype = page.axes, page.shape, page.dtype
            if dtype is None or dtype.kind not in "biuf" or set(axes) - {"Y", "X", "S"}:
                raise UnreadableImage(
                    path, f"a TIFF page of {dtype} with axes {axes}, expected Y, X and samples"
                )
            sizes = dict(zip(axes, shape, strict=True))
            header = _Stack(sizes["Y"], sizes["X"], sizes.get("S", 1))
            _check_size(path, header)
            if not read:
                return header, None
            values = page.asarray()
    except UnreadableImage:
        raise
    except MemoryError:
        raise UnreadableImage(path, "too large to decode (out of memory)") from None
    except Exception as error:
        with _open(path):  # Pillow's reason if it has one ("not an image", ...)
            pass
        raise UnreadableImage(path, "truncated or corrupt image data") from error
    order = [axes.index(axis) for axis in "YXS" if axis in axes]
    values = np.transpose(values, order)
    return header, values.reshape(header.height, header.width, header.channels)


def _check_size(path: Path, stack: _Stack) -> None:
    pixels = stack.height * stack.width
    if pixels == 0:
        raise UnreadableImage(path, f"an empty image ({stack.width}x{stack.height})")
    if pixels > MAX_PIXELS:
        raise UnreadableImage(
            path,
            f"decompression bomb: {stack.width}x{stack.height} = {_megapixels(pixels)} "
            f"megapixels (limit {_megapixels(MAX_PIXELS)})",
        )


def _stack_to_uint8(values: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, C)``; see :func:`load_pixels` for the rules."""
    if values.dtype == np.uint8:
        return np.ascontiguousarray(values)
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if values.dtype.kind in "iu":
        low, high = values.min(), values.max()
        if low >= 0 and high <= 255 and values.dtype != np.uint16:
            return values.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return _scale_16bit(values)
    else:
        finite = values[np.isfinite(values)]
        if finite.size and finite.min() >= 0 and finite.max() <= 1:
            return np.rint(np.nan_to_num(values, nan=0.0, posinf=1.0) * 255).astype(np.uint8)
    return np.stack([_stretch(values[..., c]) for c in range(values.shape[2])], axis=-1)
