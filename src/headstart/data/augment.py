"""Training augmentation a user can see and restrict: presets, learned policies, opt-outs, previews.

An augmentation must not change the label: a hue shift can turn one skin-tone class into another,
a horizontal flip turns a "b" into a "d", a rotation can make "tilted" look "straight". So every
random operation here has a name (:data:`TRANSFORMS`) the user can exclude, and
:meth:`AugmentSettings.describe` says in words what will happen, for the plan and the report.
Vertical flips change the meaning of most photos (sky below, people upside down), so they are
never on unless *included*.

>>> settings = AugmentSettings("standard", exclude=("colour",))
>>> augment = build_augmentation(224, 224, settings)       # uint8 (C, H, W) -> uint8 (C, 224, 224)
>>> settings.describe()[:2]
['random crop of 35-100% of the area', 'horizontal flip (half the images)']

The transforms run per image on uint8 pixels inside the training loop, on the CPU, before the
batch is stacked and normalised. Throughput, images per second of one core's CPU time (256x341
uint8 in, 224x224 out, ``torch.set_num_threads(1)``): none ~77,000 (a view, no copy), light
~4,000, standard ~900, strong ~250; light + autoaugment ~1,250, + randaugment ~850,
+ trivialaugment ~1,350, + augmix ~320; light + cutout 0.5 ~3,500. A CPU training step of a
small backbone costs tens of milliseconds per image, so even "strong" (4 ms, mostly its hue
shifts) adds about a tenth; on a GPU it can become the bottleneck on few cores.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.transforms import v2

from ..config import POLICIES, PRESETS, TRANSFORMS
from ..drawing import caption_font, fit_text
from ..errors import HeadstartError
from ..storage import write_png

__all__ = [
    "POLICIES",
    "PRESETS",
    "TRANSFORMS",
    "AugmentSettings",
    "build_augmentation",
    "denormalize",
    "write_preview",
]

# PRESETS, POLICIES and TRANSFORMS (the names ``exclude`` accepts: each random operation,
# presets' and policies' alike) are the settings' vocabularies, defined in headstart.config.
#: Operations that change the meaning of most images: applied only when named in ``include``.
OPT_IN: tuple[str, ...] = ("vflip",)


@dataclass(frozen=True)
class _Recipe:
    """The random operations of one preset and their ranges; ``None`` or 0 means not used."""

    crop_scale: tuple[float, float] | None = None  # fraction of the area; None: centre crop
    rotate: float = 0.0  # degrees, either way
    shift: float = 0.0  # fraction of the width and height, either way
    shear: float = 0.0  # degrees, either way
    scale: tuple[float, float] | None = None  # zoom factor of the affine step
    affine_p: float = 0.0
    colour: tuple[float, float, float, float] | None = None  # brightness, contrast, saturation, hue
    colour_p: float = 0.0
    blur_sigma: tuple[float, float] | None = None  # pixels
    blur_p: float = 0.0
    noise_sigma: float = 0.0  # fraction of the full 0-255 range
    noise_p: float = 0.0
    resolution: tuple[float, float] | None = None  # shortest side shrunk to this fraction, restored
    resolution_p: float = 0.0


_RECIPES: dict[str, _Recipe] = {
    # The evaluation transform: a centre crop, nothing random.
    "none": _Recipe(),
    # What fine-tuning has always done; kept bit for bit so earlier results do not move. A crop
    # of at least 35% of the area keeps most of the object (timm's 8% lower bound is meant for
    # ImageNet-scale training from scratch, where heavier regularisation pays).
    "light": _Recipe(crop_scale=(0.35, 1.0)),
    # Small tilts, shifts and lighting changes a photographer would not notice. Each family is
    # applied to half the images so the network still sees the plain crops it is evaluated on.
    # No hue shift: it is the colour change most likely to alter a colour-defined class, and
    # torchvision's RGB-HSV round trip costs ~4 ms per 224x224 image, ten times the rest.
    "standard": _Recipe(
        crop_scale=(0.35, 1.0),
        rotate=10.0,
        shift=0.05,
        shear=5.0,
        scale=(0.9, 1.1),
        affine_p=0.5,
        colour=(0.2, 0.2, 0.2, 0.0),
        colour_p=0.5,
    ),
    # For very small datasets or long runs: larger ranges (SimCLR-like colour strength), plus the
    # degradations real photos have (defocus, sensor noise, low resolution), each on a fifth
    # of the images so they regularise without becoming the typical input.
    "strong": _Recipe(
        crop_scale=(0.2, 1.0),
        rotate=20.0,
        shift=0.1,
        shear=10.0,
        scale=(0.8, 1.2),
        affine_p=0.7,
        colour=(0.4, 0.4, 0.4, 0.1),
        colour_p=0.8,
        blur_sigma=(0.1, 2.0),
        blur_p=0.2,
        noise_sigma=0.04,
        noise_p=0.2,
        resolution=(0.35, 0.75),
        resolution_p=0.2,
    ),
}

# torchvision's policy operations by the exclusion name that removes them. Sharpness sharpens or
# softens: it counts as "blur". Everything that changes pixel values rather than positions is
# "colour", since posterising or equalising changes colours as surely as a hue shift does.
_POLICY_OPS: dict[str, str] = {
    "Rotate": "rotate",
    "TranslateX": "shift",
    "TranslateY": "shift",
    "ShearX": "shear",
    "ShearY": "shear",
    "Sharpness": "blur",
    **dict.fromkeys(
        (
            "Brightness",
            "Color",
            "Contrast",
            "Posterize",
            "Solarize",
            "AutoContrast",
            "Equalize",
            "Invert",
        ),
        "colour",
    ),
}

_CUTOUT_AREA = (0.02, 0.33)  # torchvision's default patch size, as a fraction of the image
_CUTOUT_VALUE = 128  # mid grey: after normalisation about zero, so the patch carries no signal


@dataclass(frozen=True)
class AugmentSettings:
    """What random changes training images go through; every operation can be excluded.

    ``preset`` picks the base operations (see :data:`PRESETS` and ``describe()``); ``policy`` adds
    a learned or random policy from torchvision (it pairs with the default "light" preset, as in
    timm's recipes); ``exclude`` names operations never applied because they would change a label
    (:data:`TRANSFORMS`, removed from the preset and from the policy alike); ``include`` names
    operations that are off unless asked for (only "vflip": for aerial, microscopy or other
    images without an up); ``cutout`` is the probability of erasing one random patch.
    """

    preset: str = "light"
    policy: str | None = None
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    cutout: float = 0.0

    def validate(self) -> None:
        """Refuse bad names and values, saying which parameter, which value and what is allowed."""
        if self.preset not in PRESETS:
            raise HeadstartError(_unknown("preset", self.preset, PRESETS))
        if self.policy is not None and self.policy not in POLICIES:
            raise HeadstartError(_unknown("policy", self.policy, (*POLICIES, None)))
        for field, allowed in (("exclude", TRANSFORMS), ("include", OPT_IN)):
            names = getattr(self, field)
            if isinstance(names, str):
                raise HeadstartError(
                    f"{field} must be a tuple of names, not the string {names!r}: "
                    f"write {field}=({names!r},)"
                )
            for name in names:
                if name not in allowed:
                    raise HeadstartError(_unknown(field, name, allowed))
        if both := sorted(set(self.exclude) & set(self.include)):
            raise HeadstartError(f"{', '.join(both)} is both in include and in exclude: pick one")
        if not (isinstance(self.cutout, (int, float)) and 0.0 <= self.cutout <= 1.0):
            raise HeadstartError(
                f"cutout must be a probability between 0 and 1, not {self.cutout!r}"
            )

    def describe(self, *, channels: int = 3) -> list[str]:
        """The operations in plain words, one per line, for the plan and the report."""
        self.validate()
        recipe, skip = _RECIPES[self.preset], self._skipped(channels)
        lines = []
        if recipe.crop_scale is None or "crop" in skip:
            lines.append("centre crop (no random crop)")
        else:
            lines.append(f"random crop of {_range_pct(recipe.crop_scale)} of the area")
        if self.preset != "none" and "flip" not in skip:
            lines.append("horizontal flip (half the images)")
        if "vflip" in self.include:
            lines.append("vertical flip (half the images)")
        affine = _affine_words(recipe, skip)
        if affine:
            lines.append(f"{', '.join(affine)} ({_pct(recipe.affine_p)} of the images)")
        if self.policy is not None:
            # Named by the exclusion that removed them; sharpness alone goes for lack of support.
            removed = {
                _POLICY_OPS[op] if _POLICY_OPS[op] in skip else "sharpness"
                for op in _policy_ops_removed(skip, channels)
            }
            without = f" without its {', '.join(sorted(removed))} operations" if removed else ""
            lines.append(f"{_POLICY_WORDS[self.policy]}{without}")
        if recipe.colour is not None and "colour" not in skip:
            brightness, contrast, saturation, hue = recipe.colour
            words = f"brightness ±{_pct(brightness)}, contrast ±{_pct(contrast)}, "
            words += f"saturation ±{_pct(saturation)}"
            words += f", hue ±{_pct(hue)} of the colour wheel" if hue else ", hue unchanged"
            lines.append(f"{words} ({_pct(recipe.colour_p)} of the images)")
        if recipe.blur_sigma is not None and "blur" not in skip:
            low, high = recipe.blur_sigma
            lines.append(f"Gaussian blur, sigma {low:g}-{high:g} px ({_pct(recipe.blur_p)})")
        if recipe.resolution is not None and "resolution" not in skip:
            lines.append(
                f"resolution lowered to {_range_pct(recipe.resolution)} and restored "
                f"({_pct(recipe.resolution_p)})"
            )
        if recipe.noise_sigma and "noise" not in skip:
            sigma = round(recipe.noise_sigma * 255)
            lines.append(f"Gaussian noise, sigma {sigma}/255 ({_pct(recipe.noise_p)})")
        if self.cutout:
            lines.append(
                f"cutout: one grey patch of {_range_pct(_CUTOUT_AREA)} of the area "
                f"({_pct(self.cutout)} of the images)"
            )
        if self.exclude:
            lines.append(f"never applied, as asked: {', '.join(self.exclude)}")
        if channels != 3:
            lines.append(
                f"colour changes left out: defined for RGB images, these have {channels} channels"
            )
        return lines

    def _skipped(self, channels: int) -> set[str]:
        """Excluded names, plus colour when the images are not RGB (hue has no meaning there)."""
        return set(self.exclude) | ({"colour"} if channels != 3 else set())


def build_augmentation(
    height: int, width: int, settings: AugmentSettings, *, channels: int = 3
) -> v2.Transform:
    """The random transform for training: uint8 ``(C, H, W)`` in, uint8 ``(C, height, width)`` out.

    Inputs are already resized so that their shortest side is the backbone's resize size (see
    :mod:`headstart.data.transforms`), so cropping comes first: every later step works on the
    small output and costs less. Areas that rotations and shifts uncover are black, as
    torchvision fills them. ``channels`` other than 3 leave colour changes out (see ``describe``).
    """
    settings.validate()
    for name, value in (("height", height), ("width", width), ("channels", channels)):
        if not isinstance(value, int) or value < 1:
            raise HeadstartError(f"{name} must be a positive whole number, not {value!r}")
    recipe, skip = _RECIPES[settings.preset], settings._skipped(channels)
    size = (height, width)
    steps: list[v2.Transform] = []
    if recipe.crop_scale is None or "crop" in skip:
        steps.append(v2.CenterCrop(size))
    else:
        steps.append(v2.RandomResizedCrop(size, scale=recipe.crop_scale, antialias=True))
    if settings.preset != "none" and "flip" not in skip:
        steps.append(v2.RandomHorizontalFlip())
    if "vflip" in settings.include:
        steps.append(v2.RandomVerticalFlip())
    if _affine_words(recipe, skip):
        affine = v2.RandomAffine(
            degrees=0.0 if "rotate" in skip else recipe.rotate,
            translate=None if "shift" in skip else (recipe.shift, recipe.shift),
            scale=None if "scale" in skip else recipe.scale,
            shear=None if "shear" in skip else recipe.shear,
            interpolation=v2.InterpolationMode.BILINEAR,
        )
        steps.append(v2.RandomApply([affine], p=recipe.affine_p))
    if settings.policy is not None:
        steps.append(_policy(settings.policy, _policy_ops_removed(skip, channels)))
    if recipe.colour is not None and "colour" not in skip:
        steps.append(v2.RandomApply([v2.ColorJitter(*recipe.colour)], p=recipe.colour_p))
    if recipe.blur_sigma is not None and "blur" not in skip:
        kernel = 2 * math.ceil(2 * recipe.blur_sigma[1]) + 1  # covers +-2 sigma at the largest
        blur = v2.GaussianBlur(kernel, sigma=recipe.blur_sigma)
        steps.append(v2.RandomApply([blur], p=recipe.blur_p))
    if recipe.resolution is not None and "resolution" not in skip:
        low, high = (max(1, round(f * min(size))) for f in recipe.resolution)
        shrink = v2.RandomResize(low, high + 1, antialias=True)
        steps.append(
            v2.RandomApply([shrink, v2.Resize(size, antialias=True)], p=recipe.resolution_p)
        )
    if recipe.noise_sigma and "noise" not in skip:
        noise = v2.GaussianNoise(sigma=recipe.noise_sigma)
        steps.append(v2.RandomApply([noise], p=recipe.noise_p))
    if settings.cutout:
        steps.append(v2.RandomErasing(settings.cutout, scale=_CUTOUT_AREA, value=_CUTOUT_VALUE))
    return v2.Compose(steps)


def denormalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo :class:`headstart.data.transforms.Normalize`: float ``(N, C, H, W)`` to uint8 pixels.

    For looking at the exact tensors that entered the network (``write_preview``).
    """
    if batch.ndim != 4 or not (len(mean) == len(std) == batch.shape[1]):
        raise HeadstartError(
            f"batch must be (N, C, H, W) with one mean and std per channel; got shape "
            f"{tuple(batch.shape)}, {len(mean)} means and {len(std)} stds"
        )
    mean_ = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255
    std_ = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255
    pixels = batch.detach().float().cpu() * std_ + mean_
    return pixels.round_().clamp_(0, 255).to(torch.uint8).contiguous()


