"""``headstart export`` for a text model: the encoder and the head as one ONNX network, the
encoder's tokenizer beside it, checked against the PyTorch model on real texts.

The network is what :class:`~headstart.text.model.TextModel` runs after tokenizing: the
sentence encoder's every module (the transformer, its pooling, its normalisation, any dense
layer), the linear head and the calibrated softmax. The tokenizer is the encoder's own fast
tokenizer, saved as ``tokenizer.json``, which cuts a text where the encoder cuts it: the
exported bundle runs with ONNX Runtime and ``tokenizers`` alone (see
:mod:`headstart.text.exported`). Texts of any length and batches of any size run, padded to
the longest text of their batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..bundle import RUNTIMES, TEXT_EXPORT_FORMAT, Description
from ..errors import HeadstartError
from ..onnx_export import PARITY_TOLERANCE, Parity, write_onnx
from ..runfolder import SUMMARY, RunFolder
from .exported import INPUTS, OUTPUTS, TOKENIZER, ExportedTextModel, load_exported_text_bundle
from .model import TextModel, load_text_bundle
from .scoring import read_run_texts

__all__ = ["PARITY_TEXTS", "TextExport"]

#: Texts the parity check predicts with both models, at most.
PARITY_TEXTS = 256


class TextExport:
    """A text model's encoder and head as one ONNX network, checked on texts."""

    unit = "texts"

    def __init__(
        self, source: Description, bundle: str | Path, format: str, texts: Sequence[str] | None
    ):
        if format != "onnx":
            raise HeadstartError(
                f"{source.directory} is a text model: it exports to ONNX (format='onnx'), not "
                f"{format}"
            )
        self.model = load_text_bundle(source)
        self.tokenizer = self.model.encoder.model.tokenizer
        if getattr(self.tokenizer, "backend_tokenizer", None) is None:
            raise HeadstartError(
                f"encoder {self.model.encoder_name!r} has no fast tokenizer (tokenizer.json): "
                "an export could not tokenize without transformers"
            )
        self.texts, self.labels, self.where = _parity_texts(bundle, source.directory, texts)
        # Two made-up texts beside them: one past the encoder's cut (validation texts are
        # often far shorter) and one in spaces, so that the check sees both tokenized.
        past_the_cut = " ".join([self.texts[0], "and so on"] * self.model.max_tokens)
        self.texts += [past_the_cut, f"  {self.texts[0]} \n"]
        self.where += ", and 2 made up: one past the cut, one in spaces"
        self.count = len(self.texts)

    def write(self, format: str, folder: Path) -> None:
        _write_network(self.model, self.tokenizer, folder / RUNTIMES[format])
        from tokenizers import Tokenizer, normalizers

        tokenizer = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())  # a copy
        tokenizer.enable_truncation(self.model.max_tokens)  # said in the file, for any runtime
        tokenizer.no_padding()
        if getattr(self.model.encoder.model[0], "do_lower_case", False):
            # sentence-transformers lowercases before its tokenizer: the export's must too.
            steps = [normalizers.Lowercase(), *filter(None, [tokenizer.normalizer])]
            tokenizer.normalizer = normalizers.Sequence(steps)
        tokenizer.save(str(folder / TOKENIZER))

    def description(self) -> dict:
        return {
            "format": TEXT_EXPORT_FORMAT,
            "tokenizer": {"file": TOKENIZER, "pad_id": int(self.tokenizer.pad_token_id or 0)},
            "graph": {
                "inputs": {
                    INPUTS[0]: f"int64 [batch, tokens], the texts as {TOKENIZER} tokenizes "
                    f"them, cut at {self.model.max_tokens} tokens, padded to the batch's longest",
                    INPUTS[1]: "int64 [batch, tokens], 1 for a text's tokens, 0 for padding",
                },
                "outputs": {
                    OUTPUTS[0]: "float32 [batch, classes], before the temperature",
                    OUTPUTS[1]: "float32 [batch, classes], softmax(logits / temperature)",
                },
                "encoder": "the sentence encoder's modules and the linear head, in the graph",
            },
        }

    def load(self, description: Description) -> ExportedTextModel:
        return load_exported_text_bundle(description)

    def compare(
        self, exported: ExportedTextModel, int8: bool
    ) -> tuple[Parity, tuple[float, float]]:
        started = time.perf_counter()
        reference = self.model.predict_proba(self.texts)
        middle = time.perf_counter()
        candidate = exported.predict_proba(self.texts)
        seconds = (middle - started, time.perf_counter() - middle)
        # What other runtimes read: the graph's own calibrated softmax, held to the same bar.
        graph = exported.graph_probabilities(self.texts)
        difference = np.abs(np.stack([candidate, graph]) - reference).max()  # NaN stays NaN
        accuracy = reference_accuracy = None
        if self.labels is not None:
            truth = np.array([self.model.classes.index(label) for label in self.labels])
            labelled = slice(0, len(truth))  # the made-up texts have no label
            accuracy = float((candidate[labelled].argmax(1) == truth).mean())
            reference_accuracy = float((reference[labelled].argmax(1) == truth).mean())
        parity = Parity(
            examples=len(self.texts),
            source=self.where,
            max_abs_difference=float(difference),
            labels_agree=int((reference.argmax(1) == candidate.argmax(1)).sum()),
            tolerance=None if int8 else PARITY_TOLERANCE,
            accuracy=accuracy,
            reference_accuracy=reference_accuracy,
            unit=self.unit,
        )
        return parity, seconds


