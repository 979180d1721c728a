"""Ranking backbones before fine-tuning any: LogME, and ``headstart rank``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

import headstart
from headstart.cli import main
from headstart.errors import HeadstartError
from headstart.ranking import Candidate, Ranking, Scored
from headstart.transferability import logme


def most_probable(features: np.ndarray, target: np.ndarray) -> float:
    """The log evidence per image of a 0/1 ``target`` under Bayesian linear regression on
    ``features``, maximised over the prior's and the noise's precisions by a generic
    optimiser: the definition LogME computes in closed form."""

    def negative(log_precisions: np.ndarray) -> float:
        alpha, beta = np.exp(log_precisions)
        covariance = features @ features.T / alpha + np.eye(len(target)) / beta
        return -multivariate_normal(np.zeros(len(target)), covariance).logpdf(target)

    best = minimize(negative, x0=np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-6})
    return -best.fun / len(target)


def test_logme_is_the_maximum_evidence_of_a_bayesian_linear_model():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    features = rng.normal(size=(60, 6)) + np.eye(3, 6)[labels] * 1.5
    expected = np.mean([most_probable(features, (labels == c).astype(float)) for c in range(3)])
    assert logme(features, labels) == pytest.approx(expected, abs=2e-3)


def test_features_that_separate_the_classes_score_higher():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 100)
    noise = rng.normal(size=(200, 64))
    telling = noise + labels[:, None] * 0.5
    assert logme(telling, labels) > logme(noise, labels)
    with pytest.raises(ValueError, match="two classes"):
        logme(noise, np.zeros(200, dtype=int))


def test_candidates_are_written_as_arch_at_size():
    assert Candidate.parse("tf_efficientnet_lite0@160") == Candidate("tf_efficientnet_lite0", 160)
    random = Candidate.parse("random:resnet18")
    assert (
        random == Candidate("resnet18", None, pretrained=False) and str(random) == "random:resnet18"
    )
    hub = Candidate.parse("random:hf-hub:timm/resnet18.a1_in1k@160")
    assert hub == Candidate("hf-hub:timm/resnet18.a1_in1k", 160, pretrained=False)
    for bad in ("", "resnet18@", "resnet18@big", "random:", "resnet18@0"):
        with pytest.raises(HeadstartError, match=r"\[random:\]ARCH\[@SIZE\]"):
            Candidate.parse(bad)


def test_pretrained_features_outrank_a_random_initialisation(small_faces, tmp_path, capsys):
    ranking = headstart.rank(
        small_faces, ["efficientnet_lite0@96", "random:efficientnet_lite0@96"], quiet=True
    )
    best, floor = ranking.scored
    assert best.candidate == Candidate("efficientnet_lite0", 96)
    assert best.logme > floor.logme and best.probe_accuracy > floor.probe_accuracy
    assert ranking.advice().startswith("fine-tune efficientnet_lite0@96: the highest LogME")

    # The command line: the same order, the table, the advice and ranking.json.
    models = "random:efficientnet_lite0@96,efficientnet_lite0@96"
    code = main(["rank", str(small_faces), "--models", models, "--out", str(tmp_path), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "fine-tune efficientnet_lite0@96" in printed and "random init" in printed
    assert (
        "next: headstart fit" in printed and "--arch efficientnet_lite0 --input-size 96" in printed
    )
    written = json.loads((tmp_path / "ranking.json").read_text())
    assert [c["candidate"] for c in written["candidates"]] == models.split(",")[::-1]


def test_a_sample_keeps_every_class_and_says_so(small_faces):
    ranking = headstart.rank(small_faces, ["efficientnet_lite0@64"], most_images=10, quiet=True)
    assert ranking.images == 10 and ranking.sampled_from > 10
    with pytest.raises(HeadstartError, match="most_images"):
        headstart.rank(small_faces, ["efficientnet_lite0@64"], most_images=1, quiet=True)


def ranked(*measures: tuple[str, float, float]) -> Ranking:
    """A ranking of candidates given as (spec, LogME, probe accuracy), on 400 images."""
    scored = [Scored(Candidate.parse(c), 224, m, p, 400, 1.0) for c, m, p in measures]
    return Ranking(sorted(scored, key=lambda s: -s.logme), 400, 400, 1.0)


def test_the_advice_says_what_decided_it():
    agreeing = ranked(("a", -0.1, 0.90), ("b", -0.2, 0.80), ("random:a", -0.5, 0.40))
    assert agreeing.advice().endswith("and the best probe (90.0%)") and agreeing.agreement == 1
    close = ranked(("a", -0.1, 0.89), ("b", -0.2, 0.90))  # one image in a hundred: noise
    assert "within noise of the best, b's 90.0%" in close.advice()
    apart = ranked(("a", -0.1, 0.80), ("b", -0.2, 0.90))
    assert "the measures disagree, fine-tune both" in apart.advice()
    floor = ranked(("random:a", -0.1, 0.60), ("a", -0.2, 0.55))
    assert floor.advice().startswith("no pretrained candidate beats a random initialisation")
    assert floor.fit_flags() == ["--arch", "a", "--input-size", "224", "--no-pretrained"]


def test_fit_can_rank_candidates_first_and_fit_the_first(small_faces, tmp_path):
    result = headstart.fit(
        small_faces,
        candidates=["random:efficientnet_lite0@96", "efficientnet_lite0@96"],
        strategy="linear-probe",
        checks=False,
        runs_dir=tmp_path,
        quiet=True,
    )
    ranked = json.loads((result.run_dir / "ranking.json").read_text())
    assert ranked["candidates"][0]["candidate"] == "efficientnet_lite0@96"
    assert headstart.load(result.run_dir).preprocessing.input_size[-1] == 96
    config = (result.run_dir / "config.yaml").read_text()
    assert "input-size: 96" in config or "input_size: 96" in config


def test_bad_candidates_are_refused_before_anything_runs(small_faces):
    with pytest.raises(HeadstartError, match=r"candidates: 'resnet18@': expected"):
        headstart.FitConfig.of(candidates=["resnet18@"])
    with pytest.raises(HeadstartError, match="a weights file fits one architecture"):
        headstart.FitConfig.of(candidates=["resnet18"], weights="w.safetensors")
    with pytest.raises(HeadstartError, match="not one string"):
        headstart.rank(small_faces, "efficientnet_lite0")
