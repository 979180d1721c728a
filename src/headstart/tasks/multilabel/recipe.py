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

from pathlib import Path

import numpy as np

from ...checks.baselines import head_logits
from ...checks.core import CheckReport
from ...config import FitConfig
from ...data.decoded import DecodedImages
from ...metrics import frequency_map, label_metrics
from ...runfolder import RunFolder
from ...stages.data import Prepared
from ...training.objective import MultiLabel, mean_ap
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
from ..regression.recipe import REGRESSION_SETTINGS
from ..training import (
    features,
    fine_tuned_copy,
    mirror,
    network_with,
    plan_training,
    refuse_full,
)
from ..trial import TRIAL_IMAGES, Trial
from .audit import LabelAudit, audit_label_sets
from .checks import label_checks, new_label_head, spread_over_labels
from .data import JOIN, LabelSets, read_label_sets, require_learnable
from .model import MultiLabelModel, save_multilabel
from .probe import FOLDS, LabelProbe, fit_label_probe
from .thresholds import choose_thresholds

__all__ = ["LABEL_SETTINGS", "MultiLabelTask"]

#: The settings a multi-label fit reads: a regression's, its loss aside, and the separator.
LABEL_SETTINGS = (REGRESSION_SETTINGS - {"loss"}) | {"label_separator"}
#: A probe this good out of fold (mAP) leaves a fine-tuning too little to show on validation.
PROBE_IS_ENOUGH = 0.98


def _image_losses(probabilities: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each image's binary cross-entropy, summed over the labels."""
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    return -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).sum(1)


