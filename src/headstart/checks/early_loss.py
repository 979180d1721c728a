"""The training loss in the first iterations of the real training: does it fall?

"See the training loss go down" (and find a learning rate at which it falls within about 100
iterations) is the recipe's check of the learning rate, and it can only be made at the learning
rate and schedule that train: so it watches the real run's first steps, at no extra cost, and
stops a run whose loss explodes instead of letting it train for an hour on a wrecked network.

The loss is smoothed (an exponential moving average, as the learning-rate finder does) because
single batches of a few dozen images are noisy. Diverging: the smoothed loss climbs more than
twice the loss of guessing (2 ln C) above where the run began. Falls: over the window, the last
quarter's mean is not above the first quarter's by more than a tenth of ln C or, on noisy
batches, by more than twice the standard error of the difference (a run that starts from a
trained head may start near its floor and hold there).
"""

from __future__ import annotations

import math

import numpy as np

from ..training.callbacks import Callback, StopTraining, TrainingStep
from .core import Check

__all__ = ["EarlyLoss"]

#: Iterations watched: "the loss falls within ~100 iterations".
WINDOW = 100
#: Smoothing of the watched loss, and the steps before the divergence rule applies (the first
#: averages are a single batch or two).
SMOOTHING, SETTLE = 0.8, 3
#: Diverging: the smoothed loss is this many times ln C above the first step's loss.
DIVERGED = 2.0
#: Falls (or holds): the last quarter ends at most this fraction of ln C above the first.
HOLDS = 0.1


class EarlyLoss(Callback):
    """A callback of :func:`~headstart.training.finetune.fine_tune` that watches the first
    steps; :meth:`check` gives the verdict."""

    def __init__(self, n_classes: int, lr: float, window: int = WINDOW):
        self.scale = math.log(max(n_classes, 2))
        self.lr = lr
        self.window = window
        self.losses: list[float] = []
        self.stopped: str | None = None
        self._average = 0.0

    def on_batch_end(self, step: TrainingStep) -> None:
        if len(self.losses) >= self.window:
            return
        loss = step.loss
        self.losses.append(loss)
        n = len(self.losses)
        self._average = SMOOTHING * self._average + (1 - SMOOTHING) * loss
        smoothed = self._average / (1 - SMOOTHING**n)
        if n >= SETTLE and smoothed > self.losses[0] + DIVERGED * self.scale:
            self.stopped = (
                f"diverged: the training loss rose from {self.losses[0]:.3g} to "
                f"{smoothed:.3g} nats (smoothed) in the first {n} steps at learning rate "
                f"{self.lr:g}"
            )
            raise StopTraining(self.stopped)

    def check(self, stopped: str = "finished") -> Check:
        """The verdict; ``stopped`` is how the training ended (a run stopped for a NaN loss
        stops before this callback sees the step)."""
        if self.stopped is None and stopped.startswith("diverged"):
            self.stopped = stopped
        n = len(self.losses)
        measured: dict = {"steps": n, "lr": self.lr}
        if self.stopped:
            return Check(
                "loss-falls",
                "training loss falls",
                "fail",
                self.stopped,
                "the learning rate is too high: lower it 10x, or run `headstart lr-find`",
                measured,
            )
        if n < 4:
            return Check(
                "loss-falls",
                "training loss falls",
                "skip",
                f"only {n} training steps",
                "too few steps to see a trend",
                measured,
            )
        quarter = max(2, n // 4)
        head, tail = np.array(self.losses[:quarter]), np.array(self.losses[-quarter:])
        first, last = head.mean(), tail.mean()
        noise = float(np.sqrt((head.var(ddof=1) + tail.var(ddof=1)) / quarter))
        measured.update(first_quarter=float(first), last_quarter=float(last), noise=noise)
        summary = (
            f"over the first {n} training steps at learning rate {self.lr:g} (top stage), the "
            f"mean loss went from {first:.3f} (first {quarter}) to {last:.3f} nats (last {quarter})"
        )
        if last <= first + max(HOLDS * self.scale, 2 * noise):
            return Check("loss-falls", "training loss falls", "pass", summary, measured=measured)
        return Check(
            "loss-falls",
            "training loss falls",
            "fail",
            summary,
            "the loss rose: the learning rate is too high (lower it 3-10x, or run "
            "`headstart lr-find`), or the data changes from batch to batch (label noise)",
            measured,
        )
