"""Checks on the cached features, before any training: seconds, whatever the dataset size.

The recipe's "dumb baselines" and its check of the starting loss, measured where they cost
nothing: a head on frozen features is a logistic regression, so each baseline is a model fit
on a matrix that is already in memory.

- *Majority class*: what always answering the most frequent training class scores.
- *Linear model on the cached features*: the linear probe, scored on validation. It must beat
  the majority class by more than the noise of a validation set that size, or the labels do
  not follow the images (shuffled, misaligned) or the features do not see what separates them.
- *Input-independent baseline*: the same head trained on the features of an all-zero input, so
  it can learn the class frequencies and nothing else. Real inputs must reach a clearly lower
  validation loss.
- *Loss at initialisation*: a new head (bias at the log class priors, small weights) must start
  at the prior entropy, ln C for balanced classes. Far above it, the first steps are spent
  undoing confident random guesses.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from .core import Check

__all__ = ["feature_baselines", "initial_loss", "majority_baseline", "prior_entropy"]

#: The starting loss may sit this fraction of ln C away from the prior entropy: small random
#: weights add a little spread to the logits (measured: 0.01-0.03 of ln C on photos and digits).
INITIAL_LOSS_TOLERANCE = 0.1
#: Differences in accuracy or loss count when they exceed this many standard errors (about a
#: 2.5% one-sided chance that noise alone makes them).
SIGNIFICANT = 2.0
#: Real inputs must lower the validation loss of the input-independent baseline by at least
#: this fraction, whatever the noise says: a 2% gain on a big validation set is significant
#: but is not a head that has learnt from its inputs.
CLEARLY_LOWER = 0.1


def prior_entropy(class_counts: np.ndarray) -> float:
    """Cross-entropy of predicting the class frequencies: the loss of a head that knows them."""
    priors = class_counts[class_counts > 0] / class_counts.sum()
    return float(-(priors * np.log(priors)).sum())


def majority_baseline(train_y: np.ndarray, val_y: np.ndarray, classes: list[str]) -> Check:
    """What always answering the most frequent training class scores on validation."""
    majority = int(np.bincount(train_y, minlength=len(classes)).argmax())
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
    zero_input: np.ndarray,
    probe_head: torch.nn.Linear,
    new_head: torch.nn.Linear,
    classes: list[str],
) -> list[Check]:
    """The checks on cached features. ``train`` and ``val`` are ``(features, labels)``;
    ``zero_input`` is the backbone's feature vector for an all-zero input tensor;
    ``probe_head`` the trained linear probe; ``new_head`` a head as a fresh start would have it.
    """
    (train_x, train_y), (val_x, val_y) = train, val
    counts = np.bincount(train_y, minlength=len(classes))
    start = float(_cross_entropy(_logits(new_head, train_x), train_y).mean())
    majority = majority_baseline(train_y, val_y, classes)
    probe_logits = _logits(probe_head, val_x)
    probe_accuracy = float((probe_logits.argmax(1) == val_y).mean())
    return [
        initial_loss(start, counts, "a new head on the cached training features"),
        majority,
        _linear_baseline(probe_accuracy, majority.measured["val_accuracy"], len(val_y)),
        _input_independent(zero_input, train_y, val_y, probe_logits, len(classes)),
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


def _linear_baseline(accuracy: float, majority: float, n_val: int) -> Check:
    noise = math.sqrt(max(majority * (1 - majority), 1 / n_val) / n_val)
    margin = accuracy - majority
    measured = {"val_accuracy": accuracy, "majority_accuracy": majority, "noise": noise}
    summary = (
        f"a linear model on the cached features scores {accuracy:.1%} on validation, "
        f"{margin:+.1%} against the majority class (noise ±{noise:.1%})"
    )
    if margin > SIGNIFICANT * noise:
        return Check(
            "linear-baseline", "linear model on features", "pass", summary, measured=measured
        )
    return Check(
        "linear-baseline",
        "linear model on features",
        "fail",
        summary,
        "the labels do not follow the images: check how labels are paired with files (shuffled "
        "or shifted rows in a CSV, folders named wrong); if they are right, the pretrained "
        "features miss what separates the classes: try another backbone or fine-tune everything",
        measured,
    )


def _input_independent(
    zero_input: np.ndarray,
    train_y: np.ndarray,
    val_y: np.ndarray,
    probe_logits: np.ndarray,
    n_classes: int,
) -> Check:
    # Every training row is the same zero-input feature vector: one row per class, weighted by
    # its count, is the same objective at a fraction of the cost.
    present = np.unique(train_y)
    blind = LogisticRegression(max_iter=200).fit(
        np.repeat(zero_input[None], len(present), 0),
        present,
        sample_weight=np.bincount(train_y)[present],
    )
    blind_logits = np.full((len(val_y), n_classes), -1e4)
    blind_logits[:, present] = np.log(blind.predict_proba(zero_input[None]))
    blind_loss = _cross_entropy(blind_logits, val_y)
    real_loss = _cross_entropy(probe_logits, val_y)
    gain = blind_loss - real_loss
    noise = float(gain.std(ddof=1) / math.sqrt(len(gain))) if len(gain) > 1 else math.inf
    measured = {
        "zeroed_val_loss": float(blind_loss.mean()),
        "real_val_loss": float(real_loss.mean()),
        "noise": noise,
    }
    summary = (
        f"trained on zeroed inputs, the head reaches {blind_loss.mean():.3f} nats on "
        f"validation; on the real inputs {real_loss.mean():.3f}"
    )
    lower = gain.mean() > max(SIGNIFICANT * noise, CLEARLY_LOWER * blind_loss.mean())
    if lower:
        return Check(
            "input-independent", "zeroed-input baseline", "pass", summary, measured=measured
        )
    return Check(
        "input-independent",
        "zeroed-input baseline",
        "fail",
        summary,
        "the real images teach the model no more than the class frequencies: labels shuffled "
        "or paired with the wrong files, or images that carry no signal for these labels",
        measured,
    )


def _logits(head: torch.nn.Linear, features: np.ndarray) -> np.ndarray:
    weight = head.weight.detach().cpu().double().numpy()
    return np.asarray(features, dtype=np.float64) @ weight.T + head.bias.detach().cpu().numpy()


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy in nats (natural log), computed stably."""
    shifted = logits - logits.max(1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(1))
    return log_sum - shifted[np.arange(len(labels)), labels]