class _PredictionGraph(torch.nn.Module):
    """What is exported: token ids and their mask in; the logits and the calibrated
    probabilities out."""

    def __init__(self, model: TextModel, token_types: bool):
        super().__init__()
        self.encoder = model.encoder.model
        self.head = model.head
        self.temperature = model.temperature
        self.token_types = token_types  # the encoder reads them: all 0 for a single text

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.token_types:
            features["token_type_ids"] = torch.zeros_like(input_ids)
        logits = self.head(self.encoder(features)["sentence_embedding"])
        return logits, (logits / self.temperature).softmax(-1)


def _write_network(model: TextModel, tokenizer, file: Path) -> None:
    token_types = "token_type_ids" in tokenizer.model_input_names
    example = tokenizer(["an example text", "another"], padding=True, return_tensors="pt")
    inputs = {name: example[name] for name in INPUTS}
    batch, tokens = torch.export.Dim("batch", min=1), torch.export.Dim("tokens", min=1)
    write_onnx(_PredictionGraph(model, token_types), inputs, OUTPUTS, {0: batch, 1: tokens}, file)


def _parity_texts(
    bundle: str | Path, directory: Path, given: Sequence[str] | None
) -> tuple[list[str], list[str] | None, str]:
    """The texts of the parity check, their labels where known, and where they came from."""
    if given:
        texts = ([given] if isinstance(given, str) else list(given))[:PARITY_TEXTS]
        if not all(isinstance(text, str) for text in texts):
            raise HeadstartError("the texts of the parity check must be strings")
        return texts, None, "the texts given"
    run = RunFolder.of_bundle(bundle) or RunFolder.of_bundle(directory)
    held_out = []
    if run is not None and run.data is not None and run.data.exists():
        held_out = [s for s in read_run_texts(run, run.data).samples if s.split == "val"]
    if not held_out:
        raise HeadstartError(
            f"{bundle}: no validation texts to check the export against (a bundle away from "
            "its run, or its data moved): pass some with --texts"
        )
    chosen = held_out[:PARITY_TEXTS]
    where = "the run's validation texts"
    if (run.json(SUMMARY) or {}).get("refit"):
        where += ", trained on when the run was fitted again with them"
    return [s.text for s in chosen], [s.label for s in chosen], where
