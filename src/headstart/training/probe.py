"""Linear probe: a logistic-regression head on frozen, cached features.

Fitted with L-BFGS by scikit-learn, the regularisation strength chosen by cross-validation on
the training split alone. It trains in seconds, and its out-of-fold accuracy is the measured
signal of how well the pretrained features already fit the task, which the plan reads.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

__all__ = ["ProbeResult", "fit_probe"]

#: Inverse regularisation strengths tried by cross-validation (on standardised features).
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


@dataclass
class ProbeResult:
    head: torch.nn.Linear  # works on raw (unstandardised) features
    C: float
    cv_accuracy: float  # out-of-fold accuracy at the chosen C, plain view
    cv_scores: dict[float, float] = field(default_factory=dict)  # C -> out-of-fold log-loss
    folds: int = 0


def fit_probe(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    mirrored: np.ndarray | None = None,
    seed: int = 0,
    max_folds: int = 5,
) -> ProbeResult:
    """Fit a multinomial logistic-regression head; pick C by out-of-fold log-loss.

    ``mirrored`` holds the features of the horizontally flipped images (same order). When given,
    they are added as training rows, and held-out scores average the logits of both views (the
    way predictions are made). Both views of an image always fall in the same fold.
    """
    labels = np.asarray(labels)
    scaler = StandardScaler().fit(features)
    views = [scaler.transform(features)]
    if mirrored is not None:
        views.append(scaler.transform(mirrored))

    smallest = np.bincount(labels, minlength=n_classes)
    smallest = smallest[smallest > 0].min()
    folds = int(min(max_folds, smallest))
    scores: dict[float, float] = {}
    accuracy: dict[float, float] = {}
    if folds >= 2:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        splits = list(splitter.split(views[0], labels))
        for C in C_GRID:
            logits = np.zeros((len(labels), n_classes))
            for train, held_out in splits:
                model = _logistic(C, seed).fit(
                    np.concatenate([v[train] for v in views]), np.tile(labels[train], len(views))
                )
                logits[held_out] = _full_logits(model, views, held_out, n_classes)
            probabilities = _softmax(logits)
            picked = probabilities[np.arange(len(labels)), labels]
            scores[C] = float(-np.log(np.clip(picked, 1e-12, None)).mean())
            accuracy[C] = float((probabilities.argmax(1) == labels).mean())
        best = min(scores, key=lambda c: (scores[c], -c))
    else:  # a class with one image: nothing to cross-validate with, use a middle value
        best = 0.1
        accuracy[best] = float("nan")

    model = _logistic(best, seed).fit(np.concatenate(views), np.tile(labels, len(views)))
    head = _to_linear(model, scaler, n_classes)
    return ProbeResult(head, best, accuracy[best], scores, folds)


def _logistic(C: float, seed: int) -> LogisticRegression:
    return LogisticRegression(C=C, max_iter=300, tol=1e-4, random_state=seed)


def _full_logits(
    model: LogisticRegression, views: list[np.ndarray], rows: np.ndarray, n_classes: int
) -> np.ndarray:
    """Decision values for all classes (also those absent from a fold), averaged over views."""
    logits = np.full((len(rows), n_classes), -1e4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        values = np.mean([_decision(model, v[rows]) for v in views], axis=0)
    logits[:, model.classes_] = values
    return logits


def _decision(model: LogisticRegression, x: np.ndarray) -> np.ndarray:
    values = model.decision_function(x)
    if values.ndim == 1:  # binary: scikit-learn returns one column, the logit of class 1
        values = np.stack([-values / 2, values / 2], axis=1)
    return values


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def _to_linear(
    model: LogisticRegression, scaler: StandardScaler, n_classes: int
) -> torch.nn.Linear:
    """Fold the standardisation into the weights: one Linear layer on raw features."""
    coef = model.coef_
    intercept = model.intercept_
    if coef.shape[0] == 1:  # binary: split the single logit symmetrically over two classes
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    scale = scaler.scale_
    weight = np.zeros((n_classes, coef.shape[1]))
    bias = np.full(n_classes, -1e4)  # a class never seen in training is never predicted
    weight[model.classes_] = coef / scale
    bias[model.classes_] = intercept - (coef / scale) @ scaler.mean_
    head = torch.nn.Linear(coef.shape[1], n_classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    return head
