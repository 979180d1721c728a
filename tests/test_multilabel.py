"""Several labels an image (``fit --task multi-label``), by the recipe of classes.

The data: scikit-learn's handwritten digits, two slots side by side, each holding a digit
from 0 to 4 or nothing; an image's labels are the digits it shows (none, one or two). Real
images whose labels combine, as a photo of a street holds a car and a person.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import headstart
from headstart.cli import main
from headstart.errors import HeadstartError
from headstart.metrics import label_metrics
from headstart.tasks.multilabel.data import read_label_sets
from headstart.tasks.multilabel.thresholds import choose_thresholds

NAMES = ("zero", "one", "two", "three", "four")


def write_pairs(root: Path, n: int, *, seed: int = 0, layout: str = "separated") -> Path:
    """``root/pairs.csv`` and ``n`` images of two digit slots; labels: the digits shown."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pool = {d: np.flatnonzero(digits.target == d) for d in range(len(NAMES))}
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        canvas = np.zeros((8, 16), dtype=np.uint8)
        shown = set()
        for slot in range(2):
            if rng.random() < 0.8:
                digit = int(rng.integers(len(NAMES)))
                pixels = digits.images[rng.choice(pool[digit])] * (255 / 16)
                canvas[:, slot * 8 : slot * 8 + 8] = pixels.round().astype(np.uint8)
                shown.add(NAMES[digit])
        name = f"images/{i:04d}.png"
        Image.fromarray(canvas, mode="L").save(root / name)
        rows.append((name, sorted(shown)))
    with open(root / "pairs.csv", "w", newline="") as file:
        writer = csv.writer(file)
        if layout == "separated":
            writer.writerow(["path", "labels"])
            writer.writerows((name, "|".join(labels)) for name, labels in rows)
        else:
            writer.writerow(["path", *NAMES])
            writer.writerows((name, *(int(d in labels) for d in NAMES)) for name, labels in rows)
    return root / "pairs.csv"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs"), 240)


