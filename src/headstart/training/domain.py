"""How far the user's images are from what the pretrained backbone saw, measured in seconds.

The classic decision table asks whether the new data is "similar to the source data"; the
linear probe answers that for the *task*. These measurements say *why* the data differs, in
terms a user can act on, from a sample of the images:

- **effective resolution**: how many pixels of real detail an image holds. A 20 px thumbnail
  blown up to 128 px is stored at 128 px but holds 20 px of information; the network, trained
  on 224 px photos, sees a blur. Measured from the image's spectrum (see
  :func:`effective_resolution`).
- **colour**: grayscale, or non-photographic (line art, documents, rendered digits, screenshots:
  a few colours, or large perfectly flat areas).
- **channels**: more than three (X-ray plus MRI), which the RGB input layer must be adapted to.
- **feature shift** (optional, needs the backbone): how far the activations entering the
  backbone's last batch-norm layer are from that layer's running statistics, which are
  ImageNet's (see :func:`feature_shift`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..data.images import UnreadableImage, load_image
from ..errors import HeadstartError
from ..inputs import InputPipeline
from ..models import preprocessing_of

__all__ = ["DomainReport", "effective_resolution", "feature_shift", "measure_domain"]

#: Effective resolution: the detail size ``s`` from which the image's spectrum holds less
#: energy above ``s`` than this fraction of the energy in the octave just below it (``s/2``
#: to ``s``). Natural photos lose about as much energy per octave at every scale, so they
#: read close to their stored size; an upscaled image has almost nothing above its original
#: size and reads that size.
DETAIL_TAIL = 0.05
#: Images larger than this are measured on a centre crop at their stored scale (detail per
#: pixel does not depend on how much of the picture is looked at).
MEASURED_SIDE = 256
#: Images larger than this on a side are measured on their central part at their stored
#: scale (colour, flatness, detail): a 144-megapixel photo is read once, never copied whole.
MEASURED_REGION = 1024
#: Effective resolution below this fraction of the backbone's input size counts as low.
LOW_RESOLUTION = 0.5
#: Mean absolute channel difference (0-255 levels) below which an image counts as grayscale.
GRAY_SPREAD = 2.0
#: Non-photographic: at most this many distinct colours, or at least ``FLAT_SHARE`` of
#: the pixels equal to their four neighbours. Photos hold sensor noise and shading: hundreds of
#: levels (a 25 px face crop, 60 or more) and almost no perfectly flat pixel; line art,
#: documents, rendered digits (scikit-learn's hold 17 levels) and screenshots are a few flat
#: colours.
FEW_LEVELS, FLAT_SHARE = 32, 0.3
#: Training from scratch is the honest option when a linear probe on the pretrained features
#: is this close to chance (skill above chance) and there are this many images per class.
SCRATCH_SKILL, SCRATCH_PER_CLASS = 0.2, 1000

ImageLike = str | Path | np.ndarray


@dataclass
class DomainReport:
    """What :func:`measure_domain` found; ``notes`` says it in sentences, with the numbers."""

    images_measured: int
    stored_size: float  # median shortest side, pixels
    effective_resolution: float  # median pixels of real detail along the shortest side
    input_size: int  # the backbone's input side
    low_resolution: bool
    grayscale_share: float  # share of the sample that is grayscale
    non_photographic_share: float  # share of the sample that is line art, documents, ...
    channels: int
    feature_shift: float | None = None  # see feature_shift(); 0: like the pretraining data
    train_from_scratch: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def grayscale(self) -> bool:
        return self.grayscale_share >= 0.5

    @property
    def non_photographic(self) -> bool:
        return self.non_photographic_share >= 0.5

    @property
    def extra_channels(self) -> bool:
        return self.channels > 3

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "grayscale": self.grayscale,
            "non_photographic": self.non_photographic,
            "extra_channels": self.extra_channels,
        }


def measure_domain(
    images: Sequence[ImageLike] | np.ndarray,
    *,
    input_size: int = 224,
    sample: int = 64,
    seed: int = 0,
    backbone: nn.Module | None = None,
    inputs: InputPipeline | None = None,
    probe_skill: float | None = None,
    images_per_class: float | None = None,
) -> DomainReport:
    """Measure how far ``images`` are from the backbone's pretraining data, on a sample.

    Args:
        images: image files, or pixel arrays ``(H, W)`` / ``(H, W, C)`` (uint8, or floats in
            0..1), or one array ``(N, H, W[, C])``.
        input_size: the side of the backbone's input (``Preprocessing.input_size[-1]``).
        sample: at most this many images, drawn at random with ``seed``, are measured.
        backbone: when given, the feature shift at its last batch-norm layer is measured too
            (RGB only), on the images as ``inputs`` prepares them for it (default: as its
            weights' preprocessing says).
        probe_skill: the cross-validated linear probe's accuracy above chance (0 guessing,
            1 perfect), and ``images_per_class``: with both, the report says when training
            from scratch is the honest option.

    Raises:
        HeadstartError: bad parameter values, or no readable image in the sample.
    """
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise HeadstartError(f"sample={sample!r} is not allowed: expected a positive int")
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 8:
        raise HeadstartError(f"input_size={input_size!r} is not allowed: expected an int >= 8")
    if probe_skill is not None and not -1 <= probe_skill <= 1:
        raise HeadstartError(f"probe_skill={probe_skill!r} is not allowed: expected -1..1")
    items = list(images)
    if not items:
        raise HeadstartError("images is empty: nothing to measure")
    if len(items) > sample:
        chosen = np.random.default_rng(seed).choice(len(items), sample, replace=False)
        items = [items[i] for i in sorted(chosen)]

    pixels, channels, stored = [], [], []
    for item in items:
        try:
            array, count = _read(item)
        except UnreadableImage:
            continue  # discovery and the audit report unreadable files
        stored.append(min(array.shape[:2]))
        pixels.append(_central(array, MEASURED_REGION))  # bounded memory for huge photos
        channels.append(count)
    if not pixels:
        raise HeadstartError(f"none of the {len(items)} sampled images could be read")

    detail = [effective_resolution(p, side) for p, side in zip(pixels, stored, strict=True)]
    gray = [_is_grayscale(p) for p in pixels]
    flat = [_non_photographic(p) for p in pixels]
    report = DomainReport(
        images_measured=len(pixels),
        stored_size=float(np.median(stored)),
        effective_resolution=float(np.median(detail)),
        input_size=input_size,
        low_resolution=bool(np.median(detail) < LOW_RESOLUTION * input_size),
        grayscale_share=float(np.mean(gray)),
        non_photographic_share=float(np.mean(flat)),
        channels=max(channels),
    )
    if backbone is not None and report.channels <= 3:
        inputs = inputs or InputPipeline(preprocessing_of(backbone))
        report.feature_shift = feature_shift(backbone, pixels, inputs)
    report.train_from_scratch = (
        probe_skill is not None
        and images_per_class is not None
        and probe_skill < SCRATCH_SKILL
        and images_per_class >= SCRATCH_PER_CLASS
    )
    report.notes = _notes(report, probe_skill, images_per_class)
    return report


def effective_resolution(pixels: np.ndarray, stored: int | None = None) -> float:
    """Pixels of real detail along the shortest side of one image (at most its stored size).

    The luminance of a centre crop (at most :data:`MEASURED_SIDE` px, at the stored scale) is
    Hann-windowed and Fourier-transformed; with ``E(s)`` the spectral energy finer than a
    detail size of ``s`` px, the answer is the smallest ``s`` at which ``E(s)`` is below
    :data:`DETAIL_TAIL` times the energy between ``s/2`` and ``s``, scaled back to the
    shortest side. Noise counts as detail; blank images read their stored size.
    """
    crop = _central(pixels, MEASURED_SIDE)
    luma = _luminance(crop)
    height, width = luma.shape
    shortest = min(pixels.shape[:2])
    stored = shortest if stored is None else stored  # pixels may be a central part of it
    side = min(shortest, MEASURED_SIDE)
    if side < 16:
        return float(stored)  # too few frequencies to tell anything apart
    top, left = (height - side) // 2, (width - side) // 2
    crop = luma[top : top + side, left : left + side]
    scale = stored / shortest
    window = np.hanning(side)
    power = np.abs(np.fft.fft2((crop - crop.mean()) * np.outer(window, window))) ** 2
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(side), np.fft.fftfreq(side), indexing="ij"))
    cycles = np.minimum((frequency * side).astype(int), side // 2)  # cycles per crop side
    energy = np.bincount(cycles.ravel(), power.ravel(), minlength=side // 2 + 1)
    total = energy[1:].sum()
    if total <= 0:
        return float(stored)
    finer = energy[::-1].cumsum()[::-1]  # finer[k]: energy at k cycles and above
    for k in range(2, side // 2 + 1):
        # k cycles per crop side need 2k px: the detail size s = 2k, its half-octave k/2.
        above = finer[k + 1] if k + 1 < len(finer) else 0.0
        octave = finer[max(k // 2, 1)] - above
        if above <= DETAIL_TAIL * octave:
            return float(min(stored, 2 * k * shortest / side * scale))
    return float(stored)


def feature_shift(
    backbone: nn.Module,
    pixels: Sequence[np.ndarray],
    inputs: InputPipeline,
) -> float | None:
    """How far the activations entering ``backbone``'s last batch-norm layer are from that
    layer's running statistics (ImageNet's, for pretrained weights), per channel: the mean's
    distance in running standard deviations plus half the absolute log ratio of the
    variances, averaged over channels. 0 for data like the pretraining data; with the built-in
    efficientnet_lite0, about 0.35 on eight varied photos, 0.7 on 20 px thumbnails of them and
    1.35 on rendered digits, measured on the crops the network sees. ``None`` when the
    backbone has no batch norm."""
    norms = [m for m in backbone.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return None
    last = norms[-1]
    seen: list[torch.Tensor] = []
    hook = last.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    crops = inputs.batch([inputs.pixels(np.ascontiguousarray(p[..., :3])) for p in pixels])
    batch = inputs.normalizer()(crops)
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            backbone(batch.to(next(backbone.parameters()).device))
    finally:
        hook.remove()
        backbone.train(was_training)
    activations = seen[0].float().cpu()
    per_channel = activations.transpose(0, 1).flatten(1)
    source_var = last.running_var.float().cpu() + last.eps
    mean_shift = (per_channel.mean(1) - last.running_mean.float().cpu()).abs() / source_var.sqrt()
    spread_shift = (per_channel.var(1) + last.eps).div(source_var).log().abs() / 2
    return float((mean_shift + spread_shift).mean())


def _read(item: ImageLike) -> tuple[np.ndarray, int]:
    """Pixels as ``(H, W, 3)`` uint8 (or ``(H, W, C)`` for more channels), and the count of
    information channels (alpha is not one; grayscale files count as 3, as they are read)."""
    if isinstance(item, np.ndarray):
        array = item
        if array.dtype.kind == "f":
            array = np.clip(array * 255, 0, 255).round()
        elif array.dtype.kind == "b":
            array = array * 255
        array = np.asarray(array, dtype=np.uint8)
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3:
            raise HeadstartError(f"an image array of shape {item.shape}: expected (H, W[, C])")
        count = array.shape[-1]
        if count == 1:
            array = np.repeat(array, 3, axis=-1)
        return array, max(count, 3)
    path = Path(item)
    if path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False)  # a stack of measured channels
        if array.ndim == 3 and array.shape[0] < array.shape[-1]:
            array = np.moveaxis(array, 0, -1)
        return _read(array if array.dtype.kind != "f" or array.max() <= 1 else array / array.max())
    bands = 3
    try:
        with Image.open(path) as image:
            bands = len([b for b in image.getbands() if b not in ("A", "a", "P")])
    except OSError:
        pass  # load_image says why
    return np.asarray(load_image(path)), 3 if bands in (1, 4) else max(bands, 3)


def _central(pixels: np.ndarray, side: int) -> np.ndarray:
    """The central ``side`` x ``side`` part of an image (all of it when smaller)."""
    height, width = pixels.shape[:2]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return pixels[top : top + side, left : left + side]


def _luminance(pixels: np.ndarray) -> np.ndarray:
    colour = pixels[..., :3].astype(np.float32) / 255
    return colour @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _is_grayscale(pixels: np.ndarray) -> bool:
    rgb = pixels[..., :3].astype(np.int16)
    spread = np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])
    return float(spread.mean()) / 2 < GRAY_SPREAD


def _non_photographic(pixels: np.ndarray) -> bool:
    rgb = pixels[..., :3].astype(np.int16)
    if len(np.unique(rgb @ np.array([1, 256, 65536]))) <= FEW_LEVELS:
        return True
    centre = rgb[1:-1, 1:-1]
    flat = np.ones(centre.shape[:2], dtype=bool)
    for neighbour in (rgb[:-2, 1:-1], rgb[2:, 1:-1], rgb[1:-1, :-2], rgb[1:-1, 2:]):
        flat &= (centre == neighbour).all(-1)
    return bool(flat.size) and float(flat.mean()) >= FLAT_SHARE


def _notes(report: DomainReport, skill: float | None, per_class: float | None) -> list[str]:
    notes = []
    detail, stored, size = report.effective_resolution, report.stored_size, report.input_size
    where = f"(stored at {stored:.0f} px)"
    if report.low_resolution:
        notes.append(
            f"the images hold about {detail:.0f} px of detail {where}: far below the "
            f"{size} px the backbone was trained on; low resolution"
        )
    elif detail < 0.8 * stored:
        notes.append(
            f"the images hold about {detail:.0f} px of detail {where}: enough for the "
            f"{size} px the backbone was trained on"
        )
    else:
        notes.append(f"the images hold about {detail:.0f} px of detail {where}, as sharp as stored")
    if report.extra_channels:
        notes.append(
            f"the images have {report.channels} channels; the backbone was trained on 3 (RGB): "
            "its first layer must be adapted (its RGB filters are averaged into each channel)"
        )
    elif report.grayscale:
        notes.append(
            f"{report.grayscale_share:.0%} of the images are grayscale: the backbone sees them "
            "as gray RGB photos, which its colour filters handle, with no colour to go by"
        )
    if report.non_photographic:
        notes.append(
            f"{report.non_photographic_share:.0%} of the images are non-photographic (at most "
            f"{FEW_LEVELS} colours, or flat areas over {FLAT_SHARE:.0%} of the pixels: "
            "line art, documents, rendered digits or screenshots): unlike the photos the "
            "backbone was trained on"
        )
    if report.feature_shift is not None:
        notes.append(
            f"at the backbone's last batch-norm layer, the images' activations are "
            f"{report.feature_shift:.2f} from the pretraining data's statistics (0: alike; "
            "about 0.35 for varied photos, 1.3 for rendered digits)"
        )
    if report.train_from_scratch:
        notes.append(
            f"a linear probe on the pretrained features is near chance (skill {skill:.2f}) and "
            f"there are {per_class:.0f} images per class: training from scratch "
            "(--no-pretrained) is the honest option; pretrained weights may still speed it up"
        )
    return notes
