"""Predicting with a trained model, whatever runs its network: PyTorch, ONNX Runtime or
TorchScript.

:class:`Predictor` holds everything that does not depend on the runtime (classes, the images'
road to the network, the calibration temperature, top-k labels, files read and skipped in
batches), in NumPy alone; each runtime only says how its network turns a uint8 batch into
logits averaged over the views. So a PyTorch model and its export decode, crop and calibrate
with the very same code, and an exported bundle predicts where PyTorch is not installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from .console import progress_bar
from .data.sources import Skipped
from .errors import HeadstartError
from .preprocessing import ImageLike, ImageReader, Preprocessing

__all__ = ["Calibrated", "Prediction", "Predictor", "log_softmax", "ranked"]

Answer = TypeVar("Answer")  # what a model says of one image: a Prediction, a number, labels


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float
    top: tuple[tuple[str, float], ...]  # the k most likely (label, probability), best first


class Calibrated:
    """A classifier whose logits are divided by a temperature before the softmax."""

    @property
    def temperature(self) -> float:
        """The logits are divided by it before the softmax (temperature scaling, fitted on
        validation by ``fit``: probabilities that mean what they say); 1: the network's own."""
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        if not 0 < value < float("inf"):  # also refuses NaN
            raise HeadstartError(f"temperature={value}; expected a positive, finite number")
        self._temperature = float(value)


class Predictor(Calibrated):
    """A trained classifier: ``predict`` labels, ``predict_proba`` class probabilities.

    Subclasses run the network: :meth:`logits` of an ``(N, C, H, W)`` uint8 batch of
    evaluation crops, averaged over the views (the image, and its mirror with test-time flip);
    the logits of an image's test-time crops are averaged here.
    """

    def __init__(
        self,
        classes: Sequence[str],
        inputs: ImageReader,
        *,
        architecture: str,
        info: dict | None = None,
        trained_on: Iterable[str] = (),
        temperature: float = 1.0,
    ):
        self.classes = tuple(classes)
        self.inputs = inputs
        self.architecture = architecture
        self.info = dict(info or {})
        self.trained_on = frozenset(trained_on)  # content hashes of its training images
        self.temperature = temperature

    @property
    def preprocessing(self) -> Preprocessing:
        return self.inputs.preprocessing

    @property
    def test_time_flip(self) -> bool:
        return self.inputs.test_time_flip

    @property
    def test_time_crops(self) -> tuple[str, ...]:
        return self.inputs.test_time_crops

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """The network's float32 logits for a uint8 ``(N, C, H, W)`` batch of crops, averaged
        over the views, before the temperature."""
        raise NotImplementedError

    def image_logits(self, batch: np.ndarray) -> np.ndarray:
        """The logits of each image of a batch of :meth:`~headstart.preprocessing.ImageReader.
        batch_array` crops (``K`` test-time crops an image), averaged over its crops."""
        logits = self.logits(batch)
        crops = len(self.test_time_crops)
        return logits if crops == 1 else logits.reshape(-1, crops, logits.shape[-1]).mean(1)

    #: Whether decoding the next batch should overlap with the network's work on this one
    #: (a network on a GPU), rather than take turns with it on every core (on a CPU).
    overlap_decoding = False

    def predict(
        self, images: ImageLike | Iterable[ImageLike], *, top_k: int = 1
    ) -> list[Prediction]:
        """Labels for image files, PIL images or ``(H, W, 3)`` uint8 arrays.

        Raises :class:`~headstart.data.UnreadableImage` for a file that cannot be used; see
        :meth:`predict_files` to skip such files instead.
        """
        return self._top(self.predict_proba(images), top_k)

    def predict_proba(self, images: ImageLike | Iterable[ImageLike]) -> np.ndarray:
        """Class probabilities, ``(n_images, n_classes)``, columns in ``self.classes`` order."""
        return self.probabilities(self._decoded(images))

    def _decoded(self, images: ImageLike | Iterable[ImageLike]) -> list[np.ndarray]:
        """The pixels of image files, PIL images or ``(H, W, 3)`` uint8 arrays (one or
        several), as the model reads them."""
        if isinstance(images, str | Path | Image.Image | np.ndarray):
            images = [images]
        decoder = self.inputs.decoder()
        return [self.inputs.pixels(image, decoder) for image in images]

    def predict_files(
        self,
        paths: Sequence[Path],
        *,
        top_k: int = 1,
        batch_size: int = 32,
        quiet: bool = False,
    ) -> tuple[list[tuple[Path, Prediction]], list[Skipped]]:
        """Predict every readable file; the unreadable ones come back with the reason.

        A progress bar on stderr counts the files, unless ``quiet``.
        """

        def top(batch: np.ndarray) -> list[Prediction]:
            return self._top(np.exp(self._log_probabilities(batch)), top_k)

        return self._answer_files(paths, top, batch_size, quiet)

    def _answer_files(
        self,
        paths: Sequence[Path],
        answers: Callable[[np.ndarray], Sequence[Answer]],
        batch_size: int = 32,
        quiet: bool = False,
    ) -> tuple[list[tuple[Path, Answer]], list[Skipped]]:
        """The ``answers`` for each batch of crops, paired with every readable file (the
        files decoded ahead of the network where that overlaps); the unreadable ones come back
        with the reason. A progress bar on stderr counts the files, unless ``quiet``."""
        predictions, skipped = [], []
        files = self.inputs.read_arrays(
            paths, self.inputs.decoder(), batch_size, overlap=self.overlap_decoding
        )
        with progress_bar("predict", len(paths), quiet=quiet) as advance:
            for crops in files:
                skipped += crops.skipped
                if crops.paths:
                    predictions += zip(crops.paths, answers(crops.pixels), strict=True)
                advance(len(crops))
        return predictions, skipped

    def probabilities(self, pixels: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Class probabilities of already decoded pixels (shortest side = resize size)."""
        return np.exp(self.log_probabilities(pixels, batch_size))

    def log_probabilities(self, pixels: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Log class probabilities of already decoded pixels: exact where the probabilities
        are too small for a float (the loss of a confident mistake)."""
        out = [self._log_probabilities(b) for b in self.inputs.batches(pixels, batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def _log_probabilities(self, batch: np.ndarray) -> np.ndarray:
        return self.log_softmax(self.image_logits(batch))

    def log_softmax(self, logits: np.ndarray) -> np.ndarray:
        """Log class probabilities of images' logits, at the model's temperature."""
        return log_softmax(logits / np.float32(self.temperature))

    def _top(self, probabilities: np.ndarray, k: int) -> list[Prediction]:
        return ranked(probabilities, self.classes, k)


def ranked(probabilities: np.ndarray, classes: Sequence[str], k: int = 1) -> list[Prediction]:
    """One :class:`Prediction` per row of ``probabilities``: its ``k`` most likely classes
    (at least one, at most all), ties in class order."""
    k = max(1, min(k, len(classes)))
    predictions = []
    for row in probabilities:
        order = np.argsort(-row, kind="stable")[:k]
        top = tuple((classes[i], float(row[i])) for i in order)
        predictions.append(Prediction(top[0][0], top[0][1], top))
    return predictions


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, in float64 (exact for the tiny probabilities of confident
    mistakes)."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
