"""headstart: a strong image classifier from a small labelled dataset, by transfer learning.

>>> import headstart
>>> result = headstart.fit("photos/")                      # doctest: +SKIP
>>> model = headstart.load(result.run_dir / "model")        # doctest: +SKIP
>>> model.predict("new.jpg")[0].label                       # doctest: +SKIP
"""

__version__ = "0.1.0"

from .bundle import Model, Prediction, load
from .errors import HeadstartError
from .fit import FitConfig, FitResult, fit

__all__ = [
    "FitConfig",
    "FitResult",
    "HeadstartError",
    "Model",
    "Prediction",
    "__version__",
    "fit",
    "load",
]
