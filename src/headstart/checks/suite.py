"""The sanity checks of one dataset and plan, in the order the recipe runs them."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import torch

from ..classifier import Classifier, new_head
from ..console import progress_bar
from ..data.decoded import DecodedImages
from ..data.sources import Dataset
from ..features import ExtractedFeatures
from ..inputs import InputPipeline
from ..training.callbacks import Callback, OnBatch, StopTraining, TrainingStep
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
    progress: bool = False,
) -> CheckReport:
    """Every check that applies to training ``backbone`` on ``dataset``. ``settings`` is the
    planned fine-tuning, or None when the plan trains no network (the trial is then skipped,
    and says so). Nothing passed in is modified.

    Whether the loss falls at the planned learning rate is read from the real training's first
    steps (:class:`.EarlyLoss`, which ``fit`` attaches to its fine-tuning); ``watch_steps > 0``
    runs that many steps of the planned fine-tuning here instead, on a copy, for a check
    without a fit.

    ``progress`` shows a bar on stderr over the baselines, the trial and each watched step:
    on a CPU, the trial and the watched steps take from seconds to minutes."""
    started = time.perf_counter()
    report = CheckReport()
    units = 1 if settings is None else 2 + watch_steps  # the baselines, the trial, each step
    with progress_bar("checks", units, quiet=not progress) as advance:
        report.extend(_baselines(dataset, backbone, features, probe, seed))
        advance(1)
        if settings is None:
            report.extend([_NO_TRIAL])
        else:
            start = _new_network(dataset, backbone, inputs)
            report.extend(_trial(start, dataset, inputs, images, features, probe, settings, seed))
            advance(1)
            if watch_steps:
                head = probe.head if probe is not None else _new_head(dataset, backbone)
                first = _first_steps(
                    start, head, dataset, images, inputs, settings, watch_steps, seed, advance
                )
                report.extend([first])
    report.seconds = time.perf_counter() - started
    return report


def _class_indices(dataset: Dataset, split: str) -> np.ndarray:
    index = {name: i for i, name in enumerate(dataset.classes)}
    return np.array([index[s.label] for s in dataset.split(split)], dtype=int)


def _train_counts(dataset: Dataset) -> np.ndarray:
    return np.bincount(_class_indices(dataset, "train"), minlength=len(dataset.classes))


def _baselines(
    dataset: Dataset,
    backbone: torch.nn.Module,
    features: ExtractedFeatures | None,
    probe: ProbeResult | None,
    seed: int,
) -> list[Check]:
    """What a model must beat: the majority class, and (with features) a linear model and a
    head trained on zeroed inputs."""
    classes = list(dataset.classes)
    train, val = dataset.split("train"), dataset.split("val")
    train_y, val_y = _class_indices(dataset, "train"), _class_indices(dataset, "val")
    counts = _train_counts(dataset)
    if features is None or probe is None:
        reason = "no pretrained features (training from random initialisation)"
        return [majority_baseline(counts, val_y, classes)] + [
            Check(name, title, "skip", reason, "nothing to compare with until the network trains")
            for name, title in (
                ("linear-baseline", "linear model on features"),
                ("input-independent", "zeroed-input baseline"),
            )
        ]
    # A sample of the training rows: a copy of all of them can be gigabytes.
    sample = np.random.default_rng(seed).permutation(len(train))[:MOST_ROWS]
    train_x = features.of([train[i].path for i in sample])
    val_x = features.of([s.path for s in val])
    return feature_baselines(
        (train_x, train_y[sample]),
        (val_x, val_y),
        counts,
        probe.head,
        _new_head(dataset, backbone),
        classes,
    )


#: The trial's place in a report when the plan trains no network.
_NO_TRIAL = Check(
    "training-trial",
    "training trial",
    "skip",
    "the plan trains only the new last layer, on cached features: no network "
    "is trained, so no training step is checked",
    "run `headstart check DATA` to try the fine-tuning path",
)


def _trial(
    network: Classifier,
    dataset: Dataset,
    inputs: InputPipeline,
    images: DecodedImages,
    features: ExtractedFeatures | None,
    probe: ProbeResult | None,
    settings: FineTuneSettings,
    seed: int,
) -> list[Check]:
    """A few steps of the planned fine-tuning on one small batch (:func:`.training_trial`)."""
    index = {name: i for i, name in enumerate(dataset.classes)}
    picked = spread_over_classes(dataset.split("train"), TRIAL_IMAGES, seed)
    examples = [(s.path, index[s.label]) for s in picked]
    cached = None
    if features is not None and probe is not None:
        cached = head_logits(probe.head, features.of([s.path for s in picked]))
    return training_trial(
        network,
        examples,
        images,
        inputs,
        settings,
        probe_head=probe.head if probe is not None else None,
        cached_predictions=cached,
        class_counts=_train_counts(dataset) if features is None else None,
    )


def _new_head(dataset: Dataset, backbone: torch.nn.Module) -> torch.nn.Linear:
    return new_head(backbone.num_features, _train_counts(dataset))


def _new_network(dataset: Dataset, backbone: torch.nn.Module, inputs: InputPipeline) -> Classifier:
    """``backbone`` with a new head, as the fine-tuning starts (the backbone is shared)."""
    device = next(backbone.parameters()).device
    return Classifier(backbone, _new_head(dataset, backbone), inputs.preprocessing).to(device)


def _first_steps(
    network: Classifier,
    head: torch.nn.Linear,
    dataset: Dataset,
    images: DecodedImages,
    inputs: InputPipeline,
    settings: FineTuneSettings,
    steps: int,
    seed: int,
    advance: Callable[[int], None],
) -> Check:
    """The first ``steps`` of the planned fine-tuning, watched as ``fit`` watches them;
    ``advance(1)`` after each."""
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
            callbacks=[watch, OnBatch(lambda step: advance(1)), _StopAfter(steps)],
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
