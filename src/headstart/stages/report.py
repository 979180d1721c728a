"""The report stage: the run's results on disk (predictions, thumbnails, ``summary.json``) and
``report.html``, the page a person reads."""

from __future__ import annotations

from ..auditing import AuditReport
from ..checks import CheckReport
from ..config import FitConfig
from ..console import say
from ..report import build_report, examples_to_show, save_thumbnails, write_predictions
from ..report.card import write_card
from ..runfolder import CHECKS, FIXED_BATCH, SUMMARY, RunFolder
from .calibrate import Calibrated
from .evaluate import Choice
from .plan import Decision
from .test_time import TestTime
from .train import Trained

__all__ = ["write_results"]


def write_results(
    run: RunFolder,
    decision: Decision,
    audit: AuditReport,
    checks: CheckReport | None,
    trained: Trained,
    choice: Choice,
    test_time: TestTime,
    calibrated: Calibrated,
    seconds: float,
    config: FitConfig,
    distillation: dict | None = None,
) -> dict:
    """Write what the fit ended with (``distillation``: the student beside its teacher, for a
    distillation); returns the summary."""
    ready, plan = decision.ready, decision.plan
    trained.fixed.write(run / FIXED_BATCH)
    if checks is not None:
        checks.write(run / CHECKS)
    kept = choice.kept
    for split, scored in kept.scored.items():
        paths = [s.path for s in scored.samples]
        write_predictions(
            run.path, split, paths, scored.labels, scored.log_probabilities, ready.dataset.classes
        )
    shown = examples_to_show(run.path) + [s.path for s in trained.fixed.samples]
    save_thumbnails(run.path, shown, ready.images.get)
    summary = {
        "scores": {split: scored.scores for split, scored in kept.scored.items()},
        "strategy": kept.strategy,
        "reasons": [*plan.reasons, *([choice.why] if choice.why else [])],
        "kept": {"strategy": kept.strategy, "why": choice.why, "evidence": choice.evidence},
        "test_time": test_time.to_dict(),
        "calibration": calibrated.to_dict(),
        "seconds": seconds,
        "stopped": trained.stopped,
        "diagnosis": trained.diagnosis.to_dict() if trained.diagnosis else None,
        "skipped": len(ready.dataset.skipped),
        "audit": audit.counts(),
        "checks": {
            "passed": checks.passed if checks is not None else True,
            "failed": [c.name for c in checks.failed] if checks is not None else [],
        },
    }
    if distillation is not None:
        summary["distillation"] = distillation
    write_card(run.path, summary)  # first: a run with a summary always has its card
    run.write_json(SUMMARY, summary)
    say(config.quiet, f"report: {build_report(run.path)}")
    return summary