_GAP, _LINE = 6, 14  # pixels between cells; height of a caption or title line


def write_preview(
    pixels: torch.Tensor,
    labels: Sequence[str],
    path: Path,
    *,
    columns: int = 8,
    title: str = "",
) -> Path:
    """A PNG grid of uint8 ``(N, C, H, W)`` images, ``columns`` per row, labels underneath.

    Images are drawn at their own size. One channel is shown as grey; more than three channels
    as their first three, and the title says so.
    """
    if pixels.ndim != 4 or pixels.dtype != torch.uint8:
        raise HeadstartError(
            f"pixels must be a uint8 (N, C, H, W) tensor, not {pixels.dtype} {tuple(pixels.shape)}"
        )
    if len(labels) != len(pixels):
        raise HeadstartError(f"labels has {len(labels)} entries for {len(pixels)} images")
    if not isinstance(columns, int) or columns < 1:
        raise HeadstartError(f"columns must be a positive whole number, not {columns!r}")
    count, channels, height, width = pixels.shape
    if channels > 3:
        title = f"{title}  (first 3 of {channels} channels shown)".strip()
    shown = pixels[:, :3] if channels >= 3 else pixels[:, :1].expand(-1, 3, -1, -1)
    images = shown.permute(0, 2, 3, 1).contiguous().numpy()
    rows = max(1, math.ceil(count / columns))
    cell_width, cell_height = width + _GAP, height + _LINE + _GAP
    top = _GAP + (_LINE if title else 0)
    sheet = Image.new(
        "RGB", (_GAP + min(count, columns) * cell_width, top + rows * cell_height), "white"
    )
    draw, font = ImageDraw.Draw(sheet), caption_font()
    if title:
        draw.text((_GAP, _GAP // 2), title, fill="black", font=font)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        row, column = divmod(index, columns)
        x, y = _GAP + column * cell_width, top + row * cell_height
        sheet.paste(Image.fromarray(np.ascontiguousarray(image)), (x, y))
        draw.text((x, y + height + 1), fit_text(str(label), width), fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_png(sheet, path)


_POLICY_WORDS = {
    "autoaugment": "AutoAugment (ImageNet policy)",
    "randaugment": "RandAugment (2 operations, magnitude 9 of 30)",
    "trivialaugment": "TrivialAugment (one operation, random strength)",
    "augmix": "AugMix (3 chains mixed with the original)",
}


def _policy(name: str, removed: frozenset[str]) -> v2.Transform:
    """torchvision's policy ``name`` with the operations in ``removed`` taken out of its op space.

    torchvision keeps each policy's operations as data: AutoAugment's sub-policies in
    ``_policies``, the others' operation tables in ``_AUGMENTATION_SPACE`` (AugMix also
    ``_PARTIAL_AUGMENTATION_SPACE``). Filtering that data on the instance removes operations while
    the remaining ones keep their ranges and the policy keeps its number of operations per image.
    If a torchvision release stores them differently, refuse rather than apply a removed one.
    """
    bilinear = v2.InterpolationMode.BILINEAR
    policy: v2.Transform = {
        "autoaugment": lambda: v2.AutoAugment(interpolation=bilinear),
        "randaugment": lambda: v2.RandAugment(interpolation=bilinear),
        "trivialaugment": lambda: v2.TrivialAugmentWide(interpolation=bilinear),
        "augmix": lambda: v2.AugMix(interpolation=bilinear),
    }[name]()
    if not removed:
        return policy
    if isinstance(policy, v2.AutoAugment) and hasattr(policy, "_policies"):
        policy._policies = [
            tuple(op for op in pair if op[0] not in removed) for pair in policy._policies
        ]
        return policy
    spaces = [
        a for a in ("_AUGMENTATION_SPACE", "_PARTIAL_AUGMENTATION_SPACE") if hasattr(policy, a)
    ]
    if not spaces:
        raise HeadstartError(
            f"policy {name!r} cannot be restricted with this torchvision version: drop the policy "
            f"or the exclusions ({', '.join(sorted(set(map(_POLICY_OPS.get, removed))))})"
        )
    for attribute in spaces:
        kept = {op: v for op, v in getattr(policy, attribute).items() if op not in removed}
        # "Identity" is an operation torchvision applies as a no-op: the fallback when
        # everything else is excluded.
        setattr(policy, attribute, kept or {"Identity": (lambda bins, height, width: None, False)})
    return policy


def _policy_ops_removed(skip: set[str], channels: int) -> frozenset[str]:
    """torchvision operation names to take out of a policy for these exclusions and channels."""
    removed = {op for op, name in _POLICY_OPS.items() if name in skip}
    if channels not in (1, 3):  # torchvision's sharpness kernel accepts 1 or 3 channels only
        removed.add("Sharpness")
    return frozenset(removed)


def _affine_words(recipe: _Recipe, skip: set[str]) -> list[str]:
    """The affine step's parts still on after exclusions; empty when the step is not used."""
    words = []
    if recipe.rotate and "rotate" not in skip:
        words.append(f"rotation up to ±{recipe.rotate:g}°")
    if recipe.shift and "shift" not in skip:
        words.append(f"shift up to ±{_pct(recipe.shift)} of the size")
    if recipe.shear and "shear" not in skip:
        words.append(f"shear up to ±{recipe.shear:g}°")
    if recipe.scale and "scale" not in skip:
        words.append(f"scale {_range_pct(recipe.scale)}")
    return words


def _unknown(parameter: str, value: object, allowed: Sequence[object]) -> str:
    names = [a for a in allowed if isinstance(a, str)]
    close = difflib.get_close_matches(str(value), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{parameter} {value!r} is not one of {', '.join(map(repr, allowed))}{hint}"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def _range_pct(bounds: tuple[float, float]) -> str:
    return f"{100 * bounds[0]:g}-{100 * bounds[1]:g}%"