@pytest.fixture(scope="module")
def fitted(pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default multi-label fit (probe, then a fine-tuning), at 64 px for speed."""
    runs = tmp_path_factory.mktemp("runs")
    code = main(
        ["fit", str(pairs), "--task", "multi-label", "--input-size", "64", "--test-fraction",
         "0.2", "--runs-dir", str(runs), "--name", "pairs", "--quiet"]
    )  # fmt: skip
    assert code == 0
    return runs / "pairs"


def test_labels_are_learned_far_beyond_their_frequencies(fitted: Path):
    summary = json.loads((fitted / "summary.json").read_text())
    assert summary["task"] == "multi-label" and summary["labels"] == sorted(NAMES)
    for split in ("val", "test"):
        scores = summary["scores"][split]
        assert scores["map"] > scores["frequency_baseline"]["map"] + 0.3  # measured: 0.9 vs 0.3
        assert scores["macro_f1"] > scores["frequency_baseline"]["macro_f1"] + 0.2
        assert set(scores["per_label"]) == set(NAMES)
    assert set(summary["candidates"]) == {"linear-probe", "fine-tune"}
    assert "paired z" in summary["why_kept"]
    plan = json.loads((fitted / "plan.json").read_text())
    assert plan["task"] == "multi-label" and plan["loss"] == "binary-cross-entropy"
    assert any("mirror" in reason for reason in plan["reasons"])
    records = [json.loads(line) for line in (fitted / "metrics.jsonl").read_text().splitlines()]
    assert all("val_map" in r for r in records if "epoch" in r)


def test_the_sanity_checks_take_their_multi_label_forms(fitted: Path):
    checks = {c["name"]: c for c in json.loads((fitted / "checks.json").read_text())["checks"]}
    assert {name: c["status"] for name, c in checks.items()} == {
        "initial-loss": "pass",
        "frequency-baseline": "info",
        "linear-baseline": "pass",
        "input-independent": "pass",
        "inputs-normalised": "pass",
        "pipeline-agreement": "pass",
        "overfit-batch": "pass",
        "parameters-update": "pass",
    }
    assert "mAP" in checks["overfit-batch"]["summary"]


def test_the_bundle_says_each_images_labels(fitted: Path, pairs: Path, capsys):
    model = headstart.load(fitted)
    assert model.task == "multi-label" and model.classes == tuple(sorted(NAMES))
    with open(fitted / "predictions.csv") as file:
        rows = [r for r in csv.DictReader(file) if r["split"] == "test"]
    found = model.predict([r["path"] for r in rows])
    assert [f.labels for f in found] == [
        tuple(sorted(r["predicted"].split("|"), key=lambda x: -f.probabilities[x]))
        if r["predicted"]
        else ()
        for r, f in zip(rows, found, strict=True)
    ]
    assert model.predict_proba(rows[0]["path"]).shape == (1, len(NAMES))
    scores, _ = headstart.evaluate(fitted, pairs, quiet=True)
    summary = json.loads((fitted / "summary.json").read_text())
    assert scores["split"] == "test" and scores["map"] == pytest.approx(
        summary["scores"]["test"]["map"]
    )
    assert main(["predict", str(fitted), rows[0]["path"], "--csv", "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "path,labels," + ",".join(sorted(NAMES))
    assert main(["evaluate", str(fitted), str(pairs), "--quiet"]) == 0
    assert "mAP" in capsys.readouterr().out


def test_the_report_shows_each_label_and_the_mistakes(fitted: Path):
    html = (fitted / "report.html").read_text()
    for heading in ("Scores per label", "Mistakes", "Sanity checks", "Training curves"):
        assert heading in html
    assert "co-occurrence" in html and "this section could not be drawn" not in html


def test_a_column_per_label_reads_as_the_same_labels(tmp_path: Path):
    separated = read_label_sets(write_pairs(tmp_path / "a", 60))
    columns = read_label_sets(write_pairs(tmp_path / "b", 60, layout="columns"))
    assert columns.layout == "columns" and separated.layout == "separated"
    assert [s.labels for s in columns.samples] == [s.labels for s in separated.samples]
    assert any(not s.labels for s in separated.samples)  # an image with none is an example


def test_the_split_keeps_every_labels_share(tmp_path: Path):
    dataset = read_label_sets(write_pairs(tmp_path, 300), val_fraction=0.2)
    counts = dataset.counts()
    for label in NAMES:
        total = counts["train"][label] + counts["val"][label]
        assert abs(counts["val"][label] - 0.2 * total) <= 2


def test_bad_tables_are_refused_with_the_reason(tmp_path: Path):
    write_pairs(tmp_path, 20, layout="columns")
    lines = (tmp_path / "pairs.csv").read_text().splitlines()
    (tmp_path / "bad.csv").write_text("\n".join([*lines, "images/0001x.png,1,0,maybe,0,0"]))
    with pytest.raises(HeadstartError, match="line 22: column 'two' holds 'maybe'"):
        read_label_sets(tmp_path / "bad.csv")
    (tmp_path / "one.csv").write_text(
        "path,labels\n" + "".join(f"images/{i:04d}.png,cat\n" for i in range(20))
    )
    with pytest.raises(HeadstartError, match="1 label"):
        read_label_sets(tmp_path / "one.csv")
    with pytest.raises(HeadstartError, match="label_separator"):
        headstart.fit(tmp_path / "pairs.csv", label_separator=";", runs_dir=tmp_path / "runs")


def test_thresholds_give_each_label_its_best_f1():
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 3)) < [0.1, 0.5, 0.9]).astype(float)
    scores = np.clip(targets * 0.3 + rng.random((200, 3)) * 0.7, 0, 1)
    thresholds = choose_thresholds(targets, scores)
    best = label_metrics(targets, scores, thresholds, ["a", "b", "c"])["per_label"]
    for i, name in enumerate("abc"):
        for other in np.linspace(0.05, 0.95, 19):
            cut = thresholds.copy()
            cut[i] = other
            assert label_metrics(targets, scores, cut, list("abc"))["per_label"][name]["f1"] <= (
                best[name]["f1"] + 1e-9
            )


def test_a_row_with_more_fields_than_the_header_is_refused_not_cut(tmp_path: Path):
    write_pairs(tmp_path, 20)
    lines = (tmp_path / "pairs.csv").read_text().splitlines()
    (tmp_path / "commas.csv").write_text("\n".join([*lines, "images/0001.png,one,two"]) + "\n")
    with pytest.raises(HeadstartError, match="line 22: 3 fields for the header's 2"):
        read_label_sets(tmp_path / "commas.csv")
    (tmp_path / "joined.csv").write_text(
        "path,labels\n" + "".join(f"images/{i:04d}.png,a|b;c\n" for i in range(20))
    )
    with pytest.raises(HeadstartError, match=re.escape("label 'a|b' holds '|'")):
        read_label_sets(tmp_path / "joined.csv", separator=";")


def test_another_table_is_scored_with_the_models_own_labels(fitted: Path, tmp_path: Path):
    other = write_pairs(tmp_path, 40, seed=7, layout="columns")
    text = other.read_text().splitlines()
    other.write_text("\n".join([text[0].upper().replace("PATH", "path"), *text[1:]]) + "\n")
    scores, _ = headstart.evaluate(fitted, other, quiet=True)  # columns ZERO, ONE, ...
    assert scores["n"] + scores["left_out"] == 40  # blank images are copies of training ones
    assert scores["split"] == "all" and scores["map"] > 0.5
    other.write_text("path,zero,one\nimages/0000.png,1,0\n")
    with pytest.raises(HeadstartError, match="no column for the model's label"):
        headstart.evaluate(fitted, other, quiet=True)
