"""A regression's part of the recipe (``headstart fit DATA --task regression``): from a table
of images and numbers to a model that predicts the number.

The recipe of classes, in its forms for a number::

    data -> features (cached) -> audit -> probe -> plan -> checks -> fine-tune -> choose -> save

The target is standardised on the training images (mean 0, spread 1) and restored by the
bundle. The ridge probe on the frozen features always runs (seconds); ``auto`` and
``fine-tune`` then train the network from the probe's head with a Huber (or squared-error)
loss, and ``auto`` keeps the fine-tuning only when it is closer to the validation numbers
than the probe beyond noise, image by image. Every choice is written with its reason.
"""

from __future__ import annotations

import copy
import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...checks.baselines import head_logits
from ...checks.core import CheckReport
from ...config import FitConfig
from ...data.decoded import DecodedImages
from ...errors import HeadstartError
from ...metrics import paired_errors, regression_metrics
from ...runfolder import PREDICTIONS_CSV, RunFolder
from ...stages.data import Prepared
from ...storage import write_atomically
from ...training.objective import Regression
from ..plan import TaskPlan
from ..training import (
    KEEP_FINE_TUNED,
    choose,
    features,
    fine_tuning_plan,
    mirror,
    network_with,
    run_fine_tuning,
    unused_settings_reason,
)
from ..trial import TRIAL_IMAGES, Trial
from .audit import TargetAudit, audit_targets
from .checks import new_regression_head, regression_checks, spread_over_range
from .data import TargetDataset, read_targets, require_learnable
from .model import Regressor, TargetScale, save_regressor
from .probe import RidgeProbe, fit_ridge_probe

__all__ = ["REGRESSION_SETTINGS", "Fitted", "RegressionTask"]

#: The settings a regression reads; any other given is refused (it would do nothing).
REGRESSION_SETTINGS = frozenset(
    {
        "task",
        "loss",
        "label_column",
        "arch",
        "weights",
        "in_chans",
        "input_size",
        "val_fraction",
        "test_fraction",
        "seed",
        "batch_size",
        "cache_dir",
        "device",
        "quiet",
        "strategy",
        "freeze",
        "unfreeze",
        "epochs",
        "lr",
        "layer_decay",
        "optimizer",
        "momentum",
        "schedule",
        "warmup",
        "train_size",
        "precision",
        "weight_decay",
        "head_l1",
        "dropout",
        "drop_path",
        "cutout",
        "ema",
        "clip_grad",
        "patience",
        "early_stopping",
        "augment",
        "policy",
        "no_augment",
        "vflip",
        "runs_dir",
        "name",
        "checks",
    }
)
#: A probe that explains this share of the variance out of sample leaves a fine-tuning too
#: little to show on validation: ``auto`` keeps the probe (``fine-tune`` trains anyway).
PROBE_IS_ENOUGH = 0.98


@dataclass
class Fitted:
    """A candidate model and its predictions (in the target's units) on every split."""

    model: Regressor
    strategy: str
    predictions: dict[str, np.ndarray]
    scores: dict[str, dict]

    def errors(self, split: str, dataset: TargetDataset) -> np.ndarray:
        return self.predictions[split] - dataset.targets(split)


