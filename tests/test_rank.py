"""Ranking backbones before fine-tuning any: LogME, and ``headstart rank``."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import multivariate_normal
from sklearn.datasets import load_digits

import headstart
from headstart.cli import main
from headstart.demo import demo_dataset
from headstart.errors import HeadstartError
from headstart.ranking import Candidate, Ranking, Scored, ordered, score_features
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


@pytest.mark.parametrize(("per_class", "dimensions"), [(20, 6), (8, 30)])
def test_logme_is_the_maximum_evidence_of_a_bayesian_linear_model(per_class, dimensions):
    # more images than features, and fewer (as a ranking's sample of photos has)
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], per_class)
    features = rng.normal(size=(len(labels), dimensions)) + np.eye(3, dimensions)[labels] * 1.5
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


@pytest.mark.slow  # the README's `headstart.rank` asserts the same order
def test_pretrained_features_outrank_a_random_initialisation(small_faces, tmp_path, capsys):
    ranking = headstart.rank(
        small_faces, ["efficientnet_lite0@96", "random:efficientnet_lite0@96"], quiet=True
    )
    best, floor = ranking.scored
    assert best.candidate == Candidate("efficientnet_lite0", 96)
    assert best.logme > floor.logme and best.probe_accuracy > floor.probe_accuracy
    assert not best.tied_with(floor)  # beyond LogME's noise, on 48 images of 1,280 features
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


def measured(spec: str, logme: float, probe: float, halves=()) -> Scored:
    """A candidate's measures on 400 images: LogME, the probe's accuracy, and LogME on each
    half-sample of them (none: no noise measured)."""
    return Scored(Candidate.parse(spec), 224, logme, probe, 400, 1.0, tuple(halves))


def ranked(*scored: Scored) -> Ranking:
    return Ranking(ordered(scored), 400, 400, 1.0)


def names(ranking: Ranking) -> list[str]:
    return [str(s.candidate) for s in ranking.scored]


def test_the_advice_says_what_decided_it():
    agreeing = ranked(
        measured("a", -0.1, 0.90), measured("b", -0.2, 0.80), measured("random:a", -0.5, 0.40)
    )
    assert agreeing.advice().endswith("and the best probe (90.0%)") and agreeing.agreement == 1
    close = ranked(measured("a", -0.1, 0.89), measured("b", -0.2, 0.90))  # 1 image in 100
    assert "within noise of the best, b's 90.0%" in close.advice()
    apart = ranked(measured("a", -0.1, 0.80), measured("b", -0.2, 0.90))
    assert "the measures disagree, fine-tune both" in apart.advice()
    floor = ranked(measured("random:a", -0.1, 0.60), measured("a", -0.2, 0.55))
    assert floor.advice().startswith("no pretrained candidate beats a random initialisation")
    assert floor.fit_flags() == ["--arch", "a", "--input-size", "224", "--no-pretrained"]
    alone = ranked(measured("random:a", -0.1, 0.60), measured("random:b", -0.2, 0.55))
    assert alone.advice().startswith("only random initialisations were ranked; random:a")
    failed = ranked(measured("a", -0.1, 0.90), measured("b", -math.inf, math.nan))
    assert failed.advice() == "fine-tune a: the highest LogME (-0.100)"  # b's features failed


def test_a_logme_tie_is_broken_by_the_probe():
    # Brain MRI scans' measures: LogME put 160 px ahead of 224 px by 0.0002, the probe and the
    # fine-tuned accuracies put 224 px first. On each half-sample of the images both move
    # together (the same images), apart by far less than 128 px's lag.
    rng = np.random.default_rng(0)
    shared, own = rng.normal(0, 0.003, (2, 20)) * [[1], [0.1]]
    at_160 = measured("a@160", 0.0177, 0.897, 0.0177 + shared)
    at_224 = measured("a", 0.0175, 0.902, 0.0175 + shared + own)
    at_128 = measured("a@128", 0.0038, 0.890, 0.0038 + shared - own)
    floor = measured("random:a", -0.33, 0.72, -0.33 + shared)
    ranking = ranked(at_128, floor, at_160, at_224)
    assert names(ranking) == ["a", "a@160", "a@128", "random:a"]
    assert ranking.tied_pairs == [(at_160, at_224)]
    assert ranking.advice().startswith("fine-tune a: its LogME (0.0175) ties a@160's (0.0177;")
    assert "its probe is the higher (90.2% against 89.7%); the probes are within" in (
        ranking.advice()
    )
    assert ranking.floor().startswith("random:a is the floor for frozen features")
    assert "not a prediction of training from scratch" in ranking.floor()
    written = ranking.to_dict()
    assert written["ties"] == [["a@160", "a"]] and written["candidates"][0]["logme_error"] > 0

    # Without half-samples there is no noise to tie within: LogME alone orders them.
    unmeasured = [measured(str(s.candidate), s.logme, s.probe_accuracy) for s in ranking.scored]
    by_logme = ranked(*unmeasured)
    assert names(by_logme) == ["a@160", "a", "a@128", "random:a"] and not by_logme.tied_pairs
    assert by_logme.advice().startswith("fine-tune a@160: the highest LogME")


def test_the_noise_is_that_of_the_paired_difference():
    # Both candidates move by 0.01 from one half-sample to the next, together: apart, each
    # LogME is uncertain by far more than their 0.005 gap; paired, the gap is clear.
    rng = np.random.default_rng(2)
    shared, own = rng.normal(0, 0.01, (2, 20)) * [[1], [0.05]]
    ahead = measured("a", 0.105, 0.80, 0.105 + shared + own)
    behind = measured("b", 0.100, 0.85, 0.100 + shared)
    assert ahead.logme_error > 0.005 and not ahead.tied_with(behind)
    assert names(ranked(behind, ahead)) == ["a", "b"]  # LogME decided; the probe did not


def test_a_tie_group_is_within_noise_of_its_first():
    # b is within noise of a, c of b but not of a: c starts a group of its own, and its better
    # probe does not carry it past a.
    shared = np.random.default_rng(3).normal(0, 0.01, 20)
    wobble = np.tile([0.001, -0.001], 10)
    a = measured("a", 0.100, 0.80, 0.100 + shared)
    b = measured("b", 0.0985, 0.82, 0.0985 + shared + wobble)
    c = measured("c", 0.097, 0.90, 0.097 + shared)
    assert a.tied_with(b) and b.tied_with(c) and not a.tied_with(c)
    ranking = ranked(c, b, a)
    assert names(ranking) == ["b", "a", "c"] and ranking.tied_pairs == [(a, b)]
    assert "c's probe leads by 8.0%" in ranking.advice()


def test_a_random_initialisation_is_the_floor_unless_it_wins_beyond_noise():
    rng = np.random.default_rng(1)
    shared, own = rng.normal(0, 0.01, (2, 20))
    pretrained = measured("a", 0.10, 0.80, 0.10 + shared)
    just_above = measured("random:a", 0.101, 0.81, 0.101 + shared + own)  # within noise
    assert names(ranked(just_above, pretrained)) == ["a", "random:a"]
    assert "and a is within LogME's noise of it" in ranked(just_above, pretrained).floor()
    far_above = measured("random:a@160", 0.30, 0.95, 0.30 + shared + own)
    winner = ranked(pretrained, just_above, far_above)
    assert names(winner) == ["random:a@160", "a", "random:a"]  # the one that won, alone
    assert winner.advice().startswith("no pretrained candidate beats a random initialisation")
    assert winner.floor() is None


@pytest.mark.slow  # the tie rules are tested on given measures
def test_features_alike_tie_and_worse_ones_lose_beyond_noise():
    # Real images (scikit-learn's digits): two views of their pixels, each with its own noise
    # of the same strength, as two candidates with features as good as each other; pixels
    # drowned in noise as a third.
    digits = load_digits()
    rng = np.random.default_rng(0)
    pixels = digits.data / 16
    candidates = {
        "pixels": pixels + rng.normal(0, 0.1, pixels.shape),
        "noisy-pixels": pixels + rng.normal(0, 0.1, pixels.shape),
        "drowned-pixels": pixels + rng.normal(0, 1.0, pixels.shape),
    }
    halves = np.stack([rng.permutation(len(pixels))[: len(pixels) // 2] for _ in range(20)])
    scored = [
        score_features(Candidate.parse(name), 8, features, digits.target, halves)
        for name, features in candidates.items()
    ]
    ranking = Ranking(ordered(scored), len(pixels), len(pixels), 0.0)
    assert names(ranking)[2] == "drowned-pixels"
    assert [{str(a.candidate), str(b.candidate)} for a, b in ranking.tied_pairs] == [
        {"pixels", "noisy-pixels"}
    ]
    first, second, third = ranking.scored
    assert first.probe_accuracy >= second.probe_accuracy  # the tie, ordered by the probe
    assert not second.tied_with(third) and second.logme - third.logme > second.tie_margin(third)
    assert all(s.logme_error > 0 and len(s.resampled_logme) == 20 for s in scored)


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


@pytest.mark.slow  # three fits: minutes
def test_the_ranking_agrees_with_fine_tuned_accuracies_on_real_images(tmp_path):
    # scikit-learn's digits (real 8x8 scans of handwriting): the built-in network at 96 px and
    # at 32 px, each fine-tuned for three epochs, and a random initialisation trained from
    # scratch for as many. The ranking's order is the order of their held-out accuracies.
    data = tmp_path / "digits"
    for folder in sorted(demo_dataset("digits", tmp_path / "all").iterdir()):
        if folder.is_dir():  # 40 of each digit
            (data / folder.name).mkdir(parents=True)
            for image in sorted(folder.glob("*.png"))[:40]:
                shutil.copy(image, data / folder.name / image.name)
    ranking = headstart.rank(
        data,
        ["efficientnet_lite0@32", "random:efficientnet_lite0@96", "efficientnet_lite0@96"],
        quiet=True,
    )
    accuracies = {}
    for scored in ranking.scored:
        pretrained = scored.candidate.pretrained
        result = headstart.fit(
            data,
            arch=scored.candidate.arch,
            input_size=scored.input_size,
            pretrained=pretrained,
            strategy="fine-tune" if pretrained else "full",
            epochs=3,
            checks=False,
            runs_dir=tmp_path / "runs",
            quiet=True,
        )
        report, _ = headstart.evaluate(result.run_dir, data, quiet=True)
        accuracies[str(scored.candidate)] = report["accuracy"]
    in_order = [accuracies[str(s.candidate)] for s in ranking.scored]
    assert in_order == sorted(in_order, reverse=True), (names(ranking), accuracies)
