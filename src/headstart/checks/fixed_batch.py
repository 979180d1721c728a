"""A fixed batch of validation images whose predictions are recorded at every epoch.

The recipe's "watch predictions on a fixed batch evolve": the same images, chosen once (spread
over the classes), predicted after the probe (epoch 0) and after every fine-tuning epoch. The
report draws it as a grid; the check fails when, at some epoch, every image gets the same
class, confidently, although the batch holds several: the classic sign of a network that has
collapsed (learning rate too high, dead units, or a loss that ignores the inputs). A weak but
healthy model can also answer one class for a whole batch on imbalanced data, but hesitantly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.decoded import DecodedImages
from ..data.sources import Sample
from ..inputs import InputPipeline
from ..storage import write_atomically
from ..training.callbacks import Callback, Training
from .core import Check

__all__ = ["FixedBatch", "spread_over_classes"]

#: Images in the fixed batch: enough to see a pattern, few enough to draw and predict in a blink.
FIXED_BATCH_SIZE = 16
#: A collapse is confident: the mean probability of the one predicted class is at least this.
CONFIDENT = 0.9


def spread_over_classes(samples: Sequence[Sample], k: int, seed: int = 0) -> list[Sample]:
    """``k`` samples taken in turn from each class (in random order within a class), so that
    every class is represented when ``k`` allows."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[Sample]] = {}
    for sample in samples:
        by_class.setdefault(sample.label, []).append(sample)
    queues = [[group[i] for i in rng.permutation(len(group))] for group in by_class.values()]
    picked: list[Sample] = []
    while len(picked) < k and any(queues):
        for queue in queues:
            if queue and len(picked) < k:
                picked.append(queue.pop())
    return picked


class FixedBatch:
    """The fixed batch of a run and its predictions so far (``fixed_batch.json``)."""

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str]):
        self.samples = list(samples)
        self.classes = list(classes)
        self.labels = [self.classes.index(s.label) for s in self.samples]
        self.records: list[dict] = []

    @classmethod
    def choose(cls, val: Sequence[Sample], classes: Sequence[str], seed: int = 0) -> FixedBatch:
        return cls(spread_over_classes(val, FIXED_BATCH_SIZE, seed), classes)

    @torch.inference_mode()
    def record(
        self,
        network: torch.nn.Module,
        inputs: InputPipeline,
        images: DecodedImages,
        stage: str,
        epoch: int,
    ) -> None:
        """Predict the batch with ``network`` as the model bundle would (``inputs``' views)."""
        pixels = [images.get(sample.path) for sample in self.samples]
        was_training = network.training
        network.eval()
        logits = inputs.logits(network, inputs.batch(pixels))
        network.train(was_training)
        probabilities = logits.softmax(-1).double().cpu().numpy()
        self.records.append(
            {"stage": stage, "epoch": epoch, "probabilities": probabilities.round(4).tolist()}
        )

    def watch(self, inputs: InputPipeline, images: DecodedImages, stage: str) -> Callback:
        """A callback that records the batch after every epoch of a fine-tuning, predicted
        by the network that validation scores (the weight average, when there is one)."""
        return _EveryEpoch(self, inputs, images, stage)

    def check(self) -> Check:
        """Fails if some epoch predicted one class for the whole (multi-class) batch."""
        accuracies = [self._accuracy(r) for r in self.records]
        measured = {
            "images": len(self.samples),
            "first_accuracy": accuracies[0] if accuracies else None,
            "last_accuracy": accuracies[-1] if accuracies else None,
        }
        if not accuracies:
            return Check(
                "fixed-batch",
                "fixed validation batch",
                "skip",
                "no predictions recorded",
                "the run ended before its first prediction",
                measured,
            )
        summary = (
            f"{len(self.samples)} validation images predicted at {len(self.records)} point(s): "
            f"{accuracies[0]:.0%} right at the start, {accuracies[-1]:.0%} at the end"
        )
        collapsed = [r for r in self.records if len(set(self.labels)) > 1 and self._collapsed(r)]
        if not collapsed:
            return Check(
                "fixed-batch", "fixed validation batch", "pass", summary, measured=measured
            )
        first = collapsed[0]
        label = self.classes[next(iter(self._predicted(first)))]
        return Check(
            "fixed-batch",
            "fixed validation batch",
            "fail",
            f"{summary}; after {first['stage']} epoch {first['epoch']} every image was "
            f"predicted {label!r}",
            "the network collapsed onto one class: lower the learning rate, and check that the "
            "loss sees the inputs (the zeroed-input baseline) and the class balance",
            measured,
        )

    def to_dict(self) -> dict:
        return {
            "classes": self.classes,
            "paths": [str(s.path) for s in self.samples],
            "labels": self.labels,
            "records": self.records,
        }

    def write(self, path: str | Path) -> Path:
        return write_atomically(path, (json.dumps(self.to_dict()) + "\n").encode())

    def _collapsed(self, record: dict) -> bool:
        probabilities = np.asarray(record["probabilities"])
        one_class = len(set(probabilities.argmax(1).tolist())) == 1
        return one_class and probabilities.max(1).mean() >= CONFIDENT

    def _predicted(self, record: dict) -> set[int]:
        return set(np.asarray(record["probabilities"]).argmax(1).tolist())

    def _accuracy(self, record: dict) -> float:
        predicted = np.asarray(record["probabilities"]).argmax(1)
        return float((predicted == np.asarray(self.labels)).mean())


class _EveryEpoch(Callback):
    def __init__(self, batch: FixedBatch, inputs: InputPipeline, images: DecodedImages, stage: str):
        self.batch, self.inputs, self.images, self.stage = batch, inputs, images, stage

    def on_epoch_end(self, record: dict, training: Training) -> None:
        self.batch.record(
            training.evaluated(), self.inputs, self.images, self.stage, record["epoch"]
        )
