"""The numbers a user reads: accuracy, balanced accuracy, macro-F1, per-class precision/recall;
for a number, its errors (MAE, RMSE, R²) beside predicting the training mean; for several
labels an image, mAP and F1 (micro, macro, per label) beside knowing only their frequencies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    median_absolute_error,
    precision_recall_fscore_support,
    r2_score,
    root_mean_squared_error,
)

__all__ = [
    "classification_metrics",
    "frequency_map",
    "label_metrics",
    "paired",
    "paired_errors",
    "regression_metrics",
]


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


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, train_mean: float) -> dict:
    """Errors of predicted numbers, JSON-ready, beside the dumb baseline's: predicting the
    training targets' mean for every image (R² is the split's own: 0 for its mean)."""
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    if not len(y_true):
        return {"n": 0}
    mean = np.full_like(y_true, train_mean)
    return {
        "n": len(y_true),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),
        "median_absolute_error": float(median_absolute_error(y_true, y_pred)),
        "mean_baseline": {
            "value": float(train_mean),
            "mae": float(mean_absolute_error(y_true, mean)),
            "rmse": float(root_mean_squared_error(y_true, mean)),
        },
    }


def paired_errors(errors: np.ndarray, other_errors: np.ndarray) -> dict:
    """Two models' errors on the same images, image by image: how much closer the first is
    on average (``gain``, in the target's units of absolute error), on how many images it is
    closer (``better``) or further (``worse``), and ``z``, the mean gain over its standard
    error (a paired test: the images' own difficulty cancels)."""
    gain = np.abs(np.asarray(other_errors, float)) - np.abs(np.asarray(errors, float))
    n = len(gain)
    spread = gain.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0
    z = gain.mean() / spread if spread > 0 else 0.0
    return {
        "gain": float(gain.mean()) if n else 0.0,
        "better": int((gain > 0).sum()),
        "worse": int((gain < 0).sum()),
        "z": float(z),
        "images": n,
    }


def frequency_map(targets: np.ndarray) -> float:
    """The mAP of knowing only how often each label occurs: a constant score ranks no image
    first, so each label's AP is its share of the images. Over the labels that mAP counts
    (some images with the label, some without); NaN when there are none."""
    targets = np.asarray(targets) > 0.5
    both = targets.any(0) & ~targets.all(0)
    return float(targets.mean(0)[both].mean()) if both.any() else float("nan")


def label_metrics(
    targets: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, labels: Sequence[str]
) -> dict:
    """Scores of several labels an image, JSON-ready. ``targets`` are 0/1 rows, ``scores``
    the probabilities (or any increasing function of them, with ``thresholds`` on the same
    scale): a label is predicted where its score reaches its threshold.

    mAP and the macro averages count the labels present in this split (AP and recall mean
    nothing for a label with no image); the frequency baseline is a model that knows only how
    often each label occurs: its AP is the label's share of the images (averaged over the
    labels mAP counts), and its best F1, saying yes to every image, ``2p / (1 + p)``."""
    targets = np.asarray(targets) > 0.5
    predicted = np.asarray(scores) >= np.asarray(thresholds)
    present = targets.any(0)
    hits = (targets & predicted).sum(0)
    said, support = predicted.sum(0), targets.sum(0)
    precision = np.divide(hits, said, out=np.zeros(len(labels)), where=said > 0)
    recall = np.divide(hits, support, out=np.zeros(len(labels)), where=support > 0)
    f1 = np.divide(2 * hits, said + support, out=np.zeros(len(labels)), where=said + support > 0)
    ap = np.full(len(labels), np.nan)
    for i in np.flatnonzero(present & ~targets.all(0)):
        ap[i] = average_precision_score(targets[:, i], scores[:, i])
    share = targets.mean(0)
    micro = 2 * hits.sum() / max(said.sum() + support.sum(), 1)
    return {
        "n": len(targets),
        "map": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
        "micro_f1": float(micro),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "subset_accuracy": float((targets == predicted).all(1).mean()) if len(targets) else 0.0,
        "hamming_loss": float((targets != predicted).mean()) if len(targets) else 0.0,
        "frequency_baseline": {
            "map": frequency_map(targets),
            "macro_f1": float((2 * share / (1 + share))[present].mean())
            if present.any()
            else float("nan"),
        },
        "per_label": {
            name: {
                "ap": None if np.isnan(ap[i]) else float(ap[i]),
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "threshold": float(thresholds[i]),
            }
            for i, name in enumerate(labels)
        },
    }
