"""Which backbone to fine-tune, decided before fine-tuning any: ``headstart rank``.

Choosing the source model is the part of transfer learning that usually takes expertise or a
fine-tuning run per candidate. Here each candidate (an architecture with its weights, at an
input size, or a random initialisation as the floor every pretrained network must clear)
puts a sample of the training images through its network once, and two measures read the
features:

- LogME (:mod:`headstart.transferability`): the evidence that a linear model on the features
  explains the labels; published to track fine-tuned accuracy across backbones better than a
  probe's accuracy does, and it costs no training;
- the linear probe headstart trains anyway, cross-validated: an accuracy a person can read.

The pretrained candidates are ranked by LogME, and those within its noise of a better one
(measured on half-samples of the images, paired: every candidate is scored on the same ones) by
the probe: on brain MRI scans LogME put 160 px ahead of 224 px by 0.0002, a tie, where the probe
and the fine-tuned accuracies both put 224 px first. The advice names the first, says what decided
it, and says so when the probes disagree beyond their noise (then both are worth a fine-tune).

A random initialisation is not ranked among them: its frozen features are the floor every
pretrained network's features must clear, not a prediction of what training it from scratch
reaches (every layer, for many epochs: on the hand signs it came within one test image of
fine-tuning). It comes first only when it beats the best pretrained candidate by LogME beyond
noise: then their features do not suit these images.

The features go to the same cache as ``fit``'s: fitting the candidate chosen then computes only
the mirrored view of the sampled images.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from .config import CANDIDATE, RANK_IMAGES, FitConfig
from .console import out, progress_bar, say
from .data.sources import Sample
from .errors import HeadstartError
from .features import extract_features
from .runfolder import RANKING
from .stages.data import Prepared, find_data, network_for
from .storage import write_atomically
from .training.probe import fit_probe
from .transferability import logme

__all__ = [
    "Candidate",
    "Ranking",
    "Scored",
    "default_candidates",
    "ordered",
    "rank",
    "score_features",
]

#: Training images put through each candidate, at most (a stratified sample beyond): LogME's
#: order of backbones settles with a few hundred images per class, and each candidate's
#: forward pass is the cost of a ranking.
MOST_IMAGES = RANK_IMAGES
#: Half-samples of the images for LogME's noise (the delete-half jackknife: the spread of a
#: statistic over random halves, drawn without replacement, estimates its standard error on
#: the whole). Not the bootstrap: an image drawn twice is a point the linear model explains
#: for free, and with about as many features as images LogME then grows several-fold (0.36
#: became 1.0 to 2.3 on the hand signs). A half-sample costs one LogME per candidate (under
#: a second for 1,000 images of 1,280 features); with 20, the standard error of a paired
#: difference is known to within about a sixth of itself.
RESAMPLES = 20
#: Two LogMEs closer than this many standard errors of their paired difference are a tie: a
#: heuristic (about a 5% test of a difference), not a proof that the two are equivalent.
TIE_ERRORS = 2.0
_RANDOM = "random:"


@dataclass(frozen=True)
class Candidate:
    """A backbone to rank: ``arch`` with its pretrained weights (or a random initialisation),
    at ``input_size`` pixels (None: the size its weights were trained at)."""

    arch: str
    input_size: int | None = None
    pretrained: bool = True

    @classmethod
    def parse(cls, text: str) -> Candidate:
        """``[random:]ARCH[@SIZE]``: ``tf_efficientnet_lite0``, ``tf_efficientnet_lite0@160``,
        ``random:tf_efficientnet_lite0``."""
        found = CANDIDATE.fullmatch(text.strip())
        if found is None:
            raise HeadstartError(
                f"candidate {text!r}: expected [random:]ARCH[@SIZE], e.g. "
                "tf_efficientnet_lite0@160 or random:tf_efficientnet_lite0"
            )
        random, name, _, size = found.groups()
        return cls(name, int(size) if size else None, pretrained=random is None)

    def __str__(self) -> str:
        size = f"@{self.input_size}" if self.input_size else ""
        return f"{'' if self.pretrained else _RANDOM}{self.arch}{size}"


@dataclass(frozen=True)
class Scored:
    """One candidate's measures on the sample."""

    candidate: Candidate
    input_size: int  # as built
    logme: float
    probe_accuracy: float  # cross-validated, out of fold; NaN when a class has one image
    images: int  # measured on
    seconds: float  # features (or the cache) and both measures
    #: LogME on each half-sample of the images: the same half-samples for every candidate of a
    #: ranking, so that differences are paired.
    resampled_logme: tuple[float, ...] = ()

    @property
    def logme_error(self) -> float:
        """The standard error of LogME, from its spread over the half-samples (NaN without)."""
        if len(self.resampled_logme) < 2:
            return math.nan
        return float(np.std(self.resampled_logme, ddof=1))

    def tie_margin(self, other: Scored) -> float:
        """``TIE_ERRORS`` standard errors of the paired difference between this LogME and
        ``other``'s: closer than that, LogME cannot tell the two apart (NaN: not measured)."""
        mine, theirs = self.resampled_logme, other.resampled_logme
        if len(mine) < 2 or len(mine) != len(theirs):
            return math.nan
        difference = np.subtract(mine, theirs)
        if not np.isfinite(difference).all():
            return math.nan
        return TIE_ERRORS * float(np.std(difference, ddof=1))

    def tied_with(self, other: Scored) -> bool:
        """Whether LogME cannot tell this candidate and ``other`` apart."""
        return abs(self.logme - other.logme) <= self.tie_margin(other)  # False for NaN

    @property
    def probe_error(self) -> float:
        """The standard error of the probe's accuracy (a binomial proportion)."""
        return math.sqrt(self.probe_accuracy * (1 - self.probe_accuracy) / self.images)

    def to_dict(self) -> dict:
        return {
            "candidate": str(self.candidate),
            "input_size": self.input_size,
            "logme": _number(self.logme),
            "logme_error": _number(self.logme_error),
            "probe_accuracy": _number(self.probe_accuracy),
            "probe_error": _number(self.probe_error),
            "seconds": self.seconds,
        }


