"""From decoded pixels to the exact tensors that enter the network.

Images reach these functions already resized (shortest side = ``Preprocessing.resize_size``, see
:mod:`headstart.data.decoded`), so evaluation is a centre crop, the same as timm's eval
transform, and training augmentation is a random crop of those pixels ("presizing"). Pixels stay
uint8 until a whole batch is normalised at once, which is cheaper than per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms import v2

from .augment import AugmentSettings, build_augmentation

__all__ = ["Normalize", "center_crop", "to_tensor", "train_augmentation"]


def center_crop(pixels: np.ndarray, height: int, width: int) -> torch.Tensor:
    """An ``(H, W, 3)`` uint8 array to a ``(3, height, width)`` uint8 tensor, cropped at the centre.

    Images smaller than the crop (a panorama's short side is already ``resize_size``, but a
    ``crop_pct`` above 1 can ask for more) are padded with zeros, as torchvision does.
    """
    return v2.functional.center_crop(to_tensor(pixels), [height, width])


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 array to a ``(3, H, W)`` uint8 tensor sharing its memory."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)


def train_augmentation(height: int, width: int, *, flip: bool = True) -> v2.Transform:
    """Light augmentation for fine-tuning: a random crop that keeps most of the object, flips.

    The "light" preset of :mod:`headstart.data.augment`, where the other presets, learned
    policies and opt-outs live. Kept light by default: on a few hundred images heavy
    augmentation slows convergence more than it regularises, and colour changes can destroy
    colour-defined classes.
    """
    settings = AugmentSettings("light", exclude=() if flip else ("flip",))
    return build_augmentation(height, width, settings)


class Normalize(torch.nn.Module):
    """uint8 ``(N, C, H, W)`` batch to normalised float, in channels-last memory on CPU."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        scale = 255.0 * torch.tensor(std, dtype=torch.float32)
        self.register_buffer("mean", 255.0 * torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("scale", scale.view(1, -1, 1, 1), persistent=False)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.mean.device, non_blocking=True).float()
        return ((batch - self.mean) / self.scale).contiguous(memory_format=torch.channels_last)
