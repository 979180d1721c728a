"""Do the predicted probabilities mean what they say? Expected calibration error (ECE), the
reliability diagram's bins, and temperature scaling (Guo et al. 2017, "On calibration of
modern neural networks"): one number ``T`` that divides the logits, fitted by minimising the
negative log-likelihood. ``T > 1`` softens an overconfident model, ``T < 1`` sharpens an
underconfident one; the predicted class never changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from .records import log_softmax, softmax

__all__ = ["Calibration", "ReliabilityBin", "calibrate", "ece", "fit_temperature", "reliability"]

#: Equal-width confidence bins. Fifteen is the usual choice on large sets; with a few hundred
#: validation images most bins would hold a handful, so fewer, wider bins.
BINS = 10
#: The search range of log T: T from 1/20 to 20. A fit at the edge means no finite T is best
#: (all predictions right: ever sharper always lowers the loss).
LOG_T_BOUND = np.log(20.0)


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    confidence: float  # mean confidence of the bin's predictions (NaN when empty)
    accuracy: float  # fraction of them that are right (NaN when empty)


@dataclass(frozen=True)
class Calibration:
    """Before and after temperature scaling. Without a mistake there is no temperature to
    fit (ever sharper predictions always lower the loss): ``temperature`` is None then, and
    the scaled values are the unscaled ones."""

    n: int
    ece: float
    nll: float  # mean negative log-likelihood, nats
    bins: list[ReliabilityBin]
    temperature: float | None
    ece_scaled: float  # after dividing the logits by ``temperature``
    nll_scaled: float
    bins_scaled: list[ReliabilityBin]
    at_bound: bool = False  # the temperature is at the edge of its search range


def reliability(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS
) -> list[ReliabilityBin]:
    """Predictions grouped by confidence into ``bins`` equal-width bins over [0, 1]."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    # Bin i holds (lower, upper]; a confidence of exactly 0 goes to the first bin.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    result = []
    for i in range(bins):
        members = index == i
        count = int(members.sum())
        result.append(
            ReliabilityBin(
                lower=i / bins,
                upper=(i + 1) / bins,
                count=count,
                confidence=float(confidence[members].mean()) if count else float("nan"),
                accuracy=float(correct[members].mean()) if count else float("nan"),
            )
        )
    return result


def ece(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: the gap between confidence and accuracy in each bin,
    weighted by the share of predictions in it. 0 is perfectly calibrated."""
    total = len(labels)
    if total == 0:
        return float("nan")
    return float(
        sum(
            b.count / total * abs(b.accuracy - b.confidence)
            for b in reliability(probabilities, labels, bins)
            if b.count
        )
    )


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels, in nats."""
    log_p = log_softmax(logits / temperature)
    return max(0.0, float(-log_p[np.arange(len(labels)), labels].mean()))  # never "-0.000"


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the NLL of ``labels`` (searched over log T)."""
    found = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=(-LOG_T_BOUND, LOG_T_BOUND),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(found.x))


def calibrate(logits: np.ndarray, labels: np.ndarray, bins: int = BINS) -> Calibration:
    """ECE and reliability bins before and after temperature scaling, all on the same data
    (so the after-values are optimistic: T was chosen to fit exactly these examples)."""
    probabilities = softmax(logits)
    before = (ece(probabilities, labels, bins), nll(logits, labels))
    bins_before = reliability(probabilities, labels, bins)
    if np.all(probabilities.argmax(1) == labels):
        return Calibration(len(labels), *before, bins_before, None, *before, bins_before)
    temperature = fit_temperature(logits, labels)
    scaled = softmax(logits / temperature)
    return Calibration(
        len(labels),
        *before,
        bins_before,
        temperature,
        ece(scaled, labels, bins),
        nll(logits, labels, temperature),
        reliability(scaled, labels, bins),
        at_bound=abs(abs(np.log(temperature)) - LOG_T_BOUND) < 1e-2,
    )
