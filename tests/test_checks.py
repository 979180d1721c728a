"""Sanity checks: each passes on healthy data and fails, with its advice, on a planted bug."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import headstart
from headstart import check
from headstart.checks import FixedBatch, feature_baselines
from headstart.checks import suite as check_suite
from headstart.classifier import new_head
from headstart.cli import main
from headstart.data.sources import Sample
from headstart.inputs import Normalize
from headstart.training import finetune

#: Small batches keep every training step of the checks cheap.
QUICK = {"batch_size": 8, "quiet": True}


def statuses(report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def as_csv(folder: Path, path: Path, *, shuffle: bool = False) -> Path:
    """``folder``'s class folders as a CSV of path,label; labels shuffled on request."""
    files = sorted(folder.rglob("*.png"))
    labels = [f.parent.name for f in files]
    if shuffle:
        random.Random(0).shuffle(labels)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(zip(files, labels, strict=True))
    return path


@pytest.mark.slow  # the README's `headstart check photos/` passes only when every check does
def test_every_check_passes_on_healthy_data(small_faces):
    report = check(small_faces, **QUICK)
    assert report.passed, report.headline()
    assert set(statuses(report)) == {
        "initial-loss",
        "majority-baseline",
        "linear-baseline",
        "input-independent",
        "inputs-normalised",
        "pipeline-agreement",
        "overfit-batch",
        "parameters-update",
        "loss-falls",
    }
    assert report["initial-loss"].measured["loss"] == pytest.approx(np.log(2), abs=0.05)
    assert report["majority-baseline"].status == "info"


def test_check_shows_its_progress_on_stderr(small_faces, capsys):
    check(small_faces, steps=2, batch_size=8)
    err = capsys.readouterr().err
    # The features, then the baselines, the trial and the two watched steps.
    assert "features" in err and "checks" in err and "4/4" in err


def test_shuffled_labels_fail_the_baselines(faces, tmp_path):
    shuffled = as_csv(faces, tmp_path / "shuffled.csv", shuffle=True)
    result = headstart.fit(shuffled, strategy="linear-probe", runs_dir=tmp_path, quiet=True)
    checks = json.loads((result.run_dir / "checks.json").read_text())
    failed = {c["name"]: c for c in checks["checks"] if c["status"] == "fail"}
    assert {"linear-baseline", "input-independent"} <= set(failed)
    assert "labels" in failed["linear-baseline"]["advice"]
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert not summary["checks"]["passed"]
    report = (result.run_dir / "report.html").read_text()  # the report names it, with advice
    assert "linear model on features" in report and "the labels do not follow" in report


def test_images_paired_with_the_wrong_labels_fail_the_pipeline_check_and_the_command(
    small_faces, tmp_path, monkeypatch, capsys
):
    decode = finetune.decode_batch

    def off_by_one(images, batch):  # the loader's labels slip by one image
        pixels, labels = decode(images, batch)
        return pixels, labels.roll(1)

    monkeypatch.setattr(finetune, "decode_batch", off_by_one)
    arguments = ["check", str(small_faces), "--steps", "4", "--batch-size", "8", "--quiet"]
    assert main([*arguments, "--out", str(tmp_path)]) == 1  # a failed check fails the command
    checks = json.loads((tmp_path / "checks.json").read_text())["checks"]
    agreement = next(c for c in checks if c["name"] == "pipeline-agreement")
    assert agreement["status"] == "fail" and "wrong labels" in agreement["advice"]
    assert "━" not in capsys.readouterr().err  # --quiet: no progress bar


@pytest.mark.slow  # a third run at 100x the rate; a failed check fails the command above
def test_a_learning_rate_100x_too_high_is_caught_and_the_command_fails(
    small_faces, tmp_path, capsys
):
    # The plan fine-tunes at 2e-4.
    arguments = ["check", str(small_faces), "--lr", "0.02", "--batch-size", "8", "--quiet"]
    code = main([*arguments, "--out", str(tmp_path)])
    printed = capsys.readouterr()
    assert code == 1 and "training loss falls" in printed.out
    assert "━" not in printed.err  # --quiet: no progress bar
    checks = json.loads((tmp_path / "checks.json").read_text())["checks"]
    falls = next(c for c in checks if c["name"] == "loss-falls")
    assert falls["status"] == "fail" and "diverged" in falls["summary"]
    assert "learning rate is too high" in falls["advice"]


@pytest.mark.slow  # the same check as when nothing trains, planted at more cost
def test_a_frozen_head_is_named(small_faces, monkeypatch):
    groups = finetune.parameter_groups

    def freezing_the_head(model, settings):
        planned = groups(model, settings)
        model.head.requires_grad_(False)
        return planned

    monkeypatch.setattr(finetune, "parameter_groups", freezing_the_head)
    report = check(small_faces, steps=4, **QUICK)
    update = report["parameters-update"]
    assert update.status == "fail" and "head did not change" in update.advice


