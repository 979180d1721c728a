"""Checks on the cached features, before any training: seconds, whatever the dataset size.

The recipe's "dumb baselines" and its check of the starting loss, measured where they cost
nothing: a head on frozen features is a logistic regression, so each baseline is a model fit
on a matrix that is already in memory.

- *Majority class*: what always answering the most frequent training class scores.
- *Linear model on the cached features*: the linear probe, scored on validation. It must get
  more images right than the majority class, beyond noise (a paired test, image by image, so
  that a 93% probe against a 90% majority is judged by the images they disagree on), or the
  labels do not follow the images (shuffled, misaligned) or the features do not see what
  separates them.
- *Input-independent baseline*: the head trained on zeroed inputs. Every input is then the
  same vector, so the best such a head can do, and what training converges to, is the log class
  frequencies of the training set; real inputs must reach a lower validation loss, beyond noise
  (image by image). Validation images of a class absent from training are left out of both.
- *Loss at initialisation*: a new head (bias at the log class priors, small weights) must start
  at the prior entropy, ln C for balanced classes. Far above it, the first steps are spent
  undoing confident random guesses.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .core import Check

__all__ = [
    "MOST_ROWS",
    "beyond_noise",
    "feature_baselines",
    "head_logits",
    "initial_loss",
    "linear_baseline_check",
    "majority_baseline",
    "prior_entropy",
    "zeroed_input_check",
]

#: The starting loss may sit this fraction of ln C away from the prior entropy: small random
#: weights add a little spread to the logits (measured: 0.01-0.03 of ln C on photos and digits).
INITIAL_LOSS_TOLERANCE = 0.1
#: Differences in accuracy or loss count when they exceed this many standard errors (about a
#: 2.5% one-sided chance that noise alone makes them).
SIGNIFICANT = 2.0
#: Training rows scored for the starting loss: a sample bounds memory on large datasets.
MOST_ROWS = 10_000


_LINEAR = "linear-baseline"
_LINEAR_TITLE = "linear model on features"
_ZEROED = "input-independent"
_ZEROED_TITLE = "zeroed-input baseline"
_LINEAR_ADVICE = (
    "the labels do not follow the images: check how labels are paired with files (shuffled "
    "or shifted rows in a CSV, folders named wrong); if they are right, the pretrained "
    "features miss what separates the classes: try another backbone or fine-tune everything"
)


def prior_entropy(class_counts: np.ndarray) -> float:
    """Cross-entropy of predicting the class frequencies: the loss of a head that knows them."""
    priors = class_counts[class_counts > 0] / class_counts.sum()
    return float(-(priors * np.log(priors)).sum())


def majority_baseline(class_counts: np.ndarray, val_y: np.ndarray, classes: list[str]) -> Check:
    """What always answering the most frequent training class scores on validation."""
    majority = int(np.argmax(class_counts))
    accuracy = float((val_y == majority).mean())
    return Check(
        "majority-baseline",
        "majority-class baseline",
        "info",
        f"always answering {classes[majority]!r} scores {accuracy:.1%} on "
        f"{len(val_y)} validation images",
        measured={"val_accuracy": accuracy, "class": classes[majority]},
    )


def feature_baselines(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    class_counts: np.ndarray,
    probe_head: torch.nn.Linear,
    new_head: torch.nn.Linear,
    classes: list[str],
) -> list[Check]:
    """The checks on cached features. ``train`` and ``val`` are ``(features, labels)``,
    ``train`` possibly a sample of the training split (see :data:`MOST_ROWS`); ``class_counts``
    the training images per class; ``probe_head`` the trained linear probe; ``new_head`` a head
    as a fresh start would have it."""
    (train_x, train_y), (val_x, val_y) = train, val
    counts = np.asarray(class_counts)
    start = float(_cross_entropy(head_logits(new_head, train_x), train_y).mean())
    majority = majority_baseline(counts, val_y, classes)
    probe_logits = head_logits(probe_head, val_x)
    majority_class = int(counts.argmax())
    return [
        initial_loss(start, counts, "a new head on the cached training features"),
        majority,
        _linear_baseline(probe_logits.argmax(1) == val_y, val_y == majority_class),
        _input_independent(counts, val_y, probe_logits),
    ]


def initial_loss(loss: float, class_counts: np.ndarray, where: str) -> Check:
    """The loss of a freshly initialised head, measured ``where``, against the prior entropy."""
    n_classes = len(class_counts)
    expected = prior_entropy(np.asarray(class_counts, dtype=float))
    off = abs(loss - expected) / math.log(n_classes)
    measured = {"loss": loss, "expected": expected, "ln_C": math.log(n_classes)}
    summary = (
        f"{where} starts at {loss:.3f} nats; expected {expected:.3f} (the prior entropy; "
        f"ln {n_classes} = {math.log(n_classes):.3f})"
    )
    if off <= INITIAL_LOSS_TOLERANCE:
        return Check("initial-loss", "loss at initialisation", "pass", summary, measured=measured)
    return Check(
        "initial-loss",
        "loss at initialisation",
        "fail",
        summary,
        "initialise the last layer with small weights and its bias at the log class priors; "
        "a loss far above the prior entropy means confident random guesses (large weights, "
        "or features far larger than usual: are the inputs normalised?)",
        measured,
    )


def _linear_baseline(probe_right: np.ndarray, majority_right: np.ndarray) -> Check:
    """``*_right``: per validation image, whether each model got it right."""
    accuracy, majority = float(probe_right.mean()), float(majority_right.mean())
    return linear_baseline_check(
        probe_right.astype(float) - majority_right,
        1.0 - majority_right,
        summary=lambda noise: (
            f"a linear model on the cached features scores {accuracy:.1%} on validation, "
            f"{accuracy - majority:+.1%} against the majority class (noise ±{noise:.1%})"
        ),
        baseline="the majority class",
        measured={"val_accuracy": accuracy, "majority_accuracy": majority},
        advice=_LINEAR_ADVICE,
    )


def _input_independent(counts: np.ndarray, val_y: np.ndarray, probe_logits: np.ndarray) -> Check:
    seen = counts[val_y] > 0  # a class absent from training: both heads rule it out
    priors = counts / counts.sum()
    return zeroed_input_check(
        -np.log(priors[val_y[seen]]),
        _cross_entropy(probe_logits[seen], val_y[seen]),
        lambda blind, real, noise: (
            f"trained on zeroed inputs, the head reaches {blind:.3f} nats on validation; on "
            f"the real inputs {real:.3f} (noise ±{noise:.3f})"
        ),
        "the real images teach the model no more than the class frequencies: labels shuffled "
        "or paired with the wrong files, or images that carry no signal for these labels",
    )


def linear_baseline_check(
    gain: np.ndarray,
    perfect_gain: np.ndarray,
    *,
    summary: Callable[[float], str],
    baseline: str,
    measured: dict,
    advice: str,
) -> Check:
    """The linear model on the cached features against a dumb ``baseline``, image by image:
    passes when its ``gain`` (one an image) is positive beyond noise; is skipped when not even
    a perfect model's gain (``perfect_gain``) would be, as validation holds too few images to
    tell; fails otherwise. ``summary`` says the numbers, given the noise."""
    better, noise = beyond_noise(gain)
    measured = {**measured, "noise": noise}
    said = summary(noise)
    if better:
        return Check(_LINEAR, _LINEAR_TITLE, "pass", said, measured=measured)
    if not beyond_noise(perfect_gain)[0]:
        return Check(
            _LINEAR,
            _LINEAR_TITLE,
            "skip",
            f"{said}: {len(gain)} validation images cannot tell them apart (not even a perfect "
            f"model would beat {baseline} beyond noise)",
            "hold out more images for validation (--val-fraction) to check this",
            measured,
        )
    return Check(_LINEAR, _LINEAR_TITLE, "fail", said, advice, measured)


def zeroed_input_check(
    blind: np.ndarray,
    real: np.ndarray,
    summary: Callable[[float, float, float], str],
    advice: str,
    keys: tuple[str, str] = ("zeroed_val_loss", "real_val_loss"),
) -> Check:
    """The input-independent baseline: a head trained on zeroed inputs loses ``blind`` on
    each validation image, the model on the real inputs ``real``; passes when the real
    inputs lose less beyond noise. ``summary`` says both means and the noise; ``keys`` name
    the means in the measurements."""
    better, noise = beyond_noise(blind - real)
    measured = {keys[0]: float(blind.mean()), keys[1]: float(real.mean()), "noise": noise}
    said = summary(float(blind.mean()), float(real.mean()), noise)
    status = "pass" if better else "fail"
    return Check(_ZEROED, _ZEROED_TITLE, status, said, "" if better else advice, measured)


def beyond_noise(gain: np.ndarray) -> tuple[bool, float]:
    """Whether per-image gains are positive beyond noise (:data:`SIGNIFICANT` standard
    errors), and their standard error."""
    noise = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else math.inf
    return bool(gain.mean() > max(SIGNIFICANT * noise, 0)), noise


def head_logits(head: torch.nn.Linear, features: np.ndarray) -> np.ndarray:
    """A head's logits on cached features, computed on the CPU in float32."""
    weight = head.weight.detach().cpu().float().numpy()
    return features.astype(np.float32, copy=False) @ weight.T + head.bias.detach().cpu().numpy()


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy in nats (natural log), computed stably."""
    shifted = logits - logits.max(1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(1))
    return log_sum - shifted[np.arange(len(labels)), labels]
