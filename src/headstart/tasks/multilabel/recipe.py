"""A multi-label fit's part of the recipe (``headstart fit DATA --task multi-label``): from a
table of images and their labels (any number each) to a model that says which labels each
new image has.

The recipe of classes, in its forms for labels that are each present or not::

    data -> features (cached) -> audit -> probe -> plan -> checks -> fine-tune -> choose
         -> thresholds -> save

A logistic probe per label on the frozen features always runs (seconds); ``auto`` and
``fine-tune`` then train the network from the probe's head with binary cross-entropy, and
``auto`` keeps the fine-tuning only when its validation loss is lower than the probe's
beyond noise, image by image. The kept model's thresholds (one a label) are chosen on
validation, each for its label's best F1.
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
from ...metrics import frequency_map, label_metrics, paired_errors
from ...runfolder import PREDICTIONS_CSV, RunFolder
from ...stages.data import Prepared
from ...storage import write_atomically
from ...training.objective import MultiLabel, mean_ap
from ..plan import TaskPlan
from ..regression.recipe import REGRESSION_SETTINGS
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
from .audit import LabelAudit, audit_label_sets
from .checks import label_checks, new_label_head, spread_over_labels
from .data import JOIN, LabelSets, read_label_sets, require_learnable
from .model import MultiLabelModel, save_multilabel
from .probe import FOLDS, LabelProbe, fit_label_probe
from .thresholds import choose_thresholds

__all__ = ["LABEL_SETTINGS", "Fitted", "MultiLabelTask"]

#: The settings a multi-label fit reads: a regression's, its loss aside, and the separator.
LABEL_SETTINGS = (REGRESSION_SETTINGS - {"loss"}) | {"label_separator"}
#: A probe this good out of fold (mAP) leaves a fine-tuning too little to show on validation.
PROBE_IS_ENOUGH = 0.98


@dataclass
class Fitted:
    """A candidate model, its probabilities on every held-out split, its thresholds (chosen
    on validation) and its scores."""

    model: MultiLabelModel
    strategy: str
    probabilities: dict[str, np.ndarray]
    scores: dict[str, dict]

    def losses(self, split: str, dataset: LabelSets) -> np.ndarray:
        """Each image's binary cross-entropy, summed over the labels."""
        p = np.clip(self.probabilities[split], 1e-7, 1 - 1e-7)
        y = dataset.targets(split)
        return -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(1)


class MultiLabelTask:
    """Several labels an image, for the recipe of :func:`headstart.tasks.recipe.fit_task`."""

    name = "multi-label"
    settings = LABEL_SETTINGS
    instead = (
        "it trains from pretrained weights on labels that are each present or not, with no "
        "single class to balance, mix or calibrate"
    )

    def read(self, data: str | Path, config: FitConfig) -> LabelSets:
        return read_label_sets(
            data,
            column=config.label_column,
            separator=config.label_separator,
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
            seed=config.seed,
        )

    def require_learnable(self, dataset: LabelSets) -> None:
        require_learnable(dataset)

    def split_rows(self, dataset: LabelSets) -> list[tuple[Path, str, str]]:
        return [(s.path, JOIN.join(s.labels), s.split) for s in dataset.samples]

    def audit(self, dataset: LabelSets, images: DecodedImages) -> LabelAudit:
        return audit_label_sets(dataset, images)

    def probe(self, ready: Prepared, config: FitConfig) -> LabelProbe:
        targets = ready.dataset.targets("train")
        return fit_label_probe(features(ready, "train"), targets, config.seed)

    def plan(self, ready: Prepared, probe: LabelProbe, config: FitConfig) -> TaskPlan:
        return _plan(ready, probe, MultiLabel(), config)

    def probed(self, ready: Prepared, probe: LabelProbe, plan: TaskPlan) -> Fitted:
        return _probed(ready, probe, plan)

    def checks(self, ready: Prepared, probe: LabelProbe, plan: TaskPlan) -> CheckReport:
        return _checks(ready, probe, plan)

    def fine_tuned(
        self,
        ready: Prepared,
        start: MultiLabelModel,
        plan: TaskPlan,
        run: RunFolder,
        config: FitConfig,
    ) -> tuple[Fitted, dict]:
        return _fine_tuned(ready, start, plan, MultiLabel(), run, config)

    def choose(
        self, probed: Fitted, tuned: Fitted | None, dataset: LabelSets, config: FitConfig
    ) -> tuple[Fitted, str | None, dict | None]:
        return _choose(probed, tuned, dataset, config)

    def save(self, run: RunFolder, kept: Fitted, dataset: LabelSets, ready: Prepared) -> None:
        _save(run, kept, dataset, ready)

    def clean_scores(self, kept: Fitted, audit: LabelAudit, dataset: LabelSets) -> dict:
        return _clean_scores(kept, audit, dataset)

    def in_words(self, scores: dict) -> str:
        return _in_words(scores)

    def described(self, dataset: LabelSets) -> dict:
        return {"labels": list(dataset.labels)}


