"""What the reports of the tasks other than one class an image (regression, multi-label)
draw alike: the headline, the plan with its candidates, and the curves of the fine-tuning
against the probe's score. Each task names its scores (``(key, heading)`` pairs:
``("mae", "MAE")``).
"""

from __future__ import annotations

from collections.abc import Callable

from ..runfolder import CHECKS, CONFIG_JSON, PLAN, SUMMARY
from . import plots, summary
from .folder import ReportedRun, duration, number
from .html import Html, bullets, figure, join, note, paragraph, table

__all__ = ["SPLIT_NAMES", "curves", "headline", "plan"]

SPLIT_NAMES = {"val": "validation", "test": "test"}


def headline(
    run: ReportedRun,
    sizes: str,
    answer: tuple[str, str],
    scores_line: Callable[[dict], str],
    *,
    clean_score: tuple[str, str],
) -> Html:
    """The run at a glance: its data (``sizes``: its images per split), what it predicts
    (``answer``: a row's name and text), the network, the model kept and why, each held-out
    split's scores in a line (and, where some images copy training images, the
    ``clean_score`` without them: its key and name), the time and the checks."""
    config = run.json(CONFIG_JSON) or {}
    found = run.json(SUMMARY) or {}
    rows: list[tuple[object, object]] = [
        ("data", f"{config.get('data', '–')} ({sizes or 'no counts recorded'})"),
        answer,
        ("network", config.get("arch", "–")),
        (
            "kept",
            f"{found.get('strategy', '–')}: {found.get('why_kept') or 'the plan asked for it'}",
        ),
    ]
    without = found.get("clean_scores") or {}
    key, name = clean_score
    for split, scores in (found.get("scores") or {}).items():
        line = scores_line(scores)
        if split in without:
            line += f" (without copies of training images: {name} {number(without[split][key])})"
        rows.append((SPLIT_NAMES.get(split, split), line))
    rows += [
        ("time", duration(found.get("seconds"))),
        ("sanity checks", summary.checks_line(run.json(CHECKS))),
    ]
    return table(None, rows)


def plan(run: ReportedRun, scores: list[tuple[str, str]]) -> Html:
    """The plan's reasons; each candidate's validation ``scores``; how the fine-tuning ran."""
    decided = run.json(PLAN)
    if decided is None:
        return note("plan.json is missing: the fit stopped before its plan")
    parts = [bullets(decided.get("reasons") or [])]
    found = run.json(SUMMARY) or {}
    candidates = found.get("candidates") or {}
    if candidates:
        rows = [
            (name, *(number((found_scores.get("val") or {}).get(key)) for key, _ in scores))
            for name, found_scores in candidates.items()
        ]
        header = ["candidate", *(f"validation {heading}" for _, heading in scores)]
        parts.append(table(header, rows, "l" + "r" * len(scores)))
    tuning = found.get("fine_tuning")
    if tuning:
        rows = [(key, number(value)) for key, value in tuning.items()]
        parts += [paragraph("The fine-tuning, as it ran:"), table(None, rows)]
    return join(parts)


def curves(run: ReportedRun, score: tuple[str, str], probe: tuple[str, str]) -> Html:
    """The fine-tuning's loss and ``score`` (its records' key suffix, its name) per epoch,
    against the probe's (its summary key, and what it measured)."""
    epochs = run.epochs
    if not epochs:
        if (run.json(PLAN) or {}).get("fine_tune") is None:
            return note("no fine-tuning in this run: the plan kept the probe")
        return note("metrics.jsonl holds no epochs: the fine-tuning stopped before its first")
    key, name = score
    reference = ((run.json(SUMMARY) or {}).get("probe") or {}).get(probe[0])
    rows = [
        (
            r["epoch"],
            number(r.get("train_loss")),
            number(r.get("val_loss")),
            number(r.get(f"val_{key}")),
            number(r.get("seconds")),
        )
        for r in epochs
    ]
    return join(
        [
            figure(
                plots.score_curves(epochs, key, name, (f"probe ({probe[1]})", reference)),
                "training curves",
                f"dashed: the probe on frozen features ({probe[1]}), the bar the fine-tuning has "
                "to clear",
            ),
            table(
                ["epoch", "training loss", "validation loss", f"validation {name}", "seconds"],
                rows,
                "rrrrr",
            ),
        ]
    )
