"""The sanity checks of a fit of texts: what a careful practitioner verifies before trusting it.

The recipe's checks, in their text form:

- **dumb baseline**: the kept model beats always answering the largest class on validation,
  beyond noise (a binomial test); else it learned nothing usable;
- **input-independent baseline**: the probe's out-of-fold accuracy on the training texts
  beats the class prior, so the embeddings carry the labels at all;
- **fits its training texts**: a head that cannot fit the texts it trained on (below
  :data:`FITS_TRAINING`) is too weak or reads labels that contradict each other;
- **the fine-tuning's loss fell**: the contrastive loss at the end is well below where it
  started (to :data:`LOSS_FALLS` of it at most); else the encoder did not learn the pairs.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

from ..checks import Check, CheckReport
from ..stages.evaluate import Candidate

__all__ = ["FITS_TRAINING", "LOSS_FALLS", "text_checks"]

FITS_TRAINING = 0.9
LOSS_FALLS = 0.7
_SIGNIFICANCE = 0.05


def text_checks(
    kept: Candidate,
    train_accuracy: float,
    cv_accuracy: float,
    train_labels: np.ndarray,
    tuning: dict | None,
) -> CheckReport:
    report = CheckReport()
    prior = float(np.bincount(train_labels).max() / len(train_labels))
    report.extend(
        [
            _beats_the_majority(kept, prior),
            _input_independent(cv_accuracy, prior, len(train_labels)),
            _fits_training(train_accuracy),
            _loss_falls(tuning),
        ]
    )
    return report


def _beats_the_majority(kept: Candidate, prior: float) -> Check:
    title = "better than always guessing the largest class"
    val = kept.scored.get("val")
    if val is None:
        return Check("majority-baseline", title, "skip", "no validation texts", "hold some out")
    n = len(val.labels)
    if binomtest(n, n, prior, alternative="greater").pvalue >= _SIGNIFICANCE:
        return Check(
            "majority-baseline",
            title,
            "skip",
            f"{n} validation texts: even all right would not be beyond noise",
            "hold out more texts (--val-fraction) to test it",
        )
    right = int((val.log_probabilities.argmax(1) == val.labels).sum())
    p = binomtest(right, n, prior, alternative="greater").pvalue
    summary = (
        f"{right / n:.1%} of {n} validation texts against {prior:.1%} for the largest class "
        f"(one-sided binomial p = {p:.2g})"
    )
    measured = {"accuracy": right / n, "majority": prior, "p": float(p)}
    if p < _SIGNIFICANCE:
        return Check("majority-baseline", title, "pass", summary, measured=measured)
    return Check(
        "majority-baseline",
        title,
        "fail",
        summary,
        "not beyond noise: too few validation texts to tell, or labels the texts do not carry",
        measured,
    )


def _input_independent(cv_accuracy: float, prior: float, n: int) -> Check:
    title = "the embeddings carry the labels"
    summary = (
        f"the probe's out-of-fold accuracy {cv_accuracy:.1%} on {n} training texts, against "
        f"{prior:.1%} from the class prior alone"
    )
    measured = {"cv_accuracy": cv_accuracy, "prior": prior}
    if cv_accuracy > prior:
        return Check("input-independent", title, "pass", summary, measured=measured)
    return Check(
        "input-independent",
        title,
        "fail",
        summary,
        "the probe does no better than ignoring the text: check the labels, or try an encoder "
        "of this domain (--encoder)",
        measured,
    )


def _fits_training(accuracy: float) -> Check:
    title = "the head fits its training texts"
    summary = f"{accuracy:.1%} of the training texts predicted right by the kept model"
    if accuracy >= FITS_TRAINING:
        return Check("fits-training", title, "pass", summary, measured={"accuracy": accuracy})
    return Check(
        "fits-training",
        title,
        "fail",
        summary,
        f"below {FITS_TRAINING:.0%}: copies with conflicting labels (see the audit), or "
        "classes the encoder cannot tell apart",
        {"accuracy": accuracy},
    )


def _loss_falls(tuning: dict | None) -> Check:
    title = "the fine-tuning's contrastive loss fell"
    if tuning is None or tuning.get("loss_start") is None:
        return Check("loss-falls", title, "skip", "the encoder was not fine-tuned")
    start, end = tuning["loss_start"], tuning["loss_end"]
    summary = f"{start:.3f} over the first steps, {end:.3f} over the last ({tuning['steps']} steps)"
    measured = {"loss_start": start, "loss_end": end}
    if end <= LOSS_FALLS * start:
        return Check("loss-falls", title, "pass", summary, measured=measured)
    return Check(
        "loss-falls",
        title,
        "fail",
        summary,
        "the encoder barely learned the pairs: a higher --lr, or more --epochs",
        measured,
    )
