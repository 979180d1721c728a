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

from pathlib import Path

import numpy as np

from ...checks.baselines import head_logits
from ...checks.core import CheckReport
from ...config import FitConfig
from ...data.decoded import DecodedImages
from ...metrics import regression_metrics
from ...runfolder import RunFolder
from ...stages.data import Prepared
from ...training.objective import Regression
from ..candidate import (
    Candidate,
    bundled_model,
    choose_candidate,
    held_out,
    probe_outputs,
    without_copies,
    write_predictions,
)
from ..plan import TaskPlan
from ..training import (
    features,
    fine_tuned_copy,
    mirror,
    network_with,
    plan_training,
    refuse_full,
)
from ..trial import TRIAL_IMAGES, Trial
from .audit import TargetAudit, audit_targets
from .checks import new_regression_head, regression_checks, spread_over_range
from .data import TargetDataset, read_targets, require_learnable
from .model import Regressor, TargetScale, save_regressor
from .probe import RidgeProbe, fit_ridge_probe

__all__ = ["REGRESSION_SETTINGS", "RegressionTask"]

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


class RegressionTask:
    """A number an image, for the recipe of :func:`headstart.tasks.recipe.fit_task`. Its
    candidates' outputs are the numbers predicted, in the target's units."""

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
        refuse_full(config, "regression")
        dataset, scale = ready.dataset, _scale(ready.dataset)
        objective = Regression(config.loss if config.loss != "auto" else "huber")
        val = scale.standardise(dataset.targets("val"))
        mirrored = mirror(ready, probe.head, lambda outputs: _r2(val, outputs[:, 0]), nothing=0.0)
        reasons = [
            f"{len(dataset.split('train'))} training images; target {dataset.column!r} "
            f"standardised by its training mean {scale.mean:.4g} and standard deviation "
            f"{scale.scale:.4g} (the model predicts in its units)",
            f"ridge probe on the cached features: penalty {probe.alpha:g} chosen by "
            f"leave-one-out error, which explains {probe.loo_r2:.1%} of the training variance "
            f"(R² {probe.loo_r2:.3f}) out of sample"
            + (" (the penalty is at the end of the range tried)" if probe.edge else ""),
            mirrored.reason("R²"),
        ]
        evidence = {"probe": probe.to_dict(), "mirror": vars(mirrored)}
        plan = TaskPlan(
            "regression",
            config.strategy,
            objective.loss_name,
            mirrored.same,
            None,
            reasons,
            evidence,
        )
        loss = (
            f"Huber loss (squared within {objective.delta:g} standard deviation of the target, "
            "linear beyond: a few wrong numbers cannot dominate)"
            if objective.loss_name == "huber"
            else "squared error"
        )
        return plan_training(
            plan,
            ready,
            config,
            probe_name="ridge probe",
            probe_suffices=(
                f"the probe already explains {probe.loo_r2:.1%} of the variance"
                if probe.loo_r2 >= PROBE_IS_ENOUGH
                else None
            ),
            loss_reason=f"the network fine-tuned with {loss} on the standardised target",
            train=lambda: _examples(dataset.split("train"), scale),
            head=probe.head,
            objective=objective,
            measure="R²",
            kept_when="closer to the numbers",
        )

    def probed(self, ready: Prepared, probe: RidgeProbe, plan: TaskPlan) -> Candidate:
        """The probe's model, scored from the cached features."""
        scale = _scale(ready.dataset)
        model = Regressor(
            network_with(ready, probe.head),
            ready.preprocessing,
            scale,
            architecture=ready.architecture,
            test_time_flip=plan.test_time_flip,
            info={"strategy": "linear-probe"},
        )
        logits = probe_outputs(ready, probe.head, plan.test_time_flip)
        predictions = {split: scale.restore(out[:, 0]) for split, out in logits.items()}
        return _scored(model, "linear-probe", predictions, ready.dataset)

    def checks(self, ready: Prepared, probe: RidgeProbe, plan: TaskPlan) -> CheckReport:
        """The sanity checks in their forms for a number, on the standardised target."""
        dataset, scale = ready.dataset, _scale(ready.dataset)
        train = (features(ready, "train"), scale.standardise(dataset.targets("train")))
        val = (features(ready, "val"), scale.standardise(dataset.targets("val")))
        trial = None
        if plan.fine_tune is not None:
            picked = spread_over_range(dataset.split("train"), TRIAL_IMAGES)
            trial = Trial(
                network_with(ready, new_regression_head(probe.head.in_features)),
                _examples(picked, scale),
                ready.images,
                ready.inputs.with_flip(plan.test_time_flip),
                plan.fine_tune,
                head_logits(probe.head, ready.features.of([s.path for s in picked])),
            )
        return regression_checks(train, val, probe.head, Regression(plan.loss), trial)

    def fine_tuned(
        self, ready: Prepared, start: Regressor, plan: TaskPlan, run: RunFolder, config: FitConfig
    ) -> tuple[Candidate, dict]:
        """A copy of the probe's network trained on the standardised numbers; scored on the
        held-out photos as the bundle predicts them."""
        dataset, scale = ready.dataset, _scale(ready.dataset)
        train, val = (_examples(dataset.split(split), scale) for split in ("train", "val"))
        objective = Regression(plan.loss)
        model, tuned = fine_tuned_copy(start, train, val, ready, plan, objective, run, config)
        predictions = held_out(
            dataset, lambda samples: model.values([ready.images.get(s.path) for s in samples])
        )
        return _scored(model, "fine-tune", predictions, dataset), tuned.to_dict("r2")

    def choose(
        self, probed: Candidate, tuned: Candidate | None, dataset: TargetDataset, config: FitConfig
    ) -> tuple[Candidate, str | None, dict | None]:
        """The fine-tuning when closer to the validation numbers than the probe beyond noise
        (or when asked for by name), else the probe."""

        def said(tuned: Candidate, probe: Candidate, evidence: dict) -> str:
            return (
                f"fine-tune MAE {tuned.scores['val']['mae']:.4g} against the probe's "
                f"{probe.scores['val']['mae']:.4g} on {evidence['images']} validation images: "
                f"closer on {evidence['better']}, further on {evidence['worse']} (paired z = "
                f"{evidence['z']:+.1f})"
            )

        def errors(candidate: Candidate) -> np.ndarray:
            return candidate.outputs["val"] - dataset.targets("val")

        return choose_candidate(probed, tuned, errors, said, config)

    def save(
        self, run: RunFolder, kept: Candidate, dataset: TargetDataset, ready: Prepared
    ) -> None:
        """The bundle and ``predictions.csv``: every held-out image, its number and the
        prediction, largest errors first within a split."""
        save_regressor(bundled_model(kept, dataset, ready), run.bundle)
        rows = []
        for split, predicted in kept.outputs.items():
            samples = dataset.split(split)
            errors = predicted - dataset.targets(split)
            rows += [
                [
                    split,
                    samples[i].path,
                    repr(samples[i].target),
                    f"{predicted[i]:.6g}",
                    f"{errors[i]:.6g}",
                ]
                for i in np.argsort(-np.abs(errors), kind="stable")
            ]
        write_predictions(run, ["split", "path", "target", "predicted", "error"], rows)

    def clean_scores(self, kept: Candidate, audit: TargetAudit, dataset: TargetDataset) -> dict:
        """Held-out scores without the copies of training images (when some are)."""
        mean = kept.model.target.mean
        return without_copies(
            kept, audit.leaked, dataset, lambda y, out: regression_metrics(y, out, mean)
        )

    def in_words(self, scores: dict) -> str:
        baseline = scores["mean_baseline"]
        return (
            f"MAE {scores['mae']:.4g}, RMSE {scores['rmse']:.4g}, R² {scores['r2']:.3f} on "
            f"{scores['n']} images (predicting the training mean: MAE {baseline['mae']:.4g})"
        )

    def described(self, dataset: TargetDataset) -> dict:
        return {"target": dataset.column}


def _scale(dataset: TargetDataset) -> TargetScale:
    """The target's scale: its training values' mean and spread."""
    return TargetScale.of(dataset.column, dataset.targets("train"))


def _r2(targets: np.ndarray, predicted: np.ndarray) -> float:
    spread = float(((targets - targets.mean()) ** 2).sum())
    return 1 - float(((targets - predicted) ** 2).sum()) / spread if spread > 0 else float("nan")


def _examples(samples: list, scale: TargetScale) -> list[tuple[Path, float]]:
    """Each sample's image and standardised number, as the fine-tuning reads them."""
    targets = scale.standardise([s.target for s in samples])
    return [(s.path, float(t)) for s, t in zip(samples, targets, strict=True)]


def _scored(
    model: Regressor, strategy: str, predictions: dict[str, np.ndarray], dataset: TargetDataset
) -> Candidate:
    scores = {
        split: regression_metrics(dataset.targets(split), predicted, model.target.mean)
        for split, predicted in predictions.items()
    }
    return Candidate(model, strategy, predictions, scores)
