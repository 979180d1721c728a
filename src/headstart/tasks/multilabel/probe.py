"""The multi-label probe: a logistic regression per label on frozen, cached features.

Each label is a yes/no question about the image, answered by its own logistic regression on
the standardised features (standardised as the classification probe does it); one penalty for
all, chosen by cross-validation on the training images by the mean average precision of the
out-of-fold scores. It fits in seconds to a minute; the out-of-fold mAP is the measured signal
of how well the pretrained features already carry the labels, which the plan reads.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from ...training.objective import mean_ap
from ...training.probe import mean_and_scale

__all__ = ["C_GRID", "LabelProbe", "fit_label_probe", "prior_logits"]

#: Inverse penalties tried (on standardised features), strongest first: each fit starts from
#: the one before (a warm start), so the path costs little more than its last point.
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
FOLDS = 5


@dataclass
class LabelProbe:
    head: torch.nn.Linear  # raw features -> a logit per label
    C: float
    cv_map: float  # out-of-fold mAP on the training images, at ``C``
    cv_maps: dict[float, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"C": self.C, "cv_map": self.cv_map, "cv_maps": self.cv_maps}


def prior_logits(targets: np.ndarray) -> np.ndarray:
    """Each label's log-odds in ``targets``: what a head that knows only the frequencies says
    (clipped away from certainty)."""
    share = np.clip(targets.mean(0), 1e-4, 1 - 1e-4)
    return np.log(share / (1 - share))


def fit_label_probe(features: np.ndarray, targets: np.ndarray, seed: int = 0) -> LabelProbe:
    """A logistic head per label from ``(N, D)`` features to ``(N, L)`` 0/1 targets."""
    mean, scale = mean_and_scale(features)
    x = (features - mean) / scale
    folds = min(FOLDS, len(x))
    out_of_fold = {C: np.zeros(targets.shape) for C in C_GRID}
    for train, held in KFold(folds, shuffle=True, random_state=seed).split(x):
        for label in range(targets.shape[1]):
            y = targets[train, label]
            if y.min() == y.max():  # one answer in these rows: the prior says all
                for C in C_GRID:
                    out_of_fold[C][held, label] = prior_logits(targets[train])[label]
                continue
            model = _logistic(seed)
            for C in C_GRID:
                _fit(model.set_params(C=C), x[train], y)
                out_of_fold[C][held, label] = model.decision_function(x[held])
    maps = {C: mean_ap(targets, out_of_fold[C]) for C in C_GRID}
    best = max(C_GRID, key=lambda C: (np.nan_to_num(maps[C], nan=-1), -C))
    weight = np.zeros((targets.shape[1], x.shape[1]))
    bias = prior_logits(targets).astype(np.float64)
    for label in range(targets.shape[1]):
        if targets[:, label].min() == targets[:, label].max():
            continue
        model = _logistic(seed)
        for C in C_GRID[: C_GRID.index(best) + 1]:  # the same warm path as the folds took
            _fit(model.set_params(C=C), x, targets[:, label])
        weight[label], bias[label] = model.coef_[0], model.intercept_[0]
    head = torch.nn.Linear(x.shape[1], targets.shape[1])
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight / scale))
        head.bias.copy_(torch.from_numpy(bias - (weight / scale) @ mean))
    return LabelProbe(head.float(), best, maps[best], maps)


def _logistic(seed: int) -> LogisticRegression:
    return LogisticRegression(max_iter=200, tol=1e-4, random_state=seed, warm_start=True)


def _fit(model: LogisticRegression, x: np.ndarray, y: np.ndarray) -> None:
    with warnings.catch_warnings():  # weakly penalised points may stop at max_iter
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
