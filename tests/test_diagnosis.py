"""Reading the training curves, and the TensorBoard files a run leaves.

The first tests feed SYNTHETIC histories (made-up numbers, one per verdict, shaped like the
records fine_tune writes) to pin each rule down; the last ones train on real images.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import headstart
from headstart.classifier import Classifier, layer_groups
from headstart.data.decoded import DecodedImages
from headstart.diagnosis import diagnose, smoothing_floor
from headstart.inputs import InputPipeline
from headstart.models import create_backbone
from headstart.training.finetune import FineTuneSettings, fine_tune


def synthetic(train_loss, val_loss, train_accuracy, val_accuracy) -> list[dict]:
    """A made-up history in fine_tune's record format."""
    return [
        {
            "epoch": epoch,
            "train_loss": tl,
            "train_accuracy": ta,
            "val_loss": vl,
            "val_accuracy": va,
            "lr": 1e-4,
        }
        for epoch, (tl, vl, ta, va) in enumerate(
            zip(train_loss, val_loss, train_accuracy, val_accuracy, strict=True), start=1
        )
    ]


def test_synthetic_curves_both_still_falling_say_train_longer():
    history = synthetic(
        [0.60, 0.45, 0.35, 0.28, 0.23],
        [0.55, 0.44, 0.37, 0.31, 0.27],
        [0.70, 0.80, 0.85, 0.88, 0.90],
        [0.72, 0.80, 0.84, 0.87, 0.89],
    )
    diagnosis = diagnose(history, n_classes=2)
    assert diagnosis.verdict == "still improving"
    assert "train longer" in diagnosis.findings[0].advice
    assert diagnosis.findings[0].evidence["val_accuracy"] == 0.89


def test_synthetic_growing_gap_is_overfitting_with_the_advice():
    history = synthetic(
        [0.50, 0.30, 0.18, 0.10, 0.05],
        [0.40, 0.35, 0.38, 0.45, 0.55],
        [0.80, 0.90, 0.95, 0.98, 1.00],
        [0.85, 0.87, 0.86, 0.85, 0.84],
    )
    diagnosis = diagnose(history, n_classes=2)
    assert diagnosis.verdict == "overfitting"
    finding = diagnosis.findings[0]
    assert "validation loss rose from 0.350 (epoch 2) to 0.550" in finding.summary
    assert "gap of 16.0%" in finding.summary
    assert "regularise" in finding.advice and "augment" in finding.advice
    assert finding.evidence["best_epoch"] == 2


def test_synthetic_training_loss_far_above_guessing_with_validation_fine_is_a_mismatch():
    # Synthetic, with the numbers of a measured default fine-tune of the faces data.
    history = synthetic(
        [17.28, 4.41, 3.92, 3.69],
        [0.017, 0.017, 0.116, 0.216],
        [0.66, 0.93, 0.98, 0.98],
        [1.00, 1.00, 0.975, 0.975],
    )
    diagnosis = diagnose(history, n_classes=2, label_smoothing=0.1)
    assert diagnosis.verdict == "train-eval mismatch"
    assert "training loss reached 17.3 in epoch 1" in diagnosis.findings[0].summary
    assert "training mode" in diagnosis.findings[0].advice
    assert [f.verdict for f in diagnosis.findings][1:] == ["overfitting"]


def test_synthetic_flat_high_close_curves_are_underfitting():
    history = synthetic(
        [2.10, 2.05, 2.04, 2.04, 2.03],
        [2.08, 2.05, 2.05, 2.04, 2.04],
        [0.22, 0.24, 0.25, 0.25, 0.25],
        [0.23, 0.24, 0.25, 0.26, 0.25],
    )
    diagnosis = diagnose(history, n_classes=10)  # guessing scores ln 10 = 2.30
    assert diagnosis.verdict == "underfitting"
    assert "unfreeze more" in diagnosis.findings[0].advice


def test_synthetic_flat_low_close_curves_have_converged():
    history = synthetic(
        [0.30, 0.12, 0.10, 0.098, 0.097],
        [0.20, 0.11, 0.10, 0.100, 0.101],
        [0.90, 0.96, 0.97, 0.970, 0.970],
        [0.92, 0.96, 0.97, 0.965, 0.970],
    )
    diagnosis = diagnose(history, n_classes=2)
    assert [f.verdict for f in diagnosis.findings] == ["converged"]
    assert "healthy" in diagnosis.findings[0].advice


def test_label_smoothing_floor_is_not_read_as_underfitting():
    # Synthetic: smoothing 0.3 on 2 classes keeps the training loss near 0.42 however well the
    # model fits; read as a plain loss, 0.43 is most of the 0.69 of guessing.
    history = synthetic(
        [0.50, 0.44, 0.432, 0.431, 0.431],
        [0.20, 0.08, 0.06, 0.060, 0.059],
        [0.90, 0.98, 0.99, 0.990, 0.990],
        [0.95, 0.98, 0.99, 0.990, 0.990],
    )
    assert diagnose(history, n_classes=2, label_smoothing=0.3).verdict == "converged"
    assert diagnose(history, n_classes=2, label_smoothing=0.0).verdict != "converged"


