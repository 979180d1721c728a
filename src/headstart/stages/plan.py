"""The plan stage: measure, then decide once what to train and how, and why.

In order: the linear probe on the cached features (how well the pretrained features already
fit the task), the domain measurements (why the images differ from the pretraining data), the
plan from the decision table (:func:`headstart.training.plan.make_plan`), a second look at
another input size when the plan asks for one (low-resolution images), the time budget, and
the learning-rate range test when it is cheap next to the fine-tuning. Each step feeds the
plan before it is final; after :func:`decide` the plan does not change.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..classifier import Classifier, layer_groups, new_head
from ..config import FitConfig
from ..console import progress_bar, say
from ..errors import HeadstartError
from ..training import distributed
from ..training.cost import Cost, measure_cost
from ..training.domain import DomainReport, measure_domain
from ..training.finetune import FineTuneSettings
from ..training.imbalance import choose_balancing
from ..training.lr_find import LRFindResult, lr_range_test
from ..training.plan import Plan, make_plan
from ..training.probe import ProbeResult, fit_probe_in_place
from .adapt import Target, measure_target
from .data import Prepared, device_of, look_again, prepare, require_trainable
from .distill import Teaching, training_examples

__all__ = [
    "DOMAIN_SAMPLE",
    "LR_FIND_SHARE",
    "LR_FIND_STEPS",
    "Decision",
    "decide",
    "fine_tuning_plan",
    "plan_fine_tuning",
    "probe_features",
    "probe_record",
    "range_test",
    "within_budget",
]

#: Images the domain measurements look at: enough for stable medians, and a forward pass of
#: them costs about a second on a laptop CPU.
DOMAIN_SAMPLE = 32
#: ``fit`` runs the learning-rate range test itself when its steps cost at most a tenth of
#: the planned fine-tuning (measured: 50 steps resolve the curve; a few hundred images
#: fine-tune in 30-70 steps, so the test would cost several times the training there).
LR_FIND_STEPS, LR_FIND_SHARE = 50, 0.1


@dataclass(frozen=True)
class Decision:
    """The final plan and what it was decided on."""

    plan: Plan
    ready: Prepared  # the data and network the plan trains (another input size, after a look)
    probe: ProbeResult | None  # the linear probe on ``ready``'s features
    lr_find: LRFindResult | None = None  # the range test, when it ran
    teaching: Teaching | None = None  # a distillation's teacher
    target: Target | None = None  # unlabelled images of the domain the model is for


def decide(
    ready: Prepared, config: FitConfig, spent: float = 0.0, teaching: Teaching | None = None
) -> Decision:
    """Probe, measure and plan; look again at another input size when the plan asks; say
    what the fine-tuning will cost, and fit it into the time budget (``spent``: seconds the
    fit has run so far). With ``teaching``, the plan fine-tunes a student of that teacher."""
    probe = probe_features(ready, config)
    domain = _measure_domain(ready, probe, config)
    # A student learns from its teacher by fine-tuning: never the probe alone.
    strategy = (
        "fine-tune" if teaching is not None and config.strategy == "auto" else config.strategy
    )
    plan = distributed.agree(_plan(strategy, ready, probe, config, domain))
    if plan.input_size is not None and plan.input_size != ready.preprocessing.input_size[-1]:
        for reason in plan.reasons:
            say(config.quiet, f"first look: {reason}")
        first, size = plan, ready.preprocessing.input_size[-1]
        ready = look_again(ready, config, plan.input_size)
        probe = probe_features(ready, config)
        plan = _plan(strategy, ready, probe, config, domain=None, resized_from=size)
        plan = distributed.agree(plan)  # every process times the same steps below
        plan = replace(
            plan,
            reasons=(*[f"first look at {size} px: {r}" for r in first.reasons], *plan.reasons),
            evidence={**plan.evidence, "first_look": first.evidence},
            input_size=first.input_size,  # what the plan trains at (and --resume reads)
        )
    if plan.fine_tune and teaching is not None:
        plan = _distilled(plan, teaching, config)
    if plan.fine_tune:
        plan = _costed(plan, ready, probe, config, spent, teaching)
    lr_find = None
    if plan.fine_tune and config.lr is None and distributed.is_main():
        plan, lr_find = _measure_lr(plan, ready, probe, config)
    plan = distributed.agree(plan)  # with the main process's learning rate
    target = measure_target(ready, config)
    if target is not None:
        plan = plan.adding(target.reason(), target=target.to_dict())
    return Decision(plan, ready, probe, lr_find, teaching, target)


def _distilled(plan: Plan, teaching: Teaching, config: FitConfig) -> Plan:
    """The plan's fine-tuning as a distillation from ``teaching``'s teacher."""
    settings = replace(plan.fine_tune, label_smoothing=0.0, balance="none")
    # Under auto, the fine-tuning is the distillation's, not the user's request.
    reasons = tuple(
        "fine-tune: a student learns from its teacher by training, never by a probe alone"
        if reason == "strategy fine-tune was asked for" and config.strategy == "auto"
        else reason
        for reason in plan.reasons
    )
    return replace(plan, fine_tune=settings, reasons=reasons).adding(
        f"distillation: the student learns {teaching.describe()}, at temperature "
        f"{teaching.teacher.temperature:g}, in place of the labels (label smoothing and class "
        "balancing, which act on labels, are off); the labels still score validation and pick "
        "the epoch, and the learning rate is the plan's for the labels",
        distillation=teaching.to_dict(),
    )


def plan_fine_tuning(ready: Prepared, probe: ProbeResult | None, config: FitConfig) -> Plan:
    """The plan of a fine-tuning of ``ready`` with ``config``'s settings over the table's,
    whatever ``fit`` would choose, and without measuring anything (the domain, the cost, the
    range test): for the commands that train many fine-tunings, ``tune``'s trials."""
    return _plan("fine-tune", ready, probe, config)


