"""The run folder as the report reads it (each file loaded once, absent files as None), and the
numbers written the same way everywhere."""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import numpy as np

from ..runfolder import PREDICTIONS, SUMMARY, THUMBNAILS, RunFolder
from .records import SplitPredictions, read_predictions, read_thumbnails

__all__ = ["ReportedRun", "duration", "number", "percent"]


class ReportedRun(RunFolder):
    """A run folder as the report reads it: also its predictions and thumbnails, loaded once."""

    @cached_property
    def predictions(self) -> dict[str, SplitPredictions]:
        return read_predictions(self.path) if self.exists(PREDICTIONS) else {}

    @cached_property
    def unit(self) -> str:
        """What the run's examples are: "texts" for a fit of texts, else "images"."""
        return "texts" if (self.json(SUMMARY) or {}).get("modality") == "text" else "images"

    @cached_property
    def thumbnails(self) -> dict[str, np.ndarray]:
        return read_thumbnails(self.path) if self.exists(THUMBNAILS) else {}


def percent(value: float | None, digits: int = 1) -> str:
    """``0.9731`` -> ``97.3%``; missing or not a number -> an en dash."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{100 * value:.{digits}f}%"


def number(value: Any) -> str:
    """A measured value for a table: floats to four significant digits, the rest as is."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return ", ".join(number(v) for v in value)
    return str(value)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
