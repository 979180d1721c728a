"""headstart distill RUN: one network trained on a finished run's probabilities (an ensemble's,
here), weighed against it side by side; refusals before anything is written."""

from __future__ import annotations

import csv
import html
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import headstart
from headstart.classifier import Classifier
from headstart.errors import HeadstartError
from headstart.inputs import InputPipeline
from headstart.models import create_backbone
from headstart.training.distill import Teacher
from headstart.training.finetune import FineTuneSettings, fine_tune
from test_cli import one_line_error, run


@pytest.fixture(scope="module")
def teacher(small_faces_ensemble):
    """An ensemble of two fine-tunings: the model to distil into one network."""
    return small_faces_ensemble


@pytest.fixture(scope="module")
def more_faces(faces, teacher, tmp_path_factory):
    """Unlabelled images: faces the teacher never saw, and a copy of one of its validation
    images (which must not teach the student what it is scored on)."""
    folder = tmp_path_factory.mktemp("unlabelled")
    for kind in sorted(p for p in faces.iterdir() if p.is_dir()):
        for image in sorted(kind.glob("*.png"))[30::10]:  # small_faces holds the first 24
            shutil.copy(image, folder / f"{kind.name}-{image.name}")
    with open(teacher.run_dir / "splits.csv", newline="") as rows:
        val = next(r["path"] for r in csv.DictReader(rows) if r["split"] == "val")
    shutil.copy(val, folder / "copy-of-a-validation-image.png")
    return folder


@pytest.fixture(scope="module")
def student(teacher, more_faces, tmp_path_factory):
    return headstart.distill(
        teacher.run_dir,
        epochs=1,
        unlabelled=more_faces,
        tta="none",  # as the teacher: the networks run per image compare
        runs_dir=tmp_path_factory.mktemp("students"),
        quiet=True,
    )


def test_a_student_is_weighed_against_its_teacher_side_by_side(student, teacher):
    weighed = json.loads((student.run_dir / "distillation.json").read_text())
    assert weighed["teacher_run"] == str(teacher.run_dir)
    pupil, master = weighed["student"], weighed["teacher"]
    assert master["accuracy"] == {s: teacher.scores[s]["accuracy"] for s in teacher.scores}
    assert pupil["accuracy"]["val"] == student.scores["val"]["accuracy"]
    # One network against an ensemble of two of the same: half the parameters.
    assert master["parameters"] == 2 * pupil["parameters"]
    assert weighed["ratios"]["parameters"] == pytest.approx(0.5)
    assert master["networks_per_image"] == 2 * pupil["networks_per_image"]
    assert pupil["latency_ms"] > 0 and master["latency_ms"] > 0
    assert weighed["verdict"].startswith("the student keeps")
    assert weighed["passed"] == (weighed["kept"] >= 0.99)  # half the parameters: smaller
    assert all(isinstance(reason, str) for reason in weighed["why_not"])
    assert 0.5 <= weighed["teacher_mean_top_probability"] <= 1  # two classes
    summary = json.loads((student.run_dir / "summary.json").read_text())
    assert summary["distillation"]["verdict"] == weighed["verdict"]
    report = (student.run_dir / "report.html").read_text()
    assert "Distillation" in report and html.escape(weighed["verdict"]) in report


def test_the_plan_says_the_student_learns_the_teachers_probabilities(student, teacher):
    plan = json.loads((student.run_dir / "plan.json").read_text())
    said = [r for r in plan["reasons"] if r.startswith("distillation:")]
    assert said and teacher.run_dir.name in said[0]
    assert plan["strategy"] == "fine-tune"  # a student fine-tunes, even where auto would probe
    assert "strategy fine-tune was asked for" not in plan["reasons"]
    assert plan["fine_tune"]["label_smoothing"] == 0.0 and plan["fine_tune"]["balance"] == "none"
    # Mixed images, where the teacher's targets are soft (no --mixup or --cutmix given).
    assert (plan["fine_tune"]["mixup"], plan["fine_tune"]["cutmix"]) == (0.8, 1.0)
    assert plan["evidence"]["distillation"]["temperature"] == 1.0
    assert any("images" in r and "s a step" in r for r in plan["reasons"])  # its cost, said
    config = json.loads((student.run_dir / "config.json").read_text())
    assert config["teacher"] == str(teacher.run_dir)
    assert config["data"] == json.loads((teacher.run_dir / "config.json").read_text())["data"]


def test_unlabelled_images_teach_except_copies_of_held_out_ones(student, more_faces):
    weighed = json.loads((student.run_dir / "distillation.json").read_text())
    images = len(list(more_faces.glob("*.png")))
    assert weighed["unlabelled"] == images - 1
    assert weighed["unlabelled_left_out"] == {"copies of validation or test images": 1}


def test_the_student_is_one_network_and_a_model_like_any(student, small_faces):
    model = headstart.load(student.run_dir)
    assert isinstance(model.network, Classifier)  # the teacher's two members, in one
    assert len(model.predict(sorted(small_faces.rglob("*.png"))[:3])) == 3


