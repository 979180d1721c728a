"""How the model sees an image, written once: decode, resize, crop, normalise, and the views
whose predictions are averaged.

Every path from a file to the network goes through :class:`InputPipeline` (steps 1 and 2 in
NumPy, :class:`~headstart.preprocessing.ImageReader`, shared with an exported model that runs
without PyTorch): feature extraction,
training and its validation, the sanity checks, the domain measurement, the model bundle's
predictions and the report. What it does comes from the weights' own preprocessing
(:class:`~headstart.preprocessing.Preprocessing`, timm's eval transform as data), so it cannot drift
from the weights:

1. decode the file (EXIF rotation, colour decisions: :mod:`headstart.data.images`) and resize
   its shortest side to ``resize_size`` with the weights' interpolation; the resized pixels
   are cached on disk (:class:`~headstart.data.decoded.DecodedImages`);
2. centre-crop to ``input_size`` (training draws random crops of the same pixels instead);
3. normalise a whole uint8 batch at once with the weights' mean and standard deviation
   (:class:`Normalize`, the first module of every :class:`~headstart.classifier.Classifier`,
   so an exported network takes uint8 pixels);
4. at prediction, average the logits of every view in :attr:`InputPipeline.views`: the image,
   and its mirror image when the task looks the same in a mirror (test-time flip); and of
   every crop in :attr:`InputPipeline.test_time_crops` (the centre crop, unless validation
   showed that more crops help: :mod:`headstart.stages.test_time`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .data.decoded import DecodedImages
from .preprocessing import VIEWS, Crops, ImageLike, ImageReader

__all__ = [
    "CPU_BATCH",
    "VIEWS",
    "Crops",
    "ImageLike",
    "InputPipeline",
    "Normalize",
    "forward",
    "to_tensor",
    "view",
]


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` uint8 array to a ``(C, H, W)`` uint8 tensor sharing its memory."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)


def view(batch: torch.Tensor, name: str) -> torch.Tensor:
    """One of :data:`VIEWS` of a ``(N, C, H, W)`` batch."""
    if name == "plain":
        return batch
    if name == "hflip":
        return batch.flip(-1)
    raise ValueError(f"view={name!r}; expected one of {VIEWS}")


#: Images per forward pass on a CPU. Small batches run fastest there, their activations kept
#: in the caches: on 2 cores, images/s at 8, 16 and 32 images per batch were 81, 66 and 57 for
#: efficientnet_lite0 (74 at 4), 24, 21 and 21 for resnet50, 25, 21 and 16 for convnext_tiny,
#: 27, 27 and 22 for vit_small_patch16_224. A GPU takes the whole batch at once.
CPU_BATCH = 8


def forward(network: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """``network(batch)``, :data:`CPU_BATCH` images at a time on a CPU. Each image's output
    is the same, bit for bit, whatever the batch it went through."""
    if len(batch) <= CPU_BATCH or next(network.parameters()).device.type != "cpu":
        return network(batch)
    return torch.cat([network(chunk) for chunk in batch.split(CPU_BATCH)])


class Normalize(torch.nn.Module):
    """uint8 ``(N, C, H, W)`` batch to normalised float, in channels-last memory."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        scale = 255.0 * torch.tensor(std, dtype=torch.float32)
        self.register_buffer("mean", 255.0 * torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("scale", scale.view(1, -1, 1, 1), persistent=False)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.mean.device, non_blocking=True).float()
        # The division in place, on the subtraction's own new tensor: one pass fewer.
        return (batch - self.mean).div_(self.scale).contiguous(memory_format=torch.channels_last)


@dataclass(frozen=True)
class InputPipeline(ImageReader):
    """The road from an image to the network's input, for one set of weights, in PyTorch:
    the :class:`~headstart.preprocessing.ImageReader`'s crops as tensors, normalised by the
    network's first module, and the averaged views' logits."""

    def batch(self, pixels: Sequence[np.ndarray]) -> torch.Tensor:
        """The evaluation crops of several images: ``(N, C, H, W)`` uint8 in channels-last
        memory (see :meth:`~headstart.preprocessing.ImageReader.batch_array`)."""
        return torch.from_numpy(self.batch_array(pixels))

    def read(
        self,
        paths: Sequence[Path],
        decoder: DecodedImages,
        batch_size: int,
        *,
        overlap: bool = True,
    ) -> Iterator[Crops]:
        """:meth:`~headstart.preprocessing.ImageReader.read_arrays`, its batches as tensors
        (sharing their memory)."""
        for crops in self.read_arrays(paths, decoder, batch_size, overlap=overlap):
            yield Crops(crops.paths, torch.from_numpy(crops.pixels), crops.skipped)

    def normalizer(self) -> Normalize:
        return Normalize(self.preprocessing.mean, self.preprocessing.std)

    def logits(self, network: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """``network``'s logits for a uint8 batch, averaged over :attr:`views` (in float32)."""
        total = None
        for name in self.views:
            logits = forward(network, view(batch, name)).float()
            total = logits if total is None else total + logits
        return total / len(self.views)

    def with_flip(self, test_time_flip: bool) -> InputPipeline:
        return replace(self, test_time_flip=test_time_flip)

    def with_crops(self, crops: Sequence[str]) -> InputPipeline:
        return replace(self, test_time_crops=tuple(crops))
