"""A model the recipe may keep, and what the recipe does with its candidates whatever the
task: their held-out outputs, the choice between the probe and the fine-tuning, the scores
without copies of training images, and ``predictions.csv``."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..checks.baselines import head_logits
from ..config import FitConfig
from ..metrics import paired_errors
from ..runfolder import PREDICTIONS_CSV, RunFolder
from ..stages.data import Prepared
from ..storage import write_atomically
from .training import choose, features

__all__ = [
    "HELD_OUT",
    "Candidate",
    "bundled_model",
    "choose_candidate",
    "held_out",
    "probe_outputs",
    "without_copies",
    "write_predictions",
]

HELD_OUT = ("val", "test")


@dataclass
class Candidate:
    """A model the recipe of a task may keep (a regression's or a multi-label fit's; the
    classes' own are :class:`headstart.stages.evaluate.Candidate`): its strategy, its
    outputs on each held-out split (the numbers it predicts, or each label's probability),
    and its scores there."""

    model: Any
    strategy: str
    outputs: dict[str, np.ndarray]
    scores: dict[str, dict]


def held_out(dataset, predict: Callable[[list], np.ndarray]) -> dict[str, np.ndarray]:
    """What ``predict`` outputs for the samples of each held-out split the dataset has."""
    return {split: predict(dataset.split(split)) for split in HELD_OUT if dataset.split(split)}


def probe_outputs(ready: Prepared, head: torch.nn.Linear, flip: bool) -> dict[str, np.ndarray]:
    """A probe's ``head`` on each held-out split's cached features: its logits, those of the
    photo and of its mirror averaged when predictions average both (``flip``)."""
    views = ("plain", "hflip") if flip else ("plain",)
    dataset = ready.dataset
    return {
        split: np.mean([head_logits(head, features(ready, split, view)) for view in views], 0)
        for split in HELD_OUT
        if dataset.split(split)
    }


def choose_candidate(
    probe: Candidate,
    tuned: Candidate | None,
    errors: Callable[[Candidate], np.ndarray],
    said: Callable[[Candidate, Candidate, dict], str],
    config: FitConfig,
) -> tuple[Candidate, str | None, dict | None]:
    """The fine-tuning when its validation ``errors`` (one an image, compared by absolute
    value) are smaller than the probe's beyond noise, image by image, or when asked for by
    name; else the probe. The comparison is ``said`` with its numbers."""
    if tuned is None:
        return probe, None, None
    evidence = paired_errors(errors(tuned), errors(probe))
    keep, why = choose(evidence, said(tuned, probe, evidence), config.strategy == "fine-tune")
    return (tuned if keep else probe), why, evidence


def without_copies(
    kept: Candidate,
    leaked: set,
    dataset,
    score: Callable[[np.ndarray, np.ndarray], dict],
) -> dict:
    """Each held-out split scored by ``score(targets, outputs)`` without the images that
    copy a training image (``leaked``), where some are and some are not."""
    clean = {}
    for split, outputs in kept.outputs.items():
        keep = np.array([s.path not in leaked for s in dataset.split(split)])
        if keep.any() and not keep.all():
            clean[split] = score(dataset.targets(split)[keep], outputs[keep])
    return clean


def bundled_model(kept: Candidate, dataset, ready: Prepared):
    """The kept model, ready for its bundle: it knows the ``dataset``'s training images by
    content (to refuse scoring them as held out) and its scores."""
    model = kept.model
    model.trained_on = frozenset(ready.images.key(s.path) for s in dataset.split("train"))
    model.info = {**model.info, "scores": kept.scores}
    return model


def write_predictions(run: RunFolder, header: list[str], rows: Iterable[list]) -> None:
    """``predictions.csv``: ``header``, then ``rows``, written at once."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    write_atomically(
        run / PREDICTIONS_CSV, text.getvalue().encode("utf-8", errors="surrogateescape")
    )
