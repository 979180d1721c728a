"""A trained text classifier: a sentence encoder and a linear head, and its bundle on disk.

``headstart.load(run).predict(["a text", ...])`` works as it does for photos. A bundle holds
``headstart.json`` (``"modality": "text"``, the classes, the encoder, the calibration
temperature), the head's weights in ``model.safetensors`` and, when ``fit`` fine-tuned the
encoder, the encoder itself in ``encoder/`` (sentence-transformers' folder, safetensors
weights). An encoder that is not in the bundle (a probe's) is named, with the digest of its
weights: loading a bundle with other weights under that name is refused, never silently run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from .._version import __version__
from ..bundle import META, PYTORCH_FORMAT, TRAINED_ON, WEIGHTS, Description
from ..errors import HeadstartError
from ..storage import write_atomically, write_tensors
from .encoder import TextEncoder, weights_digest
from .predictor import TextPredictor

__all__ = ["ENCODER_FOLDER", "TextModel", "load_text_bundle", "save_text_model"]

#: Where a fine-tuned encoder lives in a bundle.
ENCODER_FOLDER = "encoder"


class TextModel(TextPredictor):
    """A trained text classifier whose encoder and head run in PyTorch."""

    def __init__(
        self,
        encoder: TextEncoder,
        head: torch.nn.Linear,
        classes: Sequence[str],
        *,
        fine_tuned: bool = False,
        info: dict | None = None,
        trained_on: Iterable[str] = (),
        temperature: float = 1.0,
    ):
        super().__init__(
            classes,
            encoder_name=encoder.name,
            encoder_source=encoder.source,
            max_tokens=encoder.max_tokens,
            fine_tuned=fine_tuned,
            info=info,
            trained_on=trained_on,
            temperature=temperature,
        )
        self.encoder = encoder
        self.head = head.eval()

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """The head's float32 logits of ``(N, dimension)`` embeddings, before the temperature."""
        with torch.inference_mode():
            return self.head(torch.from_numpy(np.ascontiguousarray(embeddings))).numpy()

    def text_logits(self, texts: list[str], *, quiet: bool = True) -> np.ndarray:
        return self.logits(self.encoder.encode(texts, quiet=quiet))


def save_text_model(model: TextModel, directory: str | Path) -> Path:
    """``model`` as a bundle in ``directory`` (see the module's docstring)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    encoder = model.encoder
    weights = encoder.identity()["weights"]
    if model.fine_tuned:
        encoder.model.save(str(directory / ENCODER_FOLDER), safe_serialization=True)
        weights = weights_digest(directory / ENCODER_FOLDER)
    state = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    write_tensors(state, directory / WEIGHTS)
    meta = {
        "format": PYTORCH_FORMAT,
        "modality": "text",
        "headstart_version": __version__,
        "torch_version": torch.__version__,
        "classes": list(model.classes),
        "encoder": {
            "name": ENCODER_FOLDER if model.fine_tuned else encoder.name,
            "from": "bundle" if model.fine_tuned else encoder.source,
            "weights": weights,
            "max_tokens": encoder.max_tokens,
        },
        "temperature": model.temperature,
        "num_features": int(model.head.in_features),
        **model.info,
    }
    write_atomically(directory / META, json.dumps(meta, indent=2).encode())
    if model.trained_on:
        lines = "".join(f"{key}\n" for key in sorted(model.trained_on))
        write_atomically(directory / TRAINED_ON, lines.encode())
    return directory


def load_text_bundle(description: Description, *, device: str = "cpu") -> TextModel:
    """The text model of a bundle's checked description."""
    meta, where = description.meta, description.directory / META
    recorded = meta["encoder"]
    if recorded.get("from") == "bundle":
        name = str(description.directory / ENCODER_FOLDER)
        if not Path(name).is_dir():
            raise HeadstartError(f"{name}: missing (the bundle's fine-tuned encoder)")
    else:
        name = recorded["name"]
    encoder = TextEncoder(name, device=device)
    found = encoder.identity()["weights"]
    if recorded.get("weights") and found != recorded["weights"]:
        raise HeadstartError(
            f"{where}: the model was trained on encoder {recorded['name']!r} with weights "
            f"{recorded['weights']}, but the one found at {encoder.location} has {found}: "
            "its predictions would be meaningless"
        )
    head = torch.nn.Linear(int(meta["num_features"]), len(meta["classes"]))
    file = description.directory / WEIGHTS
    try:
        weights = load_file(file)
    except Exception as error:  # safetensors raises its own error type for any bad file
        raise HeadstartError(f"{file}: not a readable safetensors file ({error})") from None
    expected = {k: v.shape for k, v in head.state_dict().items()}
    if {k: v.shape for k, v in weights.items()} != expected:
        raise HeadstartError(
            f"{file}: the weights do not match the bundle's description (a head of "
            f"{meta['num_features']} features for {len(meta['classes'])} classes)"
        )
    if head.in_features != encoder.dimension:
        raise HeadstartError(
            f"{where}: the head reads {head.in_features} features, the encoder gives "
            f"{encoder.dimension}"
        )
    head.load_state_dict(weights)
    return TextModel(
        encoder,
        head,
        meta["classes"],
        fine_tuned=recorded.get("from") == "bundle",
        info=description.info,
        trained_on=description.trained_on,
        temperature=description.temperature,
    )
