"""headstart: a strong image classifier from a small labelled dataset, by transfer learning.

>>> import headstart
>>> result = headstart.fit("photos/")                      # doctest: +SKIP
>>> model = headstart.load(result.run_dir)                  # doctest: +SKIP
>>> model.predict("new.jpg")[0].label                       # doctest: +SKIP

The names below are imported when first used, so ``import headstart`` (and ``headstart
--help``) does not pay for PyTorch until a function needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import HeadstartError

if TYPE_CHECKING:
    from .api import audit, check, evaluate, lr_find
    from .config import FitConfig
    from .exporting import export
    from .from_runs import distill, resume
    from .loading import load
    from .prediction import Prediction, Predictor
    from .ranking import rank
    from .recipe import fit
    from .result import FitResult
    from .tasks.regression.model import Regressor
    from .torch_model import Model
    from .tuning import tune

__all__ = [
    "FitConfig",
    "FitResult",
    "HeadstartError",
    "Model",
    "Prediction",
    "Predictor",
    "Regressor",
    "__version__",
    "audit",
    "check",
    "distill",
    "evaluate",
    "export",
    "fit",
    "load",
    "lr_find",
    "push",
    "rank",
    "resume",
    "tune",
]

#: Where each public name lives.
_HOMES = {
    "FitConfig": "config",
    "FitResult": "result",
    "Model": "torch_model",
    "Prediction": "prediction",
    "Predictor": "prediction",
    "Regressor": "tasks.regression.model",
    "audit": "api",
    "check": "api",
    "distill": "from_runs",
    "evaluate": "api",
    "export": "exporting",
    "fit": "recipe",
    "load": "loading",
    "lr_find": "api",
    "push": "publish",
    "rank": "ranking",
    "resume": "from_runs",
    "tune": "tuning",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'headstart' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
