"""Pixels for the report: thumbnails and audit grids as small PNGs, and the first layer's
filters as a grid of colour tiles."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["filter_grid", "first_layer", "fit_png", "png"]

#: Most filters drawn (a ViT's patch embedding has 768); the first ones, in model order.
MOST_FILTERS = 128
#: Likely names of the first convolution, most likely first; any other 4-D weight over 3
#: input channels comes after them (by name length: the stem's names are short).
_FIRST_LAYER = (
    "backbone.conv_stem.weight",
    "backbone.conv1.weight",
    "backbone.patch_embed.proj.weight",
    "backbone.stem.conv.weight",
    "backbone.stem.0.weight",
    "backbone.features.0.0.weight",
    "backbone.features.0.weight",
)


def png(pixels: np.ndarray | Image.Image) -> bytes:
    picture = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def fit_png(path: Path, width: int = 1600, height: int = 2400) -> tuple[bytes, bool]:
    """A PNG file made at most ``width`` wide (scaled) and ``height`` tall (cut off at the
    bottom: a long grid is read from the top); whether it was cut."""
    with Image.open(path) as opened:
        picture = opened.convert("RGB")
    if picture.width > width:
        scale = width / picture.width
        picture = picture.resize((width, round(picture.height * scale)), Image.Resampling.BOX)
    cut = picture.height > height
    if cut:
        picture = picture.crop((0, 0, picture.width, height))
    return png(picture), cut


def first_layer(weights: Path) -> tuple[str, np.ndarray] | None:
    """The first convolution's weights ``(filters, channels, k, k)`` and name, read from a
    safetensors file (no pickle); None when no known first layer exists and no 4-D weight
    takes 3 input channels."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as file:
        shapes = {key: file.get_slice(key).get_shape() for key in file.keys()}  # noqa: SIM118
        convolutions = [k for k, s in shapes.items() if len(s) == 4]
        # A known first layer takes any channel count (grayscale, 4-channel stacks).
        known = [name for name in _FIRST_LAYER if name in convolutions]
        candidates = [k for k in convolutions if shapes[k][1] == 3]
        if not known and not candidates:
            return None
        name = known[0] if known else min(candidates, key=lambda k: (k.count("."), len(k), k))
        return name, file.get_tensor(name).float().numpy()


def filter_grid(weights: np.ndarray, columns: int = 16, tile: int = 48) -> Image.Image:
    """Each filter min-max normalised over its three channels to an RGB tile, enlarged with
    nearest-neighbour (a 3x3 filter is nine blocks, not a blur), in a grid."""
    filters = weights[:MOST_FILTERS].transpose(0, 2, 3, 1)  # (n, k, k, channels)
    if filters.shape[-1] < 3:  # grayscale input: each filter shown in gray
        filters = np.repeat(filters.mean(-1, keepdims=True), 3, axis=-1)
    filters = filters[..., :3]  # a stack's first three channels, as its thumbnails show it
    low = filters.min(axis=(1, 2, 3), keepdims=True)
    high = filters.max(axis=(1, 2, 3), keepdims=True)
    tiles = (filters - low) / np.maximum(high - low, 1e-12)
    scale = max(1, tile // max(filters.shape[1:3]))
    height, width = filters.shape[1] * scale, filters.shape[2] * scale
    gap = 2
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    grid = Image.new("RGB", (columns * (width + gap) + gap, rows * (height + gap) + gap), "white")
    for i, pixels in enumerate(tiles):
        row, column = divmod(i, columns)
        block = Image.fromarray((pixels * 255).round().astype(np.uint8))
        block = block.resize((width, height), Image.Resampling.NEAREST)
        grid.paste(block, (gap + column * (width + gap), gap + row * (height + gap)))
    return grid