def test_smoothing_floor_is_the_lowest_loss_torch_can_reach():
    for smoothing, classes in ((0.1, 2), (0.3, 2), (0.1, 10)):
        target = torch.full((1, classes), smoothing / classes)
        target[0, 0] += 1 - smoothing
        best = torch.nn.CrossEntropyLoss(label_smoothing=smoothing)(target.log(), torch.tensor([0]))
        assert math.isclose(smoothing_floor(smoothing, classes), best.item(), rel_tol=1e-5)
    assert smoothing_floor(0.0, 5) == 0.0


def test_synthetic_nan_as_stored_in_metrics_jsonl_is_diverging():
    history = synthetic([0.5, None], [0.4, None], [0.8, 0.5], [0.8, 0.5])
    diagnosis = diagnose(history, n_classes=2, lr=3e-2)
    assert diagnosis.verdict == "diverging"
    assert "NaN or infinite from epoch 2" in diagnosis.findings[0].summary
    assert "--lr 0.003" in diagnosis.findings[0].advice


def test_a_run_that_fine_tune_stopped_for_diverging_says_so():
    stopped = "diverged: the training loss became nan in epoch 1"
    diagnosis = diagnose([], n_classes=3, stopped=stopped)
    assert diagnosis.verdict == "diverging"
    assert "the training loss became nan in epoch 1" in diagnosis.findings[0].summary
    assert "learning rate is too high" in diagnosis.findings[0].advice


def test_one_epoch_is_too_short_and_bad_input_is_refused():
    history = synthetic([0.5], [0.4], [0.8], [0.8])
    assert diagnose(history, n_classes=2).verdict == "too short"
    with pytest.raises(headstart.HeadstartError, match="n_classes=1"):
        diagnose(history, n_classes=1)


def test_a_100x_too_high_learning_rate_is_stopped_diagnosed_and_logged_to_tensorboard(
    small_faces, tmp_path
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # The plan fine-tunes at 2e-4; 100x that wrecks the pretrained body within a few steps.
    result = headstart.fit(
        small_faces,
        strategy="fine-tune",
        lr=2e-2,
        epochs=2,
        batch_size=8,
        tta="none",  # which crops predict is not this test's: the curves are
        runs_dir=tmp_path,
        quiet=True,
    )
    assert result.stopped.startswith("diverged: the training loss rose")
    summary = json.loads((result.run_dir / "summary.json").read_text())
    saved = json.loads((result.run_dir / "diagnosis.json").read_text())
    assert summary["diagnosis"] == saved
    assert saved["verdict"] == "diverging"
    assert (
        "too high" in saved["findings"][0]["advice"]
        and "--lr 0.002" in saved["findings"][0]["advice"]
    )
    # The same reading from the run folder alone: metrics.jsonl records why training stopped.
    lines = map(json.loads, (result.run_dir / "metrics.jsonl").read_text().splitlines())
    assert diagnose(lines, n_classes=2, label_smoothing=0.1, lr=2e-2).verdict == "diverging"

    events = EventAccumulator(str(result.run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    steps = [e.step for e in events.Scalars("loss/train")]
    assert steps == list(range(1, len(steps) + 1)) and 3 <= len(steps) < 10  # stopped early
    for tag in ("lr/head", "lr/stage_6", "lr/stage_4"):
        assert tag in events.Tags()["scalars"], tag
    assert events.Scalars("lr/head")[-1].value > events.Scalars("lr/stage_6")[-1].value
    assert events.Scalars("probe/cv_accuracy")[0].value > 0.8
    (image,) = events.Images("inputs/first training batch")
    assert (image.width, image.height) == (8 * 224 + 9 * 2, 224 + 2 * 2)  # 8 crops in a row


def test_real_curves_of_a_slow_start_say_train_longer(small_faces):
    # A fresh head and a small learning rate on the top stage: both curves fall every epoch.
    backbone, preprocessing, _ = create_backbone("efficientnet_lite0")
    torch.manual_seed(0)
    model = Classifier(backbone, torch.nn.Linear(backbone.num_features, 2), preprocessing)
    images = DecodedImages(preprocessing.resize_size, preprocessing.interpolation)
    examples = [(p, int(p.parent.name != "face")) for p in sorted(small_faces.rglob("*.png"))]
    top_stage = len(layer_groups(backbone)) - 1  # every stage frozen but the top one
    settings = FineTuneSettings(epochs=3, batch_size=8, lr=1e-4, freeze=top_stage)
    inputs = InputPipeline(preprocessing)
    result = fine_tune(model, examples[::2], examples[1::2], images, inputs, settings)
    diagnosis = diagnose(result.history, n_classes=2, label_smoothing=settings.label_smoothing)
    assert diagnosis.verdict == "still improving", diagnosis.lines()
