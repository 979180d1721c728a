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
bundle (``parity``) and must stay within :data:`PARITY_TOLERANCE`, or the export fails and
leaves nothing behind. An int8 export (ONNX Runtime's dynamic quantisation) is not held to
the tolerance: its cost in accuracy and agreement is measured and stored instead.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ._version import __version__
from .bundle import EXPORTED_FORMAT, META, RUNTIMES, TRAINED_ON, bundle_format, describe
from .console import say
from .data.images import UnreadableImage
from .data.sources import image_files
from .errors import HeadstartError
from .exported import INPUT, OUTPUTS, ExportedModel, load_exported_bundle
from .inputs import view
from .preprocessing import CROPS
from .report.card import CARD
from .runfolder import RunFolder
from .storage import write_atomically
from .torch_model import Model, load_network_bundle

__all__ = ["FORMATS", "PARITY_IMAGES", "PARITY_TOLERANCE", "Parity", "export"]

FORMATS = ("onnx", "torchscript")
#: The largest difference of probabilities an export may show against PyTorch.
PARITY_TOLERANCE = 1e-4
#: Images the parity check predicts with both models, at most.
PARITY_IMAGES = 256
#: ONNX operator set: one that ONNX Runtime releases of the last two years all run.
OPSET = 18


@dataclass(frozen=True)
class Parity:
    """How an export's predictions compare with the PyTorch model's on the same images."""

    images: int
    source: str  # where the images came from ("validation split of runs/x", a folder ...)
    max_abs_difference: float  # of probabilities
    labels_agree: int  # images given the same label by both
    tolerance: float | None  # None: not held to one (int8)
    accuracy: float | None = None  # of the export, where the images' labels are known
    reference_accuracy: float | None = None  # of the PyTorch model, on the same images


def export(
    bundle: str | Path,
    format: str = "onnx",
    *,
    out: str | Path | None = None,
    images: Sequence[str | Path] | None = None,
    int8: bool = False,
    quiet: bool = False,
) -> Path:
    """Export the model at ``bundle`` (a run folder or a bundle) to ``format`` ("onnx" or
    "torchscript"); the new bundle's folder.

    ``out``: where to write it (default: beside the model, ``RUN/model-onnx``). ``images``:
    image files or folders for the parity check (default: the run's validation images).
    ``int8``: quantise the ONNX network's weights to 8 bits (smaller, often faster; its cost
    in accuracy is measured, not bounded). Loaded with :func:`headstart.load`.
    """
    if format not in FORMATS:
        raise HeadstartError(f"format={format!r}; expected one of {', '.join(FORMATS)}")
    if int8 and format != "onnx":
        raise HeadstartError("int8 quantisation is for ONNX exports (format='onnx')")
    source = describe(bundle)
    if source.modality != "image":
        raise HeadstartError(
            f"{source.directory} is a text model: export is for image models (a text bundle "
            "is already safetensors, loaded by headstart.load)"
        )
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
    model = load_network_bundle(source)
    paths, labels, where = _parity_images(bundle, source.directory, images)
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        network_file = work / RUNTIMES[format]
        say(quiet, f"export: writing {format} ...")
        _write_network(model, format, network_file)
        if int8:
            _quantise(network_file)
        meta = {
            **source.meta,
            "format": bundle_format(EXPORTED_FORMAT, model.test_time_crops),
            "runtime": format,
            "headstart_version": __version__,
            "graph": _graph_description(model),
        }
        write_atomically(work / META, json.dumps(meta, indent=2).encode())
        if (source.directory / TRAINED_ON).exists():
            shutil.copy2(source.directory / TRAINED_ON, work / TRAINED_ON)
        say(quiet, f"export: checking its predictions against PyTorch's on {len(paths)} images ...")
        exported = load_exported_bundle(describe(work))
        parity, seconds = _parity(model, exported, paths, labels, where, int8)
        if parity.tolerance is not None and not parity.max_abs_difference <= parity.tolerance:
            raise HeadstartError(
                f"the {format} export does not predict as the PyTorch model does: probabilities "
                f"differ by up to {parity.max_abs_difference:.2g} on {parity.images} images "
                f"(tolerance {parity.tolerance:g}); nothing was kept"
            )
        meta["parity"] = asdict(parity)
        write_atomically(work / META, json.dumps(meta, indent=2).encode())
        _write_card(source.directory, work, format, int8, parity)
        if target.exists():
            shutil.rmtree(target)  # an earlier export (see _check_target): this one replaces it
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(
        quiet,
        f"export: {_parity_line(parity)}; predicting them took {seconds[1]:.1f} s against "
        f"PyTorch's {seconds[0]:.1f} s; the export took {time.perf_counter() - started:.0f} s",
    )
    return target


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
    try:
        import onnxscript  # noqa: F401 -- PyTorch's ONNX exporter needs it, and says so late
    except ImportError:
        raise HeadstartError(
            "exporting to ONNX needs the onnx extra: pip install 'headstart[onnx]'"
        ) from None
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        graph,
        (example,),
        dynamo=True,
        input_names=[INPUT],
        output_names=list(OUTPUTS),
        dynamic_shapes=({0: batch},),
        opset_version=OPSET,
        verbose=False,
    )
    program.save(str(file), external_data=False)


