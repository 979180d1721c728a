"""Decode each file once: resized to the backbone's resize size and kept on disk as pixels.

Fine-tuning reads every image once per epoch and feature extraction reads it once per view;
decoding a photo costs as much as a third of a forward pass on a CPU, so the resized pixels are
kept. Entries are keyed by the file's *contents* (not its path or date), so a renamed file is
still a hit and an edited one is decoded again.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from ..errors import HeadstartError
from ..storage import write_atomically
from .images import UnreadableImage, load_image, load_pixels

__all__ = [
    "DecodedImages",
    "content_hash",
    "map_batches",
    "prefetch",
    "resize_shortest_side",
]

#: Bumped whenever decoding or resizing changes, so caches never serve pixels made otherwise.
PIXELS_VERSION = 2

#: The longest side kept, in multiples of the shortest: beyond it only the central part of an
#: image is kept. A 40,000 x 2 pixel strip resized to a shortest side of 256 would otherwise
#: take 256 x 5,120,000 pixels (4 GB); a 10:1 panorama keeps all of its width. The audit lists
#: such images as very wide or tall.
MAX_ASPECT = 10

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

T = TypeVar("T")
R = TypeVar("R")


def content_hash(path: str | Path) -> str:
    """A short, stable digest of a file's bytes (the cache key for pixels and features)."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as error:
        raise UnreadableImage(Path(path), f"cannot read file ({error.strerror or error})") from None
    return digest.hexdigest()


class DecodedImages:
    """Pixels of image files, shortest side resized to ``resize_size``, cached on disk.

    ``get`` returns an ``(H, W, channels)`` uint8 array or raises :class:`UnreadableImage`:
    RGB by default, else as :func:`~headstart.data.images.load_pixels` reads ``channels``
    channels (a file holding another number of channels is unreadable, and says so).
    With ``cache_dir=None`` nothing is written (every call decodes).
    """

    def __init__(
        self,
        resize_size: int,
        interpolation: str,
        cache_dir: Path | None = None,
        *,
        channels: int = 3,
    ):
        if interpolation not in _RESAMPLE:  # checked here, not on the first image
            raise ValueError(
                f"interpolation={interpolation!r}; expected one of {sorted(_RESAMPLE)}"
            )
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise HeadstartError(
                f"channels={channels!r} is not allowed: expected a positive int (3 for RGB)"
            )
        self.resize_size = resize_size
        self.interpolation = interpolation
        self.channels = channels
        self.cache_dir = None
        if cache_dir is not None:
            # The same file gives other pixels with another channel count. RGB keeps the
            # name it always had, so existing caches stay valid.
            suffix = "" if channels == 3 else f"-c{channels}"
            name = f"v{PIXELS_VERSION}-{resize_size}-{interpolation}{suffix}"
            self.cache_dir = Path(cache_dir) / name
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._keys: dict[tuple[str, int, int], str] = {}

    def key(self, path: str | Path) -> str:
        """The content hash of ``path``, remembered for as long as its size and mtime hold."""
        try:
            stat = os.stat(path)
        except OSError as error:
            raise UnreadableImage(Path(path), f"cannot read file ({error.strerror})") from None
        signature = (str(path), stat.st_size, stat.st_mtime_ns)
        if signature not in self._keys:
            self._keys[signature] = content_hash(path)
        return self._keys[signature]

    def get(self, path: str | Path) -> np.ndarray:
        cached = self._cache_file(path)
        if cached is not None and cached.exists():
            try:
                pixels = np.load(cached, allow_pickle=False)
            except (OSError, ValueError):
                pixels = None  # a damaged entry: truncated, or not an array
            if self._made_here(pixels):
                return pixels
            cached.unlink(missing_ok=True)  # recomputed, never served
        pixels = self.decode(path)
        if cached is not None:
            # Written whole then renamed: a concurrent reader or a Ctrl-C never sees half a file.
            cached.parent.mkdir(exist_ok=True)
            buffer = io.BytesIO()
            np.save(buffer, pixels, allow_pickle=False)
            write_atomically(cached, buffer.getvalue())
        return pixels

    def _made_here(self, pixels: np.ndarray | None) -> bool:
        """Whether a cached array has the shape and type :meth:`decode` makes."""
        return (
            pixels is not None
            and pixels.dtype == np.uint8
            and pixels.ndim == 3
            and pixels.shape[2] == self.channels
            and min(pixels.shape[:2]) == self.resize_size
        )

    def decode(self, path: str | Path) -> np.ndarray:
        if self.channels == 3:  # Pillow's image goes straight to the resize: no full-size copy
            image = load_image(path, draft_size=self.resize_size)
        else:
            image = load_pixels(path, self.channels, draft_size=self.resize_size)
        return resize_shortest_side(image, self.resize_size, self.interpolation)

    def _cache_file(self, path: str | Path) -> Path | None:
        if self.cache_dir is None:
            return None
        key = self.key(path)
        return self.cache_dir / key[:2] / f"{key}.npy"


