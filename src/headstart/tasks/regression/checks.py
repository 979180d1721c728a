"""The sanity checks of a regression: the recipe's checks, in their forms for a number.

On the cached features, before anything trains (seconds):

- *Loss at initialisation*: a new head (bias 0: the training mean, in standardised units;
  small weights) must start at the loss of predicting the mean, which for squared error is
  the target's variance (1, standardised). Far above it, the first steps are spent undoing
  large random outputs.
- *Mean baseline*: what predicting the training mean for every image scores on validation.
- *Linear model on the cached features*: the ridge probe must be closer to the validation
  targets than the mean is, beyond noise (image by image), or the numbers do not follow the
  images (rows misaligned in the table) or the features do not see what they measure.
- *Input-independent baseline*: trained on zeroed inputs, a head can only learn the training
  mean; the real inputs must reach a lower squared error on validation, beyond noise.

When the plan fine-tunes, the training trial of the classifier's checks
(:func:`headstart.checks.trial.training_trial`), with the regression's objective: inputs
normalised, the loop's batch agreeing with the cache, one batch overfitted (R² ≥ 0.9 on it)
and every trained parameter group updated.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ...checks.baselines import head_logits, linear_baseline_check, zeroed_input_check
from ...checks.core import Check, CheckReport
from ...training.objective import Regression
from ..trial import Trial, trial_checks
from .data import Measured

__all__ = ["new_regression_head", "regression_checks", "spread_over_range"]

#: The starting loss may sit this fraction away from the loss of predicting the mean.
INITIAL_LOSS_TOLERANCE = 0.1


def new_regression_head(width: int) -> torch.nn.Linear:
    """A new last layer that starts at the training mean (0, standardised), its weights small:
    the loss starts at the target's variance."""
    head = torch.nn.Linear(width, 1)
    with torch.no_grad():
        head.weight.mul_(0.1)
        head.bias.zero_()
    return head


def regression_checks(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    probe_head: torch.nn.Linear,
    objective: Regression,
    trial: Trial | None = None,
) -> CheckReport:
    """The checks of a regression. ``train`` and ``val`` are ``(features, standardised
    targets)``; ``probe_head`` the ridge probe; ``trial`` None when the plan trains no
    network."""
    started = time.perf_counter()
    report = CheckReport()
    (train_x, train_z), (val_x, val_z) = train, val
    start = head_logits(new_regression_head(train_x.shape[1]), train_x)
    report.extend(
        [
            initial_loss(start, train_z, objective),
            *_baselines(val_z, head_logits(probe_head, val_x)[:, 0]),
        ]
    )
    report.extend(trial_checks(trial, probe_head, objective))
    report.seconds = time.perf_counter() - started
    return report


def initial_loss(outputs: np.ndarray, targets: np.ndarray, objective: Regression) -> Check:
    """The loss of a new head's ``outputs`` against predicting the mean (0, standardised)."""
    as_tensor = torch.from_numpy(np.asarray(targets, dtype=np.float32))
    loss = float(objective.loss(torch.from_numpy(outputs.astype(np.float32)), as_tensor))
    expected = float(objective.loss(torch.zeros(len(targets), 1), as_tensor))
    measured = {"loss": loss, "expected": expected}
    summary = (
        f"a new head on the cached training features starts at {objective.loss_name} loss "
        f"{loss:.3f}; predicting the training mean gives {expected:.3f}"
    )
    if abs(loss - expected) <= INITIAL_LOSS_TOLERANCE * expected:
        return Check("initial-loss", "loss at initialisation", "pass", summary, measured=measured)
    return Check(
        "initial-loss",
        "loss at initialisation",
        "fail",
        summary,
        "start the last layer at the training mean with small weights; far above, its outputs "
        "are large random numbers (large weights, or features far larger than usual: are the "
        "inputs normalised?)",
        measured,
    )


def _baselines(val_z: np.ndarray, probe_z: np.ndarray) -> list[Check]:
    """In standardised units: the mean predicts 0 for every image."""
    mean_error, probe_error = np.abs(val_z), np.abs(val_z - probe_z)
    mean_mae = float(mean_error.mean())
    mean = Check(
        "mean-baseline",
        "mean baseline",
        "info",
        f"predicting the training mean for every image is off by {mean_mae:.3f} standard "
        f"deviations on average on {len(val_z)} validation images",
        measured={"val_mae_sd": mean_mae},
    )
    return [mean, _linear_baseline(probe_error, mean_error), _input_independent(val_z, probe_z)]


def _linear_baseline(probe_error: np.ndarray, mean_error: np.ndarray) -> Check:
    probe_mae, mean_mae = float(probe_error.mean()), float(mean_error.mean())
    return linear_baseline_check(
        mean_error - probe_error,
        mean_error,
        summary=lambda noise: (
            f"a ridge model on the cached features is off by {probe_mae:.3f} standard "
            f"deviations on validation, the training mean by {mean_mae:.3f} (noise ±{noise:.3f})"
        ),
        baseline="the training mean",
        measured={"val_mae_sd": probe_mae, "mean_mae_sd": mean_mae},
        advice=(
            "the numbers do not follow the images: check how the table pairs numbers with files "
            "(shifted or shuffled rows); if they are right, the pretrained features miss what the "
            "number measures: try another backbone or fine-tune everything"
        ),
    )


def _input_independent(val_z: np.ndarray, probe_z: np.ndarray) -> Check:
    return zeroed_input_check(
        val_z**2,
        (val_z - probe_z) ** 2,
        lambda blind, real, noise: (
            f"trained on zeroed inputs, a head can only learn the training mean: squared error "
            f"{blind:.3f} (in variances) on validation; on the real inputs {real:.3f} (noise "
            f"±{noise:.3f})"
        ),
        "the images teach the model no more than the training mean: numbers paired with the "
        "wrong files, or images that carry no signal for this number",
        ("zeroed_val_mse_sd", "real_val_mse_sd"),
    )


def spread_over_range(samples: list[Measured], k: int) -> list[Measured]:
    """``k`` samples at evenly spaced ranks of the target, lowest to highest: a batch that
    spans the range, as the classes' trial batch spans the classes."""
    ranked = sorted(samples, key=lambda s: (s.target, str(s.path)))
    if len(ranked) <= k:
        return ranked
    return [ranked[round(i)] for i in np.linspace(0, len(ranked) - 1, k)]
