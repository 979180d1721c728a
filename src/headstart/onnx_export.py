"""What every export shares, images and texts alike: writing a network to ONNX with PyTorch's
exporter, quantising it to 8 bits, and the record of how it predicts against PyTorch
(:class:`Parity`), which decides whether it is kept (see :mod:`headstart.exporting`)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .errors import HeadstartError

__all__ = ["OPSET", "PARITY_TOLERANCE", "Parity", "parity_line", "quantise", "write_onnx"]

#: The largest difference of probabilities an export may show against PyTorch.
PARITY_TOLERANCE = 1e-4
#: ONNX operator set: one that ONNX Runtime releases of the last two years all run.
OPSET = 18


@dataclass(frozen=True)
class Parity:
    """How an export's predictions compare with the PyTorch model's on the same inputs."""

    examples: int  # images or texts, as ``unit`` says
    source: str  # where they came from ("the run's validation images", "the texts given" ...)
    max_abs_difference: float  # of probabilities
    labels_agree: int  # inputs given the same label by both
    tolerance: float | None  # None: not held to one (int8)
    accuracy: float | None = None  # of the export, where the inputs' labels are known
    reference_accuracy: float | None = None  # of the PyTorch model, on the same inputs
    unit: str = "images"

    def as_dict(self) -> dict:
        """As the bundle stores it: ``{"images": 40, ...}`` or ``{"texts": 40, ...}``."""
        fields = asdict(self)
        del fields["unit"]
        return {self.unit: fields.pop("examples"), **fields}


def parity_line(parity: Parity) -> str:
    line = (
        f"probabilities within {parity.max_abs_difference:.2g} of PyTorch's on "
        f"{parity.examples} {parity.unit} ({parity.source}), the same label on "
        f"{parity.labels_agree}"
    )
    if parity.accuracy is not None and parity.tolerance is None:
        line += (
            f"; accuracy {parity.accuracy:.1%} against PyTorch's {parity.reference_accuracy:.1%}"
        )
    return line


def write_onnx(
    graph: torch.nn.Module,
    example: dict[str, torch.Tensor],
    outputs: tuple[str, ...],
    dynamic: dict[int, torch.export.Dim],
    file: Path,
) -> None:
    """``graph`` as one ONNX file (weights inside): its inputs named and shaped as in
    ``example``, every input's axes ``dynamic`` (by position: ``{0: batch}``)."""
    try:
        import onnxscript  # noqa: F401 -- PyTorch's ONNX exporter needs it, and says so late
    except ImportError:
        raise HeadstartError(
            "exporting to ONNX needs the onnx extra: pip install 'headstart[onnx]'"
        ) from None
    with warnings.catch_warnings():
        # Inputs sharing their axes (texts' ids and mask): the exporter keeps one name each.
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        program = torch.onnx.export(
            graph.eval(),
            tuple(example.values()),
            dynamo=True,
            input_names=list(example),
            output_names=list(outputs),
            dynamic_shapes=tuple(dynamic for _ in example),
            opset_version=OPSET,
            verbose=False,
        )
    program.save(str(file), external_data=False)


def quantise(file: Path) -> None:
    """Weights to 8 bits, activations quantised on the fly (onnxruntime's dynamic
    quantisation). Measured on EfficientNet-Lite0: 3.3x smaller (4.4 against 14.6 MB), the
    same test accuracy on hand signs, but 5x slower on a CPU (its ConvInteger kernels). Its
    advice to pre-process the graph first was measured too: larger (7.0 MB), no faster. On
    all-MiniLM-L6-v2 with a head (MatMulInteger): 3.8x smaller (23 against 88 MB), 494 of
    TREC's 500 test labels unchanged, 1.0x to 1.2x the float export's speed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_file = file.with_suffix(".float.onnx")
    file.rename(float_file)
    logging.disable(logging.WARNING)  # that advice, printed on every call
    try:
        quantize_dynamic(float_file, file, weight_type=QuantType.QUInt8)
    finally:
        logging.disable(logging.NOTSET)
    float_file.unlink()
