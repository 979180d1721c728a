"""Image grids a person can scan: contact sheets, duplicate groups, suspected label errors.

Plain Pillow: tiles are centre squares of the decoded (already resized) pixels, captions are
drawn under them, and sections (a class, a duplicate group) have a heading line.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..data.images import UnreadableImage
from ..drawing import caption_font, fit_text

__all__ = ["Section", "Tile", "as_rgb", "render", "square"]

TILE = 96  # pixels per tile side
_GAP = 6
_MARGIN = 10
_LINE = 13  # caption line height
_BACKGROUND = (250, 250, 250)
_TEXT = (30, 30, 30)
_WARNING = (200, 30, 30)


@dataclass
class Tile:
    path: Path
    caption: tuple[str, ...] = ()


@dataclass
class Section:
    heading: str
    tiles: list[Tile] = field(default_factory=list)
    warning: bool = False  # heading in red: a leak, a conflict


def as_rgb(pixels: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` (or ``(H, W)``) uint8 pixels as ``(H, W, 3)``, to be shown.

    RGB as it is; one channel as gray; two as the gray of their mean; more than three as
    their first three taken for red, green and blue (a scan stored R, G, B, near-infrared
    shows its colours). A picture of a stack is a view, not the data the network sees.
    """
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[2]
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    if channels == 2:
        mean = np.rint(pixels.mean(axis=2, keepdims=True)).astype(np.uint8)
        return np.repeat(mean, 3, axis=2)
    return pixels[..., :3]


def square(pixels: np.ndarray, size: int = TILE) -> Image.Image:
    """The centre square of an image (any channel count, see :func:`as_rgb`), resized to
    ``size``, in RGB."""
    pixels = as_rgb(pixels)
    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = Image.fromarray(np.ascontiguousarray(pixels[top : top + side, left : left + side]))
    resample = Image.Resampling.BOX if side >= size else Image.Resampling.BICUBIC
    return crop.resize((size, size), resample)


def render(
    title: str,
    sections: Sequence[Section],
    pixels: Callable[[Path], np.ndarray],
    *,
    columns: int = 10,
) -> Image.Image:
    """One image: a title, then each section's heading and its tiles, ``columns`` per row."""
    font = caption_font()
    lines = max((len(t.caption) for s in sections for t in s.tiles), default=0)
    cell_height = TILE + lines * _LINE + _GAP
    cell_width = TILE + _GAP
    used = max((min(len(s.tiles), columns) for s in sections), default=1)
    width = 2 * _MARGIN + max(used, 4) * cell_width
    # The title wraps between words to the sheet's width (about 6 pixels a character).
    title_lines = textwrap.wrap(title, max(20, (width - 2 * _MARGIN) // 6)) or [""]
    height = _MARGIN + (len(title_lines) + 1) * _LINE
    for section in sections:
        rows = -(-len(section.tiles) // columns)
        height += _LINE + 4 + rows * cell_height
    sheet = Image.new("RGB", (width, height + _MARGIN), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for n, line in enumerate(title_lines):
        draw.text((_MARGIN, _MARGIN + n * _LINE), line, fill=_TEXT, font=font)
    y = _MARGIN + (len(title_lines) + 1) * _LINE
    for section in sections:
        color = _WARNING if section.warning else _TEXT
        draw.text(
            (_MARGIN, y), fit_text(section.heading, width - 2 * _MARGIN), fill=color, font=font
        )
        y += _LINE + 4
        for index, tile in enumerate(section.tiles):
            row, column = divmod(index, columns)
            x, top = _MARGIN + column * cell_width, y + row * cell_height
            try:
                sheet.paste(square(pixels(tile.path)), (x, top))
            except UnreadableImage:  # an empty tile with a red outline
                draw.rectangle((x, top, x + TILE - 1, top + TILE - 1), outline=_WARNING)
            for n, text in enumerate(tile.caption):
                draw.text((x, top + TILE + n * _LINE), fit_text(text, TILE), fill=_TEXT, font=font)
        y += -(-len(section.tiles) // columns) * cell_height
    return sheet
