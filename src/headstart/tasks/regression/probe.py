"""The ridge probe: a linear head that predicts a number from frozen, cached features.

Ridge regression on the standardised features (standardised as the classification probe does
it, so a nearly constant feature cannot take a huge weight), its penalty chosen by
leave-one-out error over the training images (exact and cheap for ridge: scikit-learn's
generalised cross-validation), towards the standardised target. It fits in seconds; its
leave-one-out R² is the measured signal of how far the pretrained features already carry the
number, which the plan reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import RidgeCV

from ...training.probe import mean_and_scale

__all__ = ["ALPHAS", "RidgeProbe", "fit_ridge_probe"]

#: Penalties tried (on standardised features, summed squared error): from barely any to one
#: that leaves only the strongest directions.
ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 13))


@dataclass
class RidgeProbe:
    head: torch.nn.Linear  # raw features -> the standardised target
    alpha: float
    loo_r2: float  # leave-one-out R² on the training images, at ``alpha``
    edge: bool  # the chosen penalty is the first or last tried

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "loo_r2": self.loo_r2, "alpha_at_edge": self.edge}


def fit_ridge_probe(features: np.ndarray, targets: np.ndarray) -> RidgeProbe:
    """A ridge head from ``(N, D)`` features to ``N`` standardised targets."""
    mean, scale = mean_and_scale(features)
    standardised = (features - mean) / scale
    ridge = RidgeCV(alphas=ALPHAS).fit(standardised, targets)
    loo_mse = -float(ridge.best_score_)
    coef = ridge.coef_ / scale
    head = torch.nn.Linear(features.shape[1], 1)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(coef[None, :]))
        head.bias.fill_(float(ridge.intercept_ - coef @ mean))
    alpha = float(ridge.alpha_)
    return RidgeProbe(
        head.float(),
        alpha,
        1 - loo_mse / float(np.var(targets)),
        alpha in (ALPHAS[0], ALPHAS[-1]),
    )
