"""``headstart.load``: a model bundle, run by the runtime it asks for (see :mod:`headstart.bundle`).

Nothing heavy is imported here: PyTorch only for a PyTorch or TorchScript bundle, so that an
ONNX bundle loads and predicts where PyTorch is not installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .bundle import describe
from .prediction import Predictor

if TYPE_CHECKING:
    from .text.predictor import TextPredictor

__all__ = ["load"]


def load(bundle: str | Path) -> Predictor | TextPredictor:
    """Load a model bundle: the ``model`` folder of a run (``headstart fit``), or a folder
    that ``headstart export`` wrote (run by ONNX Runtime or TorchScript). A text model's
    ``predict`` takes strings."""
    description = describe(bundle)
    if description.modality == "text" and description.runtime == "pytorch":
        from .text.model import load_text_bundle

        return load_text_bundle(description)
    if description.modality == "text":
        from .text.exported import load_exported_text_bundle

        return load_exported_text_bundle(description)
    if description.task == "multi-label":
        from .tasks.multilabel.model import load_multilabel

        return load_multilabel(description)
    if description.task == "regression":
        from .tasks.regression.model import load_regressor

        return load_regressor(description)
    if description.runtime == "pytorch":
        from .torch_model import load_network_bundle

        return load_network_bundle(description)
    from .exported import load_exported_bundle

    return load_exported_bundle(description)
