"""The sanity checks of one dataset and plan, in the order the recipe runs them."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from ..classifier import Classifier, new_head
from ..data.decoded import DecodedImages
from ..data.sources import Dataset
from ..features import ExtractedFeatures
from ..inputs import InputPipeline
from ..training.callbacks import Callback, StopTraining, TrainingStep
from ..training.finetune import FineTuneSettings, NothingToTrain, fine_tune
from ..training.probe import ProbeResult
from .baselines import MOST_ROWS, feature_baselines, head_logits, majority_baseline
from .core import Check, CheckReport
from .early_loss import EarlyLoss
from .fixed_batch import spread_over_classes
from .trial import training_trial

__all__ = ["TRIAL_IMAGES", "sanity_checks"]

#: Images in the trial's batch: "overfit one small batch" of 5 to 10 examples.
TRIAL_IMAGES = 10


def sanity_checks(
    dataset: Dataset,
    backbone: torch.nn.Module,
    inputs: InputPipeline,
    images: DecodedImages,
    *,
    features: ExtractedFeatures | None,
    probe: ProbeResult | None,
    settings: FineTuneSettings | None,
    watch_steps: int = 0,
    seed: int = 0,
) -> CheckReport:
    """Every check that applies to training ``backbone`` on ``dataset``. ``settings`` is the
    planned fine-tuning, or None when the plan trains no network (the trial is then skipped,
    and says so). Nothing passed in is modified.

    Whether the loss falls at the planned learning rate is read from the real training's first
    steps (:class:`.EarlyLoss`, which ``fit`` attaches to its fine-tuning); ``watch_steps > 0``
    runs that many steps of the planned fine-tuning here instead, on a copy, for a check
    without a fit."""
    started = time.perf_counter()
    classes = list(dataset.classes)
    index = {name: i for i, name in enumerate(classes)}
    train, val = dataset.split("train"), dataset.split("val")
    train_y = np.array([index[s.label] for s in train])
    val_y = np.array([index[s.label] for s in val])
    counts = np.bincount(train_y, minlength=len(classes))
    width = backbone.num_features
    report = CheckReport()

    if features is not None and probe is not None:
        plain = features.views["plain"]
        # A sample of the training rows: a copy of all of them can be gigabytes.
        sample = np.random.default_rng(seed).permutation(len(train))[:MOST_ROWS]
        train_x = plain[features.rows([train[i].path for i in sample])]
        val_x = plain[features.rows([s.path for s in val])]
        report.extend(
            feature_baselines(
                (train_x, train_y[sample]),
                (val_x, val_y),
                counts,
                probe.head,
                new_head(width, counts),
                classes,
            )
        )
    else:
        report.extend([majority_baseline(counts, val_y, classes)])
        reason = "no pretrained features (training from random initialisation)"
        report.extend(
            Check(name, title, "skip", reason, "nothing to compare with until the network trains")
            for name, title in (
                ("linear-baseline", "linear model on features"),
                ("input-independent", "zeroed-input baseline"),
            )
        )

    if settings is None:
        report.extend(
            [
                Check(
                    "training-trial",
                    "training trial",
                    "skip",
                    "the plan trains only the new last layer, on cached features: no network "
                    "is trained, so no training step is checked",
                    "run `headstart check DATA` to try the fine-tuning path",
                )
            ]
        )
    else:
        picked = spread_over_classes(train, TRIAL_IMAGES, seed)
        examples = [(s.path, index[s.label]) for s in picked]
        cached = None
        if features is not None and probe is not None:
            rows = features.rows([s.path for s in picked])
            cached = head_logits(probe.head, features.views["plain"][rows]).argmax(1)
        device = next(backbone.parameters()).device
        start = Classifier(backbone, new_head(width, counts), inputs.preprocessing).to(device)
        report.extend(
            training_trial(
                start,
                examples,
                images,
                inputs,
                settings,
                probe_head=probe.head if probe is not None else None,
                cached_predictions=cached,
                class_counts=counts if features is None else None,
            )
        )
        if watch_steps:
            start_head = probe.head if probe is not None else new_head(width, counts)
            first = _first_steps(
                start, start_head, dataset, images, inputs, settings, watch_steps, seed
            )
            report.extend([first])
    report.seconds = time.perf_counter() - started
    return report


def _first_steps(
    network: Classifier,
    head: torch.nn.Linear,
    dataset: Dataset,
    images: DecodedImages,
    inputs: InputPipeline,
    settings: FineTuneSettings,
    steps: int,
    seed: int,
) -> Check:
    """The first ``steps`` of the planned fine-tuning, watched as ``fit`` watches them."""
    index = {name: i for i, name in enumerate(dataset.classes)}
    examples = {
        split: [(s.path, index[s.label]) for s in dataset.split(split)]
        for split in ("train", "val")
    }
    trained = copy.deepcopy(network)
    trained.head = copy.deepcopy(head).to(next(trained.parameters()).device)
    watch = EarlyLoss(len(index), settings.lr, window=steps)
    try:
        fine_tune(
            trained,
            examples["train"],
            examples["val"],
            images,
            inputs,
            settings,
            seed=seed,
            callbacks=[watch, _StopAfter(steps)],
        )
    except NothingToTrain as error:
        return Check(
            "loss-falls",
            "training loss falls",
            "fail",
            str(error),
            "make the head and the stages the plan trains trainable",
            {"steps": 0},
        )
    return watch.check()


class _StopAfter(Callback):
    def __init__(self, steps: int):
        self.steps = steps

    def on_batch_end(self, step: TrainingStep) -> None:
        if step.step >= self.steps:
            raise StopTraining(f"watched {self.steps} steps")
