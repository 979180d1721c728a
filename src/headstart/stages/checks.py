"""The checks stage: the recipe's sanity checks before the real training, and the verdicts of
the checks that watch it (the first steps' loss, the fixed batch), once it has run."""

from __future__ import annotations

import torch

from ..checks import CheckReport, EarlyLoss, FixedBatch, sanity_checks
from ..config import FitConfig
from ..console import say
from .plan import Decision

__all__ = ["after_training", "before_training", "say_checks"]


def before_training(decision: Decision, config: FitConfig) -> CheckReport:
    """Every check that can run before training (see :func:`headstart.checks.sanity_checks`),
    drawing no random numbers from the fit's stream: a fit trains the same model with or
    without them."""
    ready = decision.ready
    device = next(ready.backbone.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return sanity_checks(
            ready.dataset,
            ready.backbone,
            ready.inputs,
            ready.images,
            features=ready.features,
            probe=decision.probe,
            settings=decision.plan.fine_tune,
            seed=config.seed,
        )


def after_training(
    checks: CheckReport, watch: EarlyLoss | None, stopped: str, fixed: FixedBatch
) -> CheckReport:
    """``checks`` with the verdicts of the watch on the first steps (when a network trained)
    and of the fixed batch."""
    if watch is not None:
        checks.extend([watch.check(stopped)])
    checks.extend([fixed.check()])
    return checks


def say_checks(quiet: bool, checks: CheckReport, when: str = "") -> None:
    say(quiet, f"sanity checks{when}: {checks.headline()}; details in checks.json")
    for check in checks.failed:
        say(quiet, f"[bold red]check failed[/] {check.title}: {check.summary}; {check.advice}")