def probe_features(ready: Prepared, config: FitConfig) -> ProbeResult | None:
    """The linear probe on the training split's cached features (class-weighted when the
    classes are imbalanced); None without features (random initialisation)."""
    if ready.features is None:
        return None
    balance = choose_balancing(ready.train_counts, config.balance)[0]
    train = ready.dataset.split("train")
    labels = np.array([ready.index[s.label] for s in train])
    # The probe's buffer, both views of the training images read straight into it from the
    # cache: their only copy in memory.
    paths = [s.path for s in train]
    stacked = np.empty((2 * len(train), ready.features.dimension), np.float32)
    ready.features.read_into(paths, "plain", stacked[: len(train)])
    ready.features.read_into(paths, "hflip", stacked[len(train) :])
    return fit_probe_in_place(
        stacked,
        labels,
        len(ready.index),
        mirrored=True,
        seed=config.seed,
        penalty=config.probe_penalty,
        balanced=balance != "none",
    )


def probe_record(probe: ProbeResult) -> dict:
    """The probe's cross-validated result, as ``metrics.jsonl`` and TensorBoard record it."""
    return {
        "C": probe.C,
        "cv_accuracy": probe.cv_accuracy,
        "cv_mirrored_accuracy": probe.cv_mirrored_accuracy,
        "trained_on_mirrored": probe.mirrored,
        "cv_log_loss": probe.cv_log_loss,
        "folds": probe.folds,
    }


def _plan(
    strategy: str,
    ready: Prepared,
    probe: ProbeResult | None,
    config: FitConfig,
    domain: DomainReport | None = None,
    resized_from: int | None = None,
) -> Plan:
    """The plan for ``strategy`` from the measurements and the user's settings."""
    return make_plan(
        strategy,
        train_counts=ready.dataset.counts()["train"],
        probe_accuracy=probe.cv_accuracy if probe else None,
        mirror_invariant=probe.mirror_invariant if probe else None,
        pretrained=config.pretrained,
        stages=len(layer_groups(ready.backbone)),
        config=config,
        balance=choose_balancing(ready.train_counts, config.balance),
        gap=domain,
        resized_from=resized_from,
        val_images=len(ready.dataset.split("val")),
    )


