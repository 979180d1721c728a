"""The numbers a user reads: accuracy, balanced accuracy, macro-F1, per-class precision/recall."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

__all__ = ["classification_metrics", "paired"]


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]
) -> dict:
    """Scores of predictions against labels, JSON-ready. Labels are indices into ``classes``."""
    labels = list(range(len(classes)))
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    present = support > 0  # classes with no examples in this split have no recall to average
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(
            f1_score(
                y_true, y_pred, labels=np.flatnonzero(present), average="macro", zero_division=0
            )
        ),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def paired(right: np.ndarray, other_right: np.ndarray) -> dict:
    """Two models on the same images, image by image (McNemar): the images the first gets
    right and the other wrong (``fixed``), the other way (``broken``), and
    ``z = (fixed - broken) / sqrt(fixed + broken)``."""
    fixed, broken = int((right & ~other_right).sum()), int((~right & other_right).sum())
    z = (fixed - broken) / np.sqrt(fixed + broken) if fixed + broken else 0.0
    return {"fixed": fixed, "broken": broken, "z": float(z), "images": len(right)}