def _quantise(file: Path) -> None:
    """Weights to 8 bits, activations quantised on the fly (onnxruntime's dynamic
    quantisation). Measured on EfficientNet-Lite0: 3.3x smaller (4.4 against 14.6 MB), the
    same test accuracy on hand signs, but 5x slower on a CPU (its ConvInteger kernels). Its
    advice to pre-process the graph first was measured too: larger (7.0 MB), no faster."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_file = file.with_suffix(".float.onnx")
    file.rename(float_file)
    logging.disable(logging.WARNING)  # that advice, printed on every call
    try:
        quantize_dynamic(float_file, file, weight_type=QuantType.QUInt8)
    finally:
        logging.disable(logging.NOTSET)
    float_file.unlink()


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
    difference = max(np.abs(reference - candidate).max(), graph_difference)
    same = int((reference.argmax(1) == candidate.argmax(1)).sum())
    accuracy = reference_accuracy = None
    if labels is not None:
        truth = np.array([model.classes.index(labels[i]) for i in kept])
        accuracy = float((candidate.argmax(1) == truth).mean())
        reference_accuracy = float((reference.argmax(1) == truth).mean())
    parity = Parity(
        images=len(pixels),
        source=where,
        max_abs_difference=float(difference),
        labels_agree=same,
        tolerance=None if int8 else PARITY_TOLERANCE,
        accuracy=accuracy,
        reference_accuracy=reference_accuracy,
    )
    return parity, seconds


def _parity_line(parity: Parity) -> str:
    line = (
        f"probabilities within {parity.max_abs_difference:.2g} of PyTorch's on "
        f"{parity.images} images ({parity.source}), the same label on {parity.labels_agree}"
    )
    if parity.accuracy is not None and parity.tolerance is None:
        line += (
            f"; accuracy {parity.accuracy:.1%} against PyTorch's {parity.reference_accuracy:.1%}"
        )
    return line


def _write_card(source: Path, work: Path, format: str, int8: bool, parity: Parity) -> None:
    """The model's card, with a section on this export."""
    card = (source / CARD).read_text() if (source / CARD).exists() else ""
    runtime = "ONNX Runtime, without PyTorch" if format == "onnx" else "TorchScript (PyTorch)"
    section = (
        f"\n## Export\n\nThis bundle holds the network as {RUNTIMES[format]}"
        + (" with weights quantised to 8 bits" if int8 else "")
        + f", run by {runtime}: `headstart.load(folder).predict(images)` or "
        f"`headstart predict folder images/`. Checked before it was kept: "
        f"{_parity_line(parity)}.\n"
    )
    write_atomically(work / CARD, (card + section).encode())
