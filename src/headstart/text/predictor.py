"""What every text classifier does with its logits, whatever runs its network: PyTorch
(:class:`~headstart.text.model.TextModel`) or ONNX Runtime
(:class:`~headstart.text.exported.ExportedTextModel`). Nothing here imports PyTorch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import HeadstartError
from ..prediction import Calibrated, Prediction, ranked

__all__ = ["TextPredictor"]


class TextPredictor(Calibrated):
    """A trained text classifier: ``predict`` labels, ``predict_proba`` probabilities.

    Subclasses give :meth:`text_logits`, the network's float32 logits of texts before the
    temperature, and say which encoder they read texts with.
    """

    modality = "text"
    runtime = "pytorch"

    def __init__(
        self,
        classes: Sequence[str],
        *,
        encoder_name: str,
        encoder_source: str,
        max_tokens: int,
        fine_tuned: bool = False,
        info: dict | None = None,
        trained_on: Iterable[str] = (),
        temperature: float = 1.0,
    ):
        self.classes = tuple(classes)
        self.encoder_name = encoder_name
        self.encoder_source = encoder_source  # "built-in", "folder", "hub" or "bundle"
        self.max_tokens = max_tokens  # tokens read from a text; the rest is cut
        self.fine_tuned = fine_tuned  # the encoder's weights are the bundle's own
        self.info = dict(info or {})
        self.trained_on = frozenset(trained_on)  # the SHA-256 of each training text
        self.temperature = temperature

    @property
    def encoder_shown(self) -> str:
        """The encoder as it may be shown to others: never a path of this machine."""
        if self.fine_tuned:
            return "fine-tuned, in the bundle"
        if self.encoder_source == "folder":
            return Path(self.encoder_name).name
        return self.encoder_name

    def text_logits(self, texts: list[str], *, quiet: bool = True) -> np.ndarray:
        """float32 ``(len(texts), n_classes)`` logits, before the temperature."""
        raise NotImplementedError

    def predict_proba(self, texts: str | Iterable[str], *, quiet: bool = True) -> np.ndarray:
        """Class probabilities, ``(n_texts, n_classes)``, columns in ``self.classes`` order."""
        texts = _texts(texts)
        if not texts:
            return np.empty((0, len(self.classes)), dtype=np.float32)
        logits = self.text_logits(texts, quiet=quiet) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def predict(
        self, texts: str | Iterable[str], *, top_k: int = 1, quiet: bool = True
    ) -> list[Prediction]:
        """The label of each text (one string is one text), with the ``top_k`` most likely."""
        return ranked(self.predict_proba(texts, quiet=quiet), self.classes, top_k)


def _texts(texts: str | Iterable[str]) -> list[str]:
    texts = [texts] if isinstance(texts, str) else list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise HeadstartError(f"a text model predicts strings; got {type(text).__name__}")
    return texts
