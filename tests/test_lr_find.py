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
    DIVERGE_FACTOR,
    HALFWAY_DOWN,
    MIN_OVER_10,
    LRFindResult,
    lr_range_test,
    suggest_lr,
)
from headstart.training.plan import Plan

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
    """Each batch's loss: the loss the training is at, plus the batch's own noise."""
    return curve + noise * np.random.default_rng(seed).standard_normal(curve.size)


def explodes_above(lr: float) -> np.ndarray:
    """Zero up to ``lr``, then a loss that grows fast with the learning rate: divergence."""
    return np.where(lr < SWEEP, 3.0 * np.log10(SWEEP / lr) ** 2, 0.0)


def swept(losses: np.ndarray) -> LRFindResult:
    """What a sweep records and makes of it: after its first 5 steps (a tenth), it stops once
    its smoothed loss passes 4x the lowest since."""
    smoothed = np.asarray(suggest_lr(SWEEP, losses).smoothed)[5:]
    over = np.flatnonzero(smoothed > DIVERGE_FACTOR * np.minimum.accumulate(smoothed))
    if not over.size:
        return suggest_lr(SWEEP, losses)
    end = 5 + over[0] + 1
    return suggest_lr(SWEEP[:end], losses[:end], stopped="diverged")


def test_a_curve_of_noise_whose_first_point_is_lowest_gives_no_suggestion():
    # The failure fit met (a probe-trained head, already good): the loss only wobbles until
    # it explodes, and the first batch happened to be easy. The smoothed loss is lowest at
    # its first point, and "the rate of the lowest loss / 10" read 1e-8 off it.
    losses = batch_losses(0.3 + explodes_above(1e-2), noise=0.05)
    losses[0] = 0.1
    result = swept(losses)
    assert int(np.argmin(result.smoothed)) == 0
    assert result.suggestion is None  # fit keeps the plan's default
    assert result.rule.startswith("no descent beyond the noise")
    assert result.describe().startswith("no suggestion: no descent beyond the noise")
    assert result.alternatives[MIN_OVER_10] > SWEEP[0] / 10  # no rule judges the first points


def test_a_curve_of_noise_gives_no_suggestion_whatever_its_noise_does():
    for seed in range(20):
        losses = batch_losses(0.7 + explodes_above(1e-2), noise=0.1, seed=seed)
        result = swept(losses)
        assert result.suggestion is None, (seed, result.rule)
        assert 0.1 / 2.5 < result.noise < 0.1 * 2.5  # measured from the losses alone


def test_a_u_shaped_curve_gives_a_rate_on_its_descent():
    # The textbook curve: high at tiny rates, falling, lowest at 1e-3, then rising.
    lowest = 1e-3
    curve = 0.4 + 0.1 * np.log10(SWEEP / lowest) ** 2
    result = swept(batch_losses(curve, noise=0.05))
    assert result.rule == HALFWAY_DOWN
    assert 1e-6 < result.suggestion < lowest  # on the descent, below the bottom
    assert result.descent > 10 * result.noise


def test_a_fall_then_an_explosion_gives_a_rate_on_the_fall_well_below_the_explosion():
    # Flat, a fall centred on 1e-4, a flat bottom, then the explosion from 1e-2.
    curve = 0.5 + 1.5 / (1 + (SWEEP / 1e-4) ** 1.3) + explodes_above(1e-2)
    result = swept(batch_losses(curve, noise=0.05))
    assert 1e-5 < result.suggestion < 1e-3
    assert result.valley[0] < result.suggestion < result.valley[1]


def test_a_fall_that_turns_straight_into_a_rise_gives_a_rate_before_the_bottom():
    # As fine-tuning often looks: the loss falls around 3e-5, is lowest at 1.4e-4 and climbs
    # from there. The smoothed loss trails the batches, so its own lowest point comes later.
    curve = 0.64 - 0.14 / (1 + (SWEEP / 3e-5) ** -3) + 0.3 * explodes_above(1.5e-4)
    result = swept(batch_losses(curve, noise=0.01))
    assert 1e-5 < result.suggestion < SWEEP[np.argmin(curve)]


def test_a_small_descent_under_much_noise_is_not_trusted_but_a_clear_one_is():
    curve = 0.5 + 0.2 / (1 + (SWEEP / 1e-4) ** 1.3) + explodes_above(1e-2)
    assert swept(batch_losses(curve, noise=0.3)).suggestion is None
    assert swept(batch_losses(curve, noise=0.01)).suggestion is not None


def test_a_flat_curve_gives_no_suggestion():
    result = suggest_lr(SWEEP, np.full(SWEEP.size, 0.69))
    assert result.suggestion is None
    assert result.descent == pytest.approx(0.0, abs=1e-12)  # rounding, nothing more


