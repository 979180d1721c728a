"""What every task other than one class an image shares with the others: the run's opening,
the cached features, whether the mirror image holds the same answer, the plan of a
fine-tuning and its measured cost, running it, and the choice between it and the probe.

A task supplies what differs (its table, probe, objective, scores and model); the recipe of
each (:mod:`.regression.recipe`, :mod:`.multilabel.recipe`) reads top to bottom through these.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from ..checks.baselines import head_logits
from ..classifier import Classifier, layer_groups
from ..config import FitConfig, save_config
from ..console import say
from ..errors import HeadstartError
from ..runfolder import CONFIG_JSON, CONFIG_YAML, DATASET, RunFolder
from ..stages.data import Prepared, write_splits
from ..stages.evaluate import KEEP_FINE_TUNED
from ..training.callbacks import MetricsLog, Progress
from ..training.cost import TIMED_STEPS, Cost, measure_cost
from ..training.finetune import FineTuneResult, FineTuneSettings, fine_tune
from ..training.freezing import trainable_stages_for
from ..training.objective import Objective
from ..training.optim import scale_lr
from ..training.plan import REFERENCE_BATCH, fine_tuning_choices, with_choices
from .plan import TaskPlan

__all__ = [
    "EPOCHS",
    "KEEP_FINE_TUNED",
    "MIRROR_TOLERANCE",
    "Mirror",
    "Tuned",
    "choose",
    "features",
    "fine_tuned_copy",
    "fine_tuning_plan",
    "minutes",
    "mirror",
    "network_with",
    "open_run",
    "plan_training",
    "refuse_full",
    "refuse_unread",
    "unused_settings_reason",
]

#: The fine-tuning's defaults: the top half of the network for up to 8 epochs at the
#: classifier's learning rate, as for classes on a small dataset (headstart.training.plan).
EPOCHS, LR, LAYER_DECAY, PATIENCE = 8, 2e-4, 0.6, 3
#: The mirror image holds the same answer when a probe fitted on the photos scores their
#: mirrored validation photos within this much of the photos' own score; measured only where
#: the probe scores SKILL above knowing nothing (else mirroring stays off: a flip can change
#: the answer, as it negates an angle, and a probe that sees nothing cannot tell).
MIRROR_TOLERANCE, SKILL = 0.02, 0.1

M = TypeVar("M")  # a task's model


def refuse_unread(config: FitConfig, reads: frozenset[str], task: str, why: str) -> None:
    """Refuse the settings ``config`` gives that a ``task`` does not read (``why`` says what
    it does instead): given, they would do nothing."""
    ignored = sorted(set(config.changed()) - reads)
    if ignored:
        flags = ", ".join("--" + name.replace("_", "-") for name in ignored)
        raise HeadstartError(f"{flags}: setting(s) that a {task} does not read ({why})")


def refuse_full(config: FitConfig, task: str) -> None:
    """A task starts from pretrained weights: ``strategy='full'`` is refused."""
    if config.strategy == "full":
        raise HeadstartError(
            f"strategy='full' trains a network from random weights: a {task} starts from "
            "pretrained ones (linear-probe, fine-tune or auto)"
        )


def open_run(
    run: RunFolder, data: str | Path, ready: Prepared, config: FitConfig, rows: Sequence
) -> None:
    """The run's first files (its config, its data, its split: ``rows`` of where, label,
    split), and what runs said on the console."""
    run.write_json(CONFIG_JSON, {"data": str(Path(data).resolve()), **asdict(config)})
    save_config(config, run / CONFIG_YAML, data)
    dataset = ready.dataset
    run.write_json(DATASET, dataset.to_dict())
    write_splits(run, rows)
    sizes = ", ".join(
        f"{len(dataset.split(s))} {s}" for s in ("train", "val", "test") if dataset.split(s)
    )
    say(
        config.quiet,
        f"run folder [bold]{run.path}[/]; {config.arch}, {ready.source.describe()}; "
        f"{len(dataset.samples)} images ({config.task}): {sizes}",
    )
    for skip in dataset.skipped[:10]:
        say(config.quiet, f"[yellow]skipped[/] {skip.path}: {skip.reason}")
    if len(dataset.skipped) > 10:
        say(config.quiet, f"[yellow]skipped[/] {len(dataset.skipped) - 10} more ({DATASET})")
    for warning in dataset.warnings:
        say(config.quiet, f"[yellow]warning[/]: {warning}")


def features(ready: Prepared, split: str, view: str = "plain") -> np.ndarray:
    """The cached features of one split's images, in ``view``, a row each (a copy)."""
    return ready.features.of([s.path for s in ready.dataset.split(split)], view, copy=True)


