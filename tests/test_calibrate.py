"""Calibrated probabilities: fit divides the logits by a temperature fitted on validation where
that makes them more honest, the bundle keeps it, and predict applies it."""

from __future__ import annotations

import csv
import io
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

import headstart
from headstart.cli import main
from headstart.config import FitConfig
from headstart.report.calibration import ece
from headstart.report.records import softmax
from headstart.stages.calibrate import calibrate
from headstart.stages.evaluate import Candidate, Scored


def candidate(log_probabilities: np.ndarray, labels: np.ndarray) -> Candidate:
    model = SimpleNamespace(temperature=1.0)
    scored = Scored([], labels, log_probabilities, {})
    return Candidate(model, "linear-probe", {"val": scored})


def overconfident(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes, 70% right, every prediction made with near certainty."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    predicted = np.where(rng.random(n) < 0.7, labels, (labels + 1) % 3)
    logits = 6.0 * np.eye(3)[predicted] + rng.normal(0, 0.5, (n, 3))
    return logits - np.log(np.exp(logits).sum(1, keepdims=True)), labels


def test_an_overconfident_model_is_cooled_until_its_confidence_means_what_it_says():
    log_probabilities, labels = overconfident()
    kept = candidate(log_probabilities, labels)
    done = calibrate(kept, FitConfig())
    assert done.temperature == kept.model.temperature > 1
    assert done.ece_scaled < done.ece / 3
    assert done.why.startswith("probabilities calibrated: logits divided by T = ")
    scaled = softmax(log_probabilities / done.temperature)
    assert ece(scaled, labels) == pytest.approx(done.ece_scaled)
    assert (scaled.argmax(1) == log_probabilities.argmax(1)).all()  # the same labels


def test_no_temperature_without_a_mistake_or_when_asked_for_none():
    log_probabilities, labels = overconfident()
    right = candidate(log_probabilities, log_probabilities.argmax(1))
    assert calibrate(right, FitConfig()).temperature == right.model.temperature == 1.0
    assert "every validation image is predicted right" in calibrate(right, FitConfig()).why
    off = candidate(log_probabilities, labels)
    done = calibrate(off, FitConfig(calibration=False))
    assert done.temperature == off.model.temperature == 1.0
    assert done.why.startswith("calibration off")


def test_a_temperature_that_would_worsen_the_calibration_error_is_not_applied(monkeypatch):
    from headstart.stages import calibrate as stage

    log_probabilities, labels = overconfident()
    measured = stage.measure_calibration(log_probabilities, labels)
    worse = SimpleNamespace(**{**vars(measured), "ece_scaled": measured.ece + 0.01})
    monkeypatch.setattr(stage, "measure_calibration", lambda *args: worse)
    kept = candidate(log_probabilities, labels)
    done = calibrate(kept, FitConfig())
    assert done.temperature == kept.model.temperature == 1.0
    assert done.fitted == measured.temperature
    assert "would raise the expected calibration error" in done.why


def test_the_bundle_keeps_the_temperature_and_predict_applies_it(fitted, faces, tmp_path):
    summary = json.loads((fitted.run_dir / "summary.json").read_text())
    meta = json.loads((fitted.run_dir / "model/headstart.json").read_text())
    assert meta["temperature"] == summary["calibration"]["temperature"]
    assert summary["calibration"]["why"]

    bundle = shutil.copytree(fitted.run_dir / "model", tmp_path / "model")
    (bundle / "headstart.json").write_text(json.dumps({**meta, "temperature": 2.5}))
    files = sorted((faces / "face").glob("*.png"))[:4]
    own = headstart.load(bundle)
    assert own.temperature == 2.5
    calibrated = own.predict_proba(files)
    own.temperature = 1.0
    raw = own.predict_proba(files)
    np.testing.assert_allclose(calibrated, softmax(np.log(raw) / 2.5), rtol=1e-5, atol=1e-9)
    assert (calibrated.argmax(1) == raw.argmax(1)).all()

    del meta["temperature"]  # a bundle from before calibration: its network's own
    (bundle / "headstart.json").write_text(json.dumps(meta))
    assert headstart.load(bundle).temperature == 1.0


def test_predict_without_calibration_prints_the_networks_own_probabilities(
    capsys, fitted, faces, tmp_path
):
    bundle = shutil.copytree(fitted.run_dir / "model", tmp_path / "model")
    meta = json.loads((bundle / "headstart.json").read_text())
    (bundle / "headstart.json").write_text(json.dumps({**meta, "temperature": 3.0}))
    files = sorted((faces / "face").glob("*.png"))
    image = files[int(np.argmin(fitted.model.predict_proba(files).max(1)))]  # the least sure
    rows = {}
    for flags in ([], ["--no-calibration"]):
        assert main(["predict", str(bundle), str(image), "--csv", "--quiet", *flags]) == 0
        (row,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
        rows[bool(flags)] = row
    assert rows[True]["label1"] == rows[False]["label1"]
    assert float(rows[True]["probability1"]) > float(rows[False]["probability1"])
