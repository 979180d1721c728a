"""The calibrate stage: the temperature that makes the kept model's probabilities mean what they
say on validation (Guo et al. 2017, "On calibration of modern neural networks"), put in the
bundle so that ``predict`` returns calibrated probabilities.

Temperature scaling divides the logits by one number T fitted to minimise the validation
negative log-likelihood: the predicted classes never change, only how sure the model says it
is. It is applied when it makes the expected calibration error on validation no worse; the
report shows both, and the test split's calibration with T from validation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..config import FitConfig
from ..report.calibration import calibrate as measure_calibration
from .evaluate import Candidate

__all__ = ["Calibrated", "calibrate"]


@dataclass(frozen=True)
class Calibrated:
    """What the stage did: the temperature the bundle applies (1: none) and why."""

    temperature: float
    why: str
    fitted: float | None = None  # the temperature fitted on validation, applied or not
    ece: float | None = None  # expected calibration error on validation, as trained
    ece_scaled: float | None = None  # after dividing the logits by ``fitted``
    images: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate(kept: Candidate, config: FitConfig, *, items: str = "images") -> Calibrated:
    """Fit the temperature of ``kept`` on its validation predictions and set it on its model
    (``kept.model.temperature``) where it helps; what was done, either way. ``items``: what
    the examples are called ("images", "texts")."""
    if not config.calibration:
        return Calibrated(1.0, "calibration off: the probabilities are the network's own")
    val = kept.scored.get("val")
    if val is None or not len(val.labels):
        return Calibrated(1.0, f"no validation {items} to fit a temperature on")
    # Log-probabilities are the logits less a constant per row: the same softmax at any T.
    found = measure_calibration(val.log_probabilities, val.labels)
    measured = {"ece": found.ece, "ece_scaled": found.ece_scaled, "images": found.n}
    if found.temperature is None:
        why = f"no temperature fitted: every validation {items[:-1]} is predicted right"
        return Calibrated(1.0, why, **measured)
    t = found.temperature
    if found.at_bound:
        why = (
            f"temperature not applied: its fit ran to the edge of its range (T = {t:.3g}) on "
            f"these {found.n} validation {items}: "
            + ("sharper is always better" if t < 1 else "the predictions are close to chance")
        )
        return Calibrated(1.0, why, fitted=t, **measured)
    if not (np.isfinite(found.ece_scaled) and found.ece_scaled <= found.ece):
        why = (
            f"temperature not applied: T = {t:.2f} would raise the expected calibration error "
            f"on validation from {found.ece:.1%} to {found.ece_scaled:.1%}"
        )
        return Calibrated(1.0, why, fitted=t, **measured)
    kept.model.temperature = t
    why = (
        f"probabilities calibrated: logits divided by T = {t:.2f}, fitted on the {found.n} "
        f"validation {items} (expected calibration error {found.ece:.1%} -> "
        f"{found.ece_scaled:.1%}); --no-calibration keeps the network's own"
    )
    return Calibrated(t, why, fitted=t, **measured)
