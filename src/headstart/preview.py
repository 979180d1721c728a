"""``headstart augment-preview``: the training tensors, augmented, for a person to look at.

Augmentations must not change a label (a flip turns a "b" into a "d", a colour change can
destroy a skin-tone class). The only reliable check is to look at what training sees: this
draws training images through the same augmentation, mixing and normalisation as the
fine-tuning loop, then undoes the normalisation for display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .config import FitConfig
from .data.augment import build_augmentation, denormalize, write_preview
from .data.images import UnreadableImage
from .errors import HeadstartError
from .inputs import to_tensor
from .stages.data import prepare
from .training.plan import requested_augmentation
from .training.regularise import BatchMixer

__all__ = ["augment_preview"]


def augment_preview(data: str | Path, config: FitConfig, out: str | Path, images: int = 32) -> Path:
    """Write a PNG grid of ``images`` training images as they enter the network.

    The augmentation is the one ``config`` asks for; ``fit`` may in addition turn flips off
    when its probe finds the task is not mirror-invariant (the plan says so).
    """
    config.validate()
    if images < 1:
        raise HeadstartError(f"images={images!r}: at least 1")
    ready = prepare(data, config, read=False)
    channels, height, width = ready.preprocessing.input_size
    augment = build_augmentation(height, width, requested_augmentation(config), channels=channels)
    train = ready.dataset.split("train")
    rng = np.random.default_rng(config.seed)
    chosen = [train[i] for i in rng.permutation(len(train))[:images]]
    torch.manual_seed(config.seed)
    pixels, labels = [], []
    for sample in chosen:
        try:
            pixels.append(augment(to_tensor(ready.images.get(sample.path))))
        except UnreadableImage:
            continue
        labels.append(sample.label)
    if not pixels:
        raise HeadstartError(f"{data}: no readable training image to preview")
    batch = torch.stack(pixels)
    captions = labels
    if config.mixup or config.cutmix:
        index = {name: i for i, name in enumerate(ready.dataset.classes)}
        mixer = BatchMixer(len(index), mixup=config.mixup, cutmix=config.cutmix)
        batch, targets = mixer(batch, torch.tensor([index[label] for label in labels]))
        captions = [_mixed_caption(row, ready.dataset.classes) for row in targets]
    entering = ready.inputs.normalizer()(batch)  # the exact tensor the backbone receives
    shown = denormalize(entering, ready.preprocessing.mean, ready.preprocessing.std)
    return write_preview(shown, captions, Path(out))


def _mixed_caption(target: torch.Tensor, classes: list[str]) -> str:
    weights, top = target.topk(min(2, len(classes)))
    return " + ".join(
        f"{classes[int(i)]} {float(w):.0%}" for w, i in zip(weights, top, strict=True) if w > 0.01
    )