@dataclass
class Ranking:
    """The candidates in the order :func:`ordered` gives them, measured on ``images`` training
    images."""

    scored: list[Scored]
    images: int
    sampled_from: int  # the training images there were
    seconds: float

    @property
    def best(self) -> Scored:
        return self.scored[0]

    @property
    def pretrained(self) -> list[Scored]:
        return [s for s in self.scored if s.candidate.pretrained]

    @property
    def floors(self) -> list[Scored]:
        """The random initialisations: the floor the pretrained features must clear."""
        return [s for s in self.scored if not s.candidate.pretrained]

    @property
    def tied_pairs(self) -> list[tuple[Scored, Scored]]:
        """Each pretrained candidate within LogME's noise of a better one by LogME, with that
        one (the first of its tie group): the probe ordered them."""
        return [(group[0], tied) for group in _tie_groups(self.pretrained) for tied in group[1:]]

    @property
    def agreement(self) -> float:
        """Kendall's tau between the LogME order and the probes' order (1: the same order);
        NaN with fewer than three candidates or probes all tied."""
        if len(self.scored) < 3:
            return float("nan")
        tau = kendalltau([s.logme for s in self.scored], [s.probe_accuracy for s in self.scored])
        return float(tau.statistic)

    def advice(self) -> str:
        """Which to fine-tune, and what decided it."""
        best = self.best
        if not self.pretrained:
            return (
                f"only random initialisations were ranked; {best.candidate} has the highest "
                f"LogME ({best.logme:.3f}): train it from scratch with the epochs that takes"
            )
        if not best.candidate.pretrained:
            return (
                f"no pretrained candidate beats a random initialisation ({best.candidate}, "
                f"LogME {best.logme:.3f}, beyond noise): their features do not suit these "
                "images; try other backbones, or train from scratch with the epochs that takes"
            )
        return f"fine-tune {best.candidate}: {self._why_first()}{self._what_the_probes_say()}"

    def _why_first(self) -> str:
        best = self.best
        leader = min(self.pretrained, key=_by_logme)
        if leader is best:
            return f"the highest LogME ({best.logme:.3f})"
        either = (
            "; the probes are within their noise of each other too: either will do"
            if _probe_gap(best, leader) <= _probe_margin(best, leader)
            else ""
        )
        return (
            f"its LogME ({best.logme:.4f}) ties {leader.candidate}'s ({leader.logme:.4f}; "
            f"within the {best.tie_margin(leader):.4f} noise), and its probe is the higher "
            f"({best.probe_accuracy:.1%} against {leader.probe_accuracy:.1%}){either}"
        )

    def _what_the_probes_say(self) -> str:
        """The probes' word beside the first candidate's place: nothing where it decided it."""
        best = self.best
        rivals = [s for s in self.pretrained if math.isfinite(s.logme)]  # features measured
        if len(rivals) == 1:
            return ""
        if any(math.isnan(s.probe_accuracy) for s in rivals):
            return " (the probes were not cross-validated: a class has a single image)"
        top_probe = max(rivals, key=lambda s: s.probe_accuracy)
        if top_probe is best:
            decided_by_probe = best is not min(rivals, key=_by_logme)
            return "" if decided_by_probe else f", and the best probe ({best.probe_accuracy:.1%})"
        gap, margin = _probe_gap(top_probe, best), _probe_margin(top_probe, best)
        if gap <= margin:
            return (
                f"; its probe ({best.probe_accuracy:.1%}) is within noise of the best, "
                f"{top_probe.candidate}'s {top_probe.probe_accuracy:.1%}"
            )
        return (
            f"; but {top_probe.candidate}'s probe leads by {gap:.1%} (beyond the "
            f"{margin:.1%} noise): the measures disagree, fine-tune both and keep the better"
        )

    def floor(self) -> str | None:
        """What the random initialisations' scores mean, when there are any."""
        if not self.floors or not self.best.candidate.pretrained:
            return None
        floor = min(self.floors, key=_by_logme)
        best = self.best
        if best.tied_with(floor):
            cleared = "is within LogME's noise of"
        else:
            cleared = "clears" if best.logme > floor.logme else "does not clear"
        return (
            f"{floor.candidate} is the floor for frozen features (LogME {floor.logme:.3f}, "
            f"probe {floor.probe_accuracy:.1%}), and {best.candidate} {cleared} it; it is not a "
            "prediction of training from scratch, which takes every layer for many epochs and "
            "can come close to fine-tuning on simple images"
        )

    def settings(self) -> dict:
        """The ``fit`` settings that train the first candidate."""
        best = self.best
        return {
            "arch": best.candidate.arch,
            "input_size": best.input_size,
            "pretrained": best.candidate.pretrained,
        }

    def fit_flags(self) -> list[str]:
        """The ``headstart fit`` flags that train the first candidate."""
        settings = self.settings()
        flags = ["--arch", settings["arch"], "--input-size", str(settings["input_size"])]
        return flags + ([] if settings["pretrained"] else ["--no-pretrained"])

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "sampled_from": self.sampled_from,
            "seconds": self.seconds,
            "order": "pretrained candidates by LogME, and by the probe where one is within "
            f"{TIE_ERRORS:g} standard errors of its paired LogME difference (over {RESAMPLES} "
            "half-samples of the images) from a better one; random initialisations after them, "
            "as the floor, unless one beats the best pretrained candidate beyond that noise",
            "agreement_kendall_tau": _number(self.agreement),
            "advice": self.advice(),
            "floor": self.floor(),
            "ties": [[str(a.candidate), str(b.candidate)] for a, b in self.tied_pairs],
            "candidates": [s.to_dict() for s in self.scored],
        }

    def write(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        return write_atomically(folder / RANKING, text.encode())

    def print(self) -> None:
        from rich.table import Table

        sample = (
            f"a stratified sample of {self.images} of the {self.sampled_from} training images"
            if self.images < self.sampled_from
            else f"all {self.images} training images"
        )
        table = Table(
            "rank",
            "candidate",
            "LogME",
            "probe (cross-validated)",
            "seconds",
            title=f"backbones ranked by LogME (ties by the probe), on {sample}",
            title_justify="left",
        )
        place = 0
        for scored in self.scored:
            floor = not scored.candidate.pretrained and scored is not self.best
            place += not floor
            table.add_row(
                "floor" if floor else str(place),
                f"{scored.candidate.arch}@{scored.input_size}"
                + ("" if scored.candidate.pretrained else " (random init)"),
                f"{scored.logme:.3f}" + _plus_minus(scored.logme_error, ".3f"),
                f"{scored.probe_accuracy:.1%}" + _plus_minus(scored.probe_error, ".1%"),
                f"{scored.seconds:.0f}",
            )
        out.print(table)
        for a, b in self.tied_pairs:
            out.print(
                f"{a.candidate} and {b.candidate}: LogME {a.logme:.4f} and {b.logme:.4f}, "
                f"within the {a.tie_margin(b):.4f} noise of their difference: the probe "
                "ordered them",
                soft_wrap=True,
            )
        if not math.isnan(self.agreement):
            out.print(
                f"LogME's order against the probes': Kendall's tau {self.agreement:.2f} "
                "(1: the same order, 0: unrelated)"
            )
        if self.floor() is not None:
            out.print(self.floor(), soft_wrap=True)
        out.print(f"[bold]{self.advice()}[/]", soft_wrap=True)


def ordered(scored: Sequence[Scored]) -> list[Scored]:
    """The pretrained candidates by LogME, each tie group (see :func:`_tie_groups`) ordered
    by the probes; then the random initialisations, but first those that beat the best
    pretrained candidate beyond noise (its features do not suit the images)."""
    pretrained = [s for group in _tie_groups(scored) for s in sorted(group, key=_by_probe)]
    floors = sorted((s for s in scored if not s.candidate.pretrained), key=_by_logme)
    leader = min(pretrained, key=_by_logme, default=None)
    winning = [f for f in floors if leader is None or _beats(f, leader)]
    return winning + pretrained + [f for f in floors if f not in winning]


def _tie_groups(scored: Sequence[Scored]) -> list[list[Scored]]:
    """The pretrained candidates by LogME, in groups: each candidate joins the group of the
    one before it when LogME cannot tell it from that group's first (not a chain, in which
    the first and the last of a group could be apart beyond noise)."""
    groups: list[list[Scored]] = []
    for candidate in sorted((s for s in scored if s.candidate.pretrained), key=_by_logme):
        if groups and groups[-1][0].tied_with(candidate):
            groups[-1].append(candidate)
        else:
            groups.append([candidate])
    return groups


def _by_logme(scored: Scored) -> tuple[bool, float]:
    """Highest LogME first; failed ones last."""
    return (not math.isfinite(scored.logme), -scored.logme)


def _by_probe(scored: Scored) -> tuple[bool, float, bool, float]:
    """Highest probe first (unmeasured last), then highest LogME."""
    unmeasured = math.isnan(scored.probe_accuracy)
    return (unmeasured, 0.0 if unmeasured else -scored.probe_accuracy, *_by_logme(scored))


def _beats(a: Scored, b: Scored) -> bool:
    """``a``'s LogME is above ``b``'s beyond noise."""
    return math.isfinite(a.logme) and a.logme > b.logme and not a.tied_with(b)


def _probe_gap(a: Scored, b: Scored) -> float:
    return a.probe_accuracy - b.probe_accuracy


def _probe_margin(a: Scored, b: Scored) -> float:
    """Two standard errors of the probes' difference: closer than that, they cannot tell
    the two apart on this many images."""
    return 2 * math.hypot(a.probe_error, b.probe_error)


def _plus_minus(error: float, spec: str) -> str:
    return f" ± {error:{spec}}" if math.isfinite(error) else ""


def default_candidates(config: FitConfig) -> list[Candidate]:
    """The configured network at the size its weights were trained at, at three quarters and
    half of it (fewer pixels: a faster fine-tune, enough for small or simple images), and a
    random initialisation of it: what is at hand offline."""
    from .models import create_backbone

    own = create_backbone(config.arch, pretrained=False)[1].input_size[-1]
    smaller = sorted({_multiple_of_32(own * 3 / 4), _multiple_of_32(own / 2)} - {own}, reverse=True)
    return [
        Candidate(config.arch),
        *(Candidate(config.arch, size) for size in smaller),
        Candidate(config.arch, pretrained=False),
    ]


def rank(
    data: str | Path,
    models: Sequence[str | Candidate] | None = None,
    config: FitConfig | None = None,
    *,
    most_images: int = MOST_IMAGES,
    **settings,
) -> Ranking:
    """Rank candidate backbones for the dataset at ``data`` by LogME, with a cross-validated
    probe beside it; see the module's docstring.

    Args:
        data: as for :func:`headstart.fit`.
        models: candidates as :class:`Candidate` or ``[random:]ARCH[@SIZE]`` strings; default
            :func:`default_candidates`.
        config, settings: as for ``fit`` (the data and network settings matter; ``arch`` and
            ``input_size`` are the candidates').
        most_images: training images put through each candidate, at most.
    """
    started = time.perf_counter()
    config = FitConfig.of(config, **settings)
    if not isinstance(most_images, int) or most_images < 2:
        raise HeadstartError(f"most_images={most_images!r}: expected a whole number of at least 2")
    if isinstance(models, str):
        raise HeadstartError(f"models={models!r}: expected a list of candidates, not one string")
    candidates = [m if isinstance(m, Candidate) else Candidate.parse(m) for m in models or []]
    candidates = candidates or default_candidates(config)
    dataset = find_data(data, config)
    train = dataset.split("train")
    sample = _stratified(train, most_images, config.seed)
    sampled = replace(dataset, samples=tuple(sample))
    resamples = _half_samples([s.label for s in sample], RESAMPLES, config.seed)
    scored = []
    for candidate in candidates:
        these = replace(
            config,
            arch=candidate.arch,
            input_size=candidate.input_size,
            pretrained=candidate.pretrained,
        )
        scored.append(_score(candidate, network_for(sampled, these), these, resamples))
    return Ranking(ordered(scored), len(sample), len(train), time.perf_counter() - started)


def _score(
    candidate: Candidate, ready: Prepared, config: FitConfig, resamples: np.ndarray
) -> Scored:
    """:func:`score_features` of ``ready``'s network on ``ready``'s images (the sample), with
    ``resamples`` as rows of indices into them."""
    started = time.perf_counter()
    paths = [s.path for s in ready.dataset.samples]
    with progress_bar(f"features ({candidate})", len(paths), quiet=config.quiet) as advance:
        features = extract_features(
            ready.backbone,
            ready.inputs,
            paths,
            ready.images,
            ready.stores,  # None for a random initialisation: nothing worth caching
            batch_size=config.batch_size,
            on_batch=advance,
        )
    label_of = {s.path: ready.index[s.label] for s in ready.dataset.samples}
    labels = np.array([label_of[path] for path in features.paths])
    # A file the network could not read is left out of every resample it was drawn into.
    row_of = {path: row for row, path in enumerate(features.paths)}
    rows = np.array([row_of.get(path, -1) for path in paths])[resamples]
    size = ready.preprocessing.input_size[-1]
    vectors = features.of(features.paths)
    if not np.isfinite(vectors).all():  # an overflow in the network: ranked last, and said
        say(config.quiet, f"[yellow]{candidate}: features not finite; ranked last[/]")
        return Scored(candidate, size, -math.inf, math.nan, len(labels), _since(started))
    scored = score_features(
        candidate, size, vectors, labels, rows, classes=len(ready.index), seed=config.seed
    )
    return replace(scored, seconds=_since(started))


def score_features(
    candidate: Candidate,
    input_size: int,
    features: np.ndarray,
    labels: np.ndarray,
    resamples: np.ndarray | None = None,
    *,
    classes: int | None = None,
    seed: int = 0,
) -> Scored:
    """``candidate``'s measures from its ``features`` (a row an image) of images with the class
    indices ``labels``: LogME, the cross-validated probe, and LogME on each of ``resamples``
    (rows of indices into the images; -1 for an image left out)."""
    started = time.perf_counter()
    classes = classes or int(labels.max()) + 1
    probe = fit_probe(features, labels, classes, seed=seed)
    resampled = tuple(
        _logme_of(features[rows[rows >= 0]], labels[rows[rows >= 0]])
        for rows in (() if resamples is None else resamples)
    )
    return Scored(
        candidate,
        input_size,
        logme(features, labels),
        probe.cv_accuracy,
        len(labels),
        _since(started),
        resampled,
    )


def _logme_of(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME, or NaN where unreadable files left a half-sample with a single class."""
    return logme(features, labels) if len(np.unique(labels)) > 1 else math.nan


def _since(started: float) -> float:
    return time.perf_counter() - started


def _half_samples(labels: Sequence[str], count: int, seed: int) -> np.ndarray:
    """``count`` half-samples of the images with these ``labels``, as rows of indices: half of
    each class's images (at least one: LogME needs every class), drawn without replacement."""
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(np.asarray(labels) == label) for label in sorted(set(labels))]
    return np.array(
        [
            np.sort(np.concatenate([rng.permutation(m)[: max(1, len(m) // 2)] for m in members]))
            for _ in range(count)
        ]
    )


def _stratified(samples: list[Sample], most: int, seed: int) -> list[Sample]:
    """``samples``, or about ``most`` of them drawn class by class in the classes'
    proportions (every class keeps at least one image)."""
    if len(samples) <= most:
        return samples
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[Sample]] = {}
    for sample in samples:
        by_class.setdefault(sample.label, []).append(sample)
    kept = []
    for members in by_class.values():
        share = max(1, round(len(members) * most / len(samples)))
        kept += [members[i] for i in rng.permutation(len(members))[:share]]
    return sorted(kept, key=lambda s: str(s.path))


def _number(value: float) -> float | None:
    """``value``, or None (JSON's null) where it is not a finite number."""
    return value if math.isfinite(value) else None


def _multiple_of_32(size: float) -> int:
    return max(32, round(size / 32) * 32)
