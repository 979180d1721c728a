"""The sections of a multi-label report: mAP and F1 beside knowing only the labels'
frequencies, the plan, the labels' balance and co-occurrence, the checks, the curves, the
scores and thresholds of each label, and the images the model is most wrong about.
"""

from __future__ import annotations

import csv
from collections.abc import Callable

import numpy as np

from ..runfolder import AUDIT_JSON, DATASET, PREDICTIONS_CSV, SUMMARY
from ..tasks.multilabel.data import JOIN
from . import plots, summary, tasks
from .folder import ReportedRun, number, percent
from .html import Html, bullets, figure, join, note, paragraph, table

__all__ = ["LABEL_SECTIONS"]

_SHOWN = 20


def scores_line(scores: dict) -> str:
    baseline = scores.get("frequency_baseline") or {}
    return (
        f"mAP {number(scores.get('map'))}, micro-F1 {number(scores.get('micro_f1'))}, macro-F1 "
        f"{number(scores.get('macro_f1'))}, every label right on "
        f"{percent(scores.get('subset_accuracy'))} of {scores.get('n', 0):,} images; knowing "
        f"only the labels' frequencies: mAP {number(baseline.get('map'))}, macro-F1 "
        f"{number(baseline.get('macro_f1'))}"
    )


def headline(run: ReportedRun) -> Html:
    dataset = run.json(DATASET) or {}
    counts = dataset.get("counts") or {}
    sizes = ", ".join(
        f"{counts[s]['images']:,} {s}"
        for s in ("train", "val", "test")
        if (counts.get(s) or {}).get("images")
    )
    labels = ("labels", ", ".join(dataset.get("labels") or []) or "–")
    return tasks.headline(run, sizes, labels, scores_line, clean_score=("map", "mAP"))


def plan(run: ReportedRun) -> Html:
    return tasks.plan(run, [("map", "mAP"), ("micro_f1", "micro-F1"), ("macro_f1", "macro-F1")])


def audit(run: ReportedRun) -> Html:
    found = run.json(AUDIT_JSON)
    if found is None:
        return note("audit.json is missing: the fit stopped before its audit")
    labels = found.get("labels") or []
    counts = found.get("counts") or {}
    parts = [bullets(found.get("findings") or ["nothing to report"])]
    splits = [s for s in ("train", "val", "test") if (counts.get(s) or {}).get("images")]
    rows = [(label, *(number(counts[s].get(label)) for s in splits)) for label in labels]
    parts.append(
        table(
            ["label", *(f"{tasks.SPLIT_NAMES.get(s, s)} images" for s in splits)],
            rows,
            "l" + "r" * len(splits),
        )
    )
    together = found.get("cooccurrence")
    if together and labels:
        parts.append(
            figure(
                plots.confusion_matrix(
                    np.array(together), labels, "Training images with both labels"
                ),
                "label co-occurrence",
                "the diagonal: images with the label; elsewhere: images with both",
            )
        )
    return join(parts)


def curves(run: ReportedRun) -> Html:
    return tasks.curves(run, ("map", "mAP"), ("cv_map", "cross-validated mAP"))


def per_label(run: ReportedRun) -> Html:
    found = run.json(SUMMARY) or {}
    parts = []
    for split, scores in (found.get("scores") or {}).items():
        rows = [
            (
                label,
                number(row.get("ap")),
                percent(row.get("precision")),
                percent(row.get("recall")),
                number(row.get("f1")),
                number(row.get("threshold")),
                number(row.get("support")),
            )
            for label, row in (scores.get("per_label") or {}).items()
        ]
        header = ["label", "AP", "precision", "recall", "F1", "threshold", "images"]
        parts += [
            paragraph(f"{tasks.SPLIT_NAMES.get(split, split).capitalize()}:"),
            table(header, rows, "lrrrrrr"),
        ]
    return join(parts) if parts else note("no scores recorded")


def mistakes(run: ReportedRun) -> Html:
    if not run.exists(PREDICTIONS_CSV):
        return note(f"{PREDICTIONS_CSV} is missing")
    with open(
        run / PREDICTIONS_CSV, newline="", encoding="utf-8", errors="surrogateescape"
    ) as file:
        rows = [r for r in csv.DictReader(file) if _set(r["labels"]) != _set(r["predicted"])]
    if not rows:
        return paragraph("Every held-out image gets exactly its labels.")
    worst = sorted(rows, key=lambda r: -float(r["loss"]))[:_SHOWN]
    shown = [
        (
            tasks.SPLIT_NAMES.get(r["split"], r["split"]),
            r["path"],
            r["labels"] or "(none)",
            r["predicted"] or "(none)",
        )
        for r in worst
    ]
    return join(
        [
            paragraph(
                f"{len(rows)} held-out images get other labels than theirs; those the model is "
                "most wrong about first:"
            ),
            table(["split", "image", "labels", "predicted"], shown, "llll"),
        ]
    )


def _set(joined: str) -> set[str]:
    """Labels as ``predictions.csv`` joins them, as a set (the predicted ones come most
    likely first, the true ones sorted)."""
    return set(joined.split(JOIN)) - {""}


LABEL_SECTIONS: list[tuple[str, str, Callable[[ReportedRun], Html]]] = [
    ("headline", "Headline", headline),
    ("plan", "The plan and why", plan),
    ("audit", "Data audit", audit),
    ("checks", "Sanity checks", summary.checks),
    ("curves", "Training curves", curves),
    ("per-label", "Scores per label", per_label),
    ("mistakes", "Mistakes", mistakes),
]
