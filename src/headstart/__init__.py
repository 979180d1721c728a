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
    from .bundle import Model, Prediction, load
    from .config import FitConfig
    from .recipe import FitResult, fit, resume

__all__ = [
    "FitConfig",
    "FitResult",
    "HeadstartError",
    "Model",
    "Prediction",
    "__version__",
    "audit",
    "check",
    "evaluate",
    "fit",
    "load",
    "lr_find",
    "push",
    "resume",
]

#: Where each public name lives.
_HOMES = {
    "FitConfig": "config",
    "FitResult": "recipe",
    "Model": "bundle",
    "Prediction": "bundle",
    "audit": "api",
    "check": "api",
    "evaluate": "api",
    "fit": "recipe",
    "load": "bundle",
    "lr_find": "api",
    "push": "publish",
    "resume": "recipe",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'headstart' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
