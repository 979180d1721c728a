"""Test-time crops: a prediction averaged over several crops of each image, kept only where
validation shows that it helps, and carried by the bundle to predict, evaluate and export."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest

import headstart
from headstart.bundle import describe
from headstart.config import TEST_TIME_CROPS
from headstart.errors import HeadstartError
from headstart.prediction import log_softmax
from headstart.preprocessing import CROP_SETS, CROPS, ImageReader, center_crop, crop
from headstart.stages.test_time import compare_crops
from test_cli import one_line_error, run


def corners_marked(side: int = 256) -> np.ndarray:
    """A grey square with a white dot in each corner and a black one in the middle."""
    pixels = np.full((side, side, 3), 128, np.uint8)
    for top in (0, side - 8):
        for left in (0, side - 8):
            pixels[top : top + 8, left : left + 8] = 255
    pixels[side // 2 - 4 : side // 2 + 4, side // 2 - 4 : side // 2 + 4] = 0
    return pixels


def test_each_crop_sees_its_own_part_of_the_image():
    pixels = corners_marked()
    crops = {name: crop(pixels, name, 224, 224, "bicubic") for name in CROPS}
    assert all(c.shape == (224, 224, 3) for c in crops.values())
    assert np.array_equal(crops["centre"], center_crop(pixels, 224, 224))
    assert crops["centre"].max() == 128  # the centre crop misses every corner's dot
    assert crops["wide"].max() > 200 and crops["wide"][:4, :4].min() > 200  # sees them all
    assert crops["top-left"][:8, :8].min() == 255 and crops["top-left"][-8:, -8:].max() == 128
    assert crops["bottom-right"][-8:, -8:].min() == 255
    assert crops["top-right"][:8, -8:].min() == 255 and crops["bottom-left"][-8:, :8].min() == 255


def test_the_corners_of_a_wide_photo_are_those_of_its_central_square():
    wide = np.zeros((256, 384, 3), np.uint8)
    wide[:, 64:320] = corners_marked()
    for name in CROPS:
        assert np.array_equal(
            crop(wide, name, 224, 224, "bicubic"), crop(corners_marked(), name, 224, 224, "bicubic")
        ), name


def test_a_wider_input_than_the_square_takes_its_corners_from_real_pixels():
    photo = np.full((256, 384, 3), 200, np.uint8)  # no black anywhere to pad with
    for name in CROPS:
        cropped = crop(photo, name, 224, 320, "bicubic")
        assert cropped.shape == (224, 320, 3) and cropped.min() > 0, name


def test_every_named_set_of_crops_is_a_choice_of_fit_tta():
    assert set(TEST_TIME_CROPS) == {"auto", *CROP_SETS}
    assert CROP_SETS["none"] == ("centre",) and set(CROP_SETS["six-crop"]) == set(CROPS)


def test_a_prediction_averages_the_logits_of_an_images_crops(fitted, faces):
    model = copy.copy(fitted.model)
    image = sorted(faces.rglob("*.png"))[0]
    pixels = model.inputs.pixels(image)
    crops = CROP_SETS["five-crop"]
    model.inputs = fitted.model.inputs.with_crops(crops)
    one_by_one = [
        fitted.model.logits(
            ImageReader(model.preprocessing, model.test_time_flip, (name,)).batch_array([pixels])
        )
        for name in crops
    ]
    expected = log_softmax(np.mean(one_by_one, axis=0) / np.float32(model.temperature))
    assert model.inputs.batch_array([pixels, pixels]).shape[0] == 2 * len(crops)
    assert np.allclose(np.log(model.predict_proba(image)), expected, atol=1e-5)
    predictions, _ = model.predict_files([image, image], quiet=True)  # files read in batches
    assert [p.probability for _, p in predictions] == pytest.approx(
        [float(np.exp(expected).max())] * 2, abs=1e-5
    )


def logits_by_crop(rng, labels, gain):
    """Each crop's logits for ``labels``: the true class ahead by a noisy margin; the crops
    other than the centre see ``gain`` more of it, with noise of their own."""
    n = len(labels)
    logits = {}
    for i, name in enumerate(CROPS):
        margin = 1.0 + (gain if i else 0.0) + rng.normal(0, 1.5, n)
        values = rng.normal(0, 0.3, (n, 3))
        values[np.arange(n), labels] += margin
        logits[name] = values.astype(np.float32)
    return logits


def test_crops_are_kept_only_when_validation_shows_they_help():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 400)
    kept, found = compare_crops(logits_by_crop(rng, labels, gain=1.0), labels)
    assert kept != "none" and found[kept]["z"] >= 1.5 and found[kept]["fixed"] > 0
    assert set(found) == set(CROP_SETS) and found["six-crop"]["cost"] == 6

    centre = logits_by_crop(rng, labels, gain=0.0)["centre"]
    same = dict.fromkeys(CROPS, centre)
    kept, found = compare_crops(same, labels)  # every crop sees what the centre sees
    assert kept == "none" and abs(found["six-crop"]["z"]) < 1

    worse = logits_by_crop(rng, labels, gain=-0.8)
    assert compare_crops(worse, labels)[0] == "none"


def test_a_probe_alone_is_not_measured_and_says_how_to_ask(fitted):
    summary = json.loads((fitted.run_dir / "summary.json").read_text())
    assert fitted.strategy == "linear-probe"
    assert summary["test_time"]["crops"] == ["centre"]
    assert "--tta" in summary["test_time"]["why"] and summary["test_time"]["measured"] is None
    assert describe(fitted.run_dir).meta["format"] == 2  # readable by versions before crops


@pytest.mark.slow  # a fine-tuning to watch a choice tested on given scores
def test_a_fine_tuning_measures_every_set_of_crops_on_validation(small_faces, tmp_path):
    result = headstart.fit(
        small_faces, strategy="fine-tune", epochs=1, runs_dir=tmp_path, quiet=True
    )
    decided = json.loads((result.run_dir / "summary.json").read_text())["test_time"]
    assert set(decided["measured"]) == set(CROP_SETS) and decided["images"] == len(
        result.dataset.split("val")
    )
    assert tuple(decided["crops"]) == result.model.test_time_crops
    assert "Test-time augmentation" in (result.run_dir / "report.html").read_text()


def test_asked_crops_are_used_by_the_bundle_evaluate_and_predict(small_faces, tmp_path, capsys):
    result = headstart.fit(
        small_faces, strategy="linear-probe", tta="five-crop", runs_dir=tmp_path, quiet=True
    )
    model = headstart.load(result.run_dir)
    assert model.test_time_crops == CROP_SETS["five-crop"]
    assert describe(result.run_dir).meta["format"] == 4  # older versions refuse, not ignore
    scores, _ = headstart.evaluate(result.run_dir, small_faces)
    assert scores["accuracy"] == result.scores["val"]["accuracy"]  # scored with the crops
    card = (result.run_dir / "model" / "README.md").read_text()
    assert "5 crops (centre, top-left" in card


def with_crops(fitted, folder, crops):
    """A copy of the fitted run whose bundle averages ``crops``."""
    copied = shutil.copytree(fitted.run_dir, folder / "run")
    meta_file = copied / "model" / "headstart.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "test_time_crops": crops}))
    return copied


@pytest.mark.slow  # an ONNX export: tens of seconds
def test_an_export_averages_the_same_crops(fitted, faces, tmp_path):
    copied = with_crops(fitted, tmp_path, ["centre", "wide"])
    exported = headstart.export(copied, "onnx", quiet=True)
    meta = json.loads((exported / "headstart.json").read_text())
    assert meta["parity"]["max_abs_difference"] <= 1e-4 and meta["format"] == 4
    assert meta["graph"]["crops"] == ["centre", "wide"]
    images = sorted(faces.rglob("*.png"))[:3]
    original, again = headstart.load(copied), headstart.load(exported)
    assert again.test_time_crops == ("centre", "wide")
    assert np.abs(original.predict_proba(images) - again.predict_proba(images)).max() < 1e-4


def test_a_bundle_with_unknown_crops_is_refused_in_one_line(fitted, faces, tmp_path, capsys):
    copied = with_crops(fitted, tmp_path, ["middle"])
    with pytest.raises(HeadstartError, match="test_time_crops"):
        headstart.load(copied)
    code, _, err = run(capsys, "predict", copied, faces)
    assert code != 0 and "test_time_crops" in one_line_error(err)
