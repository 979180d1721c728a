"""A bundle exported by ``headstart export``, run by ONNX Runtime (no PyTorch needed) or by
TorchScript.

The exported network takes what :class:`~headstart.preprocessing.ImageReader` makes (uint8
``(N, C, H, W)`` crops, any batch size; an image's test-time crops are rows of their own) and
returns ``logits`` (averaged over the views, before the temperature) and ``probabilities``
(the calibrated softmax, for runtimes other than headstart). headstart's own prediction reads
``logits`` and averages an image's crops, so that ``--no-calibration`` works on an export as
on the original, with the same NumPy code.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from .bundle import Description
from .errors import HeadstartError, first_line
from .prediction import Predictor
from .preprocessing import CROPS, ImageReader

__all__ = ["INPUT", "OUTPUTS", "ExportedModel", "load_exported_bundle", "onnx_session"]

#: The exported network's input and outputs, by name.
INPUT, OUTPUTS = "pixels", ("logits", "probabilities")


class ExportedModel(Predictor):
    """A trained classifier whose network runs in ONNX Runtime or TorchScript."""

    def __init__(
        self, network: Callable[[np.ndarray, str], np.ndarray], description: Description
    ) -> None:
        super().__init__(
            description.classes,
            ImageReader(
                description.preprocessing,
                description.test_time_flip,
                description.test_time_crops,
            ),
            architecture=description.meta["architecture"],
            info=description.info,
            trained_on=description.trained_on,
            temperature=description.temperature,
        )
        self.runtime = description.runtime
        self._network = network

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self._network(np.ascontiguousarray(batch), OUTPUTS[0])

    def graph_probabilities(self, pixels: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """The network's own ``probabilities`` output for decoded pixels: the calibrated
        softmax computed inside the graph, as runtimes other than headstart read it, of the
        centre crop (whatever crops the bundle averages)."""
        batches = replace(self.inputs, test_time_crops=CROPS[:1]).batches(pixels, batch_size)
        return np.concatenate([self._network(np.ascontiguousarray(b), OUTPUTS[1]) for b in batches])


def load_exported_bundle(description: Description) -> ExportedModel:
    """The model of an exported bundle's checked description."""
    if description.runtime == "onnx":
        network = _onnx_network(description)
    elif description.runtime == "torchscript":
        network = _torchscript_network(description)
    else:
        raise HeadstartError(f"{description.directory}: not an exported bundle")
    return ExportedModel(network, description)


def _onnx_network(description: Description) -> Callable[[np.ndarray, str], np.ndarray]:
    file = description.network_file
    session = onnx_session(file, description.directory)
    inputs, outputs = session.get_inputs(), {o.name: o for o in session.get_outputs()}
    expected = [description.preprocessing.input_size[0], *description.preprocessing.input_size[1:]]
    if (
        [i.name for i in inputs] != [INPUT]
        or inputs[0].type != "tensor(uint8)"
        or list(inputs[0].shape[1:]) != expected
        or OUTPUTS[0] not in outputs
        or outputs[OUTPUTS[0]].shape[-1] != len(description.classes)
    ):
        found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        raise HeadstartError(
            f"{file}: does not match the bundle's description (expected input {INPUT} uint8 "
            f"[batch, {', '.join(map(str, expected))}] and {len(description.classes)} logits; "
            f"found {found})"
        )

    def network(batch: np.ndarray, output: str) -> np.ndarray:
        return session.run([output], {INPUT: batch})[0]

    return network


def onnx_session(file: Path, bundle: Path, *, needs: str = ""):
    """An ONNX Runtime session of ``file`` on the CPU, or a one-line error that says what to
    install (``onnxruntime``, and the packages in ``needs``) or what is wrong with the file."""
    try:
        import onnxruntime
    except ImportError:
        raise HeadstartError(
            f"{bundle} is an ONNX bundle: it runs with ONNX Runtime (pip install onnxruntime"
            f"{' ' + needs if needs else ''})"
        ) from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are about graph optimisations
    try:
        return onnxruntime.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own types for any unreadable model
        raise HeadstartError(f"{file}: not a readable ONNX model ({first_line(error)})") from None


def _torchscript_network(description: Description) -> Callable[[np.ndarray, str], np.ndarray]:
    import torch  # a TorchScript bundle runs in PyTorch, without headstart's network code

    file = description.network_file
    try:
        with warnings.catch_warnings():  # deprecated in PyTorch, still what some runtimes take
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(file), map_location="cpu").eval()
    except Exception as error:  # TorchScript raises RuntimeError and others for a bad archive
        raise HeadstartError(
            f"{file}: not a readable TorchScript archive ({first_line(error)})"
        ) from None

    @torch.inference_mode()
    def network(batch: np.ndarray, output: str) -> np.ndarray:
        return module(torch.from_numpy(batch))[OUTPUTS.index(output)].numpy()

    return network
