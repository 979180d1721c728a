"""The sanity checks of several labels an image: the recipe's checks, in their forms for
labels that are each present or not.

On the cached features, before anything trains (seconds):

- *Loss at initialisation*: a new head (each bias at its label's log-odds in the training
  images, small weights) must start at the labels' own entropy, the binary cross-entropy of
  knowing only how often each label occurs.
- *Frequency baseline*: what knowing only those frequencies scores on validation (mAP: each
  label's share of the images).
- *Linear model on the cached features*: the probe must rank each validation image's labels
  better than the frequencies do, beyond noise, image by image (the binary cross-entropy of
  each image's row), or the labels do not follow the images.
- *Input-independent baseline*: trained on zeroed inputs, a head can only learn the
  frequencies; the real inputs must reach a lower loss on validation, beyond noise. (For
  labels this is the loss form of the linear baseline's question; both are said.)

When the plan fine-tunes, the training trial with the multi-label objective
(:func:`headstart.checks.trial.training_trial`).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ...checks.baselines import head_logits, linear_baseline_check, zeroed_input_check
from ...checks.core import Check, CheckReport
from ...metrics import frequency_map
from ...training.objective import MultiLabel, mean_ap
from ..trial import Trial, trial_checks
from .data import LabelledImage
from .probe import prior_logits

__all__ = ["label_checks", "new_label_head", "spread_over_labels"]

#: The starting loss may sit this fraction away from the labels' own entropy.
INITIAL_LOSS_TOLERANCE = 0.1


def new_label_head(width: int, targets: np.ndarray) -> torch.nn.Linear:
    """A new last layer whose biases start at the labels' log-odds and whose weights are
    small: the loss starts at the labels' own entropy."""
    head = torch.nn.Linear(width, targets.shape[1])
    with torch.no_grad():
        head.weight.mul_(0.1)
        head.bias.copy_(torch.from_numpy(prior_logits(targets)))
    return head


def label_checks(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    probe_head: torch.nn.Linear,
    trial: Trial | None = None,
) -> CheckReport:
    """The checks of several labels an image. ``train`` and ``val`` are ``(features, 0/1
    rows)``; ``probe_head`` the probe; ``trial`` None when the plan trains no network."""
    started = time.perf_counter()
    objective = MultiLabel()
    report = CheckReport()
    (train_x, train_y), (val_x, val_y) = train, val
    start = head_logits(new_label_head(train_x.shape[1], train_y), train_x)
    priors = np.broadcast_to(prior_logits(train_y), val_y.shape)
    probe = head_logits(probe_head, val_x)
    report.extend(
        [
            _initial_loss(start, train_y),
            _frequency_baseline(val_y),
            _linear_baseline(val_y, probe, priors),
            _input_independent(val_y, probe, priors),
        ]
    )
    report.extend(trial_checks(trial, probe_head, objective))
    report.seconds = time.perf_counter() - started
    return report


def _row_loss(targets: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Each row's binary cross-entropy, summed over its labels (in nats)."""
    logits = np.asarray(logits, dtype=np.float64)
    return (np.logaddexp(0, logits) - targets * logits).sum(1)


def _initial_loss(start: np.ndarray, targets: np.ndarray) -> Check:
    loss = float(_row_loss(targets, start).mean() / targets.shape[1])
    share = np.clip(targets.mean(0), 1e-12, 1 - 1e-12)
    expected = float(-(share * np.log(share) + (1 - share) * np.log(1 - share)).mean())
    measured = {"loss": loss, "expected": expected}
    summary = (
        f"a new head on the cached training features starts at {loss:.3f} nats a label; the "
        f"labels' own entropy (knowing only how often each occurs) is {expected:.3f}"
    )
    if abs(loss - expected) <= INITIAL_LOSS_TOLERANCE * max(expected, 1e-3):
        return Check("initial-loss", "loss at initialisation", "pass", summary, measured=measured)
    return Check(
        "initial-loss",
        "loss at initialisation",
        "fail",
        summary,
        "initialise the last layer with small weights and each bias at its label's log-odds; "
        "far above, the outputs are confident random guesses (large weights, or features far "
        "larger than usual: are the inputs normalised?)",
        measured,
    )


def _frequency_baseline(val_y: np.ndarray) -> Check:
    score = frequency_map(val_y)
    return Check(
        "frequency-baseline",
        "frequency baseline",
        "info",
        f"knowing only how often each label occurs scores mAP {score:.3f} on "
        f"{len(val_y)} validation images (each label's share of them)",
        measured={"val_map": score},
    )


def _linear_baseline(val_y: np.ndarray, probe: np.ndarray, priors: np.ndarray) -> Check:
    """Image by image, how many of its labels the probe decides right (at probability 0.5)
    against knowing only the frequencies (yes to every label on most images)."""
    truth = val_y > 0.5
    probe_right = ((probe > 0) == truth).sum(1)
    frequency_right = ((priors > 0) == truth).sum(1)
    probe_map = mean_ap(val_y, probe)
    labels = val_y.shape[1]
    return linear_baseline_check(
        (probe_right - frequency_right).astype(float),
        (labels - frequency_right).astype(float),
        summary=lambda noise: (
            f"a linear model on the cached features scores mAP {probe_map:.3f} on validation, "
            f"and decides {probe_right.mean():.2f} of an image's {labels} labels right against "
            f"{frequency_right.mean():.2f} for the frequencies (noise ±{noise:.2f})"
        ),
        baseline="the frequencies",
        measured={
            "val_map": probe_map,
            "right_per_image": float(probe_right.mean()),
            "frequency_right_per_image": float(frequency_right.mean()),
        },
        advice=(
            "the labels do not follow the images: check how the table pairs labels with files "
            "(shifted rows, a wrong separator); if they are right, the pretrained features miss "
            "what the labels name: try another backbone or fine-tune everything"
        ),
    )


def _input_independent(val_y: np.ndarray, probe: np.ndarray, priors: np.ndarray) -> Check:
    return zeroed_input_check(
        _row_loss(val_y, priors),
        _row_loss(val_y, probe),
        lambda blind, real, noise: (
            f"trained on zeroed inputs, a head can only learn the labels' frequencies: "
            f"{blind:.3f} nats an image on validation; on the real inputs {real:.3f} (noise "
            f"±{noise:.3f})"
        ),
        "the images teach the model no more than the labels' frequencies: labels paired with "
        "the wrong files, or images that carry no signal for these labels",
    )


def spread_over_labels(samples: list[LabelledImage], k: int, seed: int = 0) -> list[LabelledImage]:
    """``k`` samples taken in turn for each label (and one without any, when there are some),
    in random order within each, so that every label is in the trial's batch when ``k``
    allows."""
    rng = np.random.default_rng(seed)
    order = [samples[i] for i in rng.permutation(len(samples))]
    groups = [*sorted({label for s in samples for label in s.labels}), None]
    picked: list[LabelledImage] = []
    while len(picked) < min(k, len(samples)):
        before = len(picked)
        for group in groups:
            found = next(
                (
                    s
                    for s in order
                    if s not in picked and (group in s.labels if group else not s.labels)
                ),
                None,
            )
            if found is not None and len(picked) < k:
                picked.append(found)
        if len(picked) == before:
            break
    return picked