def test_a_killed_distillation_resumes_with_its_teacher(student, small_faces, tmp_path):
    copied = shutil.copytree(student.run_dir, tmp_path / "run")
    (copied / "summary.json").unlink()  # as a kill after the training, before the end
    resumed = headstart.resume(copied, quiet=True)
    images = sorted(small_faces.rglob("*.png"))[:6]
    before = headstart.load(student.run_dir).predict_proba(images)
    assert np.allclose(headstart.load(resumed.run_dir).predict_proba(images), before)
    assert (copied / "distillation.json").exists()


def test_a_resume_whose_teacher_is_gone_is_refused_and_changes_nothing(student, tmp_path):
    copied = shutil.copytree(student.run_dir, tmp_path / "run")
    config = (copied / "config.yaml").read_text()
    (copied / "config.yaml").write_text(config.replace(str(student_teacher(copied)), "/gone"))
    with pytest.raises(HeadstartError, match="not a finished headstart run folder"):
        headstart.resume(copied, epochs=3)
    assert (copied / "summary.json").exists()  # the finished run is as it was


def student_teacher(run) -> str:
    return json.loads((run / "config.json").read_text())["teacher"]


def test_a_teacher_split_otherwise_is_refused_before_anything_is_written(teacher, tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(HeadstartError, match="was split otherwise"):
        headstart.fit(
            json.loads((teacher.run_dir / "config.json").read_text())["data"],
            teacher=teacher.run_dir,
            val_fraction=0.3,
            runs_dir=runs,
            quiet=True,
        )
    assert not runs.exists() or not any(runs.iterdir())


def test_what_is_not_a_teacher_is_one_line(capsys, tmp_path, small_faces):
    code, _, err = run(capsys, "distill", tmp_path, "--runs-dir", tmp_path / "runs")
    assert code == 2 and "not a finished headstart run folder" in one_line_error(err)
    code, _, err = run(capsys, "fit", small_faces, "--unlabelled", tmp_path)
    assert code == 2 and "without a teacher" in one_line_error(err)
    with pytest.raises(HeadstartError, match="a distillation trains one network"):
        headstart.fit(small_faces, teacher=tmp_path, ensemble=2)
    with pytest.raises(HeadstartError, match=r"balance='sampler', label_smoothing=0\.1: a"):
        headstart.fit(small_faces, teacher=tmp_path, balance="sampler", label_smoothing=0.1)
    with pytest.raises(HeadstartError, match="arch: distill takes"):
        headstart.distill(tmp_path, arch="resnet18")


def test_the_loss_is_zero_where_the_student_matches_the_teacher_and_more_elsewhere():
    logits = torch.tensor([[2.0, 0.5, -1.0]])
    for temperature in (1.0, 4.0):
        teacher = Teacher(torch.nn.Identity(), (1, 3), temperature)
        targets = (logits / temperature).softmax(1)
        assert float(teacher.loss(logits.clone(), targets)) == pytest.approx(0.0, abs=1e-6)
        for other in ([[0.0, 0.0, 0.0]], [[4.0, 0.0, -3.0]], [[-1.0, 0.5, 2.0]]):
            assert teacher.loss(torch.tensor(other), targets) > 1e-3


def test_a_teacher_sees_the_students_crops_at_its_own_size():
    seen = []

    class Recording(torch.nn.Module):
        def forward(self, pixels):
            seen.append(tuple(pixels.shape))
            return torch.zeros(len(pixels), 2)

    targets = Teacher(Recording(), (224, 224)).targets(torch.zeros(3, 3, 160, 160))
    assert seen == [(3, 3, 224, 224)] and torch.allclose(targets, torch.full((3, 2), 0.5))


def test_a_student_of_a_near_certain_teacher_is_told_why_it_learned_little():
    from headstart.stages.distill import _why_not

    # An identity "network" whose logits are its inputs (two images, two classes).
    sure = Teacher(torch.nn.Identity(), (2, 2))
    sure.targets(torch.tensor([[9.0, 0.0], [0.0, 9.0]]))  # 99.99% sure of each
    assert sure.mean_top_probability == pytest.approx(0.9999, abs=1e-4)
    teaching = SimpleNamespace(teacher=sure, unlabelled=())
    history = [{"epoch": 1, "val_accuracy": 0.9}, {"epoch": 2, "val_accuracy": 0.8}]
    reasons = _why_not(False, True, history, teaching, mixed=False)
    assert any("near-certain" in r and "--mixup 0.8" in r for r in reasons)
    unsure = Teacher(torch.nn.Identity(), (1, 2))
    unsure.targets(torch.tensor([[0.5, 0.0]]))
    teaching = SimpleNamespace(teacher=unsure, unlabelled=())
    assert not any("near-certain" in r for r in _why_not(False, True, history, teaching, False))


def test_unlabelled_examples_without_a_teacher_are_refused(small_faces):
    backbone, preprocessing, _ = create_backbone("efficientnet_lite0", pretrained=False)
    network = Classifier(backbone, torch.nn.Linear(backbone.num_features, 2), preprocessing)
    image = next(small_faces.rglob("*.png"))
    with pytest.raises(HeadstartError, match="need a teacher"):
        fine_tune(
            network,
            [(image, 0), (image, -1)],
            [],
            None,
            InputPipeline(preprocessing),
            FineTuneSettings(),
        )
