"""A trained model on disk, and using it: ``headstart.load(bundle).predict(images)``.

A bundle is a folder with two files: ``model.safetensors`` (every weight, no pickle) and
``headstart.json`` (architecture, classes, preprocessing, how predictions are made, versions).
It is all ``predict`` and ``evaluate`` need; nothing comes from the run that made it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from ._version import __version__
from .classifier import Classifier
from .console import progress_bar
from .data.sources import Skipped
from .errors import HeadstartError
from .inputs import ImageLike, InputPipeline
from .models import Preprocessing, create_backbone
from .runfolder import MODEL
from .storage import write_atomically, write_tensors

__all__ = ["META", "WEIGHTS", "Model", "Prediction", "bundle_folder", "load", "save"]

BUNDLE_FORMAT = 2  # 2: a temperature applied to the logits
WEIGHTS = "model.safetensors"
META = "headstart.json"
#: The content hashes of the images the model was trained on, one a line: wherever the bundle
#: goes, ``evaluate`` can tell those images (or copies of them) from new ones.
TRAINED_ON = "trained_on.txt"


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float
    top: tuple[tuple[str, float], ...]  # the k most likely (label, probability), best first


class Model:
    """A trained classifier: ``predict`` labels, ``predict_proba`` class probabilities."""

    def __init__(
        self,
        network: Classifier,
        classes: Sequence[str],
        preprocessing: Preprocessing,
        *,
        architecture: str,
        test_time_flip: bool = False,
        info: dict | None = None,
        trained_on: Iterable[str] = (),
        temperature: float = 1.0,
    ):
        self.network = network.eval()
        self.temperature = temperature
        self.trained_on = frozenset(trained_on)  # content hashes of its training images
        self.classes = tuple(classes)
        self.inputs = InputPipeline(preprocessing, test_time_flip)
        self.architecture = architecture
        self.info = dict(info or {})

    @property
    def preprocessing(self) -> Preprocessing:
        return self.inputs.preprocessing

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

    @property
    def test_time_flip(self) -> bool:
        return self.inputs.test_time_flip

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
        if isinstance(images, str | Path | Image.Image | np.ndarray):
            images = [images]
        decoder = self.inputs.decoder()
        return self.probabilities([self.inputs.pixels(image, decoder) for image in images])

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
        predictions, skipped = [], []
        # On a CPU, decoding and the network take turns on every core (see map_batches).
        overlap = next(self.network.parameters()).device.type != "cpu"
        files = self.inputs.read(paths, self.inputs.decoder(), batch_size, overlap=overlap)
        with progress_bar("predict", len(paths), quiet=quiet) as advance:
            for crops in files:
                skipped += crops.skipped
                if crops.paths:
                    top = self._top(self._probabilities(crops.pixels), top_k)
                    predictions += zip(crops.paths, top, strict=True)
                advance(len(crops))
        return predictions, skipped

    def probabilities(self, pixels: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Class probabilities of already decoded pixels (shortest side = resize size)."""
        return np.exp(self.log_probabilities(pixels, batch_size))

    def log_probabilities(self, pixels: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Log class probabilities of already decoded pixels: exact where the probabilities
        are too small for a float (the loss of a confident mistake)."""
        out = [
            self._log_probabilities(self.inputs.batch(pixels[start : start + batch_size]))
            for start in range(0, len(pixels), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def _probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """Class probabilities of a uint8 batch of evaluation crops."""
        return np.exp(self._log_probabilities(batch))

    @torch.inference_mode()
    def _log_probabilities(self, batch: torch.Tensor) -> np.ndarray:
        logits = self.inputs.logits(self.network, batch) / self.temperature
        return logits.double().log_softmax(-1).cpu().numpy()

    def _top(self, probabilities: np.ndarray, k: int) -> list[Prediction]:
        k = max(1, min(k, len(self.classes)))
        predictions = []
        for row in probabilities:
            order = np.argsort(-row, kind="stable")[:k]
            top = tuple((self.classes[i], float(row[i])) for i in order)
            predictions.append(Prediction(top[0][0], top[0][1], top))
        return predictions


def save(model: Model, directory: str | Path) -> Path:
    """``model`` as a bundle in ``directory``: its weights, what it needs to predict, and the
    content hashes of the images it was trained on (when known)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.network.state_dict().items()}
    write_tensors(state, directory / WEIGHTS)
    meta = {
        "format": BUNDLE_FORMAT,
        "headstart_version": __version__,
        "torch_version": torch.__version__,
        "architecture": model.architecture,
        "classes": list(model.classes),
        "preprocessing": model.preprocessing.to_dict(),
        "test_time_flip": model.test_time_flip,
        "temperature": model.temperature,
        "num_features": int(model.network.head.in_features),
        **model.info,
    }
    write_atomically(directory / META, json.dumps(meta, indent=2).encode())
    if model.trained_on:
        lines = "".join(f"{key}\n" for key in sorted(model.trained_on))
        write_atomically(directory / TRAINED_ON, lines.encode())
    return directory