def resize_shortest_side(
    image: Image.Image | np.ndarray, size: int, interpolation: str
) -> np.ndarray:
    """An image resized so its shortest side is ``size``, as an ``(H, W, C)`` uint8 array.

    ``image`` is an RGB Pillow image or an ``(H, W, C)`` uint8 array (``load_pixels``). Of an
    image longer than :data:`MAX_ASPECT` times its width, the central part is kept.
    """
    image = _central_part(image)
    if isinstance(image, np.ndarray):
        if image.shape[2] != 3:
            # Pillow has no mode for C channels, but resamples each band on its own anyway:
            # channel by channel, a stack is resized exactly as an RGB image would be.
            bands = (np.ascontiguousarray(image[..., c]) for c in range(image.shape[2]))
            resized = [_resize(Image.fromarray(band), size, interpolation) for band in bands]
            return np.stack([np.asarray(band) for band in resized], axis=-1)
        image = Image.fromarray(image)
    return np.array(_resize(image, size, interpolation).convert("RGB"), dtype=np.uint8)


def _central_part(image: Image.Image | np.ndarray) -> Image.Image | np.ndarray:
    """``image`` cut to at most :data:`MAX_ASPECT` : 1, about its centre."""
    height, width = image.shape[:2] if isinstance(image, np.ndarray) else image.size[::-1]
    longest = MAX_ASPECT * min(width, height)
    if max(width, height) <= longest:
        return image
    new_width, new_height = min(width, longest), min(height, longest)
    left, top = (width - new_width) // 2, (height - new_height) // 2
    if isinstance(image, np.ndarray):
        return image[top : top + new_height, left : left + new_width]
    return image.crop((left, top, left + new_width, top + new_height))


def _resize(image: Image.Image, size: int, interpolation: str) -> Image.Image:
    width, height = image.size
    scale = size / min(width, height)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    if target == image.size:
        return image
    # reducing_gap first shrinks by whole factors (fast, nearly lossless) before resampling.
    return image.resize(target, _RESAMPLE[interpolation], reducing_gap=3.0)


#: Decoding threads: two keep a 2-core laptop's forward pass fed; a GPU needs more.
DECODE_WORKERS = max(2, min(8, os.cpu_count() or 2))


def prefetch(
    function: Callable[[T], R], items: Iterable[T], workers: int = DECODE_WORKERS
) -> Iterator[R]:
    """``map(function, items)`` computed in threads, at most ``workers + 1`` items in flight.

    Image decoding and resizing release the GIL, so threads overlap them with the forward pass
    without the start-up and copying costs of worker processes. Results come back in order.
    Each item is usually a whole batch, so ``workers`` batches are decoded while one computes.
    """
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="headstart-io") as pool:
        pending: list[Future[R]] = []
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) > workers:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


def map_batches(
    function: Callable[[T], R],
    batches: Iterable[Sequence[T]],
    *,
    overlap: bool,
    workers: int = DECODE_WORKERS,
) -> Iterator[list[R]]:
    """``[function(item) for item in batch]`` for each batch, computed in threads, in order.

    ``overlap=True``: the next batches are computed while the caller works on this one
    (:func:`prefetch`), which keeps a GPU busy. ``overlap=False``: each batch is computed by
    all the workers together, when the caller asks for it, so that the two take turns. That
    suits a network running on the CPU: alongside its OpenMP threads, a decoding thread takes
    a core from one of them, and the others wait for it at the next barrier, spinning, so
    decoding alongside costs the forward pass up to twice what decoding itself costs; in
    turns, decoding on every core costs only its own time.
    """
    if overlap:
        yield from prefetch(lambda batch: [function(item) for item in batch], batches, workers)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="headstart-io") as pool:
        for batch in batches:
            yield list(pool.map(function, batch))
