"""headstart export: the model as ONNX (run without PyTorch) or TorchScript, checked against the
PyTorch model on real validation images before it is kept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

import headstart
from headstart import exporting
from headstart.exported import ExportedModel
from headstart.preprocessing import center_crop
from headstart.runfolder import RunFolder
from test_cli import one_line_error, run


@pytest.mark.parametrize("size", [(7, 9), (8, 8), (5, 12), (12, 5), (3, 3), (2, 11)])
def test_the_numpy_centre_crop_is_torchvisions_to_the_pixel(size):
    # The crop that an exported model's images get without PyTorch is the training side's.
    pixels = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    for crop in [(4, 4), (5, 6), (8, 8), (9, 13), (1, 1)]:
        ours = center_crop(pixels, *crop)
        theirs = v2.functional.center_crop(torch.from_numpy(pixels).permute(2, 0, 1), list(crop))
        assert np.array_equal(ours, theirs.permute(1, 2, 0).numpy()), (size, crop)


@pytest.fixture(scope="module")
def onnx_bundle(fitted, tmp_path_factory) -> Path:
    """The faces fit exported to ONNX, in a copy of its run folder."""
    run = shutil.copytree(fitted.run_dir, tmp_path_factory.mktemp("exported") / "run")
    return headstart.export(run, "onnx", quiet=True)


def validation_images(run: Path) -> list[Path]:
    return [path for path, _, split in RunFolder(run).splits if split == "val"]


def test_an_onnx_export_predicts_as_the_pytorch_model(fitted, onnx_bundle):
    assert onnx_bundle == onnx_bundle.parent / "model-onnx"  # beside the run's model/
    meta = json.loads((onnx_bundle / "headstart.json").read_text())
    parity = meta["parity"]
    assert parity["images"] == len(validation_images(fitted.run_dir))
    assert parity["max_abs_difference"] <= 1e-4 and parity["labels_agree"] == parity["images"]
    assert parity["accuracy"] == parity["reference_accuracy"] == fitted.scores["val"]["accuracy"]
    assert meta["runtime"] == "onnx" and meta["classes"] == list(fitted.model.classes)

    exported = headstart.load(onnx_bundle)
    assert isinstance(exported, ExportedModel)
    assert exported.temperature == fitted.model.temperature
    images = validation_images(fitted.run_dir)[:5]
    expected = fitted.model.predict_proba(images)
    assert np.abs(exported.predict_proba(images) - expected).max() <= 1e-4
    one_at_a_time = np.concatenate([exported.predict_proba(image) for image in images])
    assert np.abs(one_at_a_time - expected).max() <= 1e-4  # any batch size
    assert "Export" in (onnx_bundle / "README.md").read_text()  # the card says how it was checked


def test_predict_and_evaluate_take_the_exported_folder(capsys, fitted, onnx_bundle, faces):
    image = validation_images(fitted.run_dir)[0]
    code, table, _ = run(capsys, "predict", onnx_bundle, image, "--csv", "--no-calibration")
    assert code == 0 and fitted.model.predict([image])[0].label in table
    scores, _ = headstart.evaluate(onnx_bundle, faces, quiet=True)
    assert scores["split"] == "val"  # still in its run folder: the run's held-out images
    assert scores["accuracy"] == fitted.scores["val"]["accuracy"]


def test_an_onnx_bundle_predicts_without_pytorch(fitted, onnx_bundle):
    # Importing torch, torchvision or timm fails in this interpreter, as where none is installed.
    image = validation_images(fitted.run_dir)[0]
    script = textwrap.dedent(
        f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision", "timm"):
                    raise ImportError(f"no module named {{name!r}} (not installed)")
        sys.meta_path.insert(0, NoTorch())
        import headstart
        from headstart.cli import main
        model = headstart.load({str(onnx_bundle)!r})
        print(model.predict([{str(image)!r}])[0].label)
        assert main(["predict", {str(onnx_bundle)!r}, {str(image)!r}, "--quiet"]) == 0
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[0] == fitted.model.predict([image])[0].label


def test_a_torchscript_export_is_checked_the_same_way(fitted, tmp_path):
    run = shutil.copytree(fitted.run_dir, tmp_path / "run")
    folder = headstart.export(run, "torchscript", quiet=True)
    parity = json.loads((folder / "headstart.json").read_text())["parity"]
    assert folder.name == "model-torchscript" and parity["max_abs_difference"] <= 1e-4
    images = validation_images(run)[:3]
    assert np.allclose(
        headstart.load(folder).predict_proba(images), fitted.model.predict_proba(images), atol=1e-4
    )


@pytest.mark.slow  # an ONNX export: tens of seconds
def test_an_int8_export_measures_what_it_costs(capsys, fitted, tmp_path):
    copy = shutil.copytree(fitted.run_dir, tmp_path / "run")
    code, printed, err = run(capsys, "export", copy, "--int8")
    folder = copy / "model-onnx-int8"
    assert code == 0 and str(folder) in printed.replace("\n", "")
    parity = json.loads((folder / "headstart.json").read_text())["parity"]
    assert parity["tolerance"] is None  # not held to PyTorch's probabilities: measured instead
    assert (
        0 <= parity["accuracy"] <= 1
        and parity["reference_accuracy"] == fitted.scores["val"]["accuracy"]
    )
    assert "accuracy" in err  # said on the console too
    float_size = (fitted.run_dir / "model" / "model.safetensors").stat().st_size
    assert (folder / "model.onnx").stat().st_size < float_size / 2


@pytest.mark.slow  # an ONNX export: tens of seconds
def test_an_export_that_disagrees_with_pytorch_fails_and_leaves_nothing(
    capsys, fitted, tmp_path, monkeypatch
):
    copy = shutil.copytree(fitted.run_dir, tmp_path / "run")
    write_network = exporting._write_network

    def write_another_network(model, format, file):  # as a broken exporter would
        with torch.no_grad():
            model.network.head.bias[0] += 2.0
        write_network(model, format, file)
        with torch.no_grad():
            model.network.head.bias[0] -= 2.0

    monkeypatch.setattr(exporting, "_write_network", write_another_network)
    code, _, err = run(capsys, "export", copy, "--quiet")
    assert code == 2 and "does not predict as the PyTorch model does" in one_line_error(err)
    assert sorted(p.name for p in copy.iterdir()) == sorted(
        p.name for p in fitted.run_dir.iterdir()
    )  # no model-onnx, no partial folder


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (
            ["--format", "onnx", "--int8", "--out", "{run}/x", "--images", "{run}/none"],
            "no such file",
        ),
        (["--format", "torchscript", "--int8"], "int8 quantisation is for ONNX"),
    ],
    ids=["missing parity images", "int8 torchscript"],
)
def test_bad_export_requests_are_refused_in_one_line(capsys, fitted, arguments, said):
    arguments = [a.format(run=fitted.run_dir) for a in arguments]
    code, _, err = run(capsys, "export", fitted.run_dir, *arguments)
    assert code == 2 and said in one_line_error(err)


@pytest.mark.slow  # an ONNX export: tens of seconds
def test_an_export_away_from_its_run_needs_images_and_is_not_exported_again(
    capsys, fitted, onnx_bundle, tmp_path
):
    alone = shutil.copytree(fitted.run_dir / "model", tmp_path / "alone")
    code, _, err = run(capsys, "export", alone)
    assert code == 2 and "pass some with --images" in one_line_error(err)
    images = tmp_path / "some"
    images.mkdir()
    for path in validation_images(fitted.run_dir)[:4]:
        shutil.copy(path, images / path.name)
    assert run(capsys, "export", alone, "--images", images, "--quiet")[0] == 0
    parity = json.loads((tmp_path / "alone-onnx" / "headstart.json").read_text())["parity"]
    assert parity["images"] == 4 and parity["accuracy"] is None  # no labels: none claimed
    code, _, err = run(capsys, "export", onnx_bundle)
    assert code == 2 and "already an export" in one_line_error(err)
    # An export replaces an earlier export, never anything else.
    code, _, err = run(capsys, "export", alone, "--images", images, "--out", images)
    assert code == 2 and "is not an earlier export" in one_line_error(err)
    assert len(list(images.iterdir())) == 4


def test_a_damaged_onnx_bundle_is_refused_in_one_line(capsys, fitted, onnx_bundle, tmp_path):
    image = validation_images(fitted.run_dir)[0]
    garbage = shutil.copytree(onnx_bundle, tmp_path / "garbage")
    (garbage / "model.onnx").write_bytes(b"not a model")
    code, _, err = run(capsys, "predict", garbage, image)
    assert code == 2 and "not a readable ONNX model" in one_line_error(err)
    other = shutil.copytree(onnx_bundle, tmp_path / "other")
    meta = json.loads((other / "headstart.json").read_text())
    (other / "headstart.json").write_text(json.dumps({**meta, "classes": ["a", "b", "c"]}))
    code, _, err = run(capsys, "predict", other, image)
    assert code == 2 and "does not match the bundle's description" in one_line_error(err)


@pytest.mark.slow
def test_an_onnx_bundle_predicts_in_a_fresh_environment_without_pytorch(
    fitted, onnx_bundle, tmp_path
):
    # As a user would set it up: the runtime's few packages, and headstart without its
    # dependencies (PyTorch among them). Installs from the package index.
    environment = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", environment], check=True)
    python = environment / "bin" / "python"
    root = Path(__file__).parents[1]
    install = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*install, "onnxruntime", "numpy", "pillow", "rich"], check=True, timeout=900)
    subprocess.run([*install, "--no-deps", root], check=True, timeout=900)
    image = validation_images(fitted.run_dir)[0]
    done = subprocess.run(
        [environment / "bin" / "headstart", "predict", onnx_bundle, image, "--csv", "--quiet"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert fitted.model.predict([image])[0].label in done.stdout
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True)
    assert probe.returncode != 0  # no PyTorch there
