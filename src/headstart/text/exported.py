"""A text bundle exported by ``headstart export``: run by ONNX Runtime and the ``tokenizers``
library, without PyTorch, transformers or sentence-transformers.

The bundle holds the encoder and the head as one network, ``model.onnx`` (``input_ids`` and
``attention_mask`` in, int64 ``[batch, tokens]``; ``logits`` and the calibrated
``probabilities`` out), and the encoder's own tokenizer, ``tokenizer.json``, which cuts a text
where the encoder cuts it. headstart's prediction reads ``logits`` and applies the
temperature itself, so that ``--no-calibration`` works on an export as on the original.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..bundle import Description
from ..console import progress_bar
from ..errors import HeadstartError, first_line
from ..exported import onnx_session
from .predictor import TextPredictor

__all__ = ["INPUTS", "OUTPUTS", "TOKENIZER", "ExportedTextModel", "load_exported_text_bundle"]

#: The exported network's inputs and outputs, by name, and the tokenizer's file.
INPUTS, OUTPUTS = ("input_ids", "attention_mask"), ("logits", "probabilities")
TOKENIZER = "tokenizer.json"
_BATCH = 32  # texts a network call; texts of similar length are batched together


class ExportedTextModel(TextPredictor):
    """A trained text classifier whose tokenizer runs in ``tokenizers`` and network in ONNX
    Runtime."""

    runtime = "onnx"

    def __init__(
        self,
        network: Callable[[np.ndarray, np.ndarray, str], np.ndarray],
        tokenizer,  # tokenizers.Tokenizer, cutting at max_tokens, not padding
        pad_id: int,
        max_tokens: int,
        description: Description,
    ):
        encoder = description.meta["encoder"]
        super().__init__(
            description.classes,
            encoder_name=encoder["name"],
            encoder_source=encoder.get("from", "bundle"),
            max_tokens=max_tokens,
            fine_tuned=encoder.get("from") == "bundle",
            info=description.info,
            trained_on=description.trained_on,
            temperature=description.temperature,
        )
        self._network, self._tokenizer, self._pad_id = network, tokenizer, pad_id

    def text_logits(self, texts: list[str], *, quiet: bool = True) -> np.ndarray:
        return self._rows(texts, OUTPUTS[0], quiet)

    def graph_probabilities(self, texts: list[str]) -> np.ndarray:
        """The network's own ``probabilities`` output: the calibrated softmax computed inside
        the graph, as runtimes other than headstart read it."""
        return self._rows(texts, OUTPUTS[1], quiet=True)

    def _rows(self, texts: list[str], output: str, quiet: bool) -> np.ndarray:
        stripped = [text.strip() for text in texts]  # as TextEncoder.encode reads them
        tokens = [encoding.ids for encoding in self._tokenizer.encode_batch(stripped)]
        order = np.argsort([len(ids) for ids in tokens], kind="stable")  # little padding
        rows: list[np.ndarray] = [np.empty(0)] * len(texts)
        with progress_bar("predicting texts", len(texts), quiet=quiet) as advance:
            for start in range(0, len(texts), _BATCH):
                batch = order[start : start + _BATCH]
                ids, mask = self._padded([tokens[i] for i in batch])
                for i, row in zip(batch, self._network(ids, mask, output), strict=True):
                    rows[i] = row
                advance(len(batch))
        return np.stack(rows)

    def _padded(self, tokens: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(ids) for ids in tokens)
        ids = np.full((len(tokens), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(tokens), width), dtype=np.int64)
        for row, found in enumerate(tokens):
            ids[row, : len(found)] = found
            mask[row, : len(found)] = 1
        return ids, mask


def load_exported_text_bundle(description: Description) -> ExportedTextModel:
    """The text model of an exported bundle's checked description."""
    if description.runtime != "onnx":
        raise HeadstartError(
            f"{description.directory}: a text model is exported to ONNX only, not "
            f"{description.runtime}"
        )
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise HeadstartError(
            f"{description.directory} is an ONNX text bundle: it runs with ONNX Runtime and "
            "tokenizers (pip install onnxruntime tokenizers)"
        ) from None
    directory, file = description.directory, description.network_file
    settings = description.meta.get("tokenizer")
    max_tokens = description.meta["encoder"].get("max_tokens")
    if not isinstance(settings, dict) or not _count(settings.get("pad_id"), minimum=0):
        raise HeadstartError(f"{directory}: not a valid text export (tokenizer.pad_id)")
    if not _count(max_tokens, minimum=1):
        raise HeadstartError(f"{directory}: not a valid text export (encoder.max_tokens)")
    try:
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER))
    except Exception as error:  # tokenizers raises its own Exception subclass for any bad file
        raise HeadstartError(
            f"{directory / TOKENIZER}: not a readable tokenizer ({first_line(error)})"
        ) from None
    if settings["pad_id"] >= tokenizer.get_vocab_size():
        raise HeadstartError(
            f"{directory}: not a valid text export (tokenizer.pad_id {settings['pad_id']} is "
            f"beyond the tokenizer's {tokenizer.get_vocab_size()} tokens)"
        )
    tokenizer.no_padding()  # batches are padded to their own longest text
    tokenizer.enable_truncation(max_tokens)
    session = onnx_session(file, directory, needs="tokenizers")
    inputs, outputs = session.get_inputs(), {o.name: o for o in session.get_outputs()}
    if (
        tuple(i.name for i in inputs) != INPUTS
        or any(i.type != "tensor(int64)" for i in inputs)
        or OUTPUTS[0] not in outputs
        or outputs[OUTPUTS[0]].shape[-1] != len(description.classes)
    ):
        found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        raise HeadstartError(
            f"{file}: does not match the bundle's description (expected inputs "
            f"{' and '.join(INPUTS)}, int64 [batch, tokens], and {len(description.classes)} "
            f"logits; found {found})"
        )

    def network(ids: np.ndarray, mask: np.ndarray, output: str) -> np.ndarray:
        try:
            return session.run([output], {INPUTS[0]: ids, INPUTS[1]: mask})[0]
        except Exception as error:  # onnxruntime's own types: a tokenizer of another model
            raise HeadstartError(
                f"{file}: the network cannot run the tokenizer's ids ({first_line(error)}); "
                f"is {TOKENIZER} the encoder's own?"
            ) from None

    return ExportedTextModel(network, tokenizer, settings["pad_id"], max_tokens, description)


def _count(value: object, *, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
