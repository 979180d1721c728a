"""Text on the image grids headstart writes (contact sheets, the augmentation preview)."""

from __future__ import annotations

from PIL import ImageFont

__all__ = ["caption_font", "fit_text"]


def fit_text(text: str, width: int) -> str:
    """``text`` cut to about ``width`` pixels (6 per character at the default font)."""
    most = max(4, width // 6)
    return text if len(text) <= most else text[: most - 2] + ".."


def caption_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()
