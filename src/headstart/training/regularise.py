"""Regularisers for the fine-tuning loop: batch mixing, a head penalty, weight averaging, and
gradient clipping.

Each piece is a thin layer over what torchvision, timm and torch already provide, adapted to the
:class:`~headstart.classifier.Classifier`'s contract (uint8 pixels in) and made deterministic
given a seed, so a run can be repeated bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from timm.utils import ModelEmaV3
from torch import nn
from torchvision.transforms import v2

from ..errors import HeadstartError

__all__ = ["BatchMixer", "WeightAverage", "clip_gradients", "head_penalty"]


class BatchMixer:
    """Mixup and CutMix on a batch: pixels blended or pasted, the targets mixed alike.

    ``mixup`` and ``cutmix`` are the alphas of the Beta distributions the mixing weight is drawn
    from (0 turns one off). With both on, each batch uses CutMix with probability
    ``switch_prob``, else Mixup (timm's convention). The images of a batch are paired with each
    other, so the loader must shuffle (it does). The random draws come from the mixer's own
    generator: the same seed gives the same mixes, and the global random state is left alone.

    The soft targets work with ``nn.CrossEntropyLoss(label_smoothing=...)``, which accepts class
    probabilities and smooths them too; accuracy must still be counted on the original labels.
    """

    def __init__(
        self,
        n_classes: int,
        mixup: float = 0.2,
        cutmix: float = 0.0,
        switch_prob: float = 0.5,
        *,
        seed: int = 0,
    ):
        if n_classes < 2:
            raise HeadstartError(
                f"Mixup with one class: n_classes={n_classes}, mixing needs at least 2 classes"
            )
        for name, alpha in (("mixup", mixup), ("cutmix", cutmix)):
            if not (math.isfinite(alpha) and alpha >= 0):
                raise HeadstartError(f"{name}={alpha}: the Beta alpha must be a number >= 0")
        if mixup == 0 and cutmix == 0:
            raise HeadstartError(
                "mixup=0 and cutmix=0: nothing to mix; give one a positive alpha (0.2 to 1 is "
                "usual) or leave the mixer out"
            )
        if not 0 <= switch_prob <= 1:
            raise HeadstartError(f"switch_prob={switch_prob}: must be between 0 and 1")
        self.n_classes = n_classes
        self.mixup, self.cutmix, self.switch_prob = mixup, cutmix, switch_prob
        choices, weights = [], []
        if mixup > 0:
            choices.append(v2.MixUp(alpha=mixup, num_classes=n_classes))
            weights.append(1.0 - switch_prob if cutmix > 0 else 1.0)
        if cutmix > 0:
            choices.append(v2.CutMix(alpha=cutmix, num_classes=n_classes))
            weights.append(switch_prob if mixup > 0 else 1.0)
        self._mix = v2.RandomChoice(choices, p=weights)
        self._rng_state = torch.Generator().manual_seed(seed).get_state()

    def __call__(
        self, pixels: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``(N, C, H, W)`` pixels and int ``(N,)`` labels -> float pixels in [0, 255]
        (a convex mix of two images, which the model's ``Normalize`` takes as it takes uint8)
        and ``(N, n_classes)`` target probabilities."""
        # torchvision draws from the global generator; run it on ours, then put the global back.
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng_state)
            mixed, targets = self._mix(pixels.float(), labels.long())
            self._rng_state = torch.get_rng_state()
        return mixed, targets


def head_penalty(head: nn.Linear, l1: float, l2: float) -> torch.Tensor:
    """Elastic-net penalty on the head's weights: ``l1 * sum|w| + l2 * sum w**2``.

    The bias is left out: it carries the class priors, and shrinking it towards zero would pull
    the predictions towards a uniform prior rather than towards simpler decisions. Add the result
    to the batch's mean loss; it is differentiable. ``l2`` here is a penalty in the loss, so unlike
    AdamW's decoupled weight decay it interacts with the adaptive step sizes; use it when the
    head should match a probe fitted with the same penalty, and weight decay otherwise.
    """
    for name, value in (("l1", l1), ("l2", l2)):
        if not (math.isfinite(value) and value >= 0):
            raise HeadstartError(f"{name}={value}: a penalty strength must be a number >= 0")
    weight = head.weight
    return l1 * weight.abs().sum() + l2 * weight.square().sum()


class WeightAverage:
    """An exponential moving average of a model's weights (timm's ``ModelEmaV3``), for evaluation.

    The decay warms up (``1 - (1 + step) ** -0.75``, capped at ``decay``): 0.83 after 10 steps,
    0.97 after 100, 0.99 after 460. Without warm-up, an average with decay 0.999 over a run of
    a few hundred steps on a small dataset would still be made mostly of the initial weights.

    Batch-norm running statistics are averaged like the weights (timm's default), not copied:
    they are measured on recent weights, so their average spans the same stretch of training as
    the averaged weights, while copying would pair the averaged weights with the statistics of
    the newest network. While fine-tuning keeps the pretrained statistics (the default) they do
    not change and both choices agree. For exact statistics of the averaged network, recompute
    them on training batches (``torch.optim.swa_utils.update_bn(loader, average.module)``).
    Integer buffers (``num_batches_tracked``) are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, *, warmup: bool = True):
        if not 0 <= decay < 1:
            raise HeadstartError(f"decay={decay}: the averaging decay must be in [0, 1)")
        self._ema = ModelEmaV3(model, decay=decay, use_warmup=warmup, warmup_power=3 / 4)
        self._ema.module.requires_grad_(False)  # evaluated, never optimised

    @property
    def module(self) -> nn.Module:
        """The averaged model, in eval mode; same class and state-dict keys as the original."""
        return self._ema.module

    def decay_at(self, step: int) -> float:
        """The decay the update at ``step`` uses (0 at the first step: the average starts as a
        copy)."""
        return self._ema.get_decay(step)

    def update(self, model: nn.Module, step: int) -> None:
        """Fold ``model``'s current weights in; ``step`` counts optimiser steps from 1."""
        self._ema.update(model, step)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, under the model's own keys: loadable into a fresh model too."""
        return self._ema.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._ema.module.load_state_dict(state)


def clip_gradients(parameters: Iterable[nn.Parameter], max_norm: float) -> float:
    """Scale the gradients so their global L2 norm is at most ``max_norm``; return the norm
    measured before clipping, for logging (a norm that keeps hitting the limit says the learning
    rate is too high). ``max_norm=math.inf`` measures without clipping. A non-finite norm is
    returned as is, for the loop's divergence check, rather than raised."""
    if not max_norm > 0:
        raise HeadstartError(f"max_norm={max_norm}: the gradient norm limit must be > 0")
    return float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))