class RegressionTask:
    """A number an image, for the recipe of :func:`headstart.tasks.recipe.fit_task`."""

    name = "regression"
    settings = REGRESSION_SETTINGS
    instead = (
        "it trains from pretrained weights on a number, with no classes to balance, mix or "
        "calibrate"
    )

    def read(self, data: str | Path, config: FitConfig) -> TargetDataset:
        return read_targets(
            data,
            column=config.label_column,
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
            seed=config.seed,
        )

    def require_learnable(self, dataset: TargetDataset) -> None:
        require_learnable(dataset)

    def split_rows(self, dataset: TargetDataset) -> list[tuple[Path, str, str]]:
        return [(s.path, repr(s.target), s.split) for s in dataset.samples]

    def audit(self, dataset: TargetDataset, images: DecodedImages) -> TargetAudit:
        return audit_targets(dataset, images)

    def probe(self, ready: Prepared, config: FitConfig) -> RidgeProbe:
        targets = _scale(ready.dataset).standardise(ready.dataset.targets("train"))
        return fit_ridge_probe(features(ready, "train"), targets)

    def plan(self, ready: Prepared, probe: RidgeProbe, config: FitConfig) -> TaskPlan:
        objective = Regression(config.loss if config.loss != "auto" else "huber")
        return _plan(ready, probe, objective, _scale(ready.dataset), config)

    def probed(self, ready: Prepared, probe: RidgeProbe, plan: TaskPlan) -> Fitted:
        return _probed(ready, probe, plan, _scale(ready.dataset))

    def checks(self, ready: Prepared, probe: RidgeProbe, plan: TaskPlan) -> CheckReport:
        return _checks(ready, probe, plan, Regression(plan.loss), _scale(ready.dataset))

    def fine_tuned(
        self, ready: Prepared, start: Regressor, plan: TaskPlan, run: RunFolder, config: FitConfig
    ) -> tuple[Fitted, dict]:
        objective, scale = Regression(plan.loss), _scale(ready.dataset)
        return _fine_tuned(ready, start, plan, objective, scale, run, config)

    def choose(
        self, probed: Fitted, tuned: Fitted | None, dataset: TargetDataset, config: FitConfig
    ) -> tuple[Fitted, str | None, dict | None]:
        return _choose(probed, tuned, dataset, config)

    def save(self, run: RunFolder, kept: Fitted, dataset: TargetDataset, ready: Prepared) -> None:
        _save(run, kept, dataset, ready)

    def clean_scores(self, kept: Fitted, audit: TargetAudit, dataset: TargetDataset) -> dict:
        return _clean_scores(kept, audit, dataset)

    def in_words(self, scores: dict) -> str:
        return _in_words(scores)

    def described(self, dataset: TargetDataset) -> dict:
        return {"target": dataset.column}


def _scale(dataset: TargetDataset) -> TargetScale:
    """The target's scale: its training values' mean and spread."""
    return TargetScale.of(dataset.column, dataset.targets("train"))


def _r2(targets: np.ndarray, predicted: np.ndarray) -> float:
    spread = float(((targets - targets.mean()) ** 2).sum())
    return 1 - float(((targets - predicted) ** 2).sum()) / spread if spread > 0 else float("nan")


def _plan(
    ready: Prepared,
    probe: RidgeProbe,
    objective: Regression,
    scale: TargetScale,
    config: FitConfig,
) -> TaskPlan:
    dataset = ready.dataset
    if config.strategy == "full":
        raise HeadstartError(
            "strategy='full' trains a network from random weights: a regression starts from "
            "pretrained ones (linear-probe, fine-tune or auto)"
        )
    val = scale.standardise(dataset.targets("val"))
    mirrored = mirror(ready, probe.head, lambda outputs: _r2(val, outputs[:, 0]), nothing=0.0)
    reasons = [
        f"{len(dataset.split('train'))} training images; target {dataset.column!r} "
        f"standardised by its training mean {scale.mean:.4g} and standard deviation "
        f"{scale.scale:.4g} (the model predicts in its units)",
        f"ridge probe on the cached features: penalty {probe.alpha:g} chosen by leave-one-out "
        f"error, which explains {probe.loo_r2:.1%} of the training variance (R² "
        f"{probe.loo_r2:.3f}) out of sample"
        + (" (the penalty is at the end of the range tried)" if probe.edge else ""),
        mirrored.reason("R²"),
    ]
    evidence = {"probe": probe.to_dict(), "mirror": vars(mirrored)}
    plan = TaskPlan(
        "regression", config.strategy, objective.loss_name, mirrored.same, None, reasons, evidence
    )
    if config.strategy == "linear-probe":
        reasons += [r for r in [unused_settings_reason(config, "ridge probe")] if r]
        reasons.append("strategy linear-probe, as asked: the network stays as it is")
        return plan
    if config.strategy == "auto" and probe.loo_r2 >= PROBE_IS_ENOUGH:
        reasons.append(
            f"the probe already explains {probe.loo_r2:.1%} of the variance: a fine-tuning "
            "would have too little left to show on validation; the probe is the model "
            "(--strategy fine-tune trains anyway)"
        )
        return plan
    loss = (
        f"Huber loss (squared within {objective.delta:g} standard deviation of the target, "
        "linear beyond: a few wrong numbers cannot dominate)"
        if objective.loss_name == "huber"
        else "squared error"
    )
    reasons.append(f"the network fine-tuned with {loss} on the standardised target")
    plan.fine_tune, cost = fine_tuning_plan(
        ready,
        config,
        plan.test_time_flip,
        reasons,
        head=probe.head,
        train=_examples(dataset, "train", scale),
        objective=objective,
        measure="R²",
    )
    evidence["cost"] = cost.to_dict()
    if config.strategy == "auto":
        reasons.append(
            "both the probe and the fine-tuning are scored on validation; the fine-tuning is "
            f"kept when closer to the numbers beyond noise (z ≥ {KEEP_FINE_TUNED:g}, image by "
            "image)"
        )
    return plan


