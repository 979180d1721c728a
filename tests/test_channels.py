"""Inputs unlike ImageNet: stacks of C measured channels, gray kept gray, another input size."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import timm
import torch
from PIL import Image

from headstart.auditing.pixels import measure
from headstart.auditing.views import square
from headstart.data import discover
from headstart.data.decoded import DecodedImages
from headstart.data.images import UnreadableImage, detect_channels, load_pixels
from headstart.errors import HeadstartError
from headstart.inputs import Normalize
from headstart.models import create_backbone
from headstart.models.weights import save_weights
from headstart.preprocessing import center_crop
from headstart.report.records import read_thumbnails, save_thumbnails

RNG = np.random.default_rng(0)
STACK = RNG.integers(0, 256, (40, 60, 4), dtype=np.uint8)  # (H, W, C): R, G, B, near-infrared


def write_stacks(folder: Path) -> dict[str, Path]:
    """The same 4-channel stack in every layout a user may hand us."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in ("hwc.npy", "chw.npy", "contig.tif", "planar.tif")}
    np.save(paths["hwc.npy"], STACK)
    np.save(paths["chw.npy"], np.moveaxis(STACK, -1, 0).copy())
    # 4 samples that are no colour model: Pillow cannot read these at all.
    tifffile.imwrite(paths["contig.tif"], STACK, photometric="minisblack", planarconfig="contig")
    planar = np.moveaxis(STACK, -1, 0).copy()
    tifffile.imwrite(paths["planar.tif"], planar, photometric="minisblack", planarconfig="separate")
    return paths


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_stacks(tmp_path_factory.mktemp("stacks"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    rgb = RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    paths = {"rgb": folder / "rgb.png", "gray": folder / "gray.png", "rgba": folder / "rgba.png"}
    Image.fromarray(rgb).save(paths["rgb"])
    Image.fromarray(rgb[..., 1]).save(paths["gray"])
    Image.fromarray(np.dstack([rgb, np.full((40, 60), 128, np.uint8)])).save(paths["rgba"])
    return paths


@pytest.fixture(scope="module")
def rgb_backbone() -> torch.nn.Module:
    return create_backbone("efficientnet_lite0")[0]


# --- Reading stacks -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hwc.npy", "chw.npy", "contig.tif", "planar.tif"])
def test_a_four_channel_stack_reads_as_stored(stacks: dict[str, Path], name: str):
    assert np.array_equal(load_pixels(stacks[name], channels=4), STACK)

    # Resized for the network channel by channel: the near-infrared channel is resized
    # exactly as a grayscale image of it would be.
    decoded = DecodedImages(20, "bicubic", channels=4).get(stacks[name])
    assert decoded.shape == (20, 30, 4) and decoded.dtype == np.uint8
    alone = Image.fromarray(STACK[..., 3]).resize((30, 20), Image.Resampling.BICUBIC)
    assert np.array_equal(decoded[..., 3], np.asarray(alone))


def test_wide_values_become_uint8_by_their_range_or_stretched_per_channel(tmp_path: Path):
    sixteen_bit = (STACK.astype(np.uint16) * 257)[..., :2]
    np.save(tmp_path / "u16.npy", sixteen_bit)
    assert np.array_equal(load_pixels(tmp_path / "u16.npy", channels=2), STACK[..., :2])

    # Two measurements in different units (e.g. Hounsfield units and a 0..1 signal): each is
    # stretched to the full 0..255 on its own, so neither is flattened by the other.
    ct = np.linspace(-1000, 3000, 40 * 60).reshape(40, 60)
    signal = np.linspace(0, 1, 40 * 60).reshape(40, 60)
    np.save(tmp_path / "float.npy", np.stack([ct, signal]))
    pixels = load_pixels(tmp_path / "float.npy", channels=2)
    assert pixels.min(axis=(0, 1)).tolist() == [0, 0]
    assert pixels.max(axis=(0, 1)).tolist() == [255, 255]


def test_rgb_stays_the_default_and_reads_as_pillow_does(photos: dict[str, Path]):
    decoded = DecodedImages(20, "bilinear").get(photos["rgb"])
    expected = Image.open(photos["rgb"]).resize((30, 20), Image.Resampling.BILINEAR)
    assert np.array_equal(decoded, np.asarray(expected))
    # Transparency composited onto white, as ever: a stored RGBA is not a 4-channel image.
    assert load_pixels(photos["rgba"]).shape == (40, 60, 3)


def test_grayscale_keeps_one_channel_when_asked(photos: dict[str, Path]):
    gray = np.asarray(Image.open(photos["gray"]))
    assert np.array_equal(load_pixels(photos["gray"], channels=1)[..., 0], gray)
    assert DecodedImages(20, "bicubic", channels=1).get(photos["gray"]).shape == (20, 30, 1)
    rgb = load_pixels(photos["gray"])  # the default: gray as RGB, as pretrained weights expect
    assert all(np.array_equal(rgb[..., c], gray) for c in range(3))


def test_a_file_with_other_channels_is_unreadable_and_says_why(
    stacks: dict[str, Path], photos: dict[str, Path], tmp_path: Path
):
    with pytest.raises(UnreadableImage) as caught:
        DecodedImages(20, "bicubic", tmp_path / "cache").get(stacks["hwc.npy"])
    assert str(caught.value).startswith(str(stacks["hwc.npy"]))
    assert caught.value.reason == "4 channels (.npy array), expected 3 (--in-chans 3)"

    with pytest.raises(UnreadableImage, match=r"3 channels \(RGB image\), expected 1"):
        load_pixels(photos["rgb"], channels=1)
    with pytest.raises(HeadstartError, match="channels=0"):
        DecodedImages(20, "bicubic", channels=0)


def test_pixel_caches_of_other_channel_counts_are_kept_apart(
    stacks: dict[str, Path], tmp_path: Path
):
    gray = tmp_path / "gray.npy"
    np.save(gray, STACK[..., 0])  # one channel: read as RGB (repeated) or as itself
    assert DecodedImages(20, "bicubic", tmp_path).get(gray).shape == (20, 30, 3)
    assert DecodedImages(20, "bicubic", tmp_path, channels=1).get(gray).shape == (20, 30, 1)
    assert DecodedImages(20, "bicubic", tmp_path).get(gray).shape == (20, 30, 3)  # cached


def test_detect_channels(stacks: dict[str, Path], photos: dict[str, Path], tmp_path: Path):
    assert detect_channels(list(stacks.values())) == 4
    assert detect_channels(list(photos.values())) == 3  # RGB, grayscale and RGBA photos alike
    assert detect_channels([]) == 3
    with pytest.raises(HeadstartError) as caught:
        detect_channels([*photos.values(), stacks["contig.tif"]])
    assert "3 channels" in str(caught.value) and "4 channels" in str(caught.value)
    assert str(stacks["contig.tif"]) in str(caught.value) and "--in-chans" in str(caught.value)


def test_npy_files_are_found_as_images(tmp_path: Path):
    for label in ("a", "b"):
        for i in range(3):
            write_stacks(tmp_path / label / str(i))
    dataset = discover(tmp_path, val_fraction=0.3)
    assert len(dataset.samples) == 24 and not dataset.skipped


# --- The backbone ---------------------------------------------------------------------------


def test_adapted_first_layer_is_the_pretrained_one(rgb_backbone: torch.nn.Module):
    """timm sums the RGB kernels for one channel and repeats them, scaled by 3 / C, for C:
    a gray image seen by a 1-channel network, or an RGB image repeated twice seen by a
    6-channel one, gives exactly the pretrained RGB network's features."""
    rgb = torch.randn(2, 3, 64, 64)
    gray = torch.randn(2, 1, 64, 64)
    gray_backbone, gray_preprocessing, _ = create_backbone("efficientnet_lite0", in_chans=1)
    six_backbone, six_preprocessing, _ = create_backbone("efficientnet_lite0", in_chans=6)
    with torch.no_grad():
        expected_rgb, expected_gray = rgb_backbone(rgb), rgb_backbone(gray.expand(-1, 3, -1, -1))
        torch.testing.assert_close(six_backbone(rgb.repeat(1, 2, 1, 1)), expected_rgb)
        torch.testing.assert_close(gray_backbone(gray), expected_gray)
    assert six_preprocessing.input_size == (6, 224, 224) and len(six_preprocessing.mean) == 6
    assert gray_preprocessing.input_size == (1, 224, 224)


def test_four_channel_stacks_from_disk_to_features(stacks: dict[str, Path]):
    backbone, preprocessing, _ = create_backbone("efficientnet_lite0", in_chans=4, input_size=64)
    images = DecodedImages(preprocessing.resize_size, preprocessing.interpolation, channels=4)
    _, height, width = preprocessing.input_size
    crops = [center_crop(images.get(path), height, width) for path in stacks.values()]
    batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
    assert batch.shape == (4, 4, 64, 64)
    with torch.no_grad():
        features = backbone(Normalize(preprocessing.mean, preprocessing.std)(batch))
    assert features.shape == (4, backbone.num_features)
    # The same stack in four layouts: the same features.
    torch.testing.assert_close(features, features[:1].expand(4, -1))


def test_input_size_sets_preprocessing_and_what_the_network_sees(rgb_backbone: torch.nn.Module):
    backbone, preprocessing, _ = create_backbone("efficientnet_lite0", input_size=160)
    assert preprocessing.input_size == (3, 160, 160)
    assert preprocessing.crop_pct == 0.875  # the weights' crop kept: the resize follows
    assert preprocessing.resize_size == math.floor(160 / 0.875)
    # A CNN takes any size: same weights, only the preprocessing changed.
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), rgb_backbone(x))