def _plan(ready: Prepared, probe: LabelProbe, objective: MultiLabel, config: FitConfig) -> TaskPlan:
    dataset = ready.dataset
    if config.strategy == "full":
        raise HeadstartError(
            "strategy='full' trains a network from random weights: a multi-label fit starts "
            "from pretrained ones (linear-probe, fine-tune or auto)"
        )
    val = dataset.targets("val")
    mirrored = mirror(
        ready, probe.head, lambda outputs: mean_ap(val, outputs), nothing=frequency_map(val)
    )
    reasons = [
        f"{len(dataset.split('train'))} training images, {len(dataset.labels)} labels, each "
        "its own yes or no: a logit per label, binary cross-entropy",
        f"a logistic probe per label on the cached features: penalty C = {probe.C:g} chosen by "
        f"{FOLDS}-fold cross-validation, out-of-fold mAP {probe.cv_map:.3f}",
        mirrored.reason("mAP"),
        "each label's threshold is chosen on validation for its best F1 (the validation F1 "
        "flatters a little; a test split does not)",
    ]
    evidence = {"probe": probe.to_dict(), "mirror": vars(mirrored)}
    plan = TaskPlan(
        "multi-label",
        config.strategy,
        "binary-cross-entropy",
        mirrored.same,
        None,
        reasons,
        evidence,
    )
    if config.strategy == "linear-probe":
        reasons += [r for r in [unused_settings_reason(config, "probe")] if r]
        reasons.append("strategy linear-probe, as asked: the network stays as it is")
        return plan
    if config.strategy == "auto" and probe.cv_map >= PROBE_IS_ENOUGH:
        reasons.append(
            f"the probe already reaches mAP {probe.cv_map:.3f} out of fold: a fine-tuning would "
            "have too little left to show on validation; the probe is the model "
            "(--strategy fine-tune trains anyway)"
        )
        return plan
    plan.fine_tune, cost = fine_tuning_plan(
        ready,
        config,
        plan.test_time_flip,
        reasons,
        head=probe.head,
        train=_examples(dataset, "train"),
        objective=objective,
        measure="mAP",
    )
    evidence["cost"] = cost.to_dict()
    if config.strategy == "auto":
        reasons.append(
            "both the probe and the fine-tuning are scored on validation; the fine-tuning is "
            f"kept when its loss is lower beyond noise (z ≥ {KEEP_FINE_TUNED:g}, image by image)"
        )
    return plan


def _examples(dataset: LabelSets, split: str) -> list[tuple[Path, tuple[float, ...]]]:
    samples = dataset.split(split)
    rows = dataset.rows(samples)
    return [(s.path, tuple(row.tolist())) for s, row in zip(samples, rows, strict=True)]


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(logits, dtype=np.float64)))


def _probed(ready: Prepared, probe: LabelProbe, plan: TaskPlan) -> Fitted:
    """The probe's model, scored from the cached features (both views averaged when the
    predictions average the photo and its mirror)."""
    views = ("plain", "hflip") if plan.test_time_flip else ("plain",)
    probabilities = {}
    for split in ("val", "test"):
        if ready.dataset.split(split):
            logits = [head_logits(probe.head, features(ready, split, v)) for v in views]
            probabilities[split] = _sigmoid(np.mean(logits, axis=0))
    network = network_with(ready, probe.head)
    return _scored(network, "linear-probe", probabilities, ready, plan)


def _scored(
    network, strategy: str, probabilities: dict[str, np.ndarray], ready: Prepared, plan: TaskPlan
) -> Fitted:
    """A candidate with its thresholds chosen on its validation probabilities."""
    dataset = ready.dataset
    thresholds = choose_thresholds(dataset.targets("val"), probabilities["val"])
    model = MultiLabelModel(
        network,
        dataset.labels,
        ready.preprocessing,
        thresholds,
        architecture=ready.architecture,
        test_time_flip=plan.test_time_flip,
        info={"strategy": strategy},
    )
    scores = {
        split: label_metrics(dataset.targets(split), p, thresholds, dataset.labels)
        for split, p in probabilities.items()
    }
    return Fitted(model, strategy, probabilities, scores)


