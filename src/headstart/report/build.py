"""``headstart report RUN``: the run folder as one HTML page a person reads top to bottom.

Each section reads only the files it needs; when they are absent it says why in one line, and
when one is damaged it says that, and the other sections are still drawn.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ..errors import HeadstartError
from ..runfolder import CONFIG_JSON, PLAN, SUMMARY
from ..storage import write_atomically
from . import results, search, summary, training
from .folder import ReportedRun
from .html import Html, note, page
from .labels import LABEL_SECTIONS
from .regression import REGRESSION_SECTIONS
from .text import TEXT_SECTIONS

__all__ = ["SECTIONS", "build_report"]

#: (anchor, heading, how it is drawn), in the order a reader wants them: the result, then how
#: it was reached, then how far to trust it.
SECTIONS: list[tuple[str, str, Callable[[ReportedRun], Html]]] = [
    ("headline", "Headline", summary.headline),
    ("plan", "The plan and why", summary.plan),
    ("audit", "Data audit", summary.audit),
    ("checks", "Sanity checks", summary.checks),
    ("search", "Hyperparameter search", search.search),
    ("lr-find", "Learning-rate range test", training.lr_find),
    ("curves", "Training curves", training.curves),
    ("confusion", "Confusion matrix", results.confusion),
    ("per-class", "Scores per class", results.per_class),
    ("calibration", "Calibration", results.calibration),
    ("distillation", "Distillation: the student beside its teacher", results.distillation),
    ("adaptation", "Adaptation to the target images", results.adaptation),
    ("examples", "Mistakes and hard examples", results.examples),
    ("filters", "First-layer filters", training.filters),
    ("fixed-batch", "A fixed batch over the epochs", training.fixed_batch),
    ("scratch", "Transfer against training from scratch", training.compare_scratch),
]


#: The sections of a task other than one class an image, by the task's name.
TASK_SECTIONS = {"regression": REGRESSION_SECTIONS, "multi-label": LABEL_SECTIONS}


def build_report(run: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the run folder ``run`` to ``out`` (default ``<run>/report.html``).

    Reads only the run folder: the report can be rebuilt after the data has moved.
    """
    folder = ReportedRun(Path(run))
    if not folder.exists(SUMMARY) and not folder.exists(CONFIG_JSON):
        raise HeadstartError(f"{run} is not a run folder (no summary.json or config.json)")
    task = (folder.json(CONFIG_JSON) or {}).get("task", "classification")
    texts = (folder.json(SUMMARY) or folder.json(PLAN) or {}).get("modality") == "text"
    drawn = TASK_SECTIONS.get(task) or (TEXT_SECTIONS if texts else SECTIONS)
    sections = [(anchor, heading, _draw(draw, folder)) for anchor, heading, draw in drawn]
    built = time.strftime("%Y-%m-%d %H:%M")
    title = f"headstart report: {folder.path.resolve().name}"
    target = Path(out) if out is not None else folder.path / "report.html"
    html = page(title, summary.subtitle(folder, built), sections)
    return write_atomically(target, html.encode("utf-8"))


def _draw(draw: Callable[[ReportedRun], Html], folder: ReportedRun) -> Html:
    """One section; a damaged file spoils only its own section."""
    try:
        return draw(folder)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        return note(f"this section could not be drawn: {type(error).__name__}: {error}")
