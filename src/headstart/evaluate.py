"""``headstart evaluate``: score a model bundle on labelled images it has not seen."""

from __future__ import annotations

from pathlib import Path

from .bundle import load
from .data.sources import Skipped, discover
from .errors import HeadstartError
from .metrics import classification_metrics

__all__ = ["evaluate"]


def evaluate(
    bundle: str | Path, data: str | Path, *, split: str | None = None
) -> tuple[dict, list[Skipped]]:
    """Metrics of the bundle's predictions on ``data``'s labelled images.

    ``split``: ``"all"``, or one of the data's splits; by default its test split when it has
    one (a train/val/test folder or a CSV with a split column), else every image.
    """
    model = load(bundle)
    # No random split here: every image of a plain class-folder tree is scored.
    dataset = discover(data, val_fraction=0.0)
    if split is None:
        split = "test" if dataset.split("test") else "all"
    samples = list(dataset.samples) if split == "all" else dataset.split(split)
    if not samples:
        raise HeadstartError(f"{data}: no images in split {split!r}")
    unknown = sorted({s.label for s in samples} - set(model.classes))
    if unknown:
        raise HeadstartError(
            f"{data}: label(s) {', '.join(map(repr, unknown))} are not among the "
            f"model's classes ({', '.join(model.classes)})"
        )
    predictions, skipped = model.predict_files([s.path for s in samples])
    labels = {s.path: s.label for s in samples}
    index = {name: i for i, name in enumerate(model.classes)}
    scores = classification_metrics(
        [index[labels[path]] for path, _ in predictions],
        [index[p.label] for _, p in predictions],
        model.classes,
    )
    return scores, list(dataset.skipped) + skipped
