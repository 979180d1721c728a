"""A trained regressor: a network with one output, and the target's scale to restore.

``headstart.load(run).predict(["photo.jpg", ...])`` gives numbers, in the target's own units.
The bundle is a classifier's (``model.safetensors``, ``headstart.json``) with a head of one
output, ``"task": "regression"`` and the target's name, mean and spread in its description:
the network predicts the standardised target, and the bundle restores it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...bundle import Description
from ...classifier import Classifier
from ...data.sources import Skipped
from ...errors import HeadstartError
from ...models import Preprocessing
from ...preprocessing import ImageLike
from ...torch_model import Model, load_network_bundle, save

__all__ = ["Regressor", "TargetScale", "load_regressor", "save_regressor"]


@dataclass(frozen=True)
class TargetScale:
    """The target's name, and the mean and spread of its training values: the network
    learns ``(target - mean) / scale``."""

    name: str
    mean: float
    scale: float

    @classmethod
    def of(cls, name: str, values: np.ndarray) -> TargetScale:
        spread = float(np.std(values))
        return cls(name, float(np.mean(values)), spread if spread > 0 else 1.0)

    def standardise(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.scale

    def restore(self, standardised: np.ndarray) -> np.ndarray:
        return np.asarray(standardised, dtype=np.float64) * self.scale + self.mean


class Regressor(Model):
    """A trained regressor whose network runs in PyTorch: ``predict`` gives numbers."""

    task = "regression"

    def __init__(
        self,
        network: Classifier,
        preprocessing: Preprocessing,
        target: TargetScale,
        *,
        architecture: str,
        test_time_flip: bool = False,
        info: dict | None = None,
        trained_on: Iterable[str] = (),
    ):
        super().__init__(
            network,
            (target.name,),
            preprocessing,
            architecture=architecture,
            test_time_flip=test_time_flip,
            info=info,
            trained_on=trained_on,
        )
        self.target = target

    def predict(self, images: ImageLike | Iterable[ImageLike], **_) -> np.ndarray:
        """The number of each image (files, PIL images or ``(H, W, 3)`` uint8 arrays)."""
        return self.values(self._decoded(images))

    def predict_proba(self, images) -> np.ndarray:
        raise HeadstartError("a regressor predicts numbers, not class probabilities: predict()")

    def values(self, pixels: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """The numbers of already decoded pixels (shortest side = resize size)."""
        out = [self._values(b) for b in self.inputs.batches(pixels, batch_size)]
        return np.concatenate(out) if out else np.zeros(0)

    def predict_files(
        self, paths: Sequence[Path], *, batch_size: int = 32, quiet: bool = False, **_
    ) -> tuple[list[tuple[Path, float]], list[Skipped]]:
        """The number of every readable file; the unreadable ones come back with the reason."""

        def numbers(batch: np.ndarray) -> list[float]:
            return self._values(batch).tolist()

        return self._answer_files(paths, numbers, batch_size, quiet)

    def _values(self, batch: np.ndarray) -> np.ndarray:
        return self.target.restore(self.image_logits(batch)[:, 0])


def save_regressor(model: Regressor, directory: str | Path) -> Path:
    """``model`` as a bundle: a one-output network's, with the target's scale."""
    return save(model, directory, task="regression", target=asdict(model.target))


def load_regressor(description: Description) -> Regressor:
    """The regressor of a bundle's checked description."""
    model = load_network_bundle(description)
    try:
        target = TargetScale(**description.meta["target"])
    except (KeyError, TypeError) as error:
        where = description.directory
        raise HeadstartError(f"{where}: a regression bundle without its target ({error})") from None
    return Regressor(
        model.network,
        model.preprocessing,
        target,
        architecture=model.architecture,
        test_time_flip=model.test_time_flip,
        info=model.info,
        trained_on=model.trained_on,
    )
