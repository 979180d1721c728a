"""The run report: one self-contained ``report.html`` from a run folder, and the records fit
keeps for it (every validation prediction, thumbnails of the images shown).

>>> from headstart.report import build_report
>>> build_report("runs/photos-1")                           # doctest: +SKIP
PosixPath('runs/photos-1/report.html')
"""

from .build import build_report
from .records import (
    SplitPredictions,
    examples_to_show,
    read_predictions,
    save_thumbnails,
    write_predictions,
)

__all__ = [
    "SplitPredictions",
    "build_report",
    "examples_to_show",
    "read_predictions",
    "save_thumbnails",
    "write_predictions",
]
