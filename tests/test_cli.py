"""The command line as a user meets it: one-line errors, tables, CSV, skipped files named."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from headstart.cli import main
from headstart.runfolder import RunFolder


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


def test_fit_on_an_empty_folder_is_one_clear_line(capsys, tmp_path):
    code, _, err = run(capsys, "fit", tmp_path, "--runs-dir", tmp_path / "runs")
    assert code == 2
    assert "no images" in one_line_error(err)


def test_fit_with_one_class_says_so(capsys, tmp_path, small_faces):
    shutil.copytree(small_faces / "face", tmp_path / "data" / "face")
    code, _, err = run(capsys, "fit", tmp_path / "data", "--runs-dir", tmp_path / "runs")
    assert code == 2
    assert "one class" in one_line_error(err)


def test_unknown_architecture_suggests_a_name(capsys, small_faces, tmp_path):
    code, _, err = run(capsys, "fit", small_faces, "--arch", "resnet_18", "--runs-dir", tmp_path)
    assert code == 2
    assert "resnet18" in one_line_error(err)


def test_missing_weights_file_is_named(capsys, small_faces, tmp_path):
    missing = tmp_path / "nowhere.safetensors"
    code, _, err = run(capsys, "fit", small_faces, "--weights", missing, "--runs-dir", tmp_path)
    assert code == 2
    assert str(missing) in one_line_error(err)


def test_fit_prints_a_summary(capsys, small_faces, tmp_path):
    code, out, _ = run(
        capsys, "fit", small_faces, "--runs-dir", tmp_path, "--name", "first", "--quiet"
    )
    assert code == 0
    assert "strategy: linear-probe" in out
    assert "val: accuracy" in out and "face" in out and "not-face" in out
    assert (tmp_path / "first" / "model" / "headstart.json").exists()


def test_predict_reports_bad_files_and_predicts_the_rest(capsys, fitted, faces, tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    for path in sorted((faces / "face").glob("*.png"))[:3]:
        shutil.copy(path, folder / path.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    code, out, err = run(capsys, "predict", fitted.run_dir, folder, "--csv", "--top-k", "2")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 3 and all(r["label1"] == "face" for r in rows)
    assert {"label2", "probability2"} <= set(rows[0])
    assert "broken.jpg" in err and "Traceback" not in err


def test_predict_shows_progress_on_stderr_and_keeps_the_csv_clean(capsys, fitted, faces):
    images = sorted((faces / "face").glob("*.png"))[:3]
    code, out, err = run(capsys, "predict", fitted.run_dir, *images, "--csv")
    assert code == 0
    header, *rows = out.splitlines()
    assert header == "path,label1,probability1" and len(rows) == 3
    assert "predict" in err and "3/3" in err  # the bar, finished, on stderr only
    assert "predict" not in out and "━" not in out


def test_quiet_predict_and_evaluate_print_only_results(capsys, fitted, faces, small_faces):
    image = sorted((faces / "face").glob("*.png"))[0]
    code, out, err = run(capsys, "predict", fitted.run_dir, image, "--csv", "--quiet")
    assert code == 0 and out.startswith("path,") and err == ""
    code, out, err = run(capsys, "evaluate", fitted.run_dir, faces, "--quiet")
    assert code == 0 and "accuracy" in out and err == ""


def test_predict_table(capsys, fitted, faces):
    image = sorted((faces / "not-face").glob("*.png"))[0]
    code, out, _ = run(capsys, "predict", fitted.run_dir / "model", image)
    assert code == 0 and "not-face" in out


def test_evaluate_prints_scores_and_confusion_matrix(capsys, fitted, faces):
    held_out = [path for path, _, split in RunFolder(fitted.run_dir).splits if split == "val"]
    code, out, err = run(capsys, "evaluate", fitted.run_dir, faces)
    assert code == 0
    assert "accuracy" in out and f"on {len(held_out)} images (split: val)" in out
    assert "confusion matrix" in out
    assert "predict" in err and f"{len(held_out)}/{len(held_out)}" in err  # progress, stderr


def test_evaluate_never_scores_training_images_in_silence(
    capsys, fitted, faces, small_faces, tmp_path
):
    # On the data it was fitted on: the run's own split, held-out images by default.
    splits = RunFolder(fitted.run_dir).splits
    trained = {(label, path.name) for path, label, split in splits if split == "train"}
    code, out, _ = run(capsys, "evaluate", fitted.run_dir, faces, "--split", "train")
    assert code == 0 and f"on {len(trained)} images (split: train)" in out
    # Other data holding copies of training images (small_faces copies some of faces):
    # the copies are left out and said.
    copies = {(p.parent.name, p.name) for p in small_faces.glob("*/*.png")} & trained
    code, out, err = run(capsys, "evaluate", fitted.run_dir, small_faces)
    assert code == 0 and 0 < len(copies) < 48
    assert f"left out {len(copies)} image(s)" in err
    assert f"on {48 - len(copies)} images (split: all)" in out
    # A bundle copied away from its run knows its training images by content.
    bundle = shutil.copytree(fitted.run_dir / "model", tmp_path / "model")
    assert len((bundle / "trained_on.txt").read_text().split()) == len(trained)
    code, out, err = run(capsys, "evaluate", bundle, small_faces)
    assert code == 0 and f"left out {len(copies)} image(s)" in err
    # A bundle from before the hashes were recorded: its run's split says the same.
    older = shutil.copytree(fitted.run_dir, tmp_path / "older-run")
    (older / "model" / "trained_on.txt").unlink()
    code, out, err = run(capsys, "evaluate", older, small_faces)
    assert code == 0 and f"left out {len(copies)} image(s)" in err


def test_evaluate_refuses_unknown_labels(capsys, fitted, small_faces, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_faces, data)
    (data / "face").rename(data / "cat")
    code, _, err = run(capsys, "evaluate", fitted.run_dir, data)
    assert code == 2
    assert "'cat'" in one_line_error(err)


def test_models_lists_the_offline_weights(capsys):
    code, out, _ = run(capsys, "models", "efficientnet_lite*")
    assert code == 0
    line = next(line for line in out.splitlines() if "efficientnet_lite0 " in line)
    assert "built-in" in line and "efficientnet_lite1" in out  # a pattern lists every match
    code, out, _ = run(capsys, "models")  # no pattern: what can be used here, the rest counted
    assert code == 0 and "efficientnet_lite0" in out and "efficientnet_lite1" not in out
    assert "more without weights here" in out


def test_demo_runs_offline(capsys, tmp_path):
    code, out, _ = run(capsys, "demo", "--no-scratch", "--runs-dir", tmp_path)
    assert code == 0
    assert "val: accuracy" in out and "report.html" in out


@pytest.mark.slow
def test_demo_compares_transfer_with_scratch(capsys, tmp_path):
    code, out, _ = run(capsys, "demo", "--runs-dir", tmp_path)
    assert code == 0
    assert "transfer learning vs training from scratch" in out
    assert "transfer gives a higher start" in out
    assert Path(tmp_path).joinpath("demo-lfw-1", "compare_scratch.json").exists()


def test_a_refusal_leaves_nothing_behind_and_never_blocks_the_next_run(capsys, tmp_path, faces):
    runs = tmp_path / "runs"
    code, _, err = run(capsys, "fit", faces, "--arch", "resnet_18", "--runs-dir", runs)
    assert code == 2 and not runs.exists()  # refused before anything was written

    leaky = tmp_path / "leaky"  # a split the data gives, with a copy on both sides
    for split, chosen in (("train", slice(0, 20)), ("val", slice(20, 26))):
        for label in ("face", "not-face"):
            (leaky / split / label).mkdir(parents=True)
            for image in sorted((faces / label).glob("*.png"))[chosen]:
                shutil.copy(image, leaky / split / label / image.name)
    copy = sorted((faces / "face").glob("*.png"))[0]
    shutil.copy(copy, leaky / "val" / "face" / "copy.png")
    code, _, err = run(capsys, "fit", leaky, "--runs-dir", runs, "--name", "mine", "--quiet")
    assert code == 2 and "--allow-leakage" in one_line_error(err)
    assert (runs / "mine" / "failed.json").exists()  # the evidence stays, marked failed
    code, _, _ = run(
        capsys, "fit", leaky, "--runs-dir", runs, "--name", "mine", "--quiet", "--allow-leakage"
    )
    assert code == 0 and not (runs / "mine" / "failed.json").exists()
    code, _, err = run(capsys, "fit", leaky, "--runs-dir", runs, "--name", "mine", "--quiet")
    assert code == 2 and "already holds a finished run" in one_line_error(err)  # it is kept


def test_an_output_folder_that_cannot_be_written_is_one_line(capsys, tmp_path, small_faces):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run(capsys, "fit", small_faces, "--runs-dir", blocker / "runs", "--quiet")
    assert code == 2 and str(blocker) in one_line_error(err)
    code, _, err = run(capsys, "audit", small_faces, "--out", blocker / "audit", "--quiet")
    assert code == 2 and str(blocker) in one_line_error(err)


def test_a_class_too_small_to_validate_is_said_and_one_image_a_class_is_refused(
    capsys, tmp_path, small_faces
):
    data = tmp_path / "data"
    shutil.copytree(small_faces / "face", data / "face")
    (data / "rare").mkdir()
    shutil.copy(sorted((small_faces / "not-face").glob("*.png"))[0], data / "rare" / "one.png")
    code, out, _ = run(capsys, "fit", data, "--runs-dir", tmp_path / "runs", "--quiet")
    assert code == 0 and "class 'rare' has 1 image: none left for validation" in out

    single = tmp_path / "single"
    for label in ("face", "not-face"):
        (single / label).mkdir(parents=True)
        shutil.copy(sorted((small_faces / label).glob("*.png"))[0], single / label / "1.png")
    code, _, err = run(capsys, "fit", single, "--runs-dir", tmp_path / "runs2", "--quiet")
    assert code == 2 and "no validation images" in one_line_error(err)
    assert not (tmp_path / "runs2").exists()


def _damaged(meta: dict | None, weights: bytes | None):
    def damage(bundle):
        if meta is not None:
            description = json.loads((bundle / "headstart.json").read_text())
            (bundle / "headstart.json").write_text(json.dumps({**description, **meta}))
        if weights is not None:
            (bundle / "model.safetensors").write_bytes(weights)

    return damage


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (_damaged(None, b"not safetensors at all"), "not a readable safetensors file"),
        (_damaged({"classes": ["face", "not-face", "cat"]}, None), "3 classes"),
        (lambda bundle: _drop_key(bundle, "architecture"), "incomplete, no architecture"),
        (lambda bundle: (bundle / "headstart.json").write_text("[1, 2]"), "not a JSON object"),
        (lambda bundle: (bundle / "model.safetensors").unlink(), "has no weights"),
        (_damaged({"temperature": "hot"}, None), "'temperature' must be a number"),
        (_damaged({"temperature": -1}, None), "temperature=-1; expected > 0"),
    ],
    ids=[
        "garbage weights",
        "class count",
        "missing key",
        "not an object",
        "no weights",
        "temperature not a number",
        "negative temperature",
    ],
)
def test_a_damaged_bundle_is_refused_in_one_line(capsys, fitted, faces, tmp_path, damage, said):
    bundle = shutil.copytree(fitted.run_dir / "model", tmp_path / "model")
    damage(bundle)
    image = sorted((faces / "face").glob("*.png"))[0]
    code, _, err = run(capsys, "predict", bundle, image)
    assert code == 2 and said in one_line_error(err)


def _drop_key(bundle, key: str) -> None:
    description = json.loads((bundle / "headstart.json").read_text())
    del description[key]
    (bundle / "headstart.json").write_text(json.dumps(description))


def test_evaluate_scores_held_out_photos_of_a_single_class(capsys, fitted, tmp_path):
    # Data only to score: no training split, and one class is enough.
    held_out = [path for path, label, split in RunFolder(fitted.run_dir).splits if split == "val"]
    faces = [path for path in held_out if path.parent.name == "face"]
    listing = tmp_path / "faces.csv"
    listing.write_text("path,label,split\n" + "".join(f"{p},face,test\n" for p in faces))
    code, out, _ = run(capsys, "evaluate", fitted.run_dir, listing)
    assert code == 0 and f"on {len(faces)} images (split: test)" in out
