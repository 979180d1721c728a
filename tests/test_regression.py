"""Regression: a number an image, by the recipe of classes (``fit --task regression``).

The data is scikit-learn's handwritten digits written as PNG files, each with its digit's
value as the number to predict: a real quantity of real images, which a linear model on the
pretrained features follows far better than the training mean does.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import r2_score

import headstart
from headstart.cli import main
from headstart.errors import HeadstartError
from headstart.tasks.regression.data import read_targets
from headstart.tasks.regression.model import TargetScale
from headstart.tasks.regression.probe import fit_ridge_probe
from headstart.tasks.training import mirror
from headstart.training.objective import Regression, measure


def write_digits(root: Path, n: int, *, column: str = "value", start: int = 0) -> Path:
    """``root/digits.csv`` (``path,<column>``) and ``n`` digit images beside it."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = [["path", column]]
    for i in range(start, start + n):
        pixels = (digits.images[i] * (255 / 16)).round().astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(root / "images" / f"{i:04d}.png")
        rows.append([f"images/{i:04d}.png", str(digits.target[i])])
    with open(root / "digits.csv", "w", newline="") as file:
        csv.writer(file).writerows(rows)
    return root / "digits.csv"


@pytest.fixture(scope="module")
def digits_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digits(tmp_path_factory.mktemp("digits"), 200)


@pytest.fixture(scope="module")
def fitted(digits_table: Path, tmp_path_factory: pytest.TempPathFactory):
    """The default regression (ridge probe, then a fine-tuning), at 64 px for speed."""
    runs = tmp_path_factory.mktemp("runs")
    code = main(
        ["fit", str(digits_table), "--task", "regression", "--input-size", "64",
         "--runs-dir", str(runs), "--name", "digits", "--quiet"]
    )  # fmt: skip
    assert code == 0
    return runs / "digits"


# --- End to end ------------------------------------------------------------------------------


def test_a_regression_beats_predicting_the_mean_by_a_clear_margin(fitted: Path):
    summary = json.loads((fitted / "summary.json").read_text())
    assert summary["task"] == "regression" and summary["target"] == "value"
    val = summary["scores"]["val"]
    assert val["n"] == 40
    assert val["mae"] < 0.6 * val["mean_baseline"]["mae"]  # measured: 1.09 against 2.50
    assert val["r2"] > 0.5
    assert set(summary["candidates"]) == {"linear-probe", "fine-tune"}
    assert "paired z" in summary["why_kept"]
    plan = json.loads((fitted / "plan.json").read_text())
    assert plan["task"] == "regression" and plan["loss"] == "huber"
    assert any("ridge probe" in reason for reason in plan["reasons"])
    assert any("here for" in reason for reason in plan["reasons"])  # the cost, said before
    epochs = [json.loads(line) for line in (fitted / "metrics.jsonl").read_text().splitlines()]
    assert all("val_r2" in r for r in epochs if "epoch" in r)


def test_the_sanity_checks_take_their_regression_forms(fitted: Path):
    checks = {c["name"]: c for c in json.loads((fitted / "checks.json").read_text())["checks"]}
    assert {name: c["status"] for name, c in checks.items()} == {
        "initial-loss": "pass",
        "mean-baseline": "info",
        "linear-baseline": "pass",
        "input-independent": "pass",
        "inputs-normalised": "pass",
        "pipeline-agreement": "pass",
        "overfit-batch": "pass",
        "parameters-update": "pass",
    }
    assert "R²" in checks["overfit-batch"]["summary"]


def test_shuffled_numbers_fail_the_baseline_checks(tmp_path: Path):
    table = write_digits(tmp_path, 120)
    rows = list(csv.reader(table.read_text().splitlines()))
    values = [row[1] for row in rows[1:]]
    np.random.default_rng(0).shuffle(values)
    with open(table, "w", newline="") as file:
        csv.writer(file).writerows(
            [rows[0], *([r[0], v] for r, v in zip(rows[1:], values, strict=True))]
        )
    result = headstart.fit(
        table, task="regression", strategy="linear-probe", input_size=64,
        runs_dir=tmp_path / "runs", quiet=True,
    )  # fmt: skip
    checks = {
        c["name"]: c for c in json.loads((result.run_dir / "checks.json").read_text())["checks"]
    }
    assert checks["linear-baseline"]["status"] in ("fail", "skip")
    assert checks["input-independent"]["status"] == "fail"
    assert "wrong files" in checks["input-independent"]["advice"]


def test_the_bundle_predicts_numbers_in_the_targets_units(fitted: Path, digits_table: Path):
    model = headstart.load(fitted)
    assert isinstance(model, headstart.Regressor) and model.target.name == "value"
    predictions = csv.DictReader((fitted / "predictions.csv").read_text().splitlines())
    rows = [r for r in predictions if r["split"] == "val"]
    paths = [r["path"] for r in rows]
    predicted = model.predict(paths)
    assert predicted.shape == (len(paths),)
    np.testing.assert_allclose(
        predicted, [float(r["predicted"]) for r in rows], rtol=1e-4, atol=1e-4
    )
    with pytest.raises(HeadstartError, match="numbers, not class probabilities"):
        model.predict_proba(paths[:1])
    scores, _ = headstart.evaluate(fitted, digits_table, quiet=True)
    summary = json.loads((fitted / "summary.json").read_text())
    assert scores["split"] == "val" and scores["mae"] == pytest.approx(
        summary["scores"]["val"]["mae"]
    )


