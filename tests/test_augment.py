"""Augmentation presets, learned policies and opt-outs: what they do to pixels, and the preview."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from headstart.data.augment import (
    POLICIES,
    PRESETS,
    AugmentSettings,
    build_augmentation,
    denormalize,
    write_preview,
)
from headstart.errors import HeadstartError
from headstart.inputs import Normalize

SIZE = (48, 64)  # output height, width: small keeps every test fast


def gradient(axis: int = 2) -> torch.Tensor:
    """Red rising and blue falling along ``axis`` (left to right, or top to bottom): a mirror
    along that axis swaps the red side and the blue side."""
    ramp = torch.linspace(0, 255, 80).round().to(torch.uint8)
    ramp = ramp.view(1, -1) if axis == 2 else ramp.view(-1, 1)
    ramp = ramp.expand(60, 80) if axis == 2 else ramp.expand(80, 60)
    return torch.stack([ramp, torch.zeros_like(ramp), 255 - ramp])


def direction(image: torch.Tensor, axis: int = 2) -> float:
    """Correlation of redness with position along ``axis``: positive as drawn, negative mirrored.

    Redness, (R - B) / (R + B), is kept by brightness and saturation changes and by blending
    with black; the corners a rotation uncovers (black, or grey after a contrast change) and
    4 pixels around them (blur and resizing smear their edge) are left out.
    """
    red, blue = image[0].float(), image[2].float()
    uncovered = (red + blue < 120).float()[None, None]
    shown = torch.nn.functional.max_pool2d(uncovered, 9, stride=1, padding=4)[0, 0] == 0
    redness = ((red - blue) / (red + blue).clamp(min=1))[shown]
    position = torch.arange(image.shape[axis], dtype=torch.float32)
    position = (position.view(1, -1) if axis == 2 else position.view(-1, 1)).expand_as(red)
    return float(torch.corrcoef(torch.stack([redness, position[shown]]))[0, 1])


def off_colour(image: torch.Tensor, colour: torch.Tensor) -> float:
    """How far the worst pixel is from the line black-to-``colour``, in 0-255 levels.

    Crops, rotations (with their black corners), blur and resolution changes only mix the colour
    with itself and with black, so every pixel stays on that line; colour changes leave it.
    """
    pixels = image.float().flatten(1).T
    along = (pixels @ colour) / (colour @ colour)
    return float((pixels - along[:, None] * colour).norm(dim=1).max())


def test_none_is_the_evaluation_centre_crop_every_time():
    image = torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8)
    augment = build_augmentation(*SIZE, AugmentSettings("none"))
    expected = v2.functional.center_crop(image, list(SIZE))
    for _ in range(5):
        assert torch.equal(augment(image), expected)


def test_light_is_the_augmentation_fine_tuning_always_used():
    image = torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8)
    before = v2.Compose(
        [v2.RandomResizedCrop(SIZE, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    )
    light = build_augmentation(*SIZE, AugmentSettings())  # "light" is the default
    for seed in range(20):
        torch.manual_seed(seed)
        old = before(image)
        torch.manual_seed(seed)
        assert torch.equal(light(image), old)
        torch.manual_seed(seed)
        assert torch.equal(build_augmentation(*SIZE, AugmentSettings("light"))(image), old)


def test_light_crops_and_flips_about_half_the_images():
    torch.manual_seed(0)
    augment = build_augmentation(*SIZE, AugmentSettings("light"))
    ramp = gradient()
    outputs = [augment(ramp) for _ in range(100)]
    mirrored = sum(direction(out) < 0 for out in outputs)
    assert 30 < mirrored < 70
    spans = [int(out[0].max()) - int(out[0].min()) for out in outputs]  # crops see part of it
    assert min(spans) < 0.75 * 255 and max(spans) > 0.9 * 255


# The strong preset's hue shifts (a tenth of the colour wheel) move the ramp's red and blue
# themselves, so there the ramp is read with colour changes off; they cannot mirror anything.
@pytest.mark.parametrize(
    ("preset", "also_excluded"), [("light", ()), ("standard", ()), ("strong", ("colour",))]
)
def test_excluded_flip_never_mirrors(preset, also_excluded):
    torch.manual_seed(0)
    ramp = gradient()
    kept = build_augmentation(*SIZE, AugmentSettings(preset, exclude=also_excluded))
    assert any(direction(kept(ramp)) < 0 for _ in range(20))  # mirrors when allowed ...
    excluded = AugmentSettings(preset, exclude=("flip", *also_excluded))
    augment = build_augmentation(*SIZE, excluded)
    assert all(direction(augment(ramp)) > 0 for _ in range(100))  # ... never when excluded


def test_vertical_flips_only_when_included():
    torch.manual_seed(0)
    ramp = gradient(axis=1)
    strong = build_augmentation(*SIZE, AugmentSettings("strong", exclude=("colour",)))
    assert all(direction(strong(ramp), axis=1) > 0 for _ in range(60))
    asked = build_augmentation(*SIZE, AugmentSettings("light", include=("vflip",)))
    flipped = sum(direction(asked(ramp), axis=1) < 0 for _ in range(100))
    assert 30 < flipped < 70


@pytest.mark.parametrize(
    "settings",
    [AugmentSettings("strong", exclude=("noise",))]
    + [AugmentSettings("light", policy) for policy in POLICIES],
    ids=["strong", *POLICIES],
)
def test_excluded_colour_never_changes_a_flat_colour(settings):
    torch.manual_seed(0)
    colour = torch.tensor([120.0, 60.0, 30.0])
    flat = colour.to(torch.uint8).view(3, 1, 1).expand(3, 60, 80).contiguous()
    changes = build_augmentation(*SIZE, settings)
    assert max(off_colour(changes(flat), colour) for _ in range(30)) > 15  # it does, allowed

    restricted = AugmentSettings(settings.preset, settings.policy, (*settings.exclude, "colour"))
    augment = build_augmentation(*SIZE, restricted)
    assert max(off_colour(augment(flat), colour) for _ in range(60)) < 4


def test_cutout_erases_one_grey_patch():
    torch.manual_seed(0)
    dark = torch.full((3, 60, 80), 10, dtype=torch.uint8)
    augment = build_augmentation(*SIZE, AugmentSettings("none", cutout=1.0))
    for _ in range(20):
        erased = (augment(dark) != 10).all(0)
        rows, columns = erased.any(1).nonzero(), erased.any(0).nonzero()
        box = erased[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
        assert box.all()  # one rectangle
        assert 0.01 < erased.float().mean() < 0.4
    never = build_augmentation(*SIZE, AugmentSettings("none"))
    assert torch.equal(never(dark), dark[:, 6:54, 8:72])


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize(
    ("preset", "policy"), [(p, None) for p in PRESETS] + [("standard", p) for p in POLICIES]
)
def test_output_is_uint8_at_the_asked_size_for_any_channel_count(channels, preset, policy):
    torch.manual_seed(0)
    settings = AugmentSettings(preset, policy, include=("vflip",), cutout=0.5)
    augment = build_augmentation(*SIZE, settings, channels=channels)
    for height, width in [(60, 80), (40, 40)]:  # smaller than the crop too
        image = torch.randint(0, 256, (channels, height, width), dtype=torch.uint8)
        for _ in range(3):
            out = augment(image)
            assert out.shape == (channels, *SIZE) and out.dtype == torch.uint8


@pytest.mark.parametrize("channels", [1, 4])
def test_images_that_are_not_rgb_keep_their_values(channels):
    torch.manual_seed(0)
    flat = torch.full((channels, 60, 80), 100, dtype=torch.uint8)
    geometry = ("rotate", "shift", "shear", "scale")  # they uncover black corners
    settings = AugmentSettings("standard", "randaugment", exclude=geometry)
    augment = build_augmentation(*SIZE, settings, channels=channels)
    assert all(torch.equal(augment(flat), flat[:, :48, :64]) for _ in range(30))


def test_describe_says_what_happens_and_what_is_left_out():
    standard = AugmentSettings("standard").describe()
    assert any("rotation" in line for line in standard)
    assert any("brightness" in line for line in standard)
    assert not any("vertical" in line for line in standard)

    restricted = AugmentSettings("standard", "randaugment", exclude=("rotate", "colour"))
    words = "\n".join(restricted.describe())
    assert "rotation" not in words and "brightness" not in words
    assert "RandAugment" in words and "without its colour, rotate operations" in words

    scans = "\n".join(AugmentSettings("strong").describe(channels=4))
    assert "brightness" not in scans and "4" in scans
    assert AugmentSettings("none").describe() == ["centre crop (no random crop)"]


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (AugmentSettings("heavy"), ["preset", "'heavy'", "'strong'"]),
        (AugmentSettings(policy="randaug"), ["policy", "'randaug'", "'randaugment'"]),
        (AugmentSettings(exclude=("color",)), ["exclude", "'color'", "did you mean 'colour'"]),
        (AugmentSettings(exclude="colour"), ["exclude", "('colour',)"]),
        (AugmentSettings(include=("flip",)), ["include", "'flip'", "'vflip'"]),
        (AugmentSettings(include=("vflip",), exclude=("vflip",)), ["include", "exclude"]),
        (AugmentSettings(cutout=1.5), ["cutout", "1.5", "between 0 and 1"]),
    ],
)
def test_bad_settings_are_refused_with_the_parameter_and_what_is_allowed(settings, words):
    with pytest.raises(HeadstartError) as refused:
        build_augmentation(*SIZE, settings)
    assert all(word in str(refused.value) for word in words)


def test_preview_is_a_grid_with_a_caption_under_each_image(tmp_path):
    pixels = torch.randint(0, 256, (10, 3, 96, 64), dtype=torch.uint8)
    path = write_preview(
        pixels, [f"class {i % 3}" for i in range(10)], tmp_path / "a.png", columns=4
    )
    with Image.open(path) as sheet:
        width, height = sheet.size
    assert 4 * 64 <= width < 5 * 64  # four columns
    assert 3 * 96 <= height < 4 * 96  # three rows, captions included

    grey = torch.full((2, 1, 32, 48), 200, dtype=torch.uint8)
    with Image.open(write_preview(grey, ["x", "y"], tmp_path / "grey.png")) as sheet:
        assert (200, 200, 200) in {colour for _, colour in sheet.getcolors(10_000)}

    scans = torch.randint(0, 256, (3, 4, 32, 48), dtype=torch.uint8)
    assert write_preview(scans, ["a", "b", "c"], tmp_path / "scans.png").exists()
    with pytest.raises(HeadstartError, match="labels"):
        write_preview(scans, ["a"], tmp_path / "bad.png")


def test_denormalize_gives_back_the_pixels_that_were_normalised():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pixels = torch.randint(0, 256, (4, 3, 16, 24), dtype=torch.uint8)
    assert torch.equal(denormalize(Normalize(mean, std)(pixels), mean, std), pixels)
