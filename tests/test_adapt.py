"""Adapting a model to unlabelled images of the domain it will be used in (``--target-images``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch import nn

import headstart
from headstart.cli import main
from headstart.demo import demo_dataset
from headstart.errors import HeadstartError
from headstart.stages.adapt import SHIFTED
from headstart.training.adapt import (
    Domains,
    Standardised,
    choose_move,
    domain_gap,
    fit_head,
    reestimate_batch_norm,
)

PER_CLASS = 20
SETTINGS = {"strategy": "linear-probe", "input_size": 64, "checks": False, "quiet": True}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """scikit-learn's digits: 20 a class as class folders (the labelled source), 20 others a
    class inverted, black on white (the target domain: a folder without labels, and the same
    images in class folders to score on), and 20 others as they are (no shift)."""
    root = tmp_path_factory.mktemp("digits")
    folders = {name: root / name for name in ("source", "target", "target_labelled", "alike")}
    for folder in sorted(p for p in demo_dataset("digits", root / "demo").iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.png"))
        thirds = (files[0::3], files[1::3], files[1::3], files[2::3])
        for name, chosen in zip(folders, thirds, strict=True):
            for file in chosen[:PER_CLASS]:
                image = Image.open(file)
                if name.startswith("target"):
                    image = ImageOps.invert(image.convert("L"))
                place = (
                    folders[name] if name in ("target", "alike") else folders[name] / folder.name
                )
                place.mkdir(parents=True, exist_ok=True)
                image.save(place / file.name)
    return folders


@pytest.fixture(scope="module")
def unadapted(digits: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    return headstart.fit(digits["source"], runs_dir=tmp_path_factory.mktemp("runs"), **SETTINGS)


def target_accuracy(model, labelled: Path) -> float:
    paths = sorted(labelled.rglob("*.png"))
    predicted = [p.label for p in model.predict(paths)]
    truth = [path.parent.name for path in paths]
    return float(np.mean(np.array(predicted) == np.array(truth)))


@pytest.mark.slow  # two adaptations: a minute; each move is tested on its own below
def test_adapting_to_inverted_digits_raises_their_accuracy(digits, unadapted, tmp_path):
    adapted = headstart.fit(
        digits["source"], target_images=digits["target"], runs_dir=tmp_path, **SETTINGS
    )

    before = target_accuracy(unadapted.model, digits["target_labelled"])
    after = target_accuracy(adapted.model, digits["target_labelled"])
    assert after >= before + 0.05, (before, after)
    record = json.loads((adapted.run_dir / "adaptation.json").read_text())
    assert record["target"]["shifted"] and record["target"]["images"] == 10 * PER_CLASS
    assert record["kept"] != "none"
    assert {"unadapted", "feature statistics", "batch-norm statistics"} <= {
        move["move"] for move in record["tried"]
    }
    plan = json.loads((adapted.run_dir / "plan.json").read_text())
    assert any("target images" in reason for reason in plan["reasons"])
    assert "Adaptation to the target images" in (adapted.run_dir / "report.html").read_text()
    # The saved bundle is the adapted model.
    reloaded = headstart.load(adapted.run_dir)
    assert target_accuracy(reloaded, digits["target_labelled"]) == after


@pytest.mark.slow
def test_a_fine_tuned_model_is_adapted_through_its_own_network(digits, tmp_path):
    settings = {**SETTINGS, "strategy": "fine-tune", "epochs": 1}
    plain = headstart.fit(digits["source"], runs_dir=tmp_path / "plain", **settings)
    adapted = headstart.fit(
        digits["source"], target_images=digits["target"], runs_dir=tmp_path / "adapted", **settings
    )

    assert adapted.strategy == "fine-tune"
    before = target_accuracy(plain.model, digits["target_labelled"])
    after = target_accuracy(adapted.model, digits["target_labelled"])
    assert after >= before + 0.05, (before, after)


def test_target_images_like_the_training_images_leave_the_model_as_trained(
    capsys, digits, unadapted, tmp_path
):
    target = tmp_path / "target"
    target.mkdir()
    for image in sorted(digits["alike"].glob("*.png"))[:50]:
        (target / image.name).write_bytes(image.read_bytes())
    (target / "broken.png").write_bytes(b"not an image")
    runs = tmp_path / "runs"

    code = main(
        [
            *("fit", str(digits["source"]), "--target-images", str(target)),
            *("--runs-dir", str(runs), "--strategy", "linear-probe", "--input-size", "64"),
            "--no-checks",
        ]
    )

    assert code == 0
    said = " ".join(capsys.readouterr().err.split())
    assert f"skipped target image {target / 'broken.png'}" in said
    assert "50 target images: a classifier tells them from the training images" in said
    assert "adapt: no shift measured" in said
    (run,) = runs.iterdir()
    record = json.loads((run / "adaptation.json").read_text())
    assert record["target"] == {**record["target"], "images": 50, "skipped": 1, "shifted": False}
    assert record["kept"] == "none"
    images = sorted(digits["alike"].glob("*.png"))[:20]
    model = headstart.load(run)
    assert np.array_equal(model.predict_proba(images), unadapted.model.predict_proba(images))


def test_target_images_that_are_not_there_are_refused_before_a_run_folder(digits, tmp_path):
    with pytest.raises(HeadstartError, match="no such file"):
        headstart.fit(digits["source"], target_images=tmp_path / "nowhere", runs_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HeadstartError, match="no images found"):
        headstart.fit(digits["source"], target_images=tmp_path / "empty", runs_dir=tmp_path)
    with pytest.raises(HeadstartError, match="pretrained=False"):
        headstart.fit(
            digits["source"], target_images=digits["target"], pretrained=False, runs_dir=tmp_path
        )
    with pytest.raises(HeadstartError, match="ensemble=3: adaptation moves one network"):
        headstart.fit(
            digits["source"], target_images=digits["target"], ensemble=3, runs_dir=tmp_path
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_reestimated_batch_norm_holds_the_statistics_of_the_new_images():
    network = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5))
    batches = [torch.randn(8, 3, 5, 5) * 3 + 2 for _ in range(4)]

    reestimate_batch_norm(network, iter(batches))

    norm = network[1]
    with torch.no_grad():
        convolved = torch.cat([network[0](b) for b in batches]).transpose(0, 1).flatten(1)
    assert torch.allclose(norm.running_mean, convolved.mean(1), atol=1e-4)
    assert norm.momentum == 0.1 and not network.training


def test_a_fitted_head_as_one_linear_layer_gives_the_same_logits():
    rng = np.random.default_rng(0)
    features = rng.normal(3, 2, (90, 6)).astype(np.float32)
    labels = np.arange(90) % 3
    standardise = Standardised.of(features)
    head = fit_head(standardise(features), labels, n_classes=3, C=1.0)

    with torch.no_grad():
        folded = head.linear(standardise)(torch.from_numpy(features)).numpy()
    assert np.allclose(folded, head.logits(standardise(features)), atol=1e-4)


def test_the_domain_classifier_tells_a_shift_from_a_second_sample():
    rng = np.random.default_rng(0)
    source = rng.normal(0, 1, (300, 20))

    assert domain_gap(source, rng.normal(0, 1, (300, 20))) < SHIFTED
    assert domain_gap(source, rng.normal(0, 1, (300, 20)) * 1.5 + 1) > 0.9


def test_feature_statistics_are_kept_for_a_shift_they_undo():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (4, 16)) * 3

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % 4
        return centres[labels] + rng.normal(0, 1, (n, 16)), labels

    (train, labels), (val, val_labels), (target, target_labels) = draw(400), draw(100), draw(400)
    target = target * 0.4 + 5  # every feature squeezed and moved: another sensor's look
    source = Standardised.of(train)
    own = Standardised.of(target)
    representations = [
        Domains("unadapted", source(train), source(val), source(target), source),
        Domains("feature statistics", source(train), source(val), own(target), own),
    ]

    kept, tried = choose_move(representations, labels, val_labels, 4, C=1.0)

    assert kept is not None and kept.domains.name == "feature statistics"
    before = (tried[0].head.predict(source(target)) == target_labels).mean()
    after = (kept.head.predict(own(target)) == target_labels).mean()
    assert after > before + 0.2, (before, after)
