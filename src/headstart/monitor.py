"""Live monitoring: TensorBoard event files in the run folder, as the tutorials users know do.

``tensorboard --logdir runs`` then shows every run side by side: the training loss and each
parameter group's learning rate at every step, validation loss and accuracy at every epoch, the
linear probe's cross-validated result, and, once, the exact batch that entered the network
(after augmentation and normalisation, de-normalised back to pixels) to check by eye that the
images, crops and flips are what they should be.

Epoch scalars are written at the step that ends the epoch, so per-step and per-epoch curves
share one x axis (optimisation steps), as in PyTorch's own TensorBoard tutorial.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch.utils.hooks import RemovableHandle
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid

from .classifier import Classifier
from .training.callbacks import Callback, FineTuneResult, Training, TrainingStep

__all__ = ["TrainingBoard"]


class TrainingBoard(Callback):
    """The event files of one run, in ``folder`` (a run's ``tensorboard/``); as a callback of
    the fine-tuning, its steps, epochs and first batch."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.writer = SummaryWriter(str(self.folder))
        self.step = 0  # the last optimisation step seen
        self._hook: RemovableHandle | None = None

    def probe(self, record: Mapping) -> None:
        """The linear probe's cross-validated result (before any optimisation step: step 0)."""
        self.writer.add_scalar("probe/cv_accuracy", record["cv_accuracy"], 0)
        self.writer.add_scalar("probe/cv_mirrored_accuracy", record["cv_mirrored_accuracy"], 0)
        self.writer.add_scalar("probe/C", record["C"], 0)
        if record["C"] in record.get("cv_log_loss", {}):
            self.writer.add_scalar("probe/cv_log_loss", record["cv_log_loss"][record["C"]], 0)
        self.writer.flush()

    def watch_inputs(self, model: Classifier) -> None:
        """Write the first training batch as the backbone receives it, as an image grid.

        Caught by a hook on the backbone's input rather than rebuilt from the data, so the
        picture is the tensor the network really saw: any mistake between a file on disk and the
        network (a wrong crop, a lost flip, inputs not normalised) shows in it.
        """
        scale, mean = model.normalize.scale.detach().cpu(), model.normalize.mean.detach().cpu()

        def show(module: torch.nn.Module, args: tuple) -> None:
            if not module.training:  # evaluation batches are not augmented: not this one
                return
            batch = args[0].detach().float().cpu()
            pixels = ((batch * scale + mean) / 255).clamp(0, 1)  # undo Normalize
            grid = make_grid(pixels, nrow=8, padding=2, pad_value=1.0)
            self.writer.add_image("inputs/first training batch", grid, self.step + 1)
            self.writer.flush()
            self.unwatch()

        self.unwatch()
        self._hook = model.backbone.register_forward_pre_hook(show)

    def unwatch(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def batch(self, step: TrainingStep) -> None:
        """One optimisation step: its training loss and every parameter group's learning rate."""
        self.step = step.step
        self.writer.add_scalar("loss/train", step.loss, step.step)
        for group, lr in step.lrs.items():
            self.writer.add_scalar(f"lr/{group.replace(' ', '_')}", lr, step.step)

    def epoch(self, record: Mapping) -> None:
        """One epoch's record of ``fine_tune``: validation loss, and the task's score
        (accuracy, R², mAP) on validation and training."""
        self.writer.add_scalar("loss/val", record["val_loss"], self.step)
        for key, value in record.items():
            split, _, score = key.partition("_")
            if split in ("val", "train") and score != "loss" and value is not None:
                self.writer.add_scalar(f"{score}/{split}", value, self.step)
        self.writer.flush()  # a live view: each epoch is on disk as soon as it ends

    def on_train_begin(self, training: Training) -> None:
        self.watch_inputs(training.model)

    def on_batch_end(self, step: TrainingStep) -> None:
        self.batch(step)

    def on_epoch_end(self, record: dict, training: Training) -> None:
        self.epoch(record)

    def on_train_end(self, result: FineTuneResult) -> None:
        self.unwatch()

    def close(self) -> None:
        self.unwatch()
        self.writer.close()

    def __enter__(self) -> TrainingBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
