"""What a fine-tuning will cost on this machine, measured before it starts.

A few real training steps (the planned settings, real images from the cache, a copy of the
network) give the seconds per step, and one validation batch the seconds per predicted image.
From them and the plan's step counts come the time of an epoch and of the whole fine-tuning:
the estimate the plan prints before training, and the only place a time budget
(``--time-budget``) becomes a number of epochs. Without a budget, nothing the plan decides
depends on these seconds: the same data and flags give the same plan on any machine.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..classifier import Classifier
from ..data.decoded import DecodedImages
from ..inputs import InputPipeline
from .callbacks import Callback, StopTraining, TrainingStep
from .distill import Teacher
from .finetune import Example, FineTuneSettings, autocast, fine_tune
from .objective import Objective

__all__ = ["Cost", "measure_cost"]

#: Training steps timed: the first is left out (the optimiser allocates its state then).
TIMED_STEPS = 4


@dataclass(frozen=True)
class Cost:
    """Seconds a planned fine-tuning takes here; ``steps_per_epoch`` and ``epochs`` are the
    plan's, the seconds were measured."""

    steps_per_epoch: int
    epochs: int
    step_seconds: float  # one optimisation step, data loading and augmentation included
    validation_seconds: float  # scoring the validation split once (every view)
    scoring_seconds: float  # scoring validation and test at the end

    @property
    def epoch_seconds(self) -> float:
        return self.steps_per_epoch * self.step_seconds + self.validation_seconds

    @property
    def seconds(self) -> float:
        return self.epochs * self.epoch_seconds + self.scoring_seconds

    def with_epochs(self, epochs: int) -> Cost:
        return Cost(
            self.steps_per_epoch,
            epochs,
            self.step_seconds,
            self.validation_seconds,
            self.scoring_seconds,
        )

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "epoch_seconds": self.epoch_seconds,
            "eta_seconds": self.seconds,
        }


def measure_cost(
    network: Classifier,
    train: Sequence[Example],
    held_out: tuple[int, int],
    images: DecodedImages,
    inputs: InputPipeline,
    settings: FineTuneSettings,
    seed: int = 0,
    teacher: Teacher | None = None,
    objective: Objective | None = None,
) -> Cost:
    """The cost of fine-tuning ``network`` with ``settings`` on ``train``, measured on a copy
    (``network`` is left as it was); ``held_out`` is the number of validation and test
    images, which are scored once an epoch (validation) and at the end (both). A
    distillation's steps are timed with the ``teacher``'s forward pass in them; a
    regression's with its ``objective``."""
    steps_per_epoch = max(1, len(train) // settings.batch_size)
    n_val, n_test = held_out
    timed = list(train[: TIMED_STEPS * settings.batch_size])
    per_image = _seconds_per_prediction(network, timed, images, inputs, settings)
    return Cost(
        steps_per_epoch=steps_per_epoch,
        epochs=settings.epochs,
        step_seconds=_seconds_per_step(
            network, timed, images, inputs, settings, seed, teacher, objective
        ),
        validation_seconds=n_val * per_image,
        scoring_seconds=(n_val + n_test) * per_image,
    )


def _seconds_per_step(
    network: Classifier,
    train: list[Example],
    images: DecodedImages,
    inputs: InputPipeline,
    settings: FineTuneSettings,
    seed: int,
    teacher: Teacher | None,
    objective: Objective | None,
) -> float:
    clock = _StepClock(TIMED_STEPS)
    with torch.random.fork_rng(devices=_cuda(network)):
        fine_tune(
            copy.deepcopy(network),
            train,
            [],
            images,
            inputs,
            settings,
            seed=seed,
            callbacks=[clock],
            teacher=teacher,
            objective=objective,
        )
    return clock.seconds_per_step()


@torch.inference_mode()
def _seconds_per_prediction(
    network: Classifier,
    examples: list[Example],
    images: DecodedImages,
    inputs: InputPipeline,
    settings: FineTuneSettings,
) -> float:
    batch = inputs.batch([images.get(path) for path, _ in examples[: settings.batch_size]])
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    try:
        with autocast(device, settings.precision):
            inputs.logits(network, batch[:2])  # warm-up: first calls allocate
            started = time.perf_counter()
            inputs.logits(network, batch)
            seconds = time.perf_counter() - started
    finally:
        network.train(was_training)
    return seconds / len(batch)


class _StepClock(Callback):
    """Times the steps after the first, then stops the training."""

    def __init__(self, steps: int):
        self.steps = steps
        self.times: list[float] = []

    def on_batch_end(self, step: TrainingStep) -> None:
        self.times.append(time.perf_counter())
        if step.step >= self.steps:
            raise StopTraining(f"timed {self.steps} steps")

    def seconds_per_step(self) -> float:
        gaps = np.diff(self.times)
        return float(np.median(gaps)) if len(gaps) else float("nan")


def _cuda(module: torch.nn.Module) -> list[torch.device]:
    device = next(module.parameters()).device
    return [device] if device.type == "cuda" else []
