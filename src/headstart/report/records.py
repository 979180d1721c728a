"""What fit keeps for the report beyond scores: every prediction, and thumbnails to show.

``predictions.npz``: for each split, the paths, true labels, logits and class names, so the
report can recompute anything (calibration, the worst mistakes) without the model.
``thumbnails.npz``: small square pixels of the images the report shows, so the report opens
anywhere, even after the data folder has moved. Both are plain arrays (strings as numpy
unicode arrays): readable with ``allow_pickle=False``, as anything untrusted should be.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..auditing.views import square
from ..data.images import UnreadableImage
from ..runfolder import PREDICTIONS, THUMBNAILS
from ..storage import write_atomically

__all__ = [
    "SplitPredictions",
    "examples_to_show",
    "read_predictions",
    "read_thumbnails",
    "save_thumbnails",
    "write_predictions",
]

_FIELDS = ("paths", "labels", "logits", "classes")
#: Logits more than this far below their row's largest are raised to it: a probability of
#: e^-100 is zero for every purpose, and the loss and calibration stay finite.
LOGIT_RANGE = 100.0


@dataclass(frozen=True)
class SplitPredictions:
    """One split's predictions: row ``i`` of ``logits`` is the model's output for ``paths[i]``,
    whose true class is ``classes[labels[i]]``."""

    paths: list[str]
    labels: np.ndarray  # (n,) int
    logits: np.ndarray  # (n, C) float
    classes: list[str]

    @property
    def probabilities(self) -> np.ndarray:
        return softmax(self.logits)

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(1)

    @property
    def confidence(self) -> np.ndarray:
        """The probability of the predicted class."""
        return self.probabilities.max(1)

    @property
    def loss(self) -> np.ndarray:
        """Each example's cross-entropy, ``-log p(true class)``, in nats."""
        return -log_softmax(self.logits)[np.arange(len(self.labels)), self.labels]


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)  # no overflow for large logits
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def write_predictions(
    run: Path,
    split: str,
    paths: Sequence[str | Path],
    labels: Sequence[int],
    logits: np.ndarray,
    classes: Sequence[str],
) -> None:
    """Add (or replace) ``split``'s predictions in ``<run>/predictions.npz``.

    ``logits`` may be any per-row shift of the logits (log-probabilities do as well): only
    their softmax and differences are used. Each is kept within ``LOGIT_RANGE`` nats of its
    row's largest, so ``log(0) = -inf`` from a log-probability becomes a finite "never".
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or logits.shape[1] != len(classes):
        raise ValueError(
            f"logits of shape {logits.shape}: expected (n_examples, {len(classes)}), one "
            "column per class"
        )
    if np.isnan(logits).any() or np.isposinf(logits).any():
        raise ValueError("logits hold NaN or +inf: the model's outputs are broken")
    if logits.size:
        logits = np.maximum(logits, logits.max(axis=1, keepdims=True) - LOGIT_RANGE)
    if not len(paths) == len(labels) == len(logits):
        raise ValueError(
            f"{len(paths)} paths, {len(labels)} labels and {len(logits)} rows of logits: "
            "expected one of each per example"
        )
    if labels.size and not 0 <= labels.min() <= labels.max() < len(classes):
        raise ValueError(f"labels must be class indices in 0..{len(classes) - 1}")
    if not split.isidentifier():
        raise ValueError(f"split={split!r}: expected a plain name such as 'val' or 'test'")
    arrays = _read_npz(Path(run) / PREDICTIONS)
    for name in _FIELDS:
        arrays.pop(f"{split}.{name}", None)
    arrays[f"{split}.paths"] = _strings(paths)
    arrays[f"{split}.labels"] = labels
    arrays[f"{split}.logits"] = logits
    arrays[f"{split}.classes"] = _strings(classes)
    _write_npz(Path(run) / PREDICTIONS, arrays)


def read_predictions(run: Path) -> dict[str, SplitPredictions]:
    """Every split in ``<run>/predictions.npz`` (none when the file is absent)."""
    arrays = _read_npz(Path(run) / PREDICTIONS)
    splits = sorted({key.split(".", 1)[0] for key in arrays})
    return {
        split: SplitPredictions(
            paths=[str(p) for p in arrays[f"{split}.paths"]],
            labels=arrays[f"{split}.labels"].astype(np.int64),
            logits=arrays[f"{split}.logits"].astype(np.float64),
            classes=[str(c) for c in arrays[f"{split}.classes"]],
        )
        for split in splits
    }


def confident_mistakes(predictions: SplitPredictions, k: int) -> list[int]:
    """Rows of the ``k`` wrong predictions made with the highest confidence, highest first."""
    wrong = np.flatnonzero(predictions.predicted != predictions.labels)
    order = np.argsort(-predictions.confidence[wrong], kind="stable")
    return wrong[order][:k].tolist()


def highest_loss(predictions: SplitPredictions, k: int, exclude: Sequence[int] = ()) -> list[int]:
    """Rows of the ``k`` highest-loss examples not in ``exclude``, highest first."""
    order = np.argsort(-predictions.loss, kind="stable")
    skip = set(exclude)
    return [int(i) for i in order if int(i) not in skip][:k]


def examples_to_show(run: Path, k: int = 16) -> list[str]:
    """Paths of the validation examples the report shows: the ``k`` most confident mistakes,
    then the ``k`` highest-loss examples among the rest (no path twice)."""
    val = read_predictions(run).get("val")
    if val is None:
        return []
    mistakes = confident_mistakes(val, k)
    return [val.paths[i] for i in mistakes + highest_loss(val, k, exclude=mistakes)]


def save_thumbnails(
    run: Path,
    paths: Sequence[str | Path],
    load: Callable[[Path], np.ndarray],
    size: int = 96,
) -> None:
    """Add the centre squares of ``paths`` (``size`` pixels a side) to ``<run>/thumbnails.npz``.

    ``load(path)`` returns ``(H, W, C)`` uint8 pixels, shown as ``audit.views.as_rgb`` says;
    a file it cannot read is left out (the report says its thumbnail is missing) rather than
    failing the end of a fit.
    """
    thumbnails = read_thumbnails(run)
    for path in paths:
        if str(path) in thumbnails:
            continue
        try:
            pixels = np.asarray(load(Path(path)))
        except (UnreadableImage, OSError):
            continue
        # Any channel count: one is shown as gray, four or more by their first three.
        thumbnails[str(path)] = np.asarray(square(pixels.astype(np.uint8), size))
    if not thumbnails:
        return
    # One size for all: entries kept from an earlier call at another size are resized.
    pixels = [
        t if t.shape[0] == size else np.asarray(Image.fromarray(t).resize((size, size)))
        for t in thumbnails.values()
    ]
    _write_npz(
        Path(run) / THUMBNAILS,
        {"paths": _strings(list(thumbnails)), "pixels": np.stack(pixels).astype(np.uint8)},
    )


def read_thumbnails(run: Path) -> dict[str, np.ndarray]:
    """Path -> ``(size, size, 3)`` uint8 pixels, from ``<run>/thumbnails.npz`` (may be empty)."""
    arrays = _read_npz(Path(run) / THUMBNAILS)
    if not arrays:
        return {}
    return {str(p): pixels for p, pixels in zip(arrays["paths"], arrays["pixels"], strict=True)}


def _strings(values: Sequence[str | Path]) -> np.ndarray:
    """Strings as a numpy unicode array (never an object array: that would need pickle)."""
    return np.array([str(v) for v in values], dtype=np.str_)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Written whole, then renamed: a reader never sees half a file."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomically(path, buffer.getvalue())