def test_when_nothing_trains_one_batch_cannot_be_memorised(small_faces, monkeypatch):
    groups = finetune.parameter_groups

    def freezing_everything(model, settings):
        planned = groups(model, settings)
        model.requires_grad_(False)
        return planned

    monkeypatch.setattr(finetune, "parameter_groups", freezing_everything)
    report = check(small_faces, steps=4, **QUICK)
    assert statuses(report)["overfit-batch"] == "fail"
    assert statuses(report)["parameters-update"] == "fail"


def test_inputs_not_normalised_are_caught(small_faces, monkeypatch):
    def raw_pixels(self, batch):  # 0-255 straight into the network
        return batch.to(self.mean.device).float()

    monkeypatch.setattr(Normalize, "forward", raw_pixels)
    report = check(small_faces, steps=4, **QUICK)
    normalised = report["inputs-normalised"]
    assert normalised.status == "fail"
    assert normalised.measured["max"] > 200 and "normalise" in normalised.advice


def test_a_head_started_with_large_weights_fails_the_initial_loss(small_faces, monkeypatch):
    new_head = check_suite.new_head

    def loud_head(width, counts):
        head = new_head(width, counts)
        with torch.no_grad():
            head.weight.mul_(1000)
        return head

    monkeypatch.setattr(check_suite, "new_head", loud_head)
    report = check(small_faces, steps=4, **QUICK)
    start = report["initial-loss"]
    assert start.status == "fail" and start.measured["loss"] > 2 * np.log(2)


def test_a_fixed_batch_predicted_as_one_class_is_a_collapse():
    samples = [Sample(Path(f"{c}{i}.png"), c, "val") for c in "ab" for i in range(2)]
    batch = FixedBatch(samples, ["a", "b"])
    batch.records.append(
        {"stage": "fine-tune", "epoch": 0, "probabilities": np.eye(2)[[0, 0, 1, 1]]}
    )
    assert batch.check().status == "pass"
    batch.records.append(
        {"stage": "fine-tune", "epoch": 1, "probabilities": np.eye(2)[[1, 1, 1, 1]]}
    )
    collapsed = batch.check()
    assert collapsed.status == "fail" and "every image was predicted 'b'" in collapsed.summary


def test_fit_keeps_its_checks_and_the_fixed_batch(fitted):
    checks = json.loads((fitted.run_dir / "checks.json").read_text())
    names = [c["name"] for c in checks["checks"]]
    assert names[:4] == [
        "initial-loss",
        "majority-baseline",
        "linear-baseline",
        "input-independent",
    ]
    assert "fixed-batch" in names and checks["passed"]
    fixed = json.loads((fitted.run_dir / "fixed_batch.json").read_text())
    assert len(fixed["paths"]) == 16 and {0, 1} <= set(fixed["labels"])
    assert fixed["records"][0]["epoch"] == 0


@pytest.mark.slow  # test_diagnosis stops a 100x learning rate the same way
def test_fit_stops_a_diverging_run_early_and_says_so(small_faces, tmp_path):
    result = headstart.fit(
        small_faces, strategy="fine-tune", lr=0.05, epochs=4, runs_dir=tmp_path, **QUICK
    )
    assert result.stopped.startswith("diverged")
    checks = json.loads((result.run_dir / "checks.json").read_text())
    falls = next(c for c in checks["checks"] if c["name"] == "loss-falls")
    assert falls["status"] == "fail" and falls["measured"]["steps"] < 10
    diagnosis = json.loads((result.run_dir / "diagnosis.json").read_text())
    assert diagnosis["verdict"] == "diverging"


def test_checks_can_be_turned_off(small_faces, tmp_path):
    result = headstart.fit(
        small_faces, strategy="linear-probe", checks=False, runs_dir=tmp_path, quiet=True
    )
    assert not (result.run_dir / "checks.json").exists()


def test_a_weak_but_real_model_on_imbalanced_data_passes_the_baselines():
    # 270 images of "ok", 30 of "defect"; the features tell 12 of the defects apart.
    labels = np.array([0] * 270 + [1] * 30)
    features = np.zeros((300, 2), dtype=np.float32)
    features[:, 0] = 1
    features[270:282] = [0, 1]
    head = torch.nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(2 * torch.eye(2))
        head.bias.zero_()
    counts = np.array([900, 100])
    checks = feature_baselines(
        (features, labels), (features, labels), counts, head, new_head(2, counts), ["ok", "defect"]
    )
    by_name = {c.name: c for c in checks}
    assert by_name["majority-baseline"].measured["val_accuracy"] == 0.9
    assert by_name["linear-baseline"].measured["val_accuracy"] == 0.94
    assert by_name["linear-baseline"].status == "pass"  # +4 points: 12 images, none lost
    assert by_name["input-independent"].status == "pass"

    shuffled = np.random.default_rng(0).permutation(labels)
    checks = feature_baselines(
        (features, shuffled),
        (features, shuffled),
        counts,
        head,
        new_head(2, counts),
        ["ok", "defect"],
    )
    assert {c.name: c.status for c in checks}["linear-baseline"] == "fail"
