"""The domain report says how far the images are from the backbone's photos, with numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image
from sklearn.datasets import load_digits

from headstart.errors import HeadstartError
from headstart.models import create_backbone
from headstart.training.domain import effective_resolution, measure_domain


def thumbnails(detail: int, stored: int = 128, count: int = 12) -> list[np.ndarray]:
    """Crops of a photo shrunk to ``detail`` px and blown back up to ``stored`` px."""
    photo = Image.fromarray(skimage.data.astronaut())
    rng = np.random.default_rng(0)
    crops = []
    for _ in range(count):
        left, top = rng.integers(0, 256, size=2)
        crop = photo.crop((left, top, left + 256, top + 256))
        small = crop.resize((detail, detail), Image.Resampling.BOX)
        crops.append(np.asarray(small.resize((stored, stored), Image.Resampling.BICUBIC)))
    return crops


def test_thumbnails_blown_up_read_their_real_detail_not_their_stored_size():
    report = measure_domain(thumbnails(detail=20))

    assert report.stored_size == 128
    assert 14 <= report.effective_resolution <= 28
    assert report.low_resolution
    assert "about" in report.notes[0] and "(stored at 128 px)" in report.notes[0]
    assert f"{report.effective_resolution:.0f} px of detail" in report.notes[0]
    assert "224 px" in report.notes[0]


def test_more_detail_reads_more():
    assert np.median([effective_resolution(t) for t in thumbnails(detail=48)]) > 36


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_sharp_photos_read_near_their_stored_size(name: str):
    photo = getattr(skimage.data, name)()
    assert effective_resolution(photo) >= 0.9 * min(photo.shape[:2])


def test_photos_are_neither_low_resolution_nor_flagged():
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
    report = measure_domain(photos)

    assert not report.low_resolution
    assert not report.grayscale and not report.non_photographic and not report.extra_channels
    assert report.notes == [
        f"the images hold about {report.effective_resolution:.0f} px of "
        f"detail (stored at {report.stored_size:.0f} px), as sharp as stored"
    ]


def test_rendered_digits_are_grayscale_and_non_photographic(tmp_path: Path):
    paths = []
    for i, digit in enumerate(load_digits().images[:30]):
        path = tmp_path / f"{i}.png"
        Image.fromarray((digit * 255 / 16).astype(np.uint8), mode="L").save(path)
        paths.append(path)

    report = measure_domain(paths)

    assert report.grayscale and report.non_photographic
    assert report.to_dict()["non_photographic"] is True
    assert any("100% of the images are non-photographic" in note for note in report.notes)
    assert any("grayscale" in note for note in report.notes)


def test_a_grayscale_photo_is_grayscale_but_photographic():
    report = measure_domain([skimage.data.camera()])
    assert report.grayscale and not report.non_photographic


def test_extra_channels_are_reported_and_scratch_suggested_only_when_honest():
    stacks = [np.random.default_rng(i).random((64, 64, 5)) for i in range(4)]

    near_chance = measure_domain(stacks, probe_skill=0.05, images_per_class=4000)
    informative = measure_domain(stacks, probe_skill=0.6, images_per_class=4000)

    assert near_chance.channels == 5 and near_chance.extra_channels
    assert any("5 channels" in note for note in near_chance.notes)
    assert near_chance.train_from_scratch
    assert any("training from scratch" in note for note in near_chance.notes)
    assert not informative.train_from_scratch


def test_feature_shift_is_larger_for_digits_than_for_photos():
    backbone, _, _ = create_backbone("efficientnet_lite0")  # ImageNet statistics
    photos = [
        getattr(skimage.data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket")
    ]
    digits = [(d * 255 / 16).astype(np.uint8) for d in load_digits().images[:4]]

    def shift(images: list[np.ndarray]) -> float | None:
        return measure_domain(images, backbone=backbone).feature_shift

    on_photos, on_digits = shift(photos), shift(digits)
    assert on_photos is not None and on_digits is not None
    assert on_photos < 0.6 < 1.0 < on_digits


def test_bad_parameters_are_refused_with_the_value():
    with pytest.raises(HeadstartError, match="sample=0"):
        measure_domain([skimage.data.astronaut()], sample=0)
    with pytest.raises(HeadstartError, match="input_size=4"):
        measure_domain([skimage.data.astronaut()], input_size=4)
    with pytest.raises(HeadstartError, match="empty"):
        measure_domain([])