@dataclass(frozen=True)
class Mirror:
    """A probe's validation score on the photos and on their mirror images, and whether the
    mirror holds the same answer (then predictions average both, and training flips)."""

    score: float
    mirrored: float
    same: bool
    told: bool = True  # False: the probe scores too little to tell

    def reason(self, measure: str) -> str:
        if not self.told:
            verdict = (
                "too little skill to tell whether the mirror image holds the same answer: no "
                "mirroring in training or prediction (a flip could change the answer)"
            )
        elif self.same:
            verdict = (
                "the mirror image holds the same answer, so predictions average the photo and "
                "its mirror, and training flips photos"
            )
        else:
            verdict = "the mirror image changes the answer: no mirroring in training or prediction"
        return (
            f"the probe scores the mirrored validation photos {measure} {self.mirrored:.3f} "
            f"against {self.score:.3f} for the photos: {verdict}"
        )


def mirror(
    ready: Prepared,
    head: torch.nn.Linear,
    score: Callable[[np.ndarray], float],
    nothing: float,
) -> Mirror:
    """Whether a probe's ``head`` answers the mirrored validation photos as well as the
    photos: ``score`` rates its outputs on the validation images (higher is better), and
    ``nothing`` is the score of knowing nothing about the images (0 for R²)."""
    plain = score(head_logits(head, features(ready, "val")))
    mirrored = score(head_logits(head, features(ready, "val", "hflip")))
    told = bool(plain >= nothing + SKILL)
    same = told and bool(np.nan_to_num(mirrored, nan=-np.inf) >= plain - MIRROR_TOLERANCE)
    return Mirror(float(plain), float(mirrored), same, told)


def network_with(ready: Prepared, head: torch.nn.Linear) -> Classifier:
    """The backbone with ``head``, on the backbone's device (the backbone shared)."""
    network = Classifier(ready.backbone, head, ready.preprocessing)
    return network.to(next(ready.backbone.parameters()).device)


