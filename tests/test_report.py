"""The run report: one HTML file, readable anywhere, built from nothing but a run folder."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import headstart
from headstart.metrics import classification_metrics
from headstart.report import (
    build_report,
    examples_to_show,
    read_predictions,
    save_thumbnails,
    write_predictions,
)
from headstart.report.calibration import calibrate, ece, fit_temperature
from headstart.report.records import softmax

#: The module, not the function of the same name that ``headstart`` exports.
fit_module = importlib.import_module("headstart.stages.plan")

#: What fit always writes; every other file of a run folder may be absent.
CORE = ("config.json", "dataset.json", "plan.json", "summary.json", "metrics.jsonl")
HEADINGS = (
    "Headline",
    "The plan and why",
    "Data audit",
    "Sanity checks",
    "Learning-rate range test",
    "Training curves",
    "Confusion matrix",
    "Scores per class",
    "Calibration",
    "Mistakes and hard examples",
    "First-layer filters",
    "A fixed batch over the epochs",
    "Transfer against training from scratch",
)


@pytest.fixture(scope="module")
def run(small_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run that writes every file a report can show: fine-tuning with a held-out test
    split, the sanity checks, the learning-rate range test (which fit runs only when it is
    cheap next to the fine-tuning: made cheap here) and the comparison with scratch."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fit_module, "LR_FIND_STEPS", 12)
        patch.setattr(fit_module, "LR_FIND_SHARE", 10.0)
        result = headstart.fit(
            small_faces,
            strategy="fine-tune",
            epochs=2,
            batch_size=8,
            test_fraction=0.2,
            compare_scratch=True,
            runs_dir=tmp_path_factory.mktemp("runs"),
            quiet=True,
        )
    assert (result.run_dir / "report.html").exists()  # fit builds it; the tests rebuild it
    return result.run_dir


def test_the_report_is_one_self_contained_file_with_every_section(run):
    page = (run / "report.html").read_text()
    for heading in HEADINGS:
        assert f"<h2>{heading}</h2>" in page
    assert "could not be drawn" not in page and " is missing" not in page
    assert page.count('src="data:image/png;base64,') >= 10  # figures, thumbnails, filters
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "face" in page and "not-face" in page
    assert "expected calibration error" in page
    assert (run / "report.html").stat().st_size < 3_000_000


def test_the_report_opens_in_a_browser_without_errors_or_requests(run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium to open the report in (apt-get install chromium)")
    report = (run / "report.html").resolve().as_uri()
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on(
            "request",
            lambda r: r.url == report or r.url.startswith("data:") or problems.append(r.url),
        )
        page.goto(report)
        assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth)")
        # full_page=True fails on Debian's Chromium ("Unable to capture screenshot"): a
        # viewport as tall as the page gives the same picture.
        height = page.evaluate("document.documentElement.scrollHeight")
        page.set_viewport_size({"width": 1100, "height": height})
        page.screenshot(path=tmp_path / "report.png")
        browser.close()
    assert problems == []
    shot = np.asarray(Image.open(tmp_path / "report.png").convert("L"))
    assert shot.shape == (height, 1100) and height > 3000 and shot.std() > 10


def test_missing_files_leave_sections_out_and_say_why(run, tmp_path):
    for name in CORE:
        shutil.copy(run / name, tmp_path / name)
    page = build_report(tmp_path).read_text()
    for heading in HEADINGS:  # every section still there, with its reason
        assert f"<h2>{heading}</h2>" in page
    assert "checks.json is missing" in page
    assert "audit/audit.json is missing" in page
    assert "predictions.npz is missing" in page
    assert "model/model.safetensors is missing" in page
    assert "not compared with training from scratch" in page
    assert "could not be drawn" not in page


def test_a_damaged_file_spoils_only_its_own_section(run, tmp_path):
    for name in CORE:
        shutil.copy(run / name, tmp_path / name)
    (tmp_path / "lr_find.json").write_text('{"lrs": [1e-5, 1e-4')  # cut off mid-write
    page = build_report(tmp_path).read_text()
    assert page.count("could not be drawn") == 1 and "lr_find.json is not valid JSON" in page
    assert page.count('src="data:image/png') >= 3  # curves, LR schedule, confusion matrix


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(headstart.HeadstartError, match="not a run folder"):
        build_report(tmp_path)


def test_user_text_is_escaped(run, tmp_path):
    for name in CORE:
        shutil.copy(run / name, tmp_path / name)
    plan = json.loads((tmp_path / "plan.json").read_text())
    plan["reasons"].append("<script>alert('reason')</script>")
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    page = build_report(tmp_path).read_text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;reason&#x27;)&lt;/script&gt;" in page


def test_many_classes_give_a_table_of_confusions_not_a_huge_matrix(run, tmp_path):
    for name in CORE:
        shutil.copy(run / name, tmp_path / name)
    classes = [f"species {i}" for i in range(120)]
    truth = np.repeat(np.arange(120), 5)
    guess = np.where(np.arange(600) % 7 == 0, (truth + 1) % 120, truth)
    summary = json.loads((tmp_path / "summary.json").read_text())
    summary["scores"] = {"val": classification_metrics(truth, guess, classes)}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    (tmp_path / "dataset.json").write_text(json.dumps({**dataset, "classes": classes}))
    page = build_report(tmp_path).read_text()
    assert "Most confused pairs" in page and "too many for a readable matrix" in page
    assert "the 20 with the lowest F1" in page
    assert len(page) < 500_000


def test_ece_is_near_zero_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (20_000, 3))
    labels = _draw_labels(softmax(logits), rng)  # calibrated by construction
    assert ece(softmax(logits), labels) < 0.02
    assert ece(softmax(3 * logits), labels) > 0.1


def test_temperature_softens_overconfident_and_sharpens_underconfident_models():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (5_000, 4))
    labels = _draw_labels(softmax(logits), rng)
    assert fit_temperature(3 * logits, labels) == pytest.approx(3, rel=0.1)
    assert fit_temperature(logits / 3, labels) == pytest.approx(1 / 3, rel=0.1)
    after = calibrate(3 * logits, labels)
    assert after.ece_scaled < after.ece / 3


def test_examples_to_show_puts_the_most_confident_mistake_first(tmp_path):
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.01, 0.99], [0.7, 0.3], [0.45, 0.55]])
    paths = ["right.png", "unsure-mistake.png", "sure-mistake.png", "right-2.png", "hard.png"]
    write_predictions(tmp_path, "val", paths, [0, 0, 0, 0, 1], np.log(probabilities), ["a", "b"])
    assert examples_to_show(tmp_path, k=2) == [
        "sure-mistake.png",
        "unsure-mistake.png",
        "hard.png",  # the highest loss among the rest: p(true) 0.55
        "right-2.png",
    ]


def test_records_add_splits_and_thumbnails_instead_of_overwriting(tmp_path, small_faces):
    images = sorted(small_faces.glob("*/*.png"))[:3]
    write_predictions(tmp_path, "val", images[:2], [0, 1], np.zeros((2, 2)), ["face", "not-face"])
    write_predictions(tmp_path, "test", images[2:], [1], np.ones((1, 2)), ["face", "not-face"])
    assert set(read_predictions(tmp_path)) == {"val", "test"}
    assert read_predictions(tmp_path)["val"].paths == [str(p) for p in images[:2]]

    save_thumbnails(tmp_path, images[:1], _pixels)
    save_thumbnails(tmp_path, [*images[1:], tmp_path / "gone.png"], _pixels, size=48)
    with np.load(tmp_path / "thumbnails.npz", allow_pickle=False) as saved:
        assert list(saved["paths"]) == [str(p) for p in images]  # the unreadable one left out
        assert saved["pixels"].shape == (3, 48, 48, 3) and saved["pixels"].dtype == np.uint8


def _draw_labels(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row, drawn with the row's probabilities."""
    return (probabilities.cumsum(1) < rng.random((len(probabilities), 1))).sum(1)


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_transfer_against_scratch_claims_only_what_was_measured():
    from headstart.compare import Curve, compare

    probe_only = Curve([0], [0.95], [0.0])  # a probe: no epochs of training
    scratch = Curve([0, 1, 2], [0.5, 0.6, 0.7], [0.0, 10.0, 20.0])
    result = compare(probe_only, scratch, chance=0.5)
    slope = result["benefits"]["slope"]
    assert slope["transfer"] is None and slope["holds"] is None
    assert slope["scratch"] == pytest.approx(0.1)
    assert result["benefits"]["start"]["holds"] and result["benefits"]["final"]["holds"]
    assert "2 epochs" in result["summary"] and "no slope per epoch" in result["summary"]
    assert "steeper" not in result["summary"]
