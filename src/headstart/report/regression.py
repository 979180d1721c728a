"""The sections of a regression's report: errors in the target's units beside the mean's,
the plan, the audit of the numbers, the checks, the curves, the residuals, the largest errors.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..runfolder import AUDIT_JSON, DATASET, PREDICTIONS_CSV
from . import plots, summary, tasks
from .folder import ReportedRun, number
from .html import Html, bullets, figure, join, note, paragraph, table

__all__ = ["REGRESSION_SECTIONS"]

_SHOWN = 20  # rows of each table of examples


def scores_line(scores: dict) -> str:
    """A split's errors in words, beside predicting the training mean."""
    baseline = scores.get("mean_baseline") or {}
    return (
        f"MAE {number(scores.get('mae'))}, RMSE {number(scores.get('rmse'))}, R² "
        f"{number(scores.get('r2'))} on {scores.get('n', 0):,} images; predicting the training "
        f"mean ({number(baseline.get('value'))}): MAE {number(baseline.get('mae'))}, RMSE "
        f"{number(baseline.get('rmse'))}"
    )


def headline(run: ReportedRun) -> Html:
    dataset = run.json(DATASET) or {}
    counts = dataset.get("counts") or {}
    sizes = ", ".join(f"{counts[s]:,} {s}" for s in ("train", "val", "test") if counts.get(s))
    train = (dataset.get("targets") or {}).get("train") or {}
    target = (
        "target",
        f"{dataset.get('target', '–')}: from {number(train.get('min'))} to "
        f"{number(train.get('max'))}, mean {number(train.get('mean'))}, standard deviation "
        f"{number(train.get('std'))} (training images)",
    )
    return tasks.headline(run, sizes, target, scores_line, clean_score=("mae", "MAE"))


def plan(run: ReportedRun) -> Html:
    return tasks.plan(run, [("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R²")])


def audit(run: ReportedRun) -> Html:
    found = run.json(AUDIT_JSON)
    if found is None:
        return note("audit.json is missing: the fit stopped before its audit")
    parts = [bullets(found.get("findings") or ["nothing to report"])]
    spread = found.get("spread") or {}
    rows = [
        (
            tasks.SPLIT_NAMES.get(split, split),
            *(number(values.get(k)) for k in ("n", "min", "median", "mean", "std", "max")),
        )
        for split, values in spread.items()
        if values
    ]
    if rows:
        header = ["split", "images", "min", "median", "mean", "std", "max"]
        parts.append(table(header, rows, "lrrrrrr"))
    if found.get("outlying"):
        rows = [
            (o["path"], o["split"], number(o["target"]), number(o["robust_z"]))
            for o in found["outlying"][:_SHOWN]
        ]
        parts += [
            paragraph("Targets far from the rest:"),
            table(["image", "split", "target", "robust z"], rows, "llrr"),
        ]
    if found.get("copies"):
        rows = [
            (
                ", ".join(Path(p).name for p in c["paths"]),
                ", ".join(c["splits"]),
                number(c["targets"]),
            )
            for c in found["copies"][:_SHOWN]
        ]
        parts += [
            paragraph("Copies of one image (same content):"),
            table(["images", "splits", "targets"], rows, "lll"),
        ]
    return join(parts)


def curves(run: ReportedRun) -> Html:
    return tasks.curves(run, ("r2", "R²"), ("loo_r2", "leave-one-out R²"))


def _predictions(run: ReportedRun) -> list[dict] | None:
    if not run.exists(PREDICTIONS_CSV):
        return None
    with open(
        run / PREDICTIONS_CSV, newline="", encoding="utf-8", errors="surrogateescape"
    ) as file:
        return list(csv.DictReader(file))


def residuals(run: ReportedRun) -> Html:
    rows = _predictions(run)
    if rows is None:
        return note(f"{PREDICTIONS_CSV} is missing")
    by_split: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in dict.fromkeys(r["split"] for r in rows):
        mine = [r for r in rows if r["split"] == split]
        true = np.array([float(r["target"]) for r in mine])
        by_split[split] = (true, np.array([float(r["predicted"]) for r in mine]))
    if not by_split:
        return note("no held-out images to draw")
    target = (run.json(DATASET) or {}).get("target", "target")
    return figure(
        plots.residuals(by_split, target),
        "residuals",
        "points on the diagonal (left) and on zero (right) are exact; a slope or a funnel on the "
        "right is error that depends on the number",
    )


def largest_errors(run: ReportedRun) -> Html:
    rows = _predictions(run)
    if rows is None:
        return note(f"{PREDICTIONS_CSV} is missing")
    worst = sorted(rows, key=lambda r: -abs(float(r["error"])))[:_SHOWN]
    shown = [
        (
            tasks.SPLIT_NAMES.get(r["split"], r["split"]),
            r["path"],
            number(float(r["target"])),
            number(float(r["predicted"])),
            number(float(r["error"])),
        )
        for r in worst
    ]
    return join(
        [
            paragraph(f"The {len(shown)} held-out images predicted furthest from their number:"),
            table(["split", "image", "target", "predicted", "error"], shown, "llrrr"),
        ]
    )


REGRESSION_SECTIONS: list[tuple[str, str, Callable[[ReportedRun], Html]]] = [
    ("headline", "Headline", headline),
    ("plan", "The plan and why", plan),
    ("audit", "Data audit", audit),
    ("checks", "Sanity checks", summary.checks),
    ("curves", "Training curves", curves),
    ("residuals", "Residuals", residuals),
    ("errors", "Largest errors", largest_errors),
]