def _checks(ready: Prepared, probe: LabelProbe, plan: TaskPlan) -> CheckReport:
    dataset = ready.dataset
    train = (features(ready, "train"), dataset.targets("train"))
    val = (features(ready, "val"), dataset.targets("val"))
    trial = None
    if plan.fine_tune is not None:
        picked = spread_over_labels(dataset.split("train"), TRIAL_IMAGES)
        head = new_label_head(probe.head.in_features, dataset.targets("train"))
        trial = Trial(
            network_with(ready, head),
            [
                (s.path, tuple(row.tolist()))
                for s, row in zip(picked, dataset.rows(picked), strict=True)
            ],
            ready.images,
            ready.inputs.with_flip(plan.test_time_flip),
            plan.fine_tune,
            head_logits(probe.head, ready.features.of([s.path for s in picked])),
        )
    return label_checks(train, val, probe.head, trial)


def _fine_tuned(
    ready: Prepared,
    start: MultiLabelModel,
    plan: TaskPlan,
    objective: MultiLabel,
    run: RunFolder,
    config: FitConfig,
) -> tuple[Fitted, dict]:
    """A copy of the probe's network trained on the labels; scored on the validation and
    test photos as the bundle predicts them."""
    dataset = ready.dataset
    model = copy.deepcopy(start)
    tuned = run_fine_tuning(
        model.network,
        _examples(dataset, "train"),
        _examples(dataset, "val"),
        ready,
        plan.fine_tune,
        plan.test_time_flip,
        objective,
        run,
        config,
    )
    probabilities = {
        split: model.probabilities([ready.images.get(s.path) for s in dataset.split(split)])
        for split in ("val", "test")
        if dataset.split(split)
    }
    return _scored(model.network, "fine-tune", probabilities, ready, plan), tuned.to_dict("map")


def _choose(
    probe: Fitted, tuned: Fitted | None, dataset: LabelSets, config: FitConfig
) -> tuple[Fitted, str | None, dict | None]:
    """The fine-tuning when its validation loss is lower than the probe's beyond noise (or
    when asked for by name), else the probe; the comparison said with its numbers."""
    if tuned is None:
        return probe, None, None
    evidence = paired_errors(tuned.losses("val", dataset), probe.losses("val", dataset))
    said = (
        f"fine-tune mAP {tuned.scores['val']['map']:.3f} against the probe's "
        f"{probe.scores['val']['map']:.3f} on {evidence['images']} validation images; its loss "
        f"is lower on {evidence['better']}, higher on {evidence['worse']} (paired z = "
        f"{evidence['z']:+.1f})"
    )
    keep, why = choose(evidence, said, asked=config.strategy == "fine-tune")
    return (tuned if keep else probe), why, evidence


def _save(run: RunFolder, kept: Fitted, dataset: LabelSets, ready: Prepared) -> None:
    """The bundle (knowing its training images by content) and ``predictions.csv``: every
    held-out image, its labels, the labels predicted and each label's probability, the
    images the model is most wrong about first within a split."""
    model = kept.model
    model.trained_on = frozenset(ready.images.key(s.path) for s in dataset.split("train"))
    model.info = {**model.info, "scores": kept.scores}
    save_multilabel(model, run.bundle)
    rows = io.StringIO(newline="")
    writer = csv.writer(rows)
    writer.writerow(["split", "path", "labels", "predicted", "loss", *dataset.labels])
    for split, probabilities in kept.probabilities.items():
        samples = dataset.split(split)
        losses = kept.losses(split, dataset)
        found = model.label_sets(probabilities)
        for i in np.argsort(-losses, kind="stable"):
            writer.writerow(
                [
                    split,
                    samples[i].path,
                    JOIN.join(samples[i].labels),
                    JOIN.join(found[i].labels),
                    f"{losses[i]:.4f}",
                    *(f"{p:.4f}" for p in probabilities[i]),
                ]
            )
    write_atomically(
        run / PREDICTIONS_CSV, rows.getvalue().encode("utf-8", errors="surrogateescape")
    )


def _clean_scores(kept: Fitted, audit: LabelAudit, dataset: LabelSets) -> dict:
    """Held-out scores without the copies of training images (when some are)."""
    if not audit.leaked:
        return {}
    clean = {}
    for split, probabilities in kept.probabilities.items():
        keep = np.array([s.path not in audit.leaked for s in dataset.split(split)])
        if keep.any() and not keep.all():
            clean[split] = label_metrics(
                dataset.targets(split)[keep],
                probabilities[keep],
                kept.model.thresholds,
                dataset.labels,
            )
    return clean


def _in_words(scores: dict) -> str:
    baseline = scores["frequency_baseline"]
    return (
        f"mAP {scores['map']:.3f}, micro-F1 {scores['micro_f1']:.3f}, macro-F1 "
        f"{scores['macro_f1']:.3f} on {scores['n']} images (knowing only the labels' "
        f"frequencies: mAP {baseline['map']:.3f})"
    )
