"""Which layers train, and how fast: freezing plans on timm's layer groups.

Every timm model answers ``group_matcher()``, which names its stages from the stem to the top
(see :func:`headstart.classifier.layer_groups`). On top of those stages:

* a **freeze depth**: the bottom ``k`` stages frozen (``"all"``: only the head trains, the
  classic feature extraction with augmentation; ``"none"``: every stage trains);
* **discriminative learning rates**: the head at ``head_lr_scale`` times the top stage's rate,
  each stage below at ``layer_decay`` times the one above (early layers hold general features
  and move least);
* **gradual unfreezing** (ULMFiT): the top stage alone in the first epoch, one more stage each
  epoch after, down to the freeze depth.

Frozen stages keep their batch-norm layers in eval mode, so their running statistics stay
bit-identical to the pretrained ones.
"""

from __future__ import annotations

from typing import Protocol

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..classifier import Classifier, layer_groups
from ..errors import HeadstartError

__all__ = [
    "parameter_groups",
    "stages_trained",
    "train_mode",
    "trainable_stages_for",
    "unfreeze",
]


class Freezing(Protocol):
    """What freezing reads of :class:`~headstart.training.finetune.FineTuneSettings`."""

    freeze: str | int
    unfreeze: str
    lr: float
    head_lr_scale: float
    layer_decay: float
    frozen_norm_statistics: bool


def trainable_stages_for(freeze: str | int, stages: int) -> int | None:
    """The number of top stages that train when the bottom ``freeze`` stages are frozen.

    ``freeze`` is ``"all"`` (0 stages train: the head only), ``"none"`` (None: every stage) or
    a whole number of bottom stages, at most ``stages``.
    """
    if freeze == "all":
        return 0
    if freeze == "none":
        return None
    if isinstance(freeze, bool) or not isinstance(freeze, int) or freeze < 0:
        raise HeadstartError(
            f"freeze={freeze!r}: expected 'all', 'none' or a number of bottom stages "
            f"(0 to {stages})"
        )
    if freeze > stages:
        raise HeadstartError(
            f"freeze={freeze}: this model has only {stages} stages (timm's group_matcher); "
            f"freeze 0 to {stages} bottom stages, 'all' or 'none'"
        )
    return stages - freeze


def stages_trained(settings: Freezing, stages: int, epoch: int) -> int:
    """How many top stages train in ``epoch`` (from 1), with gradual unfreezing or without."""
    trainable = trainable_stages_for(settings.freeze, stages)
    planned = stages if trainable is None else trainable
    if settings.unfreeze == "gradual":
        return min(planned, epoch)
    return planned


def parameter_groups(model: Classifier, settings: Freezing) -> list[dict]:
    """The optimiser's groups: the head, then the trained stages from the top down, each with
    its learning rate; the stages below the freeze depth are frozen (``requires_grad`` off).

    Every stage that will ever train is in a group from the start (gradual unfreezing only
    switches ``requires_grad``), so the optimiser and its state never need rebuilding.
    """
    stages = layer_groups(model.backbone)
    trainable = trainable_stages_for(settings.freeze, len(stages))
    trainable = len(stages) if trainable is None else trainable
    head = {"params": list(model.head.parameters()), "lr": settings.lr * settings.head_lr_scale}
    groups = [{"name": "head", **head}]  # names: for monitoring; torch keeps extra keys
    for depth, params in enumerate(reversed(stages)):  # depth 0 is the top stage
        if depth >= trainable:
            for param in params:
                param.requires_grad_(False)
            continue
        lr = settings.lr * settings.layer_decay**depth
        groups.append({"name": f"stage {len(stages) - 1 - depth}", "params": params, "lr": lr})
    return groups


def unfreeze(groups: list[dict], trained: int) -> None:
    """Let the head and the top ``trained`` stage groups train; freeze the other stage groups."""
    for depth, group in enumerate(groups[1:]):
        for param in group["params"]:
            param.requires_grad_(depth < trained)
    for param in groups[0]["params"]:
        param.requires_grad_(True)


def train_mode(model: nn.Module, settings: Freezing) -> None:
    """Train mode, except batch-norm layers of frozen stages, and of every stage when the
    settings keep the pretrained statistics.

    Why keep them: on images unlike the pretraining data (8x8 digits enlarged to 224 px), the
    statistics of a batch differ so much from the running ones that the network in training mode
    computes other features than the ones the linear probe was fitted on. Measured on the
    digits: the probe-initialised network scores 0.0008 nats in eval mode and 15 nats (1.6%
    accuracy) in training mode, so fine-tuning began by wrecking the head it started from.
    """
    model.train()
    for module in model.modules():
        if isinstance(module, _BatchNorm) and (
            settings.frozen_norm_statistics or not any(p.requires_grad for p in module.parameters())
        ):
            module.eval()
