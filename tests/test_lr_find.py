"""The learning-rate range test: ``headstart lr-find`` and ``lr_range_test``."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import headstart
from headstart.classifier import Classifier
from headstart.cli import main
from headstart.data.decoded import DecodedImages
from headstart.inputs import InputPipeline
from headstart.models import Preprocessing, create_backbone
from headstart.training.finetune import FineTuneSettings
from headstart.training.lr_find import (
    HALFWAY_DOWN,
    MIN_OVER_10,
    LRFindResult,
    lr_range_test,
    suggest_lr,
)

#: Small crops keep every step cheap: the faces are 25 px photos anyway.
#: 64 x 64 crops, normalised around 0.5: the inputs of the tiny network.
INPUTS = InputPipeline(Preprocessing((3, 64, 64), (0.5,) * 3, (0.5,) * 3, "bicubic", 0.9))


def examples(folder: Path) -> list[tuple[Path, int]]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    return [(image, label) for label, c in enumerate(classes) for image in sorted(c.glob("*.png"))]


def classifier(backbone: torch.nn.Module, preprocessing: Preprocessing) -> Classifier:
    """The backbone with a fresh two-class head (small weights, as fit's fresh head)."""
    head = torch.nn.Linear(backbone.num_features, 2)
    with torch.no_grad():
        head.weight.mul_(0.1)
        head.bias.zero_()
    return Classifier(backbone, head, preprocessing)


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Classifier, DecodedImages]:
    """timm's tiny test EfficientNet (batch norm included), random weights: cheap steps."""
    torch.manual_seed(0)
    preprocessing = INPUTS.preprocessing
    backbone = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    images = DecodedImages(preprocessing.resize_size, "bicubic", tmp_path / "pixels")
    return classifier(backbone, preprocessing), images


#: fit's own range test: 50 steps from 1e-7 to 1.
SWEEP = np.geomspace(1e-7, 1.0, 50)


def batch_losses(curve: np.ndarray, noise: float, seed: int = 0) -> np.ndarray:
    """What a sweep records: the loss the training is at, plus each batch's own noise."""
    return curve + noise * np.random.default_rng(seed).standard_normal(curve.size)


def explodes_above(lr: float) -> np.ndarray:
    """Zero up to ``lr``, then a loss that grows fast with the learning rate: divergence."""
    return np.where(lr < SWEEP, 3.0 * np.log10(SWEEP / lr) ** 2, 0.0)


def test_a_curve_of_noise_whose_first_point_is_lowest_gives_no_suggestion():
    # The failure fit met (a probe-trained head, already good): the loss only wobbles until
    # it explodes, and the first batch happened to be easy. The smoothed loss is lowest at
    # its first point, and "the rate of the lowest loss / 10" read 1e-8 off it.
    losses = batch_losses(0.3 + explodes_above(1e-2), noise=0.05)
    losses[0] = 0.1
    result = suggest_lr(SWEEP, losses)
    assert int(np.argmin(result.smoothed)) == 0
    assert result.suggestion is None  # fit keeps the plan's default
    assert result.rule.startswith("no descent beyond the noise")
    assert result.describe().startswith("no suggestion: no descent beyond the noise")
    assert result.alternatives[MIN_OVER_10] > 1e-7  # the first points are not judged at all


def test_a_curve_of_noise_gives_no_suggestion_whatever_its_noise_does():
    flat = np.full(SWEEP.size, 0.7)
    for seed in range(20):
        result = suggest_lr(SWEEP, batch_losses(flat, noise=0.1, seed=seed))
        assert result.suggestion is None, (seed, result.rule)
        assert result.noise == pytest.approx(0.1, rel=0.5)  # measured from the losses alone


def test_a_u_shaped_curve_gives_a_rate_on_its_descent():
    # The textbook curve: high and flat at tiny rates, falling, lowest near 1e-3, then rising.
    lowest = 1e-3
    curve = 0.4 + 0.1 * np.log10(SWEEP / lowest) ** 2
    result = suggest_lr(SWEEP, batch_losses(curve, noise=0.05))
    assert result.rule == HALFWAY_DOWN
    assert 1e-6 < result.suggestion < lowest  # on the descent, below the bottom
    assert result.descent > 10 * result.noise


def test_the_suggestion_is_where_the_loss_falls_fastest_not_where_the_smoothing_lags():
    # Flat, then a fall centred on 1e-4, then an explosion. The smoothed loss trails the
    # batches by a decade of rates; read at the rates it stands for, it does not.
    falls_at = 1e-4
    curve = 0.5 + 1.5 / (1 + (SWEEP / falls_at) ** 1.3) + explodes_above(1e-2)
    result = suggest_lr(SWEEP, batch_losses(curve, noise=0.05))
    assert falls_at / 4 < result.suggestion < falls_at * 4  # trailing, it read 5e-4
    assert result.valley[0] < result.suggestion < result.valley[1]


def test_a_small_descent_under_much_noise_is_not_trusted_but_a_clear_one_is():
    fall = 0.2 / (1 + (SWEEP / 1e-4) ** 1.3) + explodes_above(1e-2)
    assert suggest_lr(SWEEP, batch_losses(0.5 + fall, noise=0.3)).suggestion is None
    assert suggest_lr(SWEEP, batch_losses(0.5 + fall, noise=0.01)).suggestion is not None


def test_a_flat_curve_gives_no_suggestion():
    result = suggest_lr(SWEEP, np.full(SWEEP.size, 0.69))
    assert result.suggestion is None
    assert result.descent == pytest.approx(0.0, abs=1e-12)  # rounding, nothing more


