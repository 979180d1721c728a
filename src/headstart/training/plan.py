"""The plan: which transfer strategy, and why, decided from measurements before training.

MISSION.md's decision table, with both axes measured on the user's data:

================  =========================  ==================================
                  similar to the source       different from the source
================  =========================  ==================================
small dataset     linear probe                fine-tune every stage, small LR
large dataset     fine-tune the top half      fine-tune every stage
================  =========================  ==================================

*Size* is the number of training images per class. *Similarity* is how well a linear probe on
the frozen pretrained features already separates the classes (out-of-fold, so it is not
flattered by memorisation), as skill above chance: 0 is guessing, 1 is perfect.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from ..config import FitConfig, settings_table
from ..data.augment import AugmentSettings
from .domain import DomainReport
from .finetune import FineTuneSettings
from .freezing import trainable_stages_for
from .optim import scale_lr

__all__ = [
    "REFERENCE_BATCH",
    "Plan",
    "fine_tuning_choices",
    "make_plan",
    "requested_augmentation",
    "with_choices",
]

#: Median training images per class from which a dataset counts as large: with fewer, more
#: trainable layers overfit faster than they help (the classic table's "small").
LARGE_PER_CLASS = 300
#: Out-of-fold probe skill above chance from which the pretrained features count as a fit.
SIMILAR_SKILL = 0.8
#: Probe accuracy from which a small, similar dataset is left at the probe. Below it, the top
#: half is fine-tuned as well (look-alike classes often sit at 90-97%) and kept only if it beats
#: the probe on validation. A shorter fine-tune (the top 3 stages for 6 epochs) was measured and
#: dropped: on trash photos and hand signs it scored 1.2 and 1.5 points below the top half for
#: up to 10 epochs on the held-out test photos, to save one to two minutes (see the README).
PROBE_IS_ENOUGH = 0.98
#: Fine-tuning is planned only where validation can show what it gains: the probe's expected
#: errors on the validation images (from its out-of-fold accuracy), times the share of them a
#: fine-tuning can be expected to fix, must reach RESOLVABLE images. A paired test needs three
#: to four more images right than wrong to tell two models apart beyond noise (see
#: headstart.stages.evaluate.KEEP_FINE_TUNED); with fewer, the choice would be made on noise, and
#: the time spent on nothing that can be shown.
EXPECTED_FIXED_SHARE, RESOLVABLE = 0.25, 4.0
#: Low-resolution images unlike the pretraining data (a probe skill below SIMILAR_SKILL with
#: little detail): fed at about LOW_RES_SCALE times their detail (never below
#: LOW_RES_SMALLEST), every stage fine-tuned for LOW_RES_EPOCHS epochs with a gentler decay and
#: more patience. Measured on 20-px photos stored at 128 px (benchmarks/strategies.py): probe
#: and a 5-epoch fine-tune at 224 px 71-72%; this plan 78% (see the issue's closing note).
LOW_RES_SCALE, LOW_RES_SMALLEST = 5.0, 96
LOW_RES_EPOCHS, LOW_RES_DECAY, LOW_RES_PATIENCE = 20, 0.8, 8
#: The batch size the default learning rates were chosen for (the linear scaling rule's base).
REFERENCE_BATCH = 32


@dataclass(frozen=True)
class Plan:
    """What a fit will do and why, decided once before training (``plan.json``)."""

    strategy: str  # "linear-probe" | "fine-tune" | "full"
    size: str  # "small" | "large"
    domain: str  # "similar" | "different" | "unknown"
    reasons: tuple[str, ...]
    evidence: dict = field(default_factory=dict)
    fine_tune: FineTuneSettings | None = None
    test_time_flip: bool = False
    # The input side the plan trains at, when it is not the weights' own: a plan that asks for
    # another size than the one it measured with makes the fit take a second look at that
    # size (low-resolution images) and plan again.
    input_size: int | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["fine_tune"] = self.fine_tune.to_dict() if self.fine_tune else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        """The inverse of :meth:`to_dict` (``plan.json``), for resuming a run."""
        settings = data.get("fine_tune")
        return cls(
            data["strategy"],
            data["size"],
            data["domain"],
            tuple(data["reasons"]),
            dict(data.get("evidence") or {}),
            FineTuneSettings.from_dict(settings) if settings else None,
            bool(data.get("test_time_flip", False)),
            data.get("input_size"),
        )

    def adding(self, *reasons: str, **evidence) -> Plan:
        """This plan with more reasons and evidence (a new plan: plans are never changed)."""
        return replace(
            self, reasons=(*self.reasons, *reasons), evidence={**self.evidence, **evidence}
        )


def make_plan(
    requested: str,
    *,
    train_counts: dict[str, int],
    probe_accuracy: float | None,
    mirror_invariant: bool | None,
    pretrained: bool,
    stages: int,
    config: FitConfig | None = None,
    balance: tuple[str, str] = ("none", ""),
    gap: DomainReport | None = None,
    resized_from: int | None = None,
    val_images: int | None = None,
) -> Plan:
    """Decide the strategy and its settings; every choice comes with the reason for it.

    ``config`` carries the user's explicit choices (they win over the table's defaults, and
    the plan says so); ``balance`` is the class-balance decision and its reason (see
    :func:`headstart.training.imbalance.choose_balancing`); ``gap`` how far the images sit
    from the pretraining data (:func:`headstart.training.domain.measure_domain`);
    ``resized_from`` the input side of a first look that found the images low-resolution and
    unlike the pretraining data (this plan is then the low-resolution one, see
    :func:`low_resolution_input`); ``val_images`` the size of the validation split, on which
    a fine-tuning must be able to show its gain (see :data:`RESOLVABLE`).
    """
    config = config or FitConfig()
    lr, batch_size = config.lr, config.batch_size
    n_classes = len(train_counts)
    per_class = float(np.median(list(train_counts.values())))
    chance = 1.0 / n_classes
    size = "large" if per_class >= LARGE_PER_CLASS else "small"
    reasons = [
        f"{sum(train_counts.values())} training images, median {per_class:.0f} per class: "
        f"a {size} dataset (large from {LARGE_PER_CLASS} per class)"
    ]
    evidence: dict = {
        "train_images_per_class_median": per_class,
        "classes": n_classes,
        "chance_accuracy": chance,
    }

    if probe_accuracy is None or not np.isfinite(probe_accuracy):
        domain = "unknown"
    else:
        skill = (probe_accuracy - chance) / (1 - chance)
        domain = "similar" if skill >= SIMILAR_SKILL else "different"
        evidence.update(probe_cv_accuracy=probe_accuracy, probe_skill=skill)
        reasons.append(
            f"a linear probe on the frozen pretrained features reaches {probe_accuracy:.1%} "
            f"out-of-fold (chance {chance:.1%}; skill {skill:.2f}): the features "
            + ("already fit this task" if domain == "similar" else "fit this task only partly")
        )

    if gap is not None:
        evidence["domain_gap"] = gap.to_dict()
        reasons += [f"domain: {note}" for note in gap.notes]

    low_resolution = False
    resize_to = None
    if not pretrained:
        strategy = "full"
        reasons.append("no pretrained weights (--no-pretrained): training every layer from scratch")
    elif requested != "auto":
        strategy = requested
        reasons.append(f"strategy {requested} was asked for")
    elif resized_from is not None:
        strategy, low_resolution = "fine-tune", True
        reasons.append(
            f"low resolution and unlike the pretraining data (see the first look at "
            f"{resized_from} px): the images are fed at the size of their detail, and every "
            f"stage is fine-tuned, longer ({LOW_RES_EPOCHS} epochs), with a gentler layer-wise "
            "decay: the stem must adapt to blur it never saw"
        )
    elif (
        domain == "different"
        and gap is not None
        and gap.low_resolution
        and config.input_size is None
        and (resize_to := low_resolution_input(gap)) < gap.input_size
    ):
        strategy = "fine-tune"
        reasons.append(
            f"the images hold about {gap.effective_resolution:.0f} px of detail and the probe "
            f"finds the features a poor fit: measure and plan again at {resize_to} px, the "
            "size of their detail (faster too)"
        )
    elif (unseen := _unresolvable_gain(probe_accuracy, val_images)) is not None:
        strategy = "linear-probe"
        reasons.append(unseen)
        evidence["expected_fixed_images"] = (
            EXPECTED_FIXED_SHARE * (1 - probe_accuracy) * (val_images or 0)
        )
    elif domain != "different" and size == "small":
        if probe_accuracy is not None and probe_accuracy < PROBE_IS_ENOUGH:
            strategy = "fine-tune"
            reasons.append(
                "small and similar: the new last layer first; the probe is below "
                f"{PROBE_IS_ENOUGH:.0%}, so a fine-tune of the top half follows, kept only if "
                "it beats the probe on validation"
            )
        else:
            strategy = "linear-probe"
            reasons.append("small and similar: train only the new last layer (more would overfit)")
    elif size == "small":
        strategy = "fine-tune"
        reasons.append(
            "small but different: the hard case; fine-tune every stage with a small, "
            "layer-wise decaying learning rate"
        )
    elif domain == "different":
        strategy = "full"
        reasons.append("large and different: train the whole model")
    else:
        strategy = "fine-tune"
        reasons.append("large and similar: fine-tune the top half of the body")

    if resize_to is not None:  # a first look: the plan that counts is made at resize_to
        return Plan(strategy, size, domain, tuple(reasons), evidence, input_size=resize_to)

    flip = True if mirror_invariant is None else mirror_invariant
    if mirror_invariant is not None:
        reasons.append(
            "the probe scores the same on mirrored images: predictions average both views"
            + (" and fine-tuning flips images" if strategy != "linear-probe" else "")
            if flip
            else "the probe scores worse on mirrored images (text, digits, handedness?): "
            "no mirroring in training or prediction"
        )

    settings = None
    unused = fine_tuning_choices(config) if strategy == "linear-probe" else []
    if unused:
        reasons.append(
            f"{', '.join(unused)} set, but the linear probe trains no network: they take effect "
            "with --strategy fine-tune or full"
        )
    if strategy in ("fine-tune", "full"):
        freeze: str | int = "none"
        if strategy == "fine-tune" and domain != "different" and not low_resolution:
            freeze = stages - max(1, stages // 2)
        default_lr = 1e-3 if not pretrained else 3e-4 if strategy == "full" else 2e-4
        if lr is None and batch_size != REFERENCE_BATCH:
            scaled = scale_lr(default_lr, batch_size, REFERENCE_BATCH)
            reasons.append(
                f"learning rate {default_lr:g} scaled to {scaled:.3g} for batches of "
                f"{batch_size} (linear scaling rule, reference {REFERENCE_BATCH})"
            )
            default_lr = scaled
        planned = FineTuneSettings(
            epochs=LOW_RES_EPOCHS if low_resolution else 10 if size == "small" else 8,
            lr=default_lr,
            layer_decay=1.0 if not pretrained else LOW_RES_DECAY if low_resolution else 0.6,
            patience=LOW_RES_PATIENCE if low_resolution else 3,
            freeze=freeze,
            # Pretrained statistics stay, except where the whole model trains on plenty of
            # different data: there, batch statistics adapt the network to the new domain.
            frozen_norm_statistics=pretrained and not (strategy == "full" and size == "large"),
        )
        settings = with_choices(planned, config, stages, flip, balance, reasons)
        trainable = trainable_stages_for(settings.freeze, stages)
        shown = "every stage" if trainable is None else f"the top {trainable} of {stages} stages"
        reasons.append(
            f"training {shown} for up to {settings.epochs} epochs, "
            f"learning rate {settings.lr:g} at the top, {settings.optimizer}, "
            f"{settings.schedule} schedule with warm-up, "
            + (
                f"early stopping on validation accuracy (patience {settings.patience})"
                if settings.patience
                else "no early stopping"
            )
        )
        if settings.frozen_norm_statistics:
            reasons.append(
                "batch-norm layers keep their pretrained statistics while their scale and shift "
                "train: the fine-tuning sees the features the probe was fitted on"
            )
        elif pretrained:
            reasons.append(
                "batch-norm statistics adapt to this data (large and unlike the pretraining "
                "data, every layer trained)"
            )
    return Plan(strategy, size, domain, tuple(reasons), evidence, settings, flip)


def _unresolvable_gain(probe_accuracy: float | None, val_images: int | None) -> str | None:
    """Why a fine-tuning would gain less than validation can show; None when it could show."""
    if probe_accuracy is None or not np.isfinite(probe_accuracy) or val_images is None:
        return None
    errors = (1 - probe_accuracy) * val_images
    fixed = EXPECTED_FIXED_SHARE * errors
    if fixed >= RESOLVABLE:
        return None
    return (
        f"at {probe_accuracy:.1%} out-of-fold, the probe should get about {errors:.1f} of the "
        f"{val_images} validation images wrong; a fine-tuning that fixed a "
        f"{EXPECTED_FIXED_SHARE:.0%} share of them would gain about {fixed:.1f}, too few for "
        f"validation to tell apart from noise (it takes about {RESOLVABLE:.0f}): the probe is "
        "the model (--strategy fine-tune trains anyway; more validation images would show more)"
    )


def low_resolution_input(gap: DomainReport) -> int:
    """The input side for images with little detail: a few times their detail (the
    backbone's filters need some pixels per feature), in steps of 32, at least
    :data:`LOW_RES_SMALLEST`, at most the weights' own size."""
    side = 32 * round(LOW_RES_SCALE * gap.effective_resolution / 32)
    return int(min(gap.input_size, max(LOW_RES_SMALLEST, side)))


def requested_augmentation(config: FitConfig, *, flip: bool = True) -> AugmentSettings:
    """The augmentation ``config`` asks for; without ``flip`` (the task is not the same in a
    mirror, as the probe measures), flips are excluded too."""
    exclude = tuple(dict.fromkeys([*config.no_augment, *(() if flip else ("flip",))]))
    return AugmentSettings(
        preset=config.augment,
        policy=config.policy,
        exclude=exclude,
        include=("vflip",) if config.vflip else (),
        cutout=config.cutout,
    )


#: The settings that the plan resolves rather than copies: augment (with policy, no_augment,
#: vflip and cutout), balance, freeze (checked against the model's stages), early_stopping.
_RESOLVED = ("augment", "balance", "freeze")


def with_choices(
    planned: FineTuneSettings,
    config: FitConfig,
    stages: int,
    flip: bool,
    balance: tuple[str, str],
    reasons: list[str],
) -> FineTuneSettings:
    """The user's explicit choices over the table's defaults, each one said in the plan.

    A fine-tuning setting has the same name in FitConfig and FineTuneSettings: every one the
    user gave (not None) is copied as it is; the few in ``_RESOLVED`` are turned into what
    the loop needs first.
    """
    shared = {f.name for f in fields(FineTuneSettings)} & set(settings_table())
    given = {
        name: getattr(config, name)
        for name in sorted(shared - set(_RESOLVED))
        if getattr(config, name) is not None
    }
    if config.freeze is not None:
        trainable_stages_for(config.freeze, stages)  # a depth beyond the model is refused
        given["freeze"] = config.freeze
        reasons.append(f"freeze={config.freeze!r} was asked for")
    if not config.early_stopping:
        given["patience"] = None
    settings = replace(
        planned,
        **given,
        augment=requested_augmentation(config, flip=flip),
        balance=balance[0],
    )
    if balance[1]:
        reasons.append(balance[1])
    if config.unfreeze == "gradual":
        reasons.append("gradual unfreezing: the top stage alone first, one more stage each epoch")
    reasons.append("augmentation: " + "; ".join(settings.augment.describe()))
    return settings


def fine_tuning_choices(config: FitConfig) -> list[str]:
    """The fine-tuning settings ``config`` changed from their defaults."""
    table = settings_table()
    changed = [name for name in config.changed() if table[name].fine_tuning]
    return [n for n in changed if not (n == "optimizer" and config.optimizer == "lbfgs")]
