"""Transfer against training from scratch: what the pretrained weights bought, on this data.

The three benefits of transfer that the literature names (Torrey and Shavlik, "Transfer
learning"), each measured on the validation set of this run:

- *higher start*: accuracy after the first epoch of training (for a run that only trained the
  last layer, the linear probe's accuracy: it costs less than one epoch);
- *steeper learning curve*: accuracy gained above chance per epoch over the first epochs, from
  the common starting point of a new head (chance);
- *higher final accuracy*: the best epoch of each.

The scratch network is the same architecture with random weights, trained on the same split
with the same preprocessing for the same number of epochs as the transfer run's fine-tuning
(or, when the transfer run only probed, the epochs its plan gives a from-scratch run), with
every layer and the batch-norm statistics trained, as training from scratch needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import torch

from .classifier import Classifier, new_head
from .config import FitConfig
from .data.decoded import DecodedImages
from .data.sources import Dataset
from .inputs import InputPipeline
from .models import create_backbone
from .training.callbacks import Callback, Training
from .training.finetune import FineTuneSettings, evaluate_pixels, fine_tune
from .training.plan import make_plan

__all__ = ["Curve", "compare", "scratch_settings", "train_from_scratch"]

#: The epochs over which the learning curves' steepness is read.
EARLY_EPOCHS = 3


@dataclass
class Curve:
    """Validation accuracy by epoch. Epoch 0 is before any step of the network's training:
    the linear probe for a transfer run, a new head (chance) for a scratch run."""

    epochs: list[int] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def add(self, epoch: int, accuracy: float, seconds: float) -> None:
        self.epochs.append(epoch)
        self.val_accuracy.append(accuracy)
        self.seconds.append(seconds)


def scratch_settings(dataset: Dataset, *, epochs: int | None, batch_size: int) -> FineTuneSettings:
    """How a from-scratch run trains: the plan for random weights (every layer, batch-norm
    statistics from the batches), for ``epochs`` (None: the plan's own), never stopped early:
    the comparison wants the whole curve, not its best point."""
    settings = make_plan(
        "full",
        train_counts=dataset.counts()["train"],
        probe_accuracy=None,
        mirror_invariant=None,
        pretrained=False,
        stages=1,
        config=FitConfig(pretrained=False, epochs=epochs, batch_size=batch_size),
    ).fine_tune
    return replace(settings, patience=None)


def train_from_scratch(
    arch: str,
    dataset: Dataset,
    images: DecodedImages,
    inputs: InputPipeline,
    settings: FineTuneSettings,
    *,
    device: torch.device,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
) -> Curve:
    """The from-scratch learning curve: ``arch`` with random weights, trained with
    ``settings`` (see :func:`scratch_settings`); ``callbacks`` watch the training."""
    channels, size, _ = inputs.preprocessing.input_size
    backbone, _, _ = create_backbone(arch, pretrained=False, in_chans=channels, input_size=size)
    index = {name: i for i, name in enumerate(dataset.classes)}
    counts = dataset.counts()["train"]
    examples = {
        split: [(s.path, index[s.label]) for s in dataset.split(split)]
        for split in ("train", "val")
    }
    head = new_head(backbone.num_features, [counts[c] for c in dataset.classes])
    network = Classifier(backbone, head, inputs.preprocessing).to(device)
    curve = Curve()
    _, accuracy = evaluate_pixels(network, examples["val"], images, inputs)
    curve.add(0, accuracy, 0.0)
    fine_tune(
        network,
        examples["train"],
        examples["val"],
        images,
        inputs,
        settings,
        seed=seed,
        callbacks=[_Follow(curve), *callbacks],
    )
    return curve


class _Follow(Callback):
    """Each epoch's validation accuracy onto the curve, with the training time so far."""

    def __init__(self, curve: Curve):
        self.curve, self.elapsed = curve, 0.0

    def on_epoch_end(self, record: dict, training: Training) -> None:
        self.elapsed += record["seconds"]
        self.curve.add(record["epoch"], record["val_accuracy"], self.elapsed)


def compare(transfer: Curve, scratch: Curve, chance: float) -> dict:
    """The three benefits, with the numbers behind each (``compare_scratch.json``).

    A benefit that cannot be measured says so instead of a number: a transfer run that only
    fitted the linear probe has no epochs, so no slope per epoch to compare.
    """

    def start(curve: Curve) -> float:
        trained = [a for e, a in zip(curve.epochs, curve.val_accuracy, strict=True) if e >= 1]
        return trained[0] if trained else curve.val_accuracy[-1]

    def rise(curve: Curve) -> float | None:
        """Accuracy above chance gained per epoch by the end of the early epochs."""
        points = [(e, a) for e, a in zip(curve.epochs, curve.val_accuracy, strict=True) if e >= 1]
        if not points:  # only the probe: no network was trained epoch by epoch
            return None
        epoch, accuracy = points[min(EARLY_EPOCHS, len(points)) - 1]
        return (accuracy - chance) / epoch

    benefits = {}
    for name, measure in (("start", start), ("slope", rise), ("final", _best)):
        ours, theirs = measure(transfer), measure(scratch)
        holds = None if ours is None or theirs is None else ours > theirs
        benefits[name] = {"transfer": ours, "scratch": theirs, "holds": holds}
    words = {
        "start": "a higher start",
        "slope": "a steeper curve",
        "final": "a higher final accuracy",
    }
    shown = [name for name, benefit in benefits.items() if benefit["holds"]]
    missing = [name for name, benefit in benefits.items() if benefit["holds"] is False]
    summary = (
        f"transfer gives {', '.join(words[n] for n in shown)}"
        if shown
        else "transfer shows none of its benefits on this data"
    )
    if shown and missing:
        summary += f"; not {', '.join(words[n] for n in missing)}"
    epochs = len(scratch.epochs) - 1
    summary += f" (scratch: {epochs} epoch{'s' if epochs != 1 else ''}"
    if benefits["slope"]["holds"] is None:
        summary += "; the transfer run only fitted the probe: no slope per epoch to compare"
    summary += ")"
    return {
        "transfer": asdict(transfer),
        "scratch": asdict(scratch),
        "chance": chance,
        "benefits": benefits,
        "summary": summary,
    }


def _best(curve: Curve) -> float:
    return max(curve.val_accuracy)
