"""``headstart fit DATA --task T``: the recipe every task other than one class an image runs,
with what differs supplied by the task (:class:`Task`)::

    data -> features (cached) -> audit -> probe -> plan -> checks -> fine-tune -> choose
         -> save -> summary and report

Every stage writes what it decided or measured to the run folder as it happens; the plan is
decided once, before anything trains, and written once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

from ..checks.core import CheckReport
from ..config import FitConfig
from ..console import say
from ..data.decoded import DecodedImages
from ..errors import HeadstartError
from ..report.build import build_report
from ..result import FitResult
from ..runfolder import CHECKS, PLAN, SUMMARY, RunFolder
from ..stages.checks import say_checks
from ..stages.data import Prepared, network_for, seed_everything
from .plan import TaskPlan
from .training import open_run, refuse_unread

__all__ = ["Task", "fit_task", "task_named"]


class Task(Protocol):
    """What a task supplies to the recipe: its table, its probe, its plan, its candidates
    (each with ``model``, ``strategy`` and ``scores``) and how they are chosen and saved."""

    name: str  # "regression" | "multi-label"
    settings: frozenset[str]  # the settings it reads; any other given is refused
    instead: str  # what it does instead of what the refused settings would do

    def read(self, data: str | Path, config: FitConfig): ...

    def require_learnable(self, dataset) -> None: ...

    def split_rows(self, dataset) -> list[tuple[Path, str, str]]:
        """Each image, its answer as ``splits.csv`` writes it, and its split."""
        ...

    def audit(self, dataset, images: DecodedImages): ...

    def probe(self, ready: Prepared, config: FitConfig): ...

    def plan(self, ready: Prepared, probe, config: FitConfig) -> TaskPlan: ...

    def probed(self, ready: Prepared, probe, plan: TaskPlan): ...

    def checks(self, ready: Prepared, probe, plan: TaskPlan) -> CheckReport: ...

    def fine_tuned(
        self, ready: Prepared, start, plan: TaskPlan, run: RunFolder, config: FitConfig
    ) -> tuple[object, dict]: ...

    def choose(
        self, probed, tuned, dataset, config: FitConfig
    ) -> tuple[object, str | None, dict | None]: ...

    def save(self, run: RunFolder, kept, dataset, ready: Prepared) -> None: ...

    def clean_scores(self, kept, audit, dataset) -> dict: ...

    def in_words(self, scores: dict) -> str:
        """A split's scores in one line, beside the task's dumb baseline."""
        ...

    def described(self, dataset) -> dict:
        """What the summary says the task predicts (the target's name, the labels)."""
        ...


def fit_task(data: str | Path, config: FitConfig, task: Task) -> FitResult:
    """Fit ``task`` on ``data``; refusals come before a run folder is made."""
    started = time.perf_counter()
    refuse_unread(config, task.settings, f"{task.name} fit", task.instead)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise HeadstartError(f"a {task.name} fit runs in one process: run it without torchrun")
    dataset = task.read(data, config)
    seed_everything(config.seed)
    ready = network_for(dataset, config)  # refused here (weights, device): nothing written
    run = RunFolder.create(config.runs_dir, config.name, Path(str(data)).stem)
    with run.running():
        ready = ready.read(config)  # every image's features, from the cache where possible
        dataset = ready.dataset
        task.require_learnable(dataset)  # again: a file may have failed to decode
        open_run(run, data, ready, config, task.split_rows(dataset))
        audit = task.audit(dataset, ready.images)
        audit.write(run)
        for line in audit.findings():
            say(config.quiet, f"audit: {line}")
        probe = task.probe(ready, config)
        plan = task.plan(ready, probe, config)
        run.write_json(PLAN, plan.to_dict())
        for reason in plan.reasons:
            say(config.quiet, f"plan: {reason}")
        probed = task.probed(ready, probe, plan)
        say(config.quiet, f"probe: validation {task.in_words(probed.scores['val'])}")
        if config.checks:
            checks = task.checks(ready, probe, plan)
            checks.write(run / CHECKS)
            say_checks(config.quiet, checks)
        tuned, tuning = None, None
        if plan.fine_tune is not None:
            tuned, tuning = task.fine_tuned(ready, probed.model, plan, run, config)
            say(config.quiet, f"fine-tune: validation {task.in_words(tuned.scores['val'])}")
        kept, why, evidence = task.choose(probed, tuned, dataset, config)
        if why:
            say(config.quiet, f"plan: {why}")
        task.save(run, kept, dataset, ready)
        seconds = time.perf_counter() - started
        run.write_json(
            SUMMARY,
            {
                "task": task.name,
                **task.described(dataset),
                "strategy": kept.strategy,
                "why_kept": why,
                "evidence": evidence,
                "scores": kept.scores,
                "clean_scores": task.clean_scores(kept, audit, dataset),
                "candidates": {c.strategy: c.scores for c in (probed, tuned) if c is not None},
                "probe": probe.to_dict(),
                "fine_tuning": tuning,
                "audit": audit.findings(),
                "seconds": seconds,
            },
        )
        build_report(run.path)
    return FitResult(
        run.path,
        kept.model,
        plan,
        kept.strategy,
        kept.scores,
        seconds,
        list(dataset.skipped),
        (tuning or {}).get("stopped", "finished"),
        dataset,
        why,
        task=task.name,
    )


def task_named(name: str) -> Task:
    """The task ``config.task`` names (other than classification)."""
    if name == "regression":
        from .regression.recipe import RegressionTask

        return RegressionTask()
    if name == "multi-label":
        from .multilabel.recipe import MultiLabelTask

        return MultiLabelTask()
    raise HeadstartError(f"task={name!r}: no recipe here for it")