def fine_tuning_plan(
    ready: Prepared,
    config: FitConfig,
    flip: bool,
    reasons: list[str],
    *,
    head: torch.nn.Linear,
    train: Sequence[tuple[Path, object]],
    objective: Objective,
    measure: str,
) -> tuple[FineTuneSettings, Cost]:
    """The planned fine-tuning (the top half of the network from the probe's ``head``,
    early stopping on validation ``measure``; the user's choices over it, each said) and its
    cost, measured here on a few steps of ``train`` examples and said in ``reasons``."""
    stages = len(layer_groups(ready.backbone))
    planned = FineTuneSettings(
        epochs=EPOCHS,
        lr=scale_lr(LR, config.batch_size, REFERENCE_BATCH),
        layer_decay=LAYER_DECAY,
        patience=PATIENCE,
        freeze=stages - max(1, stages // 2),
        label_smoothing=0.0,
        batch_size=config.batch_size,
    )
    settings = with_choices(planned, config, stages, flip, ("none", ""), reasons)
    trained = trainable_stages_for(settings.freeze, stages)
    shown = "every stage" if trained is None else f"the top {trained} of {stages} stages"
    stopping = (
        f"early stopping on validation {measure} (patience {settings.patience})"
        if settings.patience
        else "no early stopping"
    )
    reasons.append(
        f"training {shown} from the probe's head for up to {settings.epochs} epochs, learning "
        f"rate {settings.lr:g} at the top, {settings.optimizer}, {settings.schedule} schedule "
        f"with warm-up, {stopping}"
    )
    dataset = ready.dataset
    cost = measure_cost(
        network_with(ready, copy.deepcopy(head)),
        list(train),
        (len(dataset.split("val")), len(dataset.split("test"))),
        ready.images,
        ready.inputs.with_flip(flip),
        settings,
        config.seed,
        objective=objective,
    )
    reasons.append(
        f"about {minutes(cost.seconds)} here for {settings.epochs} epochs "
        f"({cost.steps_per_epoch} steps of {cost.step_seconds:.2f} s and validation, "
        f"{minutes(cost.epoch_seconds)} an epoch; measured on {TIMED_STEPS} steps)"
    )
    return settings, cost


def plan_training(
    plan: TaskPlan,
    ready: Prepared,
    config: FitConfig,
    *,
    probe_name: str,
    probe_suffices: str | None,
    loss_reason: str | None = None,
    train: Callable[[], Sequence[tuple[Path, object]]],
    head: torch.nn.Linear,
    objective: Objective,
    measure: str,
    kept_when: str,
) -> TaskPlan:
    """The rest of a task's ``plan`` once its probe is fitted: the probe alone when asked
    for, or when ``auto`` finds that it suffices (``probe_suffices`` says what it already
    reaches; None: it does not); else the fine-tuning (``loss_reason`` says its loss) planned
    and its cost measured on ``train()``'s examples, the fine-tuning then kept when
    ``kept_when`` beyond noise."""
    reasons = plan.reasons
    if config.strategy == "linear-probe":
        reasons += [r for r in [unused_settings_reason(config, probe_name)] if r]
        reasons.append("strategy linear-probe, as asked: the network stays as it is")
        return plan
    if config.strategy == "auto" and probe_suffices:
        reasons.append(
            f"{probe_suffices}: a fine-tuning would have too little left to show on "
            "validation; the probe is the model (--strategy fine-tune trains anyway)"
        )
        return plan
    if loss_reason:
        reasons.append(loss_reason)
    plan.fine_tune, cost = fine_tuning_plan(
        ready,
        config,
        plan.test_time_flip,
        reasons,
        head=head,
        train=train(),
        objective=objective,
        measure=measure,
    )
    plan.evidence["cost"] = cost.to_dict()
    if config.strategy == "auto":
        reasons.append(
            "both the probe and the fine-tuning are scored on validation; the fine-tuning is "
            f"kept when {kept_when} beyond noise (z ≥ {KEEP_FINE_TUNED:g}, image by image)"
        )
    return plan


def unused_settings_reason(config: FitConfig, what: str) -> str | None:
    """For a plan that trains no network: the fine-tuning settings given in vain."""
    unused = fine_tuning_choices(config)
    if not unused:
        return None
    return (
        f"{', '.join(unused)} set, but the {what} trains no network: they take effect with "
        "--strategy fine-tune or auto"
    )


@dataclass
class Tuned:
    """How a fine-tuning ran, as the summary records it."""

    result: FineTuneResult
    seconds: float

    def to_dict(self, measure: str) -> dict:
        return {
            "best_epoch": self.result.best_epoch,
            f"best_val_{measure}": self.result.best_accuracy,
            "epochs": len(self.result.history),
            "stopped": self.result.stopped,
            "seconds": self.seconds,
        }


def fine_tuned_copy(
    start: M,
    train: Sequence[tuple[Path, object]],
    val: Sequence[tuple[Path, object]],
    ready: Prepared,
    plan: TaskPlan,
    objective: Objective,
    run: RunFolder,
    config: FitConfig,
) -> tuple[M, Tuned]:
    """A copy of the probe's model (``start``) with its network fine-tuned as ``plan``
    says (the epochs logged in ``metrics.jsonl``, a progress bar), holding its best
    validation epoch's weights; and how the fine-tuning ran."""
    model = copy.deepcopy(start)
    model.info = {"strategy": "fine-tune"}
    started = time.perf_counter()
    result = fine_tune(
        model.network,
        list(train),
        list(val),
        ready.images,
        ready.inputs.with_flip(plan.test_time_flip),
        plan.fine_tune,
        seed=config.seed,
        callbacks=[MetricsLog(run, "fine-tune"), Progress("fine-tune", quiet=config.quiet)],
        objective=objective,
    )
    model.network.eval()
    tuned = Tuned(result, time.perf_counter() - started)
    say(
        config.quiet,
        f"fine-tune: {len(result.history)} epoch(s) in {minutes(tuned.seconds)} "
        f"({result.stopped}); best epoch {result.best_epoch}",
    )
    return model, tuned


def choose(evidence: dict, said: str, asked: bool) -> tuple[bool, str]:
    """Whether to keep the fine-tuning over the probe, and why, from a paired comparison on
    the validation images (``evidence["z"]``, the fine-tuning ahead when positive): kept when
    ahead beyond noise (:data:`KEEP_FINE_TUNED`), or when ``asked`` for by name."""
    if evidence["z"] >= KEEP_FINE_TUNED:
        return True, f"{said}: ahead beyond noise, kept the fine-tuning"
    if asked:
        return True, f"{said}: not ahead beyond noise, kept the fine-tuning as asked"
    return False, (
        f"{said}: not ahead beyond noise (z below {KEEP_FINE_TUNED:g}; its best epoch was "
        "chosen on these images): kept the probe"
    )


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