def test_predict_and_evaluate_print_numbers(fitted: Path, digits_table: Path, capsys):
    image = digits_table.parent / "images" / "0001.png"
    assert main(["predict", str(fitted), str(image), "--csv", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "path,value" and float(lines[1].split(",")[1]) == pytest.approx(
        float(headstart.load(fitted).predict(image)[0]), abs=1e-4
    )
    other = write_digits(digits_table.parent.parent / "more", 20, start=1000)
    assert main(["evaluate", str(fitted), str(other), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "MAE" in said and "R²" in said and "on 20 images" in said


def test_the_report_shows_residuals_and_the_largest_errors(fitted: Path):
    html = (fitted / "report.html").read_text()
    for heading in ("Residuals", "Largest errors", "Sanity checks", "Training curves"):
        assert heading in html
    assert "predicting the training mean" in html
    assert "this section could not be drawn" not in html


def test_the_probe_alone_through_the_api(digits_table: Path, tmp_path: Path):
    result = headstart.fit(
        digits_table, task="regression", strategy="linear-probe", input_size=64,
        runs_dir=tmp_path, quiet=True,
    )  # fmt: skip
    assert result.task == "regression" and result.strategy == "linear-probe"
    assert result.plan.fine_tune is None
    assert result.scores["val"]["mae"] < result.scores["val"]["mean_baseline"]["mae"]
    assert not (result.run_dir / "metrics.jsonl").exists()


# --- The table ---------------------------------------------------------------------------------


def test_the_target_column_is_found_or_named(tmp_path: Path):
    table = write_digits(tmp_path, 30, column="age")
    assert read_targets(table).column == "age"  # the one column besides path
    (tmp_path / "two.csv").write_text("path,age,weight\nimages/0000.png,3,4\n")
    with pytest.raises(HeadstartError, match="--label-column"):
        read_targets(tmp_path / "two.csv")
    with pytest.raises(HeadstartError, match="no column 'height'"):
        read_targets(table, column="height")


def test_bad_rows_are_refused_or_skipped_with_the_reason(tmp_path: Path):
    write_digits(tmp_path, 30)
    lines = (tmp_path / "digits.csv").read_text().splitlines()
    (tmp_path / "words.csv").write_text("\n".join([*lines, "images/more.png,seven"]) + "\n")
    with pytest.raises(HeadstartError, match=r"line 32: value 'seven' is not a number"):
        read_targets(tmp_path / "words.csv")
    (tmp_path / "gaps.csv").write_text("\n".join([*lines, "missing.png,4", "images/x.png,"]) + "\n")
    dataset = read_targets(tmp_path / "gaps.csv")
    reasons = {s.path.name: s.reason for s in dataset.skipped}
    assert reasons == {"missing.png": "file not found", "x.png": "no value (line 33)"}
    (tmp_path / "same.csv").write_text(
        "path,value\n" + "".join(f"images/{i:04d}.png,5\n" for i in range(30))
    )
    with pytest.raises(HeadstartError, match=r"same value .* nothing to learn"):
        read_targets(tmp_path / "same.csv")
    with pytest.raises(HeadstartError, match="a regression reads a CSV"):
        read_targets(tmp_path / "images")


def test_the_split_spans_the_range_of_the_target(tmp_path: Path):
    dataset = read_targets(write_digits(tmp_path, 200), val_fraction=0.2, test_fraction=0.1)
    sizes = {split: len(dataset.split(split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 140, "val": 40, "test": 20}
    for split in ("val", "test"):  # every fifth of the range in each held-out split
        values = dataset.targets(split)
        assert values.min() <= 1 and values.max() >= 8
    again = read_targets(write_digits(tmp_path, 200), val_fraction=0.2, test_fraction=0.1)
    assert again.samples == dataset.samples  # the seed and the names alone decide


# --- The pieces ------------------------------------------------------------------------------


def test_the_ridge_probe_recovers_a_linear_number():
    rng = np.random.default_rng(0)
    features = (rng.normal(size=(300, 50)) * rng.uniform(0.1, 10, 50)).astype(np.float32)
    targets = features @ rng.normal(size=50) / 10 + rng.normal(scale=0.1, size=300)
    scale = TargetScale.of("y", targets[:200])
    probe = fit_ridge_probe(features[:200], scale.standardise(targets[:200]))
    with torch.no_grad():
        predicted = scale.restore(probe.head(torch.from_numpy(features[200:]))[:, 0].numpy())
    assert r2_score(targets[200:], predicted) > 0.95 and probe.loo_r2 > 0.95


def test_flips_are_kept_only_where_the_mirror_is_measured_to_hold_the_same_number():
    """An angle's mirror is its negative; a count's mirror is the same count; a probe that
    sees nothing cannot tell, and mirroring then stays off."""
    rng = np.random.default_rng(0)
    angle = rng.uniform(-40, 40, 100)
    plain = np.c_[angle, rng.normal(size=(100, 3))].astype(np.float32)
    mirrored = plain * np.array([-1, 1, 1, 1], dtype=np.float32)  # the flip negates the angle

    class Ready:  # what mirror() reads: the validation images and their cached features
        dataset = SimpleNamespace(split=lambda name: [SimpleNamespace(path=i) for i in range(100)])
        features = SimpleNamespace(
            of=lambda paths, view, copy: {"plain": plain, "hflip": mirrored}[view]
        )

    head = torch.nn.Linear(4, 1)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1 / 23.0, 0, 0, 0]]))
        head.bias.zero_()
    standardised = angle / 23.0
    r2 = lambda outputs: float(r2_score(standardised, outputs[:, 0]))  # noqa: E731
    angle_mirror = mirror(Ready(), head, r2, nothing=0.0)
    assert angle_mirror.told and not angle_mirror.same
    mirrored[:] = plain  # a count: the mirror holds the same number
    assert mirror(Ready(), head, r2, nothing=0.0).same
    blind = torch.nn.Linear(4, 1)
    with torch.no_grad():
        blind.weight.zero_()
    assert not mirror(Ready(), blind, r2, nothing=0.0).told  # no skill: cannot tell, no flips


def test_the_regression_objective_scores_by_r2():
    outputs, targets = torch.tensor([[0.0], [1.0], [2.5]]), torch.tensor([0.0, 1.0, 2.0])
    loss, r2 = measure(Regression("mse"), outputs, targets)
    assert loss == pytest.approx(0.25 / 3) and r2 == pytest.approx(r2_score([0, 1, 2], [0, 1, 2.5]))
    huber = Regression("huber").loss(torch.tensor([[3.0]]), torch.tensor([0.0]))
    assert float(huber) == pytest.approx(2.5)  # linear beyond one standard deviation


def test_settings_a_regression_cannot_use_are_refused(digits_table: Path, tmp_path: Path):
    for settings, said in (
        ({"mixup": 0.2}, "--mixup"),
        ({"balance": "sampler"}, "--balance"),
        ({"pretrained": False}, "--pretrained"),
    ):
        with pytest.raises(HeadstartError, match=said):
            headstart.fit(digits_table, task="regression", runs_dir=tmp_path, **settings)
    with pytest.raises(HeadstartError, match="loss for numbers"):
        headstart.fit(digits_table, loss="mse", runs_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # refused before a run folder


def test_commands_built_for_classifiers_refuse_a_regression(fitted: Path, tmp_path: Path):
    with pytest.raises(HeadstartError, match="regression model"):
        headstart.export(fitted, "onnx")
    with pytest.raises(HeadstartError, match="cannot be resumed"):
        headstart.resume(fitted)


def test_a_split_the_table_gives_is_kept(tmp_path: Path):
    table = write_digits(tmp_path, 60)
    lines = table.read_text().splitlines()
    splits = ["test" if i % 6 == 0 else "val" if i % 6 == 1 else "" for i in range(60)]
    table.write_text(
        "\n".join(
            [lines[0] + ",split", *(f"{r},{s}" for r, s in zip(lines[1:], splits, strict=True))]
        )
    )
    dataset = read_targets(table, val_fraction=0.3, test_fraction=0.2)
    assert [s.split for s in sorted(dataset.samples, key=lambda s: s.path)] == [
        s or "train" for s in splits
    ]
    assert "test_fraction=0.2 is ignored" in dataset.warnings[0]


def test_an_image_that_fails_to_decode_is_skipped_and_the_fit_goes_on(tmp_path: Path):
    table = write_digits(tmp_path, 60)
    broken = tmp_path / "images" / "0003.png"
    broken.write_bytes(broken.read_bytes()[:60])  # the header reads; the pixels do not
    result = headstart.fit(
        table, task="regression", strategy="linear-probe", input_size=64,
        runs_dir=tmp_path / "runs", quiet=True, checks=False,
    )  # fmt: skip
    assert [s.path.name for s in result.skipped] == ["0003.png"]
    assert result.scores["val"]["n"] + len(result.dataset.split("train")) == 59


def test_squared_error_and_a_fine_tuning_asked_for_by_name(digits_table: Path, tmp_path: Path):
    result = headstart.fit(
        digits_table, task="regression", strategy="fine-tune", loss="mse", epochs=1,
        input_size=64, runs_dir=tmp_path, quiet=True, checks=False,
    )  # fmt: skip
    assert result.strategy == "fine-tune" and result.plan.loss == "mse"
    assert "squared error" in " ".join(result.plan.reasons)
    assert "kept the fine-tuning" in result.why_kept


def test_commands_for_one_class_an_image_refuse_a_task(digits_table: Path):
    for command in (headstart.audit, headstart.check):
        with pytest.raises(HeadstartError, match="--task regression"):
            command(digits_table, task="regression")
