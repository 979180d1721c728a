"""The adapt stage: the kept model moved towards unlabelled images from the domain it will be
used in (``fit --target-images DIR``), when the evidence says a move carries the classes there.

Before training, :func:`measure_target` reads the target images' features and measures the
shift (how well a domain classifier tells them from the training images); the plan says it.
After training, :func:`adapt` tries each move of :mod:`headstart.training.adapt` on the kept
model's own features (feature statistics, batch-norm statistics, each with and without
self-training at some thresholds and rounds), scores each by reverse validation on the
validation images, and keeps the best only where it beats the unadapted head beyond noise.
The kept model is then the adapted one; its validation and test scores stay those of the
model before adaptation, measured on the training domain.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import FitConfig
from ..console import progress_bar, say
from ..data.sources import Skipped, image_files
from ..errors import HeadstartError
from ..features import ExtractedFeatures, extract_features
from ..runfolder import ADAPTATION, RunFolder
from ..torch_model import Model
from ..training.adapt import (
    DEFAULT_MOVE,
    Domains,
    Standardised,
    choose_move,
    domain_gap,
    has_batch_norm,
    reestimate_batch_norm,
)
from .data import Prepared
from .evaluate import Candidate

__all__ = ["SHIFTED", "Adaptation", "Target", "adapt", "measure_target"]

#: A domain classifier on the pretrained features that tells the target images from the
#: training images with at least this balanced accuracy measures a shift worth adapting to.
#: Two halves of one photo set score 48% (trash photos, hand signs); every shift measured by
#: benchmarks/domain_shift.py (grey, blur and noise, JPEG at quality 8, dimmed) 95-100%.
SHIFTED = 0.7


@dataclass
class Target:
    """The unlabelled target images and what the plan measured on them."""

    paths: list[Path]
    skipped: list[Skipped]
    gap: float  # the domain classifier's balanced accuracy (0.5: no shift)
    features: ExtractedFeatures  # their pretrained features

    @property
    def shifted(self) -> bool:
        return self.gap >= SHIFTED

    def to_dict(self) -> dict:
        return {
            "images": len(self.paths),
            "skipped": len(self.skipped),
            "domain_classifier_balanced_accuracy": round(self.gap, 4),
            "shifted": self.shifted,
        }

    def reason(self) -> str:
        told = (
            f"{len(self.paths)} target images: a classifier tells them from the training "
            f"images with {self.gap:.0%} balanced accuracy (50%: alike)"
        )
        if not self.shifted:
            return (
                f"{told}; below {SHIFTED:.0%}, no shift to adapt to, the model is kept as trained"
            )
        return (
            f"{told}: a shift; after training, the model is moved towards them (feature and "
            "batch-norm statistics, self-training), each move scored by reverse validation "
            "and kept only if it beats the unadapted head beyond noise"
        )


@dataclass
class Adaptation:
    """What :func:`adapt` tried and kept: ``model`` is the model to save."""

    model: Model
    kept: str  # "none", or the move kept
    why: str
    tried: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"kept": self.kept, "why": self.why, "tried": self.tried}


def measure_target(ready: Prepared, config: FitConfig) -> Target | None:
    """The target images of ``config.target_images``, their pretrained features (cached as
    every image's are) and the shift between them and the training images; None without
    target images. Refused without pretrained features: the shift is measured on them."""
    if config.target_images is None:
        return None
    if ready.features is None:
        raise HeadstartError(
            "--target-images: adaptation measures the shift on pretrained features, and this "
            "fit has none (pretrained=False)"
        )
    paths = image_files([config.target_images])
    with progress_bar("target images", len(paths), quiet=config.quiet) as advance:
        found = extract_features(
            ready.backbone,
            ready.inputs,
            paths,
            ready.images,
            ready.stores,
            batch_size=config.batch_size,
            on_batch=advance,
        )
    for skip in found.skipped:
        say(config.quiet, f"[yellow]skipped[/] target image {skip.path}: {skip.reason}")
    if len(found.paths) < 2:
        raise HeadstartError(
            f"--target-images {config.target_images}: {len(found.paths)} readable image(s); "
            "adaptation needs at least 2"
        )
    source = ready.features.of([s.path for s in ready.dataset.split("train")], copy=True)
    gap = domain_gap(source, found.of(found.paths, copy=True), seed=config.seed)
    return Target(list(found.paths), list(found.skipped), gap, found)


def adapt(
    kept: Candidate,
    ready: Prepared,
    target: Target,
    C: float,
    run: RunFolder,
    config: FitConfig,
) -> Adaptation:
    """``kept`` moved towards ``target`` where the evidence says a move carries the classes
    there (written to ``adaptation.json``), its heads at the probe's ``C``; ``kept``'s model
    itself otherwise."""
    if not target.shifted:
        adaptation = Adaptation(kept.model, "none", "no shift measured: nothing to adapt to")
    else:
        adaptation = _choose(kept, ready, target, C, config)
    run.write_json(ADAPTATION, {"target": target.to_dict(), **adaptation.to_dict()})
    say(config.quiet, f"adapt: {adaptation.why}")
    return adaptation


def _choose(
    kept: Candidate, ready: Prepared, target: Target, C: float, config: FitConfig
) -> Adaptation:
    """The move reverse validation picks among every representation's (see
    :func:`headstart.training.adapt.choose_move`), applied to a copy of ``kept``'s model."""
    labels = np.array([ready.index[s.label] for s in ready.dataset.split("train")])
    val_labels = np.array([ready.index[s.label] for s in ready.dataset.split("val")])
    networks: dict[str, Model] = {}
    best, tried = choose_move(
        _representations(kept, ready, target, config, networks),
        labels,
        val_labels,
        len(ready.index),
        C=C,
        seed=config.seed,
    )
    records = [move.to_dict() for move in tried]
    unadapted = tried[0].carried.mean()
    if best is None:
        leader = max(tried, key=lambda move: move.carried.mean())
        why = (
            f"no move carries the classes across beyond noise (the best, {leader.name}: reverse "
            f"validation {leader.carried.mean():.1%} against {unadapted:.1%} unadapted, "
            f"z = {leader.z:+.1f}); the model is kept as trained"
        )
        return Adaptation(kept.model, "none", why, records)
    model = copy.deepcopy(networks.get(best.domains.name, kept.model))
    device = model.network.head.weight.device
    model.network.head = best.head.linear(best.domains.deployed).to(device)
    model.temperature = 1.0  # the refitted head's probabilities are its own
    model.info["adaptation"] = best.name
    evidence = (
        f"reverse validation {best.carried.mean():.1%} against {unadapted:.1%} unadapted "
        f"(z = {best.z:+.1f})"
    )
    if best.name == DEFAULT_MOVE:
        evidence = f"the move kept under a shift unless it falls behind; {evidence}"
    why = (
        f"{best.name} kept ({evidence}); the saved model is for the target images, and the "
        "validation and test scores are the model's before adaptation"
    )
    return Adaptation(model, best.name, why, records)


