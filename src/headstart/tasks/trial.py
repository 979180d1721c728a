"""The training trial of a task other than one class an image: the classifier's trial
(:func:`headstart.checks.trial.training_trial`) run with the task's objective, or skipped,
saying why, when the plan trains no network."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..checks.core import Check
from ..checks.trial import training_trial
from ..classifier import Classifier
from ..data.decoded import DecodedImages
from ..inputs import InputPipeline
from ..training.finetune import FineTuneSettings
from ..training.objective import Objective

__all__ = ["TRIAL_IMAGES", "Trial", "trial_checks"]

#: Images in the trial's batch, as for classes: "overfit one small batch" of 5 to 10.
TRIAL_IMAGES = 10


class Trial(NamedTuple):
    """What the training trial needs: the backbone with a new head (as the classifier's trial
    starts it), its batch of (image, target in the network's units), the decoded-image cache,
    the inputs, the planned settings, and the probe's outputs for the batch from the cache."""

    network: Classifier
    examples: list[tuple[Path, object]]
    images: DecodedImages
    inputs: InputPipeline
    settings: FineTuneSettings
    cached: np.ndarray


def trial_checks(
    trial: Trial | None, probe_head: torch.nn.Linear, objective: Objective
) -> list[Check]:
    """The trial's checks, or its skip when the plan trains no network (``trial`` None)."""
    if trial is None:
        return [
            Check(
                "training-trial",
                "training trial",
                "skip",
                "the plan trains only the probe's head, on cached features: no network is "
                "trained, so no training step is checked",
                "fit with --strategy fine-tune to train the network (the checks then try it first)",
            )
        ]
    return training_trial(
        trial.network,
        trial.examples,
        trial.images,
        trial.inputs,
        trial.settings,
        probe_head=probe_head,
        cached_predictions=trial.cached,
        objective=objective,
    )
