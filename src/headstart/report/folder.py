"""The run folder as the report reads it: each file loaded once, absent files as None, and the
numbers written the same way everywhere."""

from __future__ import annotations

import json
import math
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .records import PREDICTIONS, THUMBNAILS, SplitPredictions, read_predictions, read_thumbnails

__all__ = ["RunFolder", "duration", "number", "percent"]


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._json: dict[str, Any] = {}

    def exists(self, name: str) -> bool:
        return (self.path / name).exists()

    def json(self, name: str) -> Any:
        """The content of ``name`` (relative to the run), or None when it is absent."""
        if name not in self._json:
            file = self.path / name
            try:
                self._json[name] = json.loads(file.read_text()) if file.exists() else None
            except ValueError as error:
                raise ValueError(f"{name} is not valid JSON ({error})") from None
        return self._json[name]

    @cached_property
    def metrics(self) -> list[dict]:
        """The lines of ``metrics.jsonl``; a line cut short by a crash is skipped."""
        file = self.path / "metrics.jsonl"
        if not file.exists():
            return []
        records = []
        for line in file.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    @property
    def epochs(self) -> list[dict]:
        return [r for r in self.metrics if "epoch" in r]

    @property
    def probe(self) -> dict | None:
        return next((r for r in self.metrics if r.get("stage") == "linear-probe"), None)

    @cached_property
    def predictions(self) -> dict[str, SplitPredictions]:
        return read_predictions(self.path) if self.exists(PREDICTIONS) else {}

    @cached_property
    def thumbnails(self) -> dict[str, np.ndarray]:
        return read_thumbnails(self.path) if self.exists(THUMBNAILS) else {}

    @property
    def classes(self) -> list[str]:
        dataset = self.json("dataset.json") or {}
        return list(dataset.get("classes") or [])

    @property
    def scores(self) -> dict[str, dict]:
        return (self.json("summary.json") or {}).get("scores") or {}


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