def bundle_folder(path: str | Path) -> Path:
    """The model bundle at ``path``: a run folder's ``model/`` folder, or ``path`` itself."""
    for folder in (Path(path) / MODEL, Path(path)):
        if (folder / META).exists():
            return folder
    raise HeadstartError(f"{path}: not a headstart model bundle (no {META} inside)")


def load(bundle: str | Path) -> Model:
    """Load a model bundle written by ``headstart fit`` (the ``model`` folder of a run)."""
    directory = bundle_folder(bundle)
    try:
        meta = json.loads((directory / META).read_text())
    except ValueError as error:  # bad JSON, or bytes that are not text
        raise HeadstartError(f"{directory / META}: not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise HeadstartError(f"{directory / META}: not a bundle description (not a JSON object)")
    if not isinstance(meta.get("format", 0), int):
        raise HeadstartError(f"{directory / META}: 'format' must be a number")
    if meta.get("format", 0) > BUNDLE_FORMAT:
        raise HeadstartError(
            f"{bundle}: written by a newer headstart "
            f"({meta.get('headstart_version')}); upgrade to read it"
        )
    optional = {"format", "headstart_version", "torch_version", "temperature"}
    missing = sorted(_OWN_KEYS - optional - set(meta))
    if missing:
        raise HeadstartError(f"{directory / META}: incomplete, no {', '.join(missing)}")
    try:
        preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        backbone, _, _ = create_backbone(
            meta["architecture"], pretrained=False, in_chans=preprocessing.input_size[0]
        )
        head = torch.nn.Linear(meta["num_features"], len(meta["classes"]))
    except (KeyError, TypeError, ValueError) as error:
        raise HeadstartError(
            f"{directory / META}: not a valid bundle description ({error})"
        ) from None
    temperature = meta.get("temperature", 1.0)  # older bundles: none fitted
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise HeadstartError(f"{directory / META}: 'temperature' must be a number")
    if not 0 < temperature < float("inf"):
        raise HeadstartError(f"{directory / META}: temperature={temperature}; expected > 0")
    network = Classifier(backbone, head, preprocessing)
    network.load_state_dict(_weights(directory / WEIGHTS, network, len(meta["classes"])))
    info = {k: v for k, v in meta.items() if k not in _OWN_KEYS}
    return Model(
        network,
        meta["classes"],
        preprocessing,
        architecture=meta["architecture"],
        test_time_flip=meta["test_time_flip"],
        info=info,
        trained_on=_trained_on(directory / TRAINED_ON),
        temperature=float(temperature),
    )


def _trained_on(file: Path) -> list[str]:
    try:
        return file.read_text().split() if file.exists() else []
    except (OSError, UnicodeDecodeError):
        return []  # unreadable: evaluate falls back on the run's split, if it has one


def _weights(file: Path, network: Classifier, classes: int) -> dict[str, torch.Tensor]:
    """The bundle's weights, checked against the network its description builds."""
    if not file.exists():
        raise HeadstartError(f"{file}: missing (the bundle has no weights)")
    try:
        weights = load_file(file)
    except Exception as error:  # safetensors raises its own error type for any bad file
        raise HeadstartError(f"{file}: not a readable safetensors file ({error})") from None
    expected = network.state_dict()
    absent = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = sorted(k for k in set(expected) & set(weights) if weights[k].shape != expected[k].shape)
    if absent or unexpected or wrong:
        outputs = weights.get("head.weight", expected["head.weight"]).shape[0]
        what = (
            f"its head has {outputs} outputs for {classes} classes"
            if outputs != classes
            else f"{len(absent)} missing, {len(unexpected)} unexpected and {len(wrong)} "
            f"misshapen tensors, e.g. {(absent + unexpected + wrong)[0]}"
        )
        raise HeadstartError(f"{file}: the weights do not match the bundle's description ({what})")
    return weights


_OWN_KEYS = {
    "format",
    "headstart_version",
    "torch_version",
    "architecture",
    "classes",
    "preprocessing",
    "test_time_flip",
    "temperature",
    "num_features",
}
