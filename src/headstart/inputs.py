"""How the model sees an image, written once: decode, resize, crop, normalise, and the views
whose predictions are averaged.

Every path from a file to the network goes through :class:`InputPipeline`: feature extraction,
training and its validation, the sanity checks, the domain measurement, the model bundle's
predictions and the report. What it does comes from the weights' own preprocessing
(:class:`~headstart.models.Preprocessing`, timm's eval transform as data), so it cannot drift
from the weights:

1. decode the file (EXIF rotation, colour decisions: :mod:`headstart.data.images`) and resize
   its shortest side to ``resize_size`` with the weights' interpolation; the resized pixels
   are cached on disk (:class:`~headstart.data.decoded.DecodedImages`);
2. centre-crop to ``input_size`` (training draws random crops of the same pixels instead);
3. normalise a whole uint8 batch at once with the weights' mean and standard deviation
   (:class:`Normalize`, the first module of every :class:`~headstart.classifier.Classifier`,
   so an exported network takes uint8 pixels);
4. at prediction, average the logits of every view in :attr:`InputPipeline.views`: the image,
   and its mirror image when the task looks the same in a mirror (test-time flip).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from .data.decoded import DecodedImages, map_batches, resize_shortest_side
from .data.images import UnreadableImage, to_rgb
from .data.sources import Skipped
from .errors import HeadstartError
from .models import Preprocessing

__all__ = [
    "CPU_BATCH",
    "VIEWS",
    "Crops",
    "InputPipeline",
    "Normalize",
    "center_crop",
    "forward",
    "stack_crops",
    "to_tensor",
    "view",
]

#: The views a prediction can average: the image as it is, and its mirror image.
VIEWS = ("plain", "hflip")

ImageLike = str | Path | Image.Image | np.ndarray


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` uint8 array to a ``(C, H, W)`` uint8 tensor sharing its memory."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)


def center_crop(pixels: np.ndarray, height: int, width: int) -> torch.Tensor:
    """An ``(H, W, C)`` uint8 array to a ``(C, height, width)`` uint8 tensor, cut at the centre.

    Images smaller than the crop (a ``crop_pct`` above 1 can ask for more than the resize
    gives) are padded with zeros, as torchvision does.
    """
    return v2.functional.center_crop(to_tensor(pixels), [height, width])


def stack_crops(crops: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(C, H, W)`` crops stacked into an ``(N, C, H, W)`` batch held in channels-last memory.

    Pixels are stored ``(H, W, C)`` and the network runs channels-last on a CPU: keeping that
    layout, neither this stack nor the normalisation transposes the pixels (3x cheaper).
    """
    return torch.stack([crop.permute(1, 2, 0) for crop in crops]).permute(0, 3, 1, 2)


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
class Crops:
    """The evaluation crops of one batch of files, and the files of it that could not be read."""

    paths: list[Path]  # the files read, in the order given
    pixels: torch.Tensor  # (len(paths), C, H, W) uint8
    skipped: list[Skipped]

    def __len__(self) -> int:
        """Files handled, read or not: what a progress bar counts."""
        return len(self.paths) + len(self.skipped)


@dataclass(frozen=True)
class InputPipeline:
    """The road from an image to the network's input, for one set of weights."""

    preprocessing: Preprocessing
    #: Predictions average the image with its mirror (the plan decides, from the probe).
    test_time_flip: bool = False

    @property
    def channels(self) -> int:
        return self.preprocessing.input_size[0]

    @property
    def crop_size(self) -> tuple[int, int]:
        """``(height, width)`` of the network's input."""
        _, height, width = self.preprocessing.input_size
        return height, width

    @property
    def views(self) -> tuple[str, ...]:
        """The views whose logits a prediction averages."""
        return VIEWS if self.test_time_flip else VIEWS[:1]

    def decoder(self, cache: Path | None = None) -> DecodedImages:
        """Files to resized pixels, cached under ``cache`` (None: nothing is written)."""
        preprocessing = self.preprocessing
        return DecodedImages(
            preprocessing.resize_size,
            preprocessing.interpolation,
            cache,
            channels=self.channels,
        )

    def pixels(self, image: ImageLike, decoder: DecodedImages | None = None) -> np.ndarray:
        """Resized ``(H, W, C)`` uint8 pixels of a file, a PIL image or an array, as a file of
        the same picture would give (EXIF rotation, transparency and 16-bit included).

        Raises :class:`~headstart.data.UnreadableImage` for a file that cannot be used and
        :class:`~headstart.errors.HeadstartError` for an array or image of the wrong kind.
        """
        size, interpolation = self.preprocessing.resize_size, self.preprocessing.interpolation
        if isinstance(image, str | Path):
            return (decoder or self.decoder()).get(image)
        channels = self.channels
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != channels or image.dtype != np.uint8:
                kind = "RGB" if channels == 3 else f"with {channels} channels"
                raise HeadstartError(
                    f"an array image must be (H, W, {channels}) uint8 {kind}, "
                    f"got {image.shape} {image.dtype}"
                )
            if channels != 3:  # a stack: already the channels the network takes
                return resize_shortest_side(image, size, interpolation)
            image = Image.fromarray(image)
        elif channels != 3:
            raise HeadstartError(
                f"this model takes {channels}-channel images: pass a file or an "
                f"(H, W, {channels}) uint8 array, not a PIL image"
            )
        try:
            rgb = to_rgb(image)
        except ValueError as error:
            raise HeadstartError(f"cannot classify this image: {error}") from None
        return resize_shortest_side(rgb, size, interpolation)

    def crop(self, pixels: np.ndarray) -> torch.Tensor:
        """The evaluation crop of resized pixels: ``(C, H, W)`` uint8."""
        return center_crop(pixels, *self.crop_size)

    def batch(self, pixels: Sequence[np.ndarray]) -> torch.Tensor:
        """The evaluation crops of several images, stacked: ``(N, C, H, W)`` uint8 (in
        channels-last memory, see :func:`stack_crops`)."""
        return stack_crops([self.crop(p) for p in pixels])

    def read(
        self,
        paths: Sequence[Path],
        decoder: DecodedImages,
        batch_size: int,
        *,
        overlap: bool = True,
    ) -> Iterator[Crops]:
        """The evaluation crops of ``paths``, ``batch_size`` files at a time, in order, decoded
        in worker threads: ``overlap``, while the caller runs the network on the batch
        before (for a network on a GPU); else between the caller's forward passes, on every
        core (for a network on the CPU; see :func:`~headstart.data.decoded.map_batches`).
        """

        def crop(path: Path) -> tuple[Path, torch.Tensor] | Skipped:
            try:
                return path, self.crop(decoder.get(path))
            except UnreadableImage as error:
                return Skipped(path, error.reason)

        batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
        empty = torch.zeros((0, self.channels, *self.crop_size), dtype=torch.uint8)
        for cropped in map_batches(crop, batches, overlap=overlap):
            good = [c for c in cropped if not isinstance(c, Skipped)]
            yield Crops(
                [path for path, _ in good],
                stack_crops([pixels for _, pixels in good]) if good else empty,
                [c for c in cropped if isinstance(c, Skipped)],
            )

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
        return InputPipeline(self.preprocessing, test_time_flip)