def test_every_rule_answers_and_the_one_that_decided_is_named():
    curve = 0.5 + 1.5 / (1 + (SWEEP / 1e-4) ** 1.3) + explodes_above(1e-2)
    result = swept(batch_losses(curve, noise=0.05))
    assert result.alternatives[result.rule] == result.suggestion
    assert len(result.alternatives) == 4  # halfway down, fastai's valley, steepest, minimum/10


def test_the_loss_climbs_past_its_explosion_and_not_along_its_flat_stretch():
    # What fit asks before it trains slower than its default from a fitted head.
    result = swept(batch_losses(0.3 + explodes_above(1e-3), noise=0.05))
    assert result.stopped == "diverged"
    assert not result.climbs_at(1e-5)
    assert result.climbs_at(result.lrs[-1])
    assert result.climbs_at(0.5)  # beyond where the sweep stopped for diverging
    flat = suggest_lr(SWEEP, batch_losses(np.full(SWEEP.size, 0.3), noise=0.05))
    assert not flat.climbs_at(1e-3)
    assert not flat.climbs_at(2.0)  # beyond a sweep that covered its range: no evidence


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


#: The plan's learning rate for the faces in batches of 8: 2e-4 at 32, scaled linearly.
FACES_DEFAULT_LR = 2e-4 * 8 / 32


def rate_fit_trains_at(plan: Plan, default: float) -> float:
    """What fit makes of its range test, from the evidence the plan records: the suggestion
    within 10x of the plan's default, or the default when there is none or it was not taken."""
    measured = plan.evidence["lr_find"]
    if measured.get("suggestion") is None or measured.get("taken") is False:
        return default
    return float(np.clip(measured["suggestion"], default / 10, default * 10))


@pytest.mark.slow  # two fine-tunings; the rule is tested on curves
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
    # Batches of 8 faces are noisy, 12 steps few: the curve may or may not clear its noise.
    assert planned == pytest.approx(rate_fit_trains_at(measured.plan, FACES_DEFAULT_LR))
    assert any(
        "range test" in reason and found["rule"] in reason for reason in measured.plan.reasons
    )


@pytest.mark.parametrize(
    ("curve", "suggests", "lr"),
    [
        pytest.param(
            0.3 + explodes_above(1e-2),
            False,
            FACES_DEFAULT_LR,
            id="noise: the plan's default stays",
            marks=pytest.mark.slow,  # a fine-tuning each; the clear fall runs by default
        ),
        pytest.param(
            0.5 + 1.5 / (1 + (SWEEP / 1e-4) ** 1.3) + explodes_above(1e-2),
            True,
            5.2e-4,
            id="a clear fall: its rate, within 10x of the default",
        ),
        pytest.param(
            0.5 + 1.5 / (1 + (SWEEP / 1e-6) ** 1.3) + explodes_above(1e-2),
            True,
            FACES_DEFAULT_LR,
            id="a fall far below the default, flat at it: the default stays",
            marks=pytest.mark.slow,  # a fine-tuning each; the clear fall runs by default
        ),
        pytest.param(
            0.5 + 1.5 / (1 + (SWEEP / 3e-7) ** 1.3) + explodes_above(1e-5),
            True,
            FACES_DEFAULT_LR / 10,
            id="a loss that climbs before the default: lower, within 10x",
            marks=pytest.mark.slow,  # a fine-tuning each; the clear fall runs by default
        ),
    ],
)
def test_fit_trains_at_the_range_tests_rate_or_at_the_plans_when_it_has_none(
    curve, suggests, lr, small_faces, tmp_path, monkeypatch
):
    losses = batch_losses(curve, noise=0.05)
    losses[0] = 0.1  # an easy first batch: the lowest smoothed loss, as in the issue
    fit_module = importlib.import_module("headstart.stages.plan")
    monkeypatch.setattr(fit_module, "LR_FIND_SHARE", 100.0)
    monkeypatch.setattr(fit_module, "range_test", lambda *args: swept(losses))
    result = headstart.fit(
        small_faces,
        strategy="fine-tune",
        epochs=1,
        batch_size=8,
        runs_dir=tmp_path,
        checks=False,
        quiet=True,
    )
    found = json.loads((result.run_dir / "lr_find.json").read_text())
    assert (found["suggestion"] is not None) == suggests
    assert result.plan.fine_tune.lr == pytest.approx(lr, rel=0.05)
    assert result.plan.fine_tune.lr == pytest.approx(
        rate_fit_trains_at(result.plan, FACES_DEFAULT_LR)
    )
    assert any(found["rule"] in reason for reason in result.plan.reasons)
