"""``headstart.load``: a model bundle, run by the runtime it asks for (see :mod:`headstart.bundle`).

Nothing heavy is imported here: PyTorch only for a PyTorch or TorchScript bundle, so that an
ONNX bundle loads and predicts where PyTorch is not installed.
"""

from __future__ import annotations

from pathlib import Path

from .bundle import describe
from .prediction import Predictor

__all__ = ["load"]


def load(bundle: str | Path) -> Predictor:
    """Load a model bundle: the ``model`` folder of a run (``headstart fit``), or a folder
    that ``headstart export`` wrote (run by ONNX Runtime or TorchScript)."""
    description = describe(bundle)
    if description.runtime == "pytorch":
        from .torch_model import load_network_bundle

        return load_network_bundle(description)
    from .exported import load_exported_bundle

    return load_exported_bundle(description)