def _measure_domain(
    ready: Prepared, probe: ProbeResult | None, config: FitConfig
) -> DomainReport | None:
    """How far the training images are from the pretraining data (see
    :mod:`headstart.training.domain`), on a sample; None when no image can be measured."""
    counts = ready.train_counts
    chance = 1 / len(counts)
    skill = None
    if probe is not None and np.isfinite(probe.cv_accuracy):
        skill = (probe.cv_accuracy - chance) / (1 - chance)
    try:
        return measure_domain(
            [s.path for s in ready.dataset.split("train")],
            input_size=ready.preprocessing.input_size[-1],
            sample=DOMAIN_SAMPLE,
            seed=config.seed,
            backbone=ready.backbone if config.pretrained else None,
            inputs=ready.inputs,
            probe_skill=skill,
            images_per_class=float(np.median(counts)),
        )
    except HeadstartError:
        return None


def _measure_lr(
    plan: Plan, ready: Prepared, probe: ProbeResult | None, config: FitConfig
) -> tuple[Plan, LRFindResult | None]:
    """The plan with the range test's suggestion (kept within 10x of the default) in place of
    its default learning rate when the test is cheap next to the fine-tuning; why, either way."""
    settings = plan.fine_tune
    planned = settings.epochs * max(1, len(ready.dataset.split("train")) // settings.batch_size)
    if planned * LR_FIND_SHARE < LR_FIND_STEPS:
        return plan.adding(
            f"learning rate {settings.lr:g} from the plan, without a range test: its "
            f"{LR_FIND_STEPS} steps would cost more than {LR_FIND_SHARE:.0%} of this "
            f"fine-tuning ({planned} steps); `headstart lr-find` runs it"
        ), None
    result = range_test(ready, probe, settings, LR_FIND_STEPS, config)
    measured = {"rule": result.rule, "descent": result.descent, "noise": result.noise}
    if result.suggestion is None:
        return plan.adding(
            f"learning rate {settings.lr:g} from the plan: the range test found none "
            f"({result.rule}); see lr_find.png",
            lr_find=measured,
        ), result
    if probe is not None and result.suggestion < settings.lr and not result.climbs_at(settings.lr):
        # From the probe's fitted head the loss has little left to fall: the curve is flat
        # noise until it climbs, and a "valley" in that noise is no reason to train slower
        # (sign-language digits: 2.7e-6 suggested, 90.5% on test at 2e-5 against 93.9% at
        # the default). Only a loss already climbing at the default lowers it.
        return plan.adding(
            f"learning rate {settings.lr:g} from the plan: the range test suggested "
            f"{result.suggestion:.2g} ({result.rule}), but it starts from the probe's fitted "
            f"head, where the loss has little left to fall, and the loss does not yet climb at "
            f"{settings.lr:g}; see lr_find.png",
            lr_find={"suggestion": result.suggestion, "taken": False, **measured},
        ), result
    chosen = float(np.clip(result.suggestion, settings.lr / 10, settings.lr * 10))
    clipped = "" if chosen == result.suggestion else ", kept within 10x of the default"
    plan = plan.adding(
        f"learning rate {chosen:.2g} from the range test ({result.rule}: "
        f"{result.suggestion:.2g}{clipped}; the plan's default was {settings.lr:g}); "
        "see lr_find.png",
        lr_find={"suggestion": result.suggestion, "taken": True, **measured},
    )
    return replace(plan, fine_tune=replace(settings, lr=chosen)), result


def _costed(
    plan: Plan,
    ready: Prepared,
    probe: ProbeResult | None,
    config: FitConfig,
    spent: float,
    teaching: Teaching | None = None,
) -> Plan:
    """The plan with what its fine-tuning costs here (measured, said, recorded) and, under a
    time budget, as many epochs as fit in what is left of it."""
    settings = plan.fine_tune
    # Measured in every process under torchrun (the timed steps are real DDP steps, which
    # need them all); the main process's numbers decide.
    head = probe.head if probe else new_head(ready.backbone.num_features, ready.train_counts)
    network = Classifier(ready.backbone, copy.deepcopy(head), ready.preprocessing)
    train = training_examples(ready, teaching)
    held_out = (len(ready.dataset.split("val")), len(ready.dataset.split("test")))
    inputs = ready.inputs.with_flip(plan.test_time_flip)
    teacher = teaching.teacher if teaching is not None else None
    cost = measure_cost(
        network, train, held_out, ready.images, inputs, settings, config.seed, teacher
    )
    cost = distributed.agree(cost)
    if config.time_budget:  # an ensemble's members share it equally
        left = (config.time_budget * 60 - spent) / config.ensemble
        plan, cost = within_budget(plan, cost, left)
        settings = plan.fine_tune
        if settings is None:
            return plan
    size = f" at {settings.train_size} px" if settings.train_size else ""
    plan = plan.adding(
        f"cost: {cost.epochs} epochs of {cost.steps_per_epoch} steps of {settings.batch_size} "
        f"images{size}, {cost.step_seconds:.2f} s a step and {cost.validation_seconds:.0f} s of "
        f"validation an epoch on this machine: about {_minutes(cost.seconds)} (measured now; "
        "without --time-budget the plan does not depend on it)",
        cost=cost.to_dict(),
    )
    if config.ensemble == 1:
        return plan
    members = config.ensemble
    return plan.adding(
        f"ensemble: {members} fine-tunings like this one from seeds {config.seed} to "
        f"{config.seed + members - 1}, their probabilities averaged: about "
        f"{_minutes(cost.seconds * members)} in all, and {members} networks to run for each "
        "prediction",
        ensemble=members,
    )


def within_budget(plan: Plan, cost: Cost, seconds: float) -> tuple[Plan, Cost]:
    """As many whole epochs as fit in ``seconds``; none (the probe) when not even one does."""
    fit = int((seconds - cost.scoring_seconds) // cost.epoch_seconds)
    budget = {"seconds_left": seconds, "epochs_that_fit": max(fit, 0)}
    if fit >= cost.epochs:
        return plan.adding(
            f"time budget: {_minutes(seconds)} left, enough for the {cost.epochs} planned epochs",
            budget=budget,
        ), cost
    # Without a fine-tuning there is no model (no pretrained features to probe) or nothing
    # that was asked for (a distillation's student): at least one epoch, over budget or not.
    must_train = plan.strategy == "full" and "probe_cv_accuracy" not in plan.evidence
    if fit >= 1 or must_train or "distillation" in plan.evidence:
        epochs = max(fit, 1)
        plan = replace(plan, fine_tune=replace(plan.fine_tune, epochs=epochs))
        return plan.adding(
            f"time budget: {_minutes(seconds)} left: {epochs} of the {cost.epochs} planned "
            f"epochs fit (about {_minutes(cost.epoch_seconds)} each); "
            f"`headstart fit --resume RUN --epochs {cost.epochs}` trains the rest later",
            budget=budget,
        ), cost.with_epochs(epochs)
    probe_only = replace(plan, strategy="linear-probe", fine_tune=None)
    return probe_only.adding(
        f"time budget: {_minutes(seconds)} left, less than one epoch of fine-tuning (about "
        f"{_minutes(cost.epoch_seconds)}): the linear probe is the model",
        budget=budget,
    ), cost


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s"
    return f"{seconds / 60:.1f} min"


def range_test(
    ready: Prepared,
    probe: ProbeResult | None,
    settings: FineTuneSettings,
    steps: int,
    config: FitConfig,
) -> LRFindResult:
    """The range test from the head fine-tuning starts with, on a copy of the network."""
    head = probe.head if probe else new_head(ready.backbone.num_features, ready.train_counts)
    # A copy, as the test trains one: feature extraction leaves inference-mode tensors.
    network = copy.deepcopy(Classifier(ready.backbone, head, ready.preprocessing))
    network.to(device_of(config.device))
    train = [(s.path, ready.index[s.label]) for s in ready.dataset.split("train")]
    with progress_bar("lr-find", steps, quiet=config.quiet) as advance:
        return lr_range_test(
            network,
            train,
            ready.images,
            ready.inputs,
            settings,
            steps=steps,
            seed=config.seed,
            on_step=advance,
        )


def fine_tuning_plan(
    data: str | Path, config: FitConfig
) -> tuple[Prepared, ProbeResult | None, Plan]:
    """What ``fit`` would prepare, probe and plan, with a fine-tuning in the plan even where
    ``fit`` would stop at the probe: for the commands that try the fine-tuning alone."""
    ready = prepare(data, config)
    require_trainable(ready.dataset)
    probe = probe_features(ready, config)
    plan = _plan(config.strategy, ready, probe, config)
    if plan.fine_tune is None:
        plan = _plan("fine-tune", ready, probe, config)
    return ready, probe, plan
