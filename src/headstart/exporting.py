"""``headstart export``: a trained model as an ONNX or TorchScript bundle, checked against the
PyTorch model before it is kept.

The exported network is the whole prediction path after decoding, resizing and cropping:
normalisation (the first module of every :class:`~headstart.classifier.Classifier`), the
views whose logits are averaged (the mirror image under test-time flip), and the calibrated
softmax. Decoding, resizing and the centre crop are written down in the bundle's
``headstart.json`` (``preprocessing``) and done by :class:`~headstart.preprocessing.
ImageReader`, the code the PyTorch model uses, in NumPy and Pillow alone.

Before the new bundle takes its place, both models predict real images (the run's validation
images, or those given): the largest difference of probabilities is printed, stored in the
bundle (``parity``) and must stay within :data:`~headstart.onnx_export.PARITY_TOLERANCE`, or
the export fails and leaves nothing behind. An int8 export (ONNX Runtime's dynamic
quantisation) is not held to the tolerance: its cost in accuracy and agreement is measured and
stored instead.

A text model is exported the same way, to ONNX (see :mod:`headstart.text.exporting`): the
encoder and the head are one network, the tokenizer rides beside it, and the parity check
predicts the run's validation texts.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ._version import __version__
from .bundle import (
    EXPORTED_FORMAT,
    META,
    RUNTIMES,
    TRAINED_ON,
    Description,
    bundle_format,
    describe,
)
from .console import say
from .data.images import UnreadableImage
from .data.sources import image_files
from .errors import HeadstartError
from .exported import INPUT, OUTPUTS, ExportedModel, load_exported_bundle
from .inputs import view
from .onnx_export import PARITY_TOLERANCE, Parity, parity_line, quantise, write_onnx
from .preprocessing import CROPS
from .report.card import CARD
from .runfolder import RunFolder
from .storage import write_atomically
from .torch_model import Model, load_network_bundle

__all__ = ["FORMATS", "PARITY_IMAGES", "ImageExport", "Subject", "export"]

FORMATS = ("onnx", "torchscript")
#: Images the parity check predicts with both models, at most.
PARITY_IMAGES = 256


def export(
    bundle: str | Path,
    format: str = "onnx",
    *,
    out: str | Path | None = None,
    images: Sequence[str | Path] | None = None,
    texts: Sequence[str] | None = None,
    int8: bool = False,
    quiet: bool = False,
) -> Path:
    """Export the model at ``bundle`` (a run folder or a bundle) to ``format`` ("onnx" or
    "torchscript"; a text model: "onnx"); the new bundle's folder.

    ``out``: where to write it (default: beside the model, ``RUN/model-onnx``). ``images``
    (an image model) or ``texts`` (a text model): what the parity check predicts (default:
    the run's validation images or texts). ``int8``: quantise the ONNX network's weights to
    8 bits (smaller, often faster; its cost in accuracy is measured, not bounded). Loaded
    with :func:`headstart.load`.
    """
    if format not in FORMATS:
        raise HeadstartError(f"format={format!r}; expected one of {', '.join(FORMATS)}")
    if int8 and format != "onnx":
        raise HeadstartError("int8 quantisation is for ONNX exports (format='onnx')")
    source = describe(bundle)
    if source.task != "classification":
        raise HeadstartError(
            f"{source.directory} is a {source.task} model: export is built for classifiers so "
            "far (its bundle is safetensors, loaded by headstart.load)"
        )
    if source.runtime != "pytorch":
        raise HeadstartError(
            f"{source.directory} is already an export ({source.runtime}); export the run's "
            "model/ folder instead"
        )
    name = f"{source.directory.resolve().name}-{format}" + ("-int8" if int8 else "")
    target = Path(out) if out is not None else source.directory.resolve().with_name(name)
    _check_target(target)
    subject = _subject(source, bundle, format, images, texts)
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        say(quiet, f"export: writing {format} ...")
        subject.write(format, work)
        if int8:
            quantise(work / RUNTIMES[format])
        meta = {
            **source.meta,
            "runtime": format,
            "headstart_version": __version__,
            **subject.description(),
        }
        write_atomically(work / META, json.dumps(meta, indent=2).encode())
        if (source.directory / TRAINED_ON).exists():
            shutil.copy2(source.directory / TRAINED_ON, work / TRAINED_ON)
        say(
            quiet,
            f"export: checking its predictions against PyTorch's on {subject.count} "
            f"{subject.unit} ...",
        )
        parity, seconds = subject.compare(subject.load(describe(work)), int8)
        if parity.tolerance is not None and not parity.max_abs_difference <= parity.tolerance:
            raise HeadstartError(
                f"the {format} export does not predict as the PyTorch model does: probabilities "
                f"differ by up to {parity.max_abs_difference:.2g} on {parity.examples} "
                f"{parity.unit} (tolerance {parity.tolerance:g}); nothing was kept"
            )
        meta["parity"] = parity.as_dict()
        write_atomically(work / META, json.dumps(meta, indent=2).encode())
        _write_card(source.directory, work, format, int8, parity)
        if target.exists():
            shutil.rmtree(target)  # an earlier export (see _check_target): this one replaces it
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(
        quiet,
        f"export: {parity_line(parity)}; predicting them took {seconds[1]:.1f} s against "
        f"PyTorch's {seconds[0]:.1f} s; the export took {time.perf_counter() - started:.0f} s",
    )
    return target


class Subject(Protocol):
    """What is exported, of one modality: the PyTorch model and what the parity check
    predicts with it (see :class:`ImageExport`, :class:`~headstart.text.exporting.
    TextExport`)."""

    unit: str  # what the parity check predicts: "images" or "texts"
    count: int  # how many

    def write(self, format: str, folder: Path) -> None:
        """The network (and anything it needs to run) into ``folder``."""

    def description(self) -> dict:
        """What the exported bundle's ``headstart.json`` says beyond the model's own."""

    def load(self, description: Description):
        """The exported bundle, loaded as :func:`headstart.load` loads it."""

    def compare(self, exported, int8: bool) -> tuple[Parity, tuple[float, float]]:
        """How ``exported`` predicts against PyTorch, and the seconds each took."""


def _subject(
    source: Description,
    bundle: str | Path,
    format: str,
    images: Sequence[str | Path] | None,
    texts: Sequence[str] | None,
) -> Subject:
    if source.modality == "text":
        if images:
            raise HeadstartError(f"{source.directory} is a text model: give --texts, not --images")
        from .text.exporting import TextExport

        return TextExport(source, bundle, format, texts)
    if texts:
        raise HeadstartError(f"{source.directory} is an image model: give --images, not --texts")
    return ImageExport(source, bundle, images)


class ImageExport:
    """An image model's network (see the module's docstring), checked on images."""

    unit = "images"

    def __init__(
        self, source: Description, bundle: str | Path, images: Sequence[str | Path] | None
    ):
        self.model = load_network_bundle(source)
        self.paths, self.labels, self.where = _parity_images(bundle, source.directory, images)
        self.count = len(self.paths)

    def write(self, format: str, folder: Path) -> None:
        _write_network(self.model, format, folder / RUNTIMES[format])

    def description(self) -> dict:
        return {
            "format": bundle_format(EXPORTED_FORMAT, self.model.test_time_crops),
            "graph": _graph_description(self.model),
        }

    def load(self, description: Description) -> ExportedModel:
        return load_exported_bundle(description)

    def compare(self, exported: ExportedModel, int8: bool) -> tuple[Parity, tuple[float, float]]:
        return _parity(self.model, exported, self.paths, self.labels, self.where, int8)


def _check_target(target: Path) -> None:
    """Refuse to write over anything but an earlier export: the new bundle replaces the
    folder it is written to."""
    if not target.exists():
        return
    try:
        found = describe(target)
        earlier = found.runtime != "pytorch" and found.directory == target
    except HeadstartError:
        earlier = False
    if not earlier:
        raise HeadstartError(
            f"{target} exists and is not an earlier export: choose another --out (an export "
            "replaces only an earlier export)"
        )


class _PredictionGraph(torch.nn.Module):
    """What is exported: uint8 crops in; the logits averaged over the views and the
    calibrated probabilities out."""

    def __init__(self, model: Model):
        super().__init__()
        self.network = model.network
        self.views = model.inputs.views
        self.temperature = model.temperature

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = sum(self.network(view(pixels, name)) for name in self.views) / len(self.views)
        return logits, (logits / self.temperature).softmax(-1)


def _write_network(model: Model, format: str, file: Path) -> None:
    graph = _PredictionGraph(model).eval()
    channels, height, width = model.preprocessing.input_size
    example = torch.zeros((2, channels, height, width), dtype=torch.uint8)
    if format == "torchscript":
        # PyTorch deprecates TorchScript (in favour of torch.export, which ONNX goes through);
        # it is written for the C++ and mobile runtimes that still load it, without the noise.
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.trace(graph, example, check_trace=False), str(file))
        return
    write_onnx(graph, {INPUT: example}, OUTPUTS, {0: torch.export.Dim("batch", min=1)}, file)


def _graph_description(model: Model) -> dict:
    channels, height, width = model.preprocessing.input_size
    return {
        "input": f"{INPUT}: uint8 [batch, {channels}, {height}, {width}], the centre crop of "
        "the image resized as 'preprocessing' says (shortest side to "
        f"{model.preprocessing.resize_size} px, {model.preprocessing.interpolation})",
        "outputs": {
            OUTPUTS[0]: "float32 [batch, classes], averaged over the views, before the temperature",
            OUTPUTS[1]: "float32 [batch, classes], softmax(logits / temperature)",
        },
        "views": list(model.inputs.views),
        "crops": list(model.test_time_crops),
        "averaging": "one input row per crop in 'crops' (as 'test_time_crops' in "
        "headstart.json cuts them); an image's logits are the mean of its crops' rows",
        "normalisation": "inside the graph (mean and std of 'preprocessing')",
    }


def _parity_images(
    bundle: str | Path, directory: Path, given: Sequence[str | Path] | None
) -> tuple[list[Path], list[str] | None, str]:
    """The images of the parity check, their labels where known, and where they came from."""
    if given:
        paths = image_files(given)
        return paths[:PARITY_IMAGES], None, "the images given"
    run = RunFolder.of_bundle(bundle) or RunFolder.of_bundle(directory)
    held_out = [(p, label) for p, label, split in run.splits if split == "val"] if run else []
    held_out = [(p, label) for p, label in held_out if p.exists()]
    if not held_out:
        raise HeadstartError(
            f"{bundle}: no validation images to check the export against (a bundle away from "
            "its run, or images moved): pass some with --images"
        )
    chosen = held_out[:PARITY_IMAGES]
    return (
        [p for p, _ in chosen],
        [label for _, label in chosen],
        "the run's validation images",
    )


def _parity(
    model: Model,
    exported: ExportedModel,
    paths: list[Path],
    labels: list[str] | None,
    where: str,
    int8: bool,
) -> tuple[Parity, tuple[float, float]]:
    """How ``exported`` compares with ``model`` on ``paths``, and the seconds each took to
    predict them (said, not stored: a bundle does not depend on the clock)."""
    decoder = model.inputs.decoder()
    pixels, kept = [], []
    for i, path in enumerate(paths):
        try:
            pixels.append(model.inputs.pixels(path, decoder))
            kept.append(i)
        except UnreadableImage:
            continue  # the parity check needs images, not every image
    if not pixels:
        raise HeadstartError(f"none of the parity images could be read ({where})")
    started = time.perf_counter()
    reference = model.probabilities(pixels)
    middle = time.perf_counter()
    candidate = exported.probabilities(pixels)
    seconds = (middle - started, time.perf_counter() - middle)
    # What other runtimes read: the graph's own calibrated softmax, held to the same bar (on
    # the centre crop: the graph sees one crop a row; averaging crops is the caller's step).
    graph = exported.graph_probabilities(pixels)
    graph_reference = copy.copy(model)
    graph_reference.inputs = model.inputs.with_crops(CROPS[:1])
    graph_difference = np.abs(graph_reference.probabilities(pixels) - graph).max()
    difference = np.max([np.abs(reference - candidate).max(), graph_difference])  # NaN: NaN
    same = int((reference.argmax(1) == candidate.argmax(1)).sum())
    accuracy = reference_accuracy = None
    if labels is not None:
        truth = np.array([model.classes.index(labels[i]) for i in kept])
        accuracy = float((candidate.argmax(1) == truth).mean())
        reference_accuracy = float((reference.argmax(1) == truth).mean())
    parity = Parity(
        examples=len(pixels),
        source=where,
        max_abs_difference=float(difference),
        labels_agree=same,
        tolerance=None if int8 else PARITY_TOLERANCE,
        accuracy=accuracy,
        reference_accuracy=reference_accuracy,
    )
    return parity, seconds


def _write_card(source: Path, work: Path, format: str, int8: bool, parity: Parity) -> None:
    """The model's card, with a section on this export."""
    card = (source / CARD).read_text() if (source / CARD).exists() else ""
    runtime = "ONNX Runtime, without PyTorch" if format == "onnx" else "TorchScript (PyTorch)"
    if parity.unit == "texts":
        runtime += " (its tokenizer, tokenizer.json, by the tokenizers library)"
        use = "`headstart.load(folder).predict(texts)` or `headstart predict folder texts.txt`"
    else:
        use = "`headstart.load(folder).predict(images)` or `headstart predict folder images/`"
    section = (
        f"\n## Export\n\nThis bundle holds the network as {RUNTIMES[format]}"
        + (" with weights quantised to 8 bits" if int8 else "")
        + f", run by {runtime}: {use}. Checked before it was kept: {parity_line(parity)}.\n"
    )
    write_atomically(work / CARD, (card + section).encode())
