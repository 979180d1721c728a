"""headstart export for a text model: the encoder and head as one ONNX network, its tokenizer
beside it, run without PyTorch, checked against the PyTorch model on the run's texts."""

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

import headstart
from headstart.text.exported import ExportedTextModel
from headstart.text.exporting import _parity_texts
from test_cli import one_line_error, run
from test_serve import Server
from topics import COOKING, WEATHER, write_table

LONG = "The forecast: " + "rain and wind along the coast, " * 120  # far beyond 256 tokens
TEXTS = ["Light rain will spread from the west", "Stir the risotto until it is creamy", LONG, ""]


@pytest.fixture(scope="module")
def probe_run(text_probe_run, tmp_path_factory) -> Path:
    """A copy of the probe's run folder, so that exports land beside its own ``model/``."""
    return shutil.copytree(text_probe_run.run_dir, tmp_path_factory.mktemp("export") / "run")


@pytest.fixture(scope="module")
def onnx_bundle(probe_run) -> Path:
    return headstart.export(probe_run, quiet=True)


def test_a_text_model_exports_to_onnx_and_predicts_as_pytorch(probe_run, onnx_bundle):
    assert onnx_bundle == probe_run / "model-onnx"
    assert sorted(p.name for p in onnx_bundle.iterdir()) == [
        "README.md",
        "headstart.json",
        "model.onnx",
        "tokenizer.json",
        "trained_on.txt",
    ]
    meta = json.loads((onnx_bundle / "headstart.json").read_text())
    parity = meta["parity"]
    assert parity["source"].startswith("the run's validation texts") and parity["texts"] >= 4
    assert "fitted again" in parity["source"]  # 12 texts a class: trained on at the refit
    assert "one past the cut" in parity["source"]  # made up, beside them
    assert parity["max_abs_difference"] <= 1e-4 and parity["labels_agree"] == parity["texts"]
    assert parity["accuracy"] == parity["reference_accuracy"]
    assert meta["runtime"] == "onnx" and meta["modality"] == "text"

    pytorch, exported = headstart.load(probe_run), headstart.load(onnx_bundle)
    assert isinstance(exported, ExportedTextModel)
    assert exported.classes == pytorch.classes and exported.temperature == pytorch.temperature
    assert exported.trained_on == pytorch.trained_on and exported.max_tokens == 256
    expected = pytorch.predict_proba(TEXTS)
    # A batch of texts of every length (one cut at 256 tokens, one empty), then one at a time.
    assert np.abs(exported.predict_proba(TEXTS) - expected).max() <= 1e-4
    one_at_a_time = np.concatenate([exported.predict_proba(text) for text in TEXTS])
    assert np.abs(one_at_a_time - expected).max() <= 1e-4
    # The graph's own softmax, as other runtimes read it, is the calibrated one.
    assert np.abs(exported.graph_probabilities(TEXTS) - expected).max() <= 1e-4
    assert [p.label for p in exported.predict(TEXTS[:2])] == ["weather", "cooking"]
    assert "tokenizer.json" in (onnx_bundle / "README.md").read_text()


def test_predict_evaluate_and_serve_take_the_exported_folder(
    capsys, probe_run, onnx_bundle, tmp_path
):
    code, table, _ = run(capsys, "predict", onnx_bundle, "--text", TEXTS[1], "--csv")
    assert code == 0 and "cooking" in table.splitlines()[1]
    rows = [{"text": TEXTS[0], "label": "weather"}, {"text": TEXTS[1], "label": "cooking"}]
    rows += [{"text": WEATHER[0], "label": "weather"}]  # trained on: left out, and said
    labelled = write_table(tmp_path / "new.csv", rows)
    scores, _ = headstart.evaluate(onnx_bundle, labelled, quiet=True)
    assert scores["accuracy"] == 1.0 and scores["left_out"] == 1

    server = Server(headstart.load(onnx_bundle))
    try:
        status, metadata = server.request("GET", "/metadata")
        body = json.dumps({"texts": TEXTS[:2]}).encode()
        headers = {"Content-Type": "application/json"}
        answered, answer = server.request("POST", "/predict", body, headers)
    finally:
        server.stop()
    assert status == 200 and metadata["runtime"] == "onnx"
    assert metadata["encoder"] == "all-MiniLM-L6-v2" and metadata["max_tokens"] == 256
    assert answered == 200
    assert [p["label"] for p in answer["predictions"]] == ["weather", "cooking"]