def test_every_rule_answers_and_the_one_that_decided_is_named():
    curve = 0.5 + 1.5 / (1 + (SWEEP / 1e-4) ** 1.3) + explodes_above(1e-2)
    result = suggest_lr(SWEEP, batch_losses(curve, noise=0.05))
    assert result.alternatives[result.rule] == result.suggestion
    assert len(result.alternatives) == 4  # halfway down, fastai's valley, steepest, minimum/10


def test_the_sweep_is_exponential_and_covers_the_range(tiny, small_faces):
    model, images = tiny
    settings = FineTuneSettings(batch_size=8)
    result = lr_range_test(
        model, examples(small_faces), images, INPUTS, settings, start=1e-6, end=10.0, steps=20
    )
    assert result.lrs[0] == pytest.approx(1e-6)
    ratios = np.diff(np.log(result.lrs))
    assert np.allclose(ratios, ratios[0])  # equal steps on a log scale
    if result.stopped == "range covered":
        assert result.lrs[-1] == pytest.approx(10.0)
    else:  # stopped early: only because the loss exploded
        assert result.stopped == "diverged"
        assert not np.isfinite(result.smoothed[-1]) or result.smoothed[-1] > 4 * min(
            result.smoothed
        )
    assert len(result.losses) == len(result.smoothed) == len(result.lrs)


def test_the_model_and_random_state_are_left_exactly_as_they_were(tiny, small_faces):
    model, images = tiny
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    lr_range_test(
        model, examples(small_faces), images, INPUTS, FineTuneSettings(batch_size=8), steps=12
    )
    after = model.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():  # weights and batch-norm statistics, bit for bit
        assert torch.equal(tensor, after[name]), name
    assert not model.training
    assert all(p.requires_grad for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_on_a_frozen_body_the_suggestion_is_a_rate_that_trains_a_head(small_faces, tmp_path):
    # A new head on real pretrained features, body frozen: logistic regression by AdamW.
    # At 1e-5 the head barely moves in a few dozen steps; at 1e-1 each step moves every weight
    # by ~0.1 and the logits explode. A good rate lies in between.
    backbone, preprocessing, _ = create_backbone("efficientnet_lite0")
    images = DecodedImages(72, "bicubic", tmp_path / "pixels")
    settings = FineTuneSettings(batch_size=16, freeze="all", head_lr_scale=1.0)
    result = lr_range_test(
        classifier(backbone, preprocessing),
        examples(small_faces),
        images,
        INPUTS,
        settings,
        start=1e-6,
        end=1.0,
        steps=40,
    )
    assert 1e-4 <= result.suggestion <= 1e-2, result
    # Safely below the rate of the lowest loss, which is already at the edge of instability.
    assert result.suggestion < result.lrs[int(np.nanargmin(result.smoothed))]
    assert result.stopped == "diverged"  # the top of the range is far too high
    assert result.group_lrs == {"head": result.suggestion}  # nothing else trains
    quiet = [s for lr, s in zip(result.lrs, result.smoothed, strict=False) if lr <= 1e-5]
    assert max(quiet) - min(quiet) < 0.1 * quiet[0]  # 1e-5 and below: nothing happens


def test_when_every_parameter_is_frozen_it_says_so_instead_of_suggesting(tiny, small_faces):
    model, images = tiny
    model.requires_grad_(False)
    result = lr_range_test(
        model, examples(small_faces), images, INPUTS, FineTuneSettings(batch_size=8), steps=12
    )
    assert result.suggestion is None
    assert result.rule.startswith("nothing trains")
    assert "no suggestion: nothing trains" in result.describe()


def test_the_command_line_writes_the_numbers_and_the_plot(small_faces, tmp_path, capsys):
    out = tmp_path / "found"
    args = ["lr-find", str(small_faces), "--steps", "10", "--batch-size", "4", "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "lr_find.json").read_text())
    assert len(saved["lrs"]) == len(saved["losses"]) <= 10
    assert saved["rule"] in printed
    if saved["suggestion"] is not None:
        assert "suggested learning rate" in printed
        assert set(saved["group_lrs"]) >= {"head"}
    assert (out / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    assert LRFindResult(**saved).describe()


def test_the_command_line_refuses_too_few_steps(small_faces, capsys):
    assert main(["lr-find", str(small_faces), "--steps", "3"]) == 2
    assert "steps=3: a range test needs at least 10" in capsys.readouterr().err


def test_fit_measures_the_learning_rate_only_when_the_test_is_cheap(
    small_faces, tmp_path, monkeypatch
):
    settings = {"strategy": "fine-tune", "epochs": 1, "batch_size": 8, "quiet": True}
    short = headstart.fit(small_faces, runs_dir=tmp_path / "short", checks=False, **settings)
    assert not (short.run_dir / "lr_find.json").exists()
    assert any("without a range test" in reason for reason in short.plan.reasons)

    fit_module = importlib.import_module("headstart.stages.plan")
    monkeypatch.setattr(fit_module, "LR_FIND_STEPS", 12)  # cheap next to this fine-tuning
    monkeypatch.setattr(fit_module, "LR_FIND_SHARE", 10.0)
    measured = headstart.fit(small_faces, runs_dir=tmp_path / "long", checks=False, **settings)
    found = json.loads((measured.run_dir / "lr_find.json").read_text())
    planned = json.loads((measured.run_dir / "plan.json").read_text())["fine_tune"]["lr"]
    assert found["suggestion"] is not None  # the faces train: there is a falling stretch
    default = 2e-4 * 8 / 32  # the plan's rate, scaled to batches of 8 (linear scaling rule)
    assert planned == pytest.approx(np.clip(found["suggestion"], default / 10, default * 10))
    assert any("from the range test" in reason for reason in measured.plan.reasons)
