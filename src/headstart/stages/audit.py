"""The audit stage: look at the data as an expert would before training on it, write what was
found into the run, and refuse to train on copies of an image that span the splits."""

from __future__ import annotations

from ..auditing import AuditReport, audit_dataset, check_leakage
from ..config import FitConfig
from ..console import say
from ..runfolder import RunFolder
from .data import Prepared

__all__ = ["audit_data"]


def audit_data(ready: Prepared, run: RunFolder, config: FitConfig) -> AuditReport:
    """The audit of the data about to be trained on, written to ``<run>/audit/``; refuses
    to go on when copies of an image span train and validation (unless allowed). The files
    the audit could not measure are dropped from ``ready.dataset``."""
    report = audit_dataset(
        ready.dataset, ready.features, ready.images, seed=config.seed, quiet=config.quiet
    )
    report.write(run.audit)
    say(config.quiet, f"audit: {report.headline()}; details in {run.audit}")
    if config.allow_leakage:
        if report.leaks:
            say(
                config.quiet,
                f"[yellow]training despite {len(report.leaks)} leaking group(s)[/]: "
                "validation scores are flattered",
            )
    else:
        check_leakage(report)
    ready.dataset = report.dataset
    return report
