"""fit --ensemble N: N fine-tunings from different seeds, one model that averages their
probabilities, carried by the bundle to predict, evaluate, export and the report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import headstart
from headstart.bundle import describe
from headstart.classifier import Ensemble
from headstart.errors import HeadstartError
from test_cli import run


@pytest.fixture(scope="module")
def ensemble(small_faces_ensemble):
    return small_faces_ensemble


def test_an_ensemble_averages_the_probabilities_of_its_members(ensemble, small_faces):
    model = headstart.load(ensemble.run_dir)
    assert isinstance(model.network, Ensemble) and len(model.network.members) == 2
    assert describe(ensemble.run_dir).meta["format"] == 4  # older versions refuse it
    images = sorted(small_faces.rglob("*.png"))[:4]
    pixels = model.inputs.batch([model.inputs.pixels(image) for image in images])
    members = [member(pixels).softmax(-1).detach().numpy() for member in model.network.members]
    averaged = np.log(np.mean(members, axis=0))
    logits = model.network(pixels).detach().numpy()
    assert np.allclose(logits, averaged, atol=1e-5)
    assert not np.allclose(members[0], members[1])  # the seeds made two different models


def test_the_run_says_what_each_member_scored_and_what_it_cost(ensemble, small_faces):
    plan = json.loads((ensemble.run_dir / "plan.json").read_text())
    assert any(reason.startswith("ensemble: 2 fine-tunings") for reason in plan["reasons"])
    members = json.loads((ensemble.run_dir / "ensemble.json").read_text())["members"]
    assert [m["seed"] for m in members] == [0, 1] and members[1]["history"]
    summary = json.loads((ensemble.run_dir / "summary.json").read_text())
    assert summary["strategy"] == "ensemble" and "ensemble of 2" in summary["kept"]["why"]
    report = (ensemble.run_dir / "report.html").read_text()
    assert "The ensemble&#x27;s members" in report or "The ensemble's members" in report
    scores, _ = headstart.evaluate(ensemble.run_dir, small_faces)
    assert scores["split"] == "val" and scores["accuracy"] == ensemble.scores["val"]["accuracy"]


def test_a_run_killed_while_training_a_member_goes_on_with_it(ensemble, small_faces, tmp_path):
    copied = shutil.copytree(ensemble.run_dir, tmp_path / "run")
    # As a kill after member 2's last epoch leaves it: its state, not its final weights.
    (copied / "summary.json").unlink()
    (copied / "checkpoints" / "member-2" / "model.safetensors").unlink()
    resumed = headstart.resume(copied, quiet=True)
    images = sorted(small_faces.rglob("*.png"))[:6]
    before = headstart.load(ensemble.run_dir).predict_proba(images)
    assert np.array_equal(headstart.load(resumed.run_dir).predict_proba(images), before)
    with pytest.raises(HeadstartError, match="ensemble of 2 fine-tunings: it cannot be"):
        headstart.resume(copied, epochs=3)  # longer would lengthen one member alone


@pytest.mark.slow  # a second ensemble; test_fit's Ctrl-C keeps the best model
def test_ctrl_c_during_a_member_keeps_its_state_and_resume_finishes_it(
    small_faces, tmp_path, monkeypatch
):
    from headstart.stages import ensemble as stage

    real = stage.fine_tune_planned

    def interrupted(*args, **kwargs):  # as Ctrl-C at the end of the member's epoch leaves it
        result = real(*args, **kwargs)
        result.stopped = "interrupted"
        return result

    monkeypatch.setattr(stage, "fine_tune_planned", interrupted)
    settings = dict(strategy="fine-tune", epochs=1, ensemble=2, tta="none", quiet=True)
    with pytest.raises(KeyboardInterrupt):
        headstart.fit(small_faces, runs_dir=tmp_path, name="killed", **settings)
    member = tmp_path / "killed" / "checkpoints" / "member-2"
    assert (member / "last.pt").exists() and not (member / "model.safetensors").exists()
    assert not (tmp_path / "killed" / "failed.json").exists()  # a run to resume, not a failure

    monkeypatch.setattr(stage, "fine_tune_planned", real)
    resumed = headstart.resume(tmp_path / "killed", quiet=True)
    assert len(resumed.model.network.members) == 2 and (member / "model.safetensors").exists()


@pytest.mark.slow  # an ONNX export: tens of seconds
def test_an_ensemble_exports_as_one_network(ensemble, tmp_path):
    copied = shutil.copytree(ensemble.run_dir, tmp_path / "run")
    exported = headstart.export(copied, "onnx", quiet=True)
    parity = json.loads((exported / "headstart.json").read_text())["parity"]
    assert parity["max_abs_difference"] <= 1e-4


def test_an_ensemble_of_linear_probes_is_said_to_do_nothing(capsys, small_faces, tmp_path):
    code, out, err = run(
        capsys,
        "fit",
        small_faces,
        "--strategy",
        "linear-probe",
        "--ensemble",
        "3",
        "--runs-dir",
        tmp_path,
    )
    assert code == 0 and "ensemble set, but the linear probe trains no network" in out + err