def _examples(dataset: TargetDataset, split: str, scale: TargetScale) -> list[tuple[Path, float]]:
    samples = dataset.split(split)
    targets = scale.standardise([s.target for s in samples])
    return [(s.path, float(t)) for s, t in zip(samples, targets, strict=True)]


def _probed(ready: Prepared, probe: RidgeProbe, plan: TaskPlan, scale: TargetScale) -> Fitted:
    """The probe's model, scored from the cached features (both views averaged when the
    predictions average the photo and its mirror)."""
    model = Regressor(
        network_with(ready, probe.head),
        ready.preprocessing,
        scale,
        architecture=ready.architecture,
        test_time_flip=plan.test_time_flip,
        info={"strategy": "linear-probe"},
    )
    views = ("plain", "hflip") if plan.test_time_flip else ("plain",)
    predictions = {}
    for split in ("val", "test"):
        if ready.dataset.split(split):
            outputs = [head_logits(probe.head, features(ready, split, v))[:, 0] for v in views]
            predictions[split] = scale.restore(np.mean(outputs, axis=0))
    return _scored(model, "linear-probe", predictions, ready.dataset, scale)


def _scored(
    model: Regressor,
    strategy: str,
    predictions: dict[str, np.ndarray],
    dataset: TargetDataset,
    scale: TargetScale,
) -> Fitted:
    scores = {
        split: regression_metrics(dataset.targets(split), predicted, scale.mean)
        for split, predicted in predictions.items()
    }
    return Fitted(model, strategy, predictions, scores)


def _checks(
    ready: Prepared,
    probe: RidgeProbe,
    plan: TaskPlan,
    objective: Regression,
    scale: TargetScale,
) -> CheckReport:
    dataset = ready.dataset
    train = (features(ready, "train"), scale.standardise(dataset.targets("train")))
    val = (features(ready, "val"), scale.standardise(dataset.targets("val")))
    trial = None
    if plan.fine_tune is not None:
        picked = spread_over_range(dataset.split("train"), TRIAL_IMAGES)
        trial = Trial(
            network_with(ready, new_regression_head(probe.head.in_features)),
            list(
                zip(
                    [s.path for s in picked],
                    scale.standardise([s.target for s in picked]).tolist(),
                    strict=True,
                )
            ),
            ready.images,
            ready.inputs.with_flip(plan.test_time_flip),
            plan.fine_tune,
            head_logits(probe.head, ready.features.of([s.path for s in picked])),
        )
    return regression_checks(train, val, probe.head, objective, trial)