class MultiLabelTask:
    """Several labels an image, for the recipe of :func:`headstart.tasks.recipe.fit_task`.
    Its candidates' outputs are each label's probability; their thresholds are chosen on
    validation."""

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
        refuse_full(config, "multi-label fit")
        dataset = ready.dataset
        val = dataset.targets("val")
        mirrored = mirror(
            ready, probe.head, lambda outputs: mean_ap(val, outputs), nothing=frequency_map(val)
        )
        reasons = [
            f"{len(dataset.split('train'))} training images, {len(dataset.labels)} labels, "
            "each its own yes or no: a logit per label, binary cross-entropy",
            f"a logistic probe per label on the cached features: penalty C = {probe.C:g} "
            f"chosen by {FOLDS}-fold cross-validation, out-of-fold mAP {probe.cv_map:.3f}",
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
        return plan_training(
            plan,
            ready,
            config,
            probe_name="probe",
            probe_suffices=(
                f"the probe already reaches mAP {probe.cv_map:.3f} out of fold"
                if probe.cv_map >= PROBE_IS_ENOUGH
                else None
            ),
            train=lambda: _examples(dataset.split("train"), dataset),
            head=probe.head,
            objective=MultiLabel(),
            measure="mAP",
            kept_when="its loss is lower",
        )

    def probed(self, ready: Prepared, probe: LabelProbe, plan: TaskPlan) -> Candidate:
        """The probe's model, scored from the cached features."""
        logits = probe_outputs(ready, probe.head, plan.test_time_flip)
        probabilities = {split: _sigmoid(out) for split, out in logits.items()}
        network = network_with(ready, probe.head)
        return _scored(network, "linear-probe", probabilities, ready, plan)

    def checks(self, ready: Prepared, probe: LabelProbe, plan: TaskPlan) -> CheckReport:
        """The sanity checks in their forms for labels that are each present or not."""
        dataset = ready.dataset
        train = (features(ready, "train"), dataset.targets("train"))
        val = (features(ready, "val"), dataset.targets("val"))
        trial = None
        if plan.fine_tune is not None:
            picked = spread_over_labels(dataset.split("train"), TRIAL_IMAGES)
            head = new_label_head(probe.head.in_features, dataset.targets("train"))
            trial = Trial(
                network_with(ready, head),
                _examples(picked, dataset),
                ready.images,
                ready.inputs.with_flip(plan.test_time_flip),
                plan.fine_tune,
                head_logits(probe.head, ready.features.of([s.path for s in picked])),
            )
        return label_checks(train, val, probe.head, trial)

    def fine_tuned(
        self,
        ready: Prepared,
        start: MultiLabelModel,
        plan: TaskPlan,
        run: RunFolder,
        config: FitConfig,
    ) -> tuple[Candidate, dict]:
        """A copy of the probe's network trained on the labels; scored on the held-out
        photos as the bundle predicts them."""
        dataset = ready.dataset
        train, val = (_examples(dataset.split(split), dataset) for split in ("train", "val"))
        model, tuned = fine_tuned_copy(start, train, val, ready, plan, MultiLabel(), run, config)
        probabilities = held_out(
            dataset,
            lambda samples: model.probabilities([ready.images.get(s.path) for s in samples]),
        )
        return _scored(model.network, "fine-tune", probabilities, ready, plan), tuned.to_dict("map")

    def choose(
        self, probed: Candidate, tuned: Candidate | None, dataset: LabelSets, config: FitConfig
    ) -> tuple[Candidate, str | None, dict | None]:
        """The fine-tuning when its validation loss is lower than the probe's beyond noise
        (or when asked for by name), else the probe."""

        def said(tuned: Candidate, probe: Candidate, evidence: dict) -> str:
            return (
                f"fine-tune mAP {tuned.scores['val']['map']:.3f} against the probe's "
                f"{probe.scores['val']['map']:.3f} on {evidence['images']} validation images; "
                f"its loss is lower on {evidence['better']}, higher on {evidence['worse']} "
                f"(paired z = {evidence['z']:+.1f})"
            )

        def losses(candidate: Candidate) -> np.ndarray:
            return _image_losses(candidate.outputs["val"], dataset.targets("val"))

        return choose_candidate(probed, tuned, losses, said, config)

    def save(self, run: RunFolder, kept: Candidate, dataset: LabelSets, ready: Prepared) -> None:
        """The bundle (with its thresholds) and ``predictions.csv``: every held-out image,
        its labels, the labels predicted and each label's probability, the images the model
        is most wrong about first within a split."""
        model = bundled_model(kept, dataset, ready)
        save_multilabel(model, run.bundle)
        rows = []
        for split, probabilities in kept.outputs.items():
            samples = dataset.split(split)
            losses = _image_losses(probabilities, dataset.targets(split))
            found = model.label_sets(probabilities)
            rows += [
                [
                    split,
                    samples[i].path,
                    JOIN.join(samples[i].labels),
                    JOIN.join(found[i].labels),
                    f"{losses[i]:.4f}",
                    *(f"{p:.4f}" for p in probabilities[i]),
                ]
                for i in np.argsort(-losses, kind="stable")
            ]
        header = ["split", "path", "labels", "predicted", "loss", *dataset.labels]
        write_predictions(run, header, rows)

    def clean_scores(self, kept: Candidate, audit: LabelAudit, dataset: LabelSets) -> dict:
        """Held-out scores without the copies of training images (when some are)."""
        thresholds = kept.model.thresholds

        def score(targets: np.ndarray, probabilities: np.ndarray) -> dict:
            return label_metrics(targets, probabilities, thresholds, dataset.labels)

        return without_copies(kept, audit.leaked, dataset, score)

    def in_words(self, scores: dict) -> str:
        baseline = scores["frequency_baseline"]
        return (
            f"mAP {scores['map']:.3f}, micro-F1 {scores['micro_f1']:.3f}, macro-F1 "
            f"{scores['macro_f1']:.3f} on {scores['n']} images (knowing only the labels' "
            f"frequencies: mAP {baseline['map']:.3f})"
        )

    def described(self, dataset: LabelSets) -> dict:
        return {"labels": list(dataset.labels)}


def _examples(samples: list, dataset: LabelSets) -> list[tuple[Path, tuple[float, ...]]]:
    """Each sample's image and row of 0/1 labels, as the fine-tuning reads them."""
    rows = dataset.rows(samples)
    return [(s.path, tuple(row.tolist())) for s, row in zip(samples, rows, strict=True)]


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(logits, dtype=np.float64)))


def _scored(
    network, strategy: str, probabilities: dict[str, np.ndarray], ready: Prepared, plan: TaskPlan
) -> Candidate:
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
    return Candidate(model, strategy, probabilities, scores)
