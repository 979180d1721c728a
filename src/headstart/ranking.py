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

The candidates are ranked by LogME. The advice names the first, and says so when the probes
disagree beyond their noise (then both are worth a fine-tune). The features go to the same
cache as ``fit``'s: fitting the candidate chosen then computes only the mirrored view of the
sampled images.
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

__all__ = ["Candidate", "Ranking", "Scored", "default_candidates", "rank"]

#: Training images put through each candidate, at most (a stratified sample beyond): LogME's
#: order of backbones settles with a few hundred images per class, and each candidate's
#: forward pass is the cost of a ranking.
MOST_IMAGES = RANK_IMAGES
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

    @property
    def probe_error(self) -> float:
        """The standard error of the probe's accuracy (a binomial proportion)."""
        return math.sqrt(self.probe_accuracy * (1 - self.probe_accuracy) / self.images)

    def to_dict(self) -> dict:
        return {
            "candidate": str(self.candidate),
            "input_size": self.input_size,
            "logme": _number(self.logme),
            "probe_accuracy": _number(self.probe_accuracy),
            "probe_error": _number(self.probe_error),
            "seconds": self.seconds,
        }


@dataclass
class Ranking:
    """The candidates, best first by LogME, measured on ``images`` training images."""

    scored: list[Scored]
    images: int
    sampled_from: int  # the training images there were
    seconds: float

    @property
    def best(self) -> Scored:
        return self.scored[0]

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
        text = f"fine-tune {best.candidate}: the highest LogME ({best.logme:.3f})"
        if not best.candidate.pretrained:
            return (
                f"no pretrained candidate beats a random initialisation ({best.candidate}, "
                f"LogME {best.logme:.3f}): their features do not suit these images; try other "
                "backbones, or train from scratch with the epochs that takes"
            )
        if len(self.scored) == 1:
            return text
        if any(math.isnan(s.probe_accuracy) for s in self.scored):
            return f"{text} (the probes were not cross-validated: a class has a single image)"
        top_probe = max(self.scored, key=lambda s: s.probe_accuracy)
        if top_probe is best:
            return f"{text}, and the best probe ({best.probe_accuracy:.1%})"
        # Two standard errors of the difference: closer than that, the probes cannot tell
        # the two apart on this many images.
        noise = 2 * math.hypot(best.probe_error, top_probe.probe_error)
        gap = top_probe.probe_accuracy - best.probe_accuracy
        if gap <= noise:
            return (
                f"{text}; its probe ({best.probe_accuracy:.1%}) is within noise of the best, "
                f"{top_probe.candidate}'s {top_probe.probe_accuracy:.1%}"
            )
        return (
            f"{text}; but {top_probe.candidate}'s probe leads by {gap:.1%} (beyond the "
            f"{noise:.1%} noise): the measures disagree, fine-tune both and keep the better"
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
            "agreement_kendall_tau": _number(self.agreement),
            "advice": self.advice(),
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
            title=f"backbones ranked by LogME, on {sample}",
            title_justify="left",
        )
        for place, scored in enumerate(self.scored, 1):
            table.add_row(
                str(place),
                f"{scored.candidate.arch}@{scored.input_size}"
                + ("" if scored.candidate.pretrained else " (random init)"),
                f"{scored.logme:.3f}",
                f"{scored.probe_accuracy:.1%} ± {scored.probe_error:.1%}",
                f"{scored.seconds:.0f}",
            )
        out.print(table)
        if not math.isnan(self.agreement):
            out.print(
                f"LogME's order against the probes': Kendall's tau {self.agreement:.2f} "
                "(1: the same order, 0: unrelated)"
            )
        out.print(f"[bold]{self.advice()}[/]", soft_wrap=True)


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
    scored = []
    for candidate in candidates:
        these = replace(
            config,
            arch=candidate.arch,
            input_size=candidate.input_size,
            pretrained=candidate.pretrained,
        )
        scored.append(_score(candidate, network_for(sampled, these), these))
    scored.sort(key=lambda s: (not math.isfinite(s.logme), -s.logme))  # failed ones last
    return Ranking(scored, len(sample), len(train), time.perf_counter() - started)


def _score(candidate: Candidate, ready: Prepared, config: FitConfig) -> Scored:
    """LogME and the probe of ``ready``'s network on ``ready``'s images (the sample)."""
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
    vectors = features.of(features.paths)
    size = ready.preprocessing.input_size[-1]
    if not np.isfinite(vectors).all():  # an overflow in the network: ranked last, and said
        say(config.quiet, f"[yellow]{candidate}: features not finite; ranked last[/]")
        return Scored(candidate, size, -math.inf, math.nan, len(labels), _since(started))
    probe = fit_probe(vectors, labels, len(ready.index), seed=config.seed)
    score = logme(vectors, labels)
    return Scored(candidate, size, score, probe.cv_accuracy, len(labels), _since(started))


def _since(started: float) -> float:
    return time.perf_counter() - started


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
