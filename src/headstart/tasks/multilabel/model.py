"""A trained multi-label model: a logit per label, and the threshold from which each is said.

``headstart.load(run).predict(["photo.jpg"])`` gives each image's labels (possibly none) with
their probabilities; ``predict_proba`` every label's probability, a column each. The bundle is
a classifier's, its ``classes`` the labels, with ``"task": "multi-label"`` and the thresholds
in its description.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...bundle import Description
from ...classifier import Classifier
from ...data.sources import Skipped
from ...errors import HeadstartError
from ...models import Preprocessing
from ...preprocessing import ImageLike
from ...torch_model import Model, load_network_bundle, save

__all__ = ["LabelSet", "MultiLabelModel", "load_multilabel", "save_multilabel"]


@dataclass(frozen=True)
class LabelSet:
    """An image's labels (those whose probability reaches their threshold, most likely first;
    possibly none) and every label's probability."""

    labels: tuple[str, ...]
    probabilities: dict[str, float]


class MultiLabelModel(Model):
    """A trained multi-label model whose network runs in PyTorch: ``predict`` label sets,
    ``predict_proba`` a probability per label."""

    task = "multi-label"

    def __init__(
        self,
        network: Classifier,
        labels: Sequence[str],
        preprocessing: Preprocessing,
        thresholds: Sequence[float],
        *,
        architecture: str,
        test_time_flip: bool = False,
        info: dict | None = None,
        trained_on: Iterable[str] = (),
    ):
        super().__init__(
            network,
            labels,
            preprocessing,
            architecture=architecture,
            test_time_flip=test_time_flip,
            info=info,
            trained_on=trained_on,
        )
        if len(thresholds) != len(labels):
            raise HeadstartError(f"{len(thresholds)} thresholds for {len(labels)} labels")
        self.thresholds = np.asarray(thresholds, dtype=np.float64)

    def predict(self, images: ImageLike | Iterable[ImageLike], **_) -> list[LabelSet]:
        """The labels of each image (files, PIL images or ``(H, W, 3)`` uint8 arrays)."""
        return self.label_sets(self.predict_proba(images))

    def predict_proba(self, images: ImageLike | Iterable[ImageLike]) -> np.ndarray:
        """Every label's probability, ``(n_images, n_labels)``, columns in ``self.classes``
        order (they need not sum to one: each label is its own question)."""
        return self.probabilities(self._decoded(images))

    def probabilities(self, pixels: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        out = [self._probabilities(b) for b in self.inputs.batches(pixels, batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def predict_files(
        self, paths: Sequence[Path], *, batch_size: int = 32, quiet: bool = False, **_
    ) -> tuple[list[tuple[Path, LabelSet]], list[Skipped]]:
        """The labels of every readable file; the unreadable ones come back with the reason."""

        def labels(batch: np.ndarray) -> list[LabelSet]:
            return self.label_sets(self._probabilities(batch))

        return self._answer_files(paths, labels, batch_size, quiet)

    def label_sets(self, probabilities: np.ndarray) -> list[LabelSet]:
        sets = []
        for row in probabilities:
            said = [i for i in np.argsort(-row, kind="stable") if row[i] >= self.thresholds[i]]
            sets.append(
                LabelSet(
                    tuple(self.classes[i] for i in said),
                    {name: float(p) for name, p in zip(self.classes, row, strict=True)},
                )
            )
        return sets

    def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        logits = self.image_logits(batch).astype(np.float64)
        return 1 / (1 + np.exp(-logits))


def save_multilabel(model: MultiLabelModel, directory: str | Path) -> Path:
    """``model`` as a bundle: a logit a label, with the thresholds."""
    return save(model, directory, task="multi-label", thresholds=model.thresholds.tolist())


def load_multilabel(description: Description) -> MultiLabelModel:
    """The multi-label model of a bundle's checked description."""
    model = load_network_bundle(description)
    thresholds = description.meta.get("thresholds")
    if not (isinstance(thresholds, list) and len(thresholds) == len(model.classes)):
        raise HeadstartError(
            f"{description.directory}: a multi-label bundle needs a threshold for each label"
        )
    return MultiLabelModel(
        model.network,
        model.classes,
        model.preprocessing,
        thresholds,
        architecture=model.architecture,
        test_time_flip=model.test_time_flip,
        info=model.info,
        trained_on=model.trained_on,
    )