def _fine_tuned(
    ready: Prepared,
    start: Regressor,
    plan: TaskPlan,
    objective: Regression,
    scale: TargetScale,
    run: RunFolder,
    config: FitConfig,
) -> tuple[Fitted, dict]:
    """A copy of the probe's network trained on the standardised numbers; scored on the
    validation and test photos as the bundle predicts them."""
    dataset = ready.dataset
    model = copy.deepcopy(start)
    model.info = {"strategy": "fine-tune"}
    tuned = run_fine_tuning(
        model.network,
        _examples(dataset, "train", scale),
        _examples(dataset, "val", scale),
        ready,
        plan.fine_tune,
        plan.test_time_flip,
        objective,
        run,
        config,
    )
    predictions = {
        split: model.values([ready.images.get(s.path) for s in dataset.split(split)])
        for split in ("val", "test")
        if dataset.split(split)
    }
    return _scored(model, "fine-tune", predictions, dataset, scale), tuned.to_dict("r2")


def _choose(
    probe: Fitted, tuned: Fitted | None, dataset: TargetDataset, config: FitConfig
) -> tuple[Fitted, str | None, dict | None]:
    """The fine-tuning when closer to the validation numbers than the probe beyond noise
    (or when asked for by name), else the probe; the comparison said with its numbers."""
    if tuned is None:
        return probe, None, None
    evidence = paired_errors(tuned.errors("val", dataset), probe.errors("val", dataset))
    said = (
        f"fine-tune MAE {tuned.scores['val']['mae']:.4g} against the probe's "
        f"{probe.scores['val']['mae']:.4g} on {evidence['images']} validation images: closer on "
        f"{evidence['better']}, further on {evidence['worse']} (paired z = {evidence['z']:+.1f})"
    )
    keep, why = choose(evidence, said, asked=config.strategy == "fine-tune")
    return (tuned if keep else probe), why, evidence


def _save(run: RunFolder, kept: Fitted, dataset: TargetDataset, ready: Prepared) -> None:
    """The bundle (knowing its training images by content) and ``predictions.csv``: every
    held-out image, its number and the prediction, largest errors first within a split."""
    model = kept.model
    model.trained_on = frozenset(ready.images.key(s.path) for s in dataset.split("train"))
    model.info = {**model.info, "scores": kept.scores}
    save_regressor(model, run.bundle)
    rows = io.StringIO(newline="")
    writer = csv.writer(rows)
    writer.writerow(["split", "path", "target", "predicted", "error"])
    for split, predicted in kept.predictions.items():
        samples = dataset.split(split)
        errors = predicted - dataset.targets(split)
        for i in np.argsort(-np.abs(errors), kind="stable"):
            writer.writerow(
                [
                    split,
                    samples[i].path,
                    repr(samples[i].target),
                    f"{predicted[i]:.6g}",
                    f"{errors[i]:.6g}",
                ]
            )
    data = rows.getvalue().encode("utf-8", errors="surrogateescape")
    write_atomically(run / PREDICTIONS_CSV, data)


def _clean_scores(kept: Fitted, audit: TargetAudit, dataset: TargetDataset) -> dict:
    """Held-out scores without the copies of training images (when some are)."""
    if not audit.leaked:
        return {}
    clean = {}
    for split, predicted in kept.predictions.items():
        keep = np.array([s.path not in audit.leaked for s in dataset.split(split)])
        if keep.any() and not keep.all():
            targets = dataset.targets(split)
            clean[split] = regression_metrics(
                targets[keep], predicted[keep], kept.model.target.mean
            )
    return clean


def _in_words(scores: dict) -> str:
    baseline = scores["mean_baseline"]
    return (
        f"MAE {scores['mae']:.4g}, RMSE {scores['rmse']:.4g}, R² {scores['r2']:.3f} on "
        f"{scores['n']} images (predicting the training mean: MAE {baseline['mae']:.4g})"
    )
