"""The training loop's named events, and the callbacks that ride on them.

The loop (:func:`~headstart.training.finetune.fine_tune`) only trains; everything around the
training (progress bars, checkpoints, the metrics log, TensorBoard, the sanity checks that
watch the first steps and the fixed batch) is a :class:`Callback` that overrides the events it
needs, as in fastai and PyTorch Lightning::

    on_train_begin(training)          once, before the first step (also when resuming)
    on_batch_end(step)                after every optimisation step
    on_improved(epoch, state)         when an epoch scores best on validation so far
    on_epoch_end(record, training)    after every epoch is scored
    on_train_end(result)              once, however training ended

Callbacks run in the order given, in every process under torchrun (those that write files
check :func:`~headstart.training.distributed.is_main`). Any event but the last may raise
:class:`StopTraining` to end the run; the best model so far is kept. The resumable state and
an epoch's ``on_epoch_end`` calls happen together or not at all: Ctrl-C during them takes
effect once they are done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from ..console import ProgressBar
from ..runfolder import PROGRESS, RunFolder
from ..storage import write_tensors
from . import distributed

__all__ = [
    "Callback",
    "Checkpoints",
    "FineTuneResult",
    "MetricsLog",
    "OnBatch",
    "Progress",
    "StopTraining",
    "Training",
    "TrainingStep",
]


class StopTraining(Exception):
    """Raised by a callback to end training now; the message says why (``stopped``)."""


@dataclass(frozen=True)
class TrainingStep:
    """One optimisation step, as the callbacks see it."""

    step: int  # counted from 1 over the whole run
    epoch: int
    loss: float  # the batch's training loss (label-smoothed, as optimised)
    lrs: dict[str, float]  # parameter group ("head", "stage 6", ...) -> learning rate used


@dataclass
class FineTuneResult:
    """How a fine-tuning went: its best epoch and every epoch's record."""

    best_epoch: int
    best_accuracy: float  # the best validation score: accuracy, or the task's own (R², mAP)
    history: list[dict] = field(default_factory=list)
    # "finished" | "early stopping" | "interrupted" | "diverged: <why>" | "stopped: <why>"
    stopped: str = "finished"


class Training(Protocol):
    """What callbacks may read of a running fine-tuning
    (:class:`headstart.training.finetune.Training` is the one the loop runs)."""

    model: torch.nn.Module  # the network being trained
    settings: object  # its FineTuneSettings
    steps_per_epoch: int
    step: int  # optimisation steps taken so far
    epoch: int  # epochs finished so far (more than 0 when resumed)
    result: FineTuneResult  # the epochs' records so far

    def evaluated(self) -> torch.nn.Module:
        """The network validation scores: the weight average, when there is one."""

    def save(self, path: Path) -> None:
        """Everything a resumed run needs, written whole to ``path``."""


class Callback:
    """A hook into the training loop; override the events you need (each does nothing here)."""

    def on_train_begin(self, training: Training) -> None:
        pass

    def on_batch_end(self, step: TrainingStep) -> None:
        pass

    def on_improved(self, epoch: int, state: dict[str, torch.Tensor]) -> None:
        pass

    def on_epoch_end(self, record: dict, training: Training) -> None:
        pass

    def on_train_end(self, result: FineTuneResult) -> None:
        pass


class Checkpoints(Callback):
    """The best weights (safetensors) whenever they improve, and the resumable state after
    every epoch; written by the main process, each file whole or not at all."""

    def __init__(self, best: Path | None = None, state: Path | None = None):
        self.best, self.state = best, state

    def on_improved(self, epoch: int, state: dict[str, torch.Tensor]) -> None:
        if self.best is not None and distributed.is_main():
            write_tensors({k: v.cpu().contiguous() for k, v in state.items()}, self.best)

    def on_epoch_end(self, record: dict, training: Training) -> None:
        if self.state is not None and distributed.is_main():
            training.save(self.state)


class MetricsLog(Callback):
    """Each epoch's record in the run's ``metrics.jsonl`` (with the stage that trained), and how
    far training got in ``progress.json``."""

    def __init__(self, run: RunFolder, stage: str):
        self.run, self.stage = run, stage
        self.planned = 0

    def on_train_begin(self, training: Training) -> None:
        """A resumed run's epochs, as its saved state has them: a kill between the state and
        the log line may have left one epoch out, or one the state does not have."""
        self.planned = training.settings.epochs  # recorded: a run trained longer plans more
        if training.epoch == 0:
            return
        # Less a stage-end line of a run killed after its training ended: written again.
        others = [
            r
            for r in self.run.metrics
            if "epoch" not in r and not ("stopped" in r and r.get("stage") == self.stage)
        ]
        epochs = [{"stage": self.stage, **r} for r in training.result.history]
        self.run.rewrite_metrics(others + epochs)

    def on_epoch_end(self, record: dict, training: Training) -> None:
        self.run.log_metrics({"stage": self.stage, **record})
        progress = {"epoch": record["epoch"], "finished": False, "planned": self.planned}
        self.run.write_json(PROGRESS, progress)

    def on_train_end(self, result: FineTuneResult) -> None:
        self.run.log_metrics(
            {"stage": self.stage, "stopped": result.stopped, "best_epoch": result.best_epoch}
        )
        done = result.history[-1]["epoch"] if result.history else 0
        finished = result.stopped != "interrupted" and not result.stopped.startswith("stopped")
        progress = {"epoch": done, "finished": finished, "stopped": result.stopped}
        self.run.write_json(PROGRESS, {**progress, "planned": self.planned})


class Progress(Callback):
    """A progress bar over the planned steps, with its ETA."""

    def __init__(self, description: str, *, quiet: bool = False):
        self.description, self.quiet = description, quiet
        self.bar: ProgressBar | None = None

    def on_train_begin(self, training: Training) -> None:
        total = training.steps_per_epoch * training.settings.epochs
        self.bar = ProgressBar(self.description, total, quiet=self.quiet)
        self.bar.advance(training.step)  # a resumed run starts part of the way

    def on_batch_end(self, step: TrainingStep) -> None:
        if self.bar is not None:
            self.bar.advance(1)

    def on_train_end(self, result: FineTuneResult) -> None:
        if self.bar is not None:
            self.bar.close()


class OnBatch(Callback):
    """A function called with every :class:`TrainingStep`: the shortest way to watch steps."""

    def __init__(self, function: Callable[[TrainingStep], None]):
        self.function = function

    def on_batch_end(self, step: TrainingStep) -> None:
        self.function(step)