def test_an_exported_text_model_predicts_without_pytorch_or_transformers(onnx_bundle):
    # Importing any of them fails in this interpreter, as where none is installed: the
    # tokenizer runs in `tokenizers`, the network in onnxruntime.
    script = textwrap.dedent(
        f"""
        import sys
        class Missing:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "sentence_transformers"):
                    raise ImportError(f"no module named {{name!r}} (not installed)")
        sys.meta_path.insert(0, Missing())
        import headstart
        from headstart.cli import main
        model = headstart.load({str(onnx_bundle)!r})
        print(model.predict([{TEXTS[0]!r}])[0].label)
        assert main(["predict", {str(onnx_bundle)!r}, "--text", "Bake the bread", "--quiet"]) == 0
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[0] == "weather"


@pytest.mark.slow
def test_an_exported_text_model_predicts_in_a_fresh_environment(onnx_bundle, tmp_path):
    # As a user would set it up: the runtime's few packages and headstart without its
    # dependencies (PyTorch, transformers and sentence-transformers among them).
    environment = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", environment], check=True)
    python = environment / "bin" / "python"
    install = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    packages = ["onnxruntime", "tokenizers", "numpy", "pillow", "rich"]
    subprocess.run([*install, *packages], check=True, timeout=900)
    subprocess.run([*install, "--no-deps", Path(__file__).parents[1]], check=True, timeout=900)
    done = subprocess.run(
        [environment / "bin" / "headstart", "predict", onnx_bundle, "--text", TEXTS[0], "--csv"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[1].split(",")[2] == "weather"
    for missing in ("torch", "transformers", "sentence_transformers"):
        assert subprocess.run([python, "-c", f"import {missing}"], capture_output=True).returncode


def test_away_from_its_run_a_text_export_is_checked_on_the_texts_given(
    capsys, probe_run, onnx_bundle, tmp_path
):
    # An int8 export: a quarter of the size; its cost is measured on the texts, not bounded.
    bundle = shutil.copytree(probe_run / "model", tmp_path / "model")
    code, _, err = run(capsys, "export", bundle)
    assert code == 2 and "pass some with --texts" in one_line_error(err)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(WEATHER[:3] + COOKING[:3] + [LONG]) + "\n")
    code, out, _ = run(capsys, "export", bundle, "--texts", texts, "--int8", "--quiet")
    assert code == 0 and "model-onnx-int8" in out
    int8 = tmp_path / "model-onnx-int8"
    parity = json.loads((int8 / "headstart.json").read_text())["parity"]
    assert parity["source"].startswith("the texts given") and parity["texts"] == 7 + 2
    assert parity["tolerance"] is None and parity["accuracy"] is None
    assert (int8 / "model.onnx").stat().st_size < (onnx_bundle / "model.onnx").stat().st_size / 3
    model = headstart.load(int8)
    assert [p.label for p in model.predict(TEXTS[:2])] == ["weather", "cooking"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--format", "torchscript"], "it exports to ONNX"),
        (["--images", "photo.jpg"], "give --texts, not --images"),
    ],
    ids=["torchscript", "images for a text model"],
)
def test_what_a_text_export_cannot_do_is_one_line(capsys, probe_run, arguments, message):
    code, _, err = run(capsys, "export", probe_run, *arguments)
    assert code == 2 and message in one_line_error(err)
    assert sorted(p.name for p in probe_run.iterdir() if p.name.startswith("model-")) in (
        [],
        ["model-onnx"],  # the module's export, when it ran first
    )


def test_a_damaged_text_export_is_refused_in_one_line(capsys, onnx_bundle, tmp_path):
    damaged = shutil.copytree(onnx_bundle, tmp_path / "damaged")
    (damaged / "tokenizer.json").write_text("{not a tokenizer")
    code, _, err = run(capsys, "predict", damaged, "--text", "Rain")
    assert code == 2 and "not a readable tokenizer" in one_line_error(err)

    other = shutil.copytree(onnx_bundle, tmp_path / "other")
    meta = json.loads((other / "headstart.json").read_text())
    damages = [
        ({**meta, "classes": ["a", "b", "c"]}, "does not match the bundle's description"),
        ({**meta, "encoder": {"name": "x"}}, "not a valid text export (encoder.max_tokens)"),
        ({**meta, "tokenizer": {"pad_id": 10**9}}, "beyond the tokenizer's 30522 tokens"),
    ]
    for damaged_meta, message in damages:
        (other / "headstart.json").write_text(json.dumps(damaged_meta))
        code, _, err = run(capsys, "predict", other, "--text", "Rain")
        assert code == 2 and message in one_line_error(err)


def test_texts_for_an_image_model_are_refused_before_they_are_read(capsys, fitted, tmp_path):
    code, _, err = run(capsys, "export", fitted.run_dir, "--texts", tmp_path / "photos")
    assert code == 2 and "give --images, not --texts" in one_line_error(err)


def test_one_string_given_for_the_parity_check_is_one_text(probe_run):
    texts, labels, where = _parity_texts(probe_run, probe_run / "model", "Rain today")
    assert (texts, labels, where) == (["Rain today"], None, "the texts given")