def test_a_fixed_size_network_is_rebuilt_for_the_input_size(tmp_path: Path):
    """A ViT's position embeddings fit one grid; weights trained at 224 are resampled to 160."""
    weights = save_weights(timm.create_model("vit_tiny_patch16_224"), tmp_path / "vit.safetensors")
    backbone, preprocessing, _ = create_backbone(
        "vit_tiny_patch16_224", weights=weights, input_size=160, in_chans=4
    )
    assert preprocessing.input_size == (4, 160, 160)
    with torch.no_grad():
        assert backbone(torch.randn(1, 4, 160, 160)).shape == (1, backbone.num_features)


def test_what_cannot_be_adapted_is_refused_up_front():
    with pytest.raises(HeadstartError, match=r"in_chans=0 is not allowed"):
        create_backbone("efficientnet_lite0", in_chans=0)
    with pytest.raises(HeadstartError, match=r"input_size=8 is not allowed.*at least 32"):
        create_backbone("efficientnet_lite0", input_size=8)
    # An architecture whose weights name no first layer cannot take other than 3 channels.
    with pytest.raises(HeadstartError, match=r"in_chans=4 is not possible.*first_conv"):
        create_backbone("csatv2", in_chans=4)


# --- The audit and the report ---------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 4])
def test_audit_measures_and_shows_stacks(tmp_path: Path, channels: int):
    path = tmp_path / "stack.npy"
    np.save(path, STACK[..., :channels])
    images = DecodedImages(32, "bicubic", channels=channels)
    stats, skipped = measure([path], images)
    assert not skipped
    assert (stats[path].width, stats[path].height, stats[path].bands) == (60, 40, channels)
    assert stats[path].mode == f"{channels}-channel stack"

    tile = np.asarray(square(images.get(path), 16))
    assert tile.shape == (16, 16, 3)
    save_thumbnails(tmp_path, [path], images.get, size=16)
    assert read_thumbnails(tmp_path)[str(path)].shape == (16, 16, 3)
