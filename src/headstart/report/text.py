"""The sections of a text run's report: its examples are texts, shown as text.

Scores per class, the confusion matrix, calibration and the sanity checks are drawn as for
photos (:mod:`headstart.report.results`, :mod:`headstart.report.summary`); the headline, the
plan, the audit and the mistakes read what a fit of texts writes.
"""

from __future__ import annotations

import csv
from collections.abc import Callable

from ..runfolder import CHECKS, CONFIG_JSON, DATASET, PLAN, PREDICTIONS_CSV, SUMMARY
from . import results, summary
from .folder import ReportedRun, duration, number, percent
from .html import Html, bullets, join, note, paragraph, table

__all__ = ["TEXT_SECTIONS"]

_SHOWN = 20  # rows of each table of examples


def headline(run: ReportedRun) -> Html:
    config = run.json(CONFIG_JSON) or {}
    dataset = run.json(DATASET) or {}
    found = run.json(SUMMARY) or {}
    counts = dataset.get("counts") or {}
    sizes = ", ".join(
        f"{sum(counts[s].values()):,} {s}" for s in ("train", "val", "test") if counts.get(s)
    )
    rows: list[tuple[object, object]] = [
        ("data", f"{config.get('data', '–')} ({sizes or 'no counts recorded'})"),
        ("classes", ", ".join(dataset.get("classes") or []) or "–"),
        ("encoder", config.get("encoder", "–")),
        (
            "kept",
            f"{found.get('strategy', '–')}: {found.get('why_kept') or 'the plan asked for it'}",
        ),
    ]
    clean = found.get("clean_scores") or {}
    for split, name in (("val", "validation"), ("test", "test")):
        scores = (found.get("scores") or {}).get(split)
        if scores:
            line = (
                f"{percent(scores['accuracy'])} of {scores['n']:,} texts; balanced accuracy "
                f"{percent(scores['balanced_accuracy'])}, macro-F1 {percent(scores['macro_f1'])}"
            )
            if split in clean:
                line += (
                    f" ({percent(clean[split]['accuracy'])} on the {clean[split]['n']:,} that "
                    "are not copies of training texts)"
                )
            rows.append((f"{name} accuracy", line))
    checks = run.json(CHECKS)
    rows += [
        ("time", duration(found.get("seconds"))),
        ("sanity checks", summary.checks_line(checks)),
    ]
    return table(None, rows)


def plan(run: ReportedRun) -> Html:
    decided = run.json(PLAN)
    if decided is None:
        return note("plan.json is missing: the fit stopped before its plan")
    parts = [bullets(decided.get("reasons") or [])]
    found = run.json(SUMMARY) or {}
    refit = found.get("refit") or {}
    for tuning, heading in (
        (found.get("fine_tuning"), "The encoder's fine-tuning, as it ran:"),
        (refit.get("fine_tuning"), f"Its refit on {refit.get('texts')} texts, as it ran:"),
    ):
        if tuning:
            rows = [(key, number(value)) for key, value in tuning.items()]
            parts += [paragraph(heading), table(None, rows)]
    candidates = found.get("candidates") or {}
    if candidates:
        rows = [
            (name, percent((scores.get("val") or {}).get("accuracy")))
            for name, scores in candidates.items()
        ]
        parts.append(table(["candidate", "validation accuracy"], rows, "lr"))
    return join(parts)


def audit(run: ReportedRun) -> Html:
    found = run.json("audit.json")
    if found is None:
        return note("audit.json is missing: the fit stopped before its audit")
    parts = [bullets(found.get("findings") or ["nothing to report"])]
    if found.get("conflicts"):
        rows = [
            (c["text"], ", ".join(f"{k} ({v})" for k, v in c["labels"].items()))
            for c in found["conflicts"][:_SHOWN]
        ]
        parts += [paragraph("Texts with several labels:"), table(["text", "labels"], rows)]
    if found.get("near_copies"):
        rows = [
            (c["text"], c["split"], c["training_text"], number(c["similarity"]))
            for c in found["near_copies"][:_SHOWN]
        ]
        parts += [
            paragraph("Held-out texts that are near-copies of training texts:"),
            table(["held-out text", "split", "training text", "similarity"], rows, "lllr"),
        ]
    issues = found.get("label_issues") or {}
    if issues.get("examples"):
        trust = "" if issues.get("reliable") else " (the probe that judged them is unreliable)"
        rows = [
            (e["text"], e["label"], e["suggested"], percent(e["label_probability"]))
            for e in issues["examples"][:_SHOWN]
        ]
        parts += [
            paragraph(f"About {issues['estimated']} training labels look wrong{trust}:"),
            table(["text", "label", "suggested", "p(label)"], rows, "lllr"),
        ]
    return join(parts)


def mistakes(run: ReportedRun) -> Html:
    if not run.exists(PREDICTIONS_CSV):
        return note(f"{PREDICTIONS_CSV} is missing")
    with open(run / PREDICTIONS_CSV, newline="", encoding="utf-8") as file:
        rows = [r for r in csv.DictReader(file) if r["label"] != r["predicted"]]
    if not rows:
        return paragraph("No held-out text is predicted wrong.")
    shown = [
        (r["split"], r["text"], r["label"], r["predicted"], percent(float(r["probability"])))
        for r in rows[:_SHOWN]
    ]
    return join(
        [
            paragraph(f"{len(rows)} held-out texts predicted wrong; the most confident first:"),
            table(["split", "text", "label", "predicted", "confidence"], shown, "llllr"),
        ]
    )


TEXT_SECTIONS: list[tuple[str, str, Callable[[ReportedRun], Html]]] = [
    ("headline", "Headline", headline),
    ("plan", "The plan and why", plan),
    ("audit", "Data audit", audit),
    ("checks", "Sanity checks", summary.checks),
    ("confusion", "Confusion matrix", results.confusion),
    ("per-class", "Scores per class", results.per_class),
    ("calibration", "Calibration", results.calibration),
    ("mistakes", "Mistakes", mistakes),
]