def _representations(
    kept: Candidate,
    ready: Prepared,
    target: Target,
    config: FitConfig,
    networks: dict[str, Model],
) -> Iterator[Domains]:
    """The kept network's features of both domains as they are (each standardised by the
    training images' statistics), then with each domain's own feature statistics, then, for a
    network with batch norm, with each domain's own batch-norm statistics."""
    paths = {
        "train": [s.path for s in ready.dataset.split("train")],
        "val": [s.path for s in ready.dataset.split("val")],
        "target": target.paths,
    }
    features = _features(kept, ready, target, paths, config)
    source = Standardised.of(features["train"])
    own = Standardised.of(features["target"])
    train, val = source(features["train"]), source(features["val"])  # shared: never changed
    yield Domains("unadapted", train, val, source(features["target"]), source)
    yield Domains(DEFAULT_MOVE, train, val, own(features["target"]), own)
    if has_batch_norm(kept.model.network.backbone):
        domains, networks[domains.name] = _batch_norm_statistics(kept.model, ready, paths, config)
        yield domains


def _batch_norm_statistics(
    kept: Model, ready: Prepared, paths: dict[str, list[Path]], config: FitConfig
) -> tuple[Domains, Model]:
    """AdaBN: the kept network's batch-norm statistics re-estimated on the training images for
    their features, and on the target images for theirs (and for the saved model)."""
    on_source, on_target = copy.deepcopy(kept), copy.deepcopy(kept)
    reestimate_batch_norm(
        on_source.network.backbone, _batches(ready, paths["train"], config, "re-estimating")
    )
    reestimate_batch_norm(
        on_target.network.backbone, _batches(ready, paths["target"], config, "re-estimating")
    )
    source_side = _extract(on_source, ready, paths["train"] + paths["val"], config)
    target_side = _extract(on_target, ready, paths["target"], config)
    n = len(paths["train"])
    source = Standardised.of(source_side[:n])
    domains = Domains(
        "batch-norm statistics",
        source(source_side[:n]),
        source(source_side[n:]),
        source(target_side),
        source,
    )
    return domains, on_target


def _features(
    kept: Candidate,
    ready: Prepared,
    target: Target,
    paths: dict[str, list[Path]],
    config: FitConfig,
) -> dict[str, np.ndarray]:
    """The kept network's pooled features of each group of ``paths``: from the cache for the
    linear probe (its body is the pretrained backbone), computed for a fine-tuned network."""
    if kept.strategy == "linear-probe":
        return {
            "train": ready.features.of(paths["train"], copy=True),
            "val": ready.features.of(paths["val"], copy=True),
            "target": target.features.of(paths["target"], copy=True),
        }
    every = [path for group in paths.values() for path in group]
    computed = _extract(kept.model, ready, every, config)
    bounds = np.cumsum([0, *map(len, paths.values())])
    return {
        name: computed[start:end]
        for name, start, end in zip(paths, bounds[:-1], bounds[1:], strict=True)
    }


def _extract(model: Model, ready: Prepared, paths: list[Path], config: FitConfig) -> np.ndarray:
    with progress_bar("adapting", len(paths), quiet=config.quiet) as advance:
        found = extract_features(
            model.network.backbone,
            ready.inputs,
            paths,
            ready.images,
            batch_size=config.batch_size,
            on_batch=advance,
        )
    if len(found.paths) != len(paths):
        raise HeadstartError("an image could not be read again while adapting; rerun the fit")
    return found.of(paths, copy=True)


def _batches(
    ready: Prepared, paths: list[Path], config: FitConfig, label: str
) -> Iterator[torch.Tensor]:
    normalize = ready.inputs.normalizer()
    with progress_bar(label, len(paths), quiet=config.quiet) as advance:
        for crops in ready.inputs.read(paths, ready.images, config.batch_size):
            if crops.paths:
                yield normalize(crops.pixels)
            advance(len(crops))
