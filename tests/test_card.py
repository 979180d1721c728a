"""The model card in every bundle, and ``headstart push`` of the bundle to the Hugging Face hub
(its uploads faked here: no network; its refusals real)."""

from __future__ import annotations

import json
import shutil

import huggingface_hub
import pytest
import yaml

from headstart.cli import main
from headstart.report.card import model_card
from headstart.runfolder import RunFolder


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_every_bundle_has_a_card_the_hub_reads(fitted):
    card = (fitted.run_dir / "model" / "README.md").read_text()
    assert card == model_card(RunFolder(fitted.run_dir))  # written from the run folder alone
    meta = front_matter(card)
    assert meta["library_name"] == "headstart"
    assert meta["pipeline_tag"] == "image-classification"
    (result,) = meta["model-index"][0]["results"]
    accuracy = {m["name"]: m["value"] for m in result["metrics"]}
    assert accuracy == {"validation accuracy": round(fitted.scores["val"]["accuracy"], 4)}
    assert "test" not in fitted.scores  # the faces fit holds no test split: none claimed


def test_the_card_says_what_the_model_was_trained_on_and_where_it_is_weak(fitted):
    card = (fitted.run_dir / "model" / "README.md").read_text()
    for heading in ("## Model", "## Data", "## Metrics", "## Known weaknesses", "## Intended use"):
        assert f"\n{heading}\n" in card
    assert "| face |" in card and "| not-face |" in card
    assert "Validation holds 40 images: one image is 2.5 points of accuracy" in card
    assert all(reason in card for reason in fitted.plan.reasons)
    summary = json.loads((fitted.run_dir / "summary.json").read_text())
    assert summary["calibration"]["why"][1:] in card


@pytest.fixture
def offline_hub(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_push_in_offline_mode_says_so_in_one_line(fitted, offline_hub, capsys):
    assert main(["push", str(fitted.run_dir), "someone/faces"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "offline mode (HF_HUB_OFFLINE is set)" in error


def test_push_without_a_network_says_so_and_changes_nothing(fitted, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    bundle = shutil.copytree(fitted.run_dir / "model", tmp_path / "model")
    before = sorted(p.name for p in bundle.iterdir())
    assert main(["push", str(bundle), "someone/faces"]) == 2
    assert "cannot reach the Hugging Face hub at http://127.0.0.1:9" in capsys.readouterr().err
    assert sorted(p.name for p in bundle.iterdir()) == before


def test_push_uploads_the_bundle_with_its_card(fitted, tmp_path, monkeypatch):
    uploaded = {}

    class Hub:
        endpoint = "https://hub.example"

        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **options):
            uploaded["created"] = (repo_id, options["private"])

        def upload_folder(self, *, folder_path, repo_id, allow_patterns, **options):
            files = [p.name for p in folder_path.iterdir()]
            uploaded["files"] = sorted(set(files) & set(allow_patterns))
            return f"https://hub.example/{repo_id}/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", Hub)
    run = shutil.copytree(fitted.run_dir, tmp_path / "run")
    (run / "model" / "README.md").unlink()  # a bundle from before cards: written on the way
    assert main(["push", str(run), "someone/faces", "--private"]) == 0
    assert uploaded["created"] == ("someone/faces", True)
    assert uploaded["files"] == ["README.md", "headstart.json", "model.safetensors"]
    assert (run / "model" / "trained_on.txt").exists()  # kept at home


def test_push_refuses_a_folder_that_is_not_a_bundle(tmp_path, capsys):
    assert main(["push", str(tmp_path), "someone/faces"]) == 2
    assert "not a headstart model bundle" in capsys.readouterr().err
