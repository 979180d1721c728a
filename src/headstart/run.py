"""A run is a folder that holds everything it produced; the single source of truth.

``runs/<name>/``: ``config.json`` (the resolved settings), ``dataset.json`` (classes, split
counts, skipped files), ``plan.json`` (strategy and why), ``metrics.jsonl`` (one line per
epoch or stage), ``checkpoints/best.safetensors``, ``model/`` (the bundle) and
``summary.json`` (final scores). ``report``, ``predict`` and ``export`` read only this folder.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

__all__ = ["RunDir", "new_folder"]


def new_folder(root: str | Path, stem: str) -> Path:
    """A folder ``<root>/<stem>-<n>`` that does not exist yet, with the first free ``n``.

    Only the name is chosen: the caller creates it. ``stem`` is reduced to file-name-safe
    characters.
    """
    root = Path(root)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "run"
    n = 1
    while (root / f"{stem}-{n}").exists():
        n += 1
    return root / f"{stem}-{n}"


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, root: str | Path, name: str | None, data_name: str) -> RunDir:
        """A new, empty run folder. Without a name: ``<data>-<n>``, never reusing a folder."""
        if name:
            path = Path(root) / name
            if path.exists() and any(path.iterdir()):
                from .errors import HeadstartError

                raise HeadstartError(f"run folder {path} already exists; choose another --name")
        else:
            path = new_folder(root, data_name)
        path.mkdir(parents=True, exist_ok=True)
        (path / "checkpoints").mkdir(exist_ok=True)
        return cls(path)

    @property
    def bundle(self) -> Path:
        return self.path / "model"

    @property
    def best_checkpoint(self) -> Path:
        return self.path / "checkpoints" / "best.safetensors"

    @property
    def training_state(self) -> Path:
        """Everything ``--resume`` needs (weights, optimiser, schedule), after every epoch."""
        return self.path / "checkpoints" / "last.pt"

    def write_json(self, name: str, data: Any) -> Path:
        target = self.path / name
        partial = target.with_suffix(".partial")
        partial.write_text(json.dumps(_clean(data), indent=2, sort_keys=False) + "\n")
        partial.replace(target)
        return target

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def log_metrics(self, record: dict) -> None:
        """Append one line to ``metrics.jsonl``, flushed at once so a crash loses nothing."""
        line = json.dumps(_clean({"time": time.time(), **record}))
        with open(self.path / "metrics.jsonl", "a") as file:
            file.write(line + "\n")

    def metrics(self) -> list[dict]:
        file = self.path / "metrics.jsonl"
        if not file.exists():
            return []
        return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def _clean(value: Any) -> Any:
    """JSON-safe: paths as strings, NaN and infinity as null (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
