"""What a network's outputs are trained towards, and how a split is scored by them.

The fine-tuning loop (:mod:`.finetune`) is the same for every task; the objective says what
its outputs mean: a class among several (cross-entropy, accuracy), one number (Huber or
squared error on the standardised target, R²), or several labels at once (binary
cross-entropy on each, mean average precision). A score is higher-is-better, and its name is
the suffix of the epoch records' keys (``val_accuracy``, ``val_r2``, ``val_map``).

A split is scored batch by batch through a :class:`Tally`: running sums where the score allows
them (accuracy, R²), so that scoring holds no more than a batch in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..config import LOSSES
from ..errors import HeadstartError

__all__ = [
    "REGRESSION_LOSSES",
    "Classification",
    "MultiLabel",
    "Objective",
    "Regression",
    "Tally",
    "mean_ap",
]

#: The losses of a number ("auto": Huber).
REGRESSION_LOSSES = tuple(name for name in LOSSES if name != "auto")


class Tally(Protocol):
    def add(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """One batch's outputs and targets."""
        ...

    def result(self) -> tuple[float, float]:
        """The mean loss and the score of every batch added."""
        ...


class Objective(Protocol):
    score: str  # the name of the score: "accuracy", "r2", "map"
    memorised: float  # the score of a network that has memorised a batch
    agreeing: str  # what two agreeing outputs predict: "the same class"

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean training loss of a batch, as optimised."""
        ...

    def tally(self) -> Tally:
        """An empty tally of a split's plain loss and score."""
        ...

    def agree(self, outputs: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """Per row, whether two sets of outputs predict the same."""
        ...

    def words(self, score: float) -> str:
        """A score in words: "97% accuracy", "R² 0.93"."""
        ...


def measure(
    objective: Objective, outputs: torch.Tensor, targets: torch.Tensor
) -> tuple[float, float]:
    """The mean plain loss and the score of ``outputs`` against ``targets``, in one go."""
    tally = objective.tally()
    tally.add(outputs, targets)
    return tally.result()


@dataclass(frozen=True)
class Classification:
    """One class an image: cross-entropy (class-weighted and label-smoothed as asked) on the
    logits; accuracy over the labelled images (label -1: unlabelled, a teacher's to label)."""

    weight: torch.Tensor | None = None
    label_smoothing: float = 0.0
    score: str = "accuracy"
    memorised: float = 1.0
    agreeing: str = "the same class"

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(
            outputs.float(), targets, weight=self.weight, label_smoothing=self.label_smoothing
        )

    def tally(self) -> _ClassTally:
        return _ClassTally()

    def agree(self, outputs: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(1) == others.argmax(1)

    def words(self, score: float) -> str:
        return f"{score:.0%} accuracy"


@dataclass
class _ClassTally:
    """Plain cross-entropy and accuracy, over the labelled images."""

    loss: float = 0.0
    right: int = 0
    counted: int = 0

    def add(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        known = targets >= 0
        outputs, targets = outputs[known].float(), targets[known]
        self.loss += float(nn.functional.cross_entropy(outputs, targets, reduction="sum"))
        self.right += int((outputs.argmax(1) == targets).sum())
        self.counted += len(targets)

    def result(self) -> tuple[float, float]:
        if not self.counted:
            return float("nan"), 0.0
        return self.loss / self.counted, self.right / self.counted


@dataclass(frozen=True)
class Regression:
    """One number an image, standardised (the training targets' mean 0 and spread 1, so one
    learning rate and one Huber threshold fit an age in years and a price in dollars): the
    network's single output against it, by Huber loss (squared near the target, linear beyond
    ``delta`` standard deviations: a few wrong targets cannot dominate) or squared error.
    Scored by R², the share of the split's variance explained."""

    loss_name: str = "huber"
    delta: float = 1.0
    score: str = "r2"
    #: A batch is memorised when its numbers are this well explained (the residuals' spread
    #: under a third of the targets').
    memorised: float = 0.9
    #: Two predictions agree within this many of the target's standard deviations.
    tolerance: float = 0.1
    agreeing: str = "the same number (within 0.1 standard deviations)"

    def __post_init__(self) -> None:
        if self.loss_name not in REGRESSION_LOSSES:
            raise HeadstartError(
                f"loss={self.loss_name!r}; expected one of {', '.join(REGRESSION_LOSSES)}"
            )

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        predicted, targets = outputs[:, 0].float(), targets.float()
        if self.loss_name == "mse":
            return nn.functional.mse_loss(predicted, targets)
        return nn.functional.huber_loss(predicted, targets, delta=self.delta)

    def tally(self) -> _NumberTally:
        return _NumberTally(self)

    def agree(self, outputs: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        return (outputs[:, 0] - others[:, 0]).abs() <= self.tolerance

    def words(self, score: float) -> str:
        return f"R² {score:.2f}"


@dataclass
class _NumberTally:
    """The objective's own loss (Huber or squared error: the curves compare like with like)
    and R² from running sums: the squared errors, and the targets' sum and sum of squares."""

    objective: Regression
    loss: float = 0.0
    squared: float = 0.0
    total: float = 0.0
    total_squares: float = 0.0
    n: int = 0

    def add(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        targets = targets.double()
        self.loss += float(self.objective.loss(outputs, targets)) * len(targets)
        self.squared += float(((outputs[:, 0].double() - targets) ** 2).sum())
        self.total += float(targets.sum())
        self.total_squares += float((targets**2).sum())
        self.n += len(targets)

    def result(self) -> tuple[float, float]:
        if not self.n:
            return float("nan"), float("nan")
        spread = self.total_squares - self.total**2 / self.n
        # One target value in the split: R² is undefined, and the score is minus the mean
        # squared error, still higher-is-better, so that the best epoch is still chosen.
        r2 = 1 - self.squared / spread if spread > 1e-12 else -self.squared / self.n
        return self.loss / self.n, r2


@dataclass(frozen=True)
class MultiLabel:
    """Several labels an image, each present or not: a logit per label, binary cross-entropy
    on each (targets are 0/1 rows). Scored by the mean over labels of their average precision
    (mAP: how well each label's scores rank its images first), which needs no threshold."""

    score: str = "map"
    memorised: float = 0.95
    agreeing: str = "the same labels"

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(outputs.float(), targets.float())

    def tally(self) -> _LabelTally:
        return _LabelTally(self)

    def agree(self, outputs: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        return ((outputs > 0) == (others > 0)).all(1)

    def words(self, score: float) -> str:
        return f"mAP {score:.2f}"


@dataclass
class _LabelTally:
    """Binary cross-entropy, and mAP over the whole split (a ranking: the scores are kept,
    a row of a few labels an image)."""

    objective: MultiLabel
    outputs: list[np.ndarray] = field(default_factory=list)
    targets: list[np.ndarray] = field(default_factory=list)
    loss: float = 0.0
    n: int = 0

    def add(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.loss += float(self.objective.loss(outputs, targets)) * len(targets)
        self.n += len(targets)
        self.outputs.append(outputs.detach().float().cpu().numpy())
        self.targets.append(targets.detach().float().cpu().numpy())

    def result(self) -> tuple[float, float]:
        if not self.n:
            return float("nan"), float("nan")
        loss = self.loss / self.n
        score = mean_ap(np.concatenate(self.targets), np.concatenate(self.outputs))
        # No label with images both with and without it: mAP is undefined, and the score is
        # minus the loss, still higher-is-better, so that the best epoch is still chosen.
        return loss, score if np.isfinite(score) else -loss


def mean_ap(targets: np.ndarray, scores: np.ndarray) -> float:
    """The mean over labels of their average precision, over the labels with at least one
    image and one without (for the others, AP says nothing); NaN when none has both."""
    from sklearn.metrics import average_precision_score

    targets = np.asarray(targets) > 0.5
    both = targets.any(0) & ~targets.all(0)
    if not both.any():
        return float("nan")
    return float(average_precision_score(targets[:, both], scores[:, both], average="macro"))
