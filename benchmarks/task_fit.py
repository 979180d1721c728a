"""One fit of a task's table (regression, multi-label) through the public API, printed as
the task benchmarks print it: the plan's reasons, each candidate's scores on each held-out
split (in the task's ``line``), the model kept and why, and how the fine-tuning ran."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import headstart


def fit_and_print(
    table: Path,
    task: str,
    name: str,
    strategy: str,
    work: Path,
    line: Callable[[dict], str],
    heading: str | None = None,
) -> None:
    """Fit ``table`` as ``task`` with ``strategy`` (the run ``work/runs/NAME-STRATEGY``) and
    print what it decided and scored, under ``heading`` (the name, when None)."""
    started = time.perf_counter()
    result = headstart.fit(
        table,
        task=task,
        strategy=strategy,
        runs_dir=work / "runs",
        name=f"{name}-{strategy}",
        quiet=True,
    )
    seconds = time.perf_counter() - started
    summary = json.loads((result.run_dir / "summary.json").read_text())
    print(f"\n== {heading or name} ({table}), strategy {strategy}: {seconds / 60:.1f} min")
    for reason in result.plan.reasons:
        print(f"  plan: {reason}")
    for candidate, scores in summary["candidates"].items():
        for split, found in scores.items():
            print(f"  {candidate:12s} {split:4s} {line(found)}")
    print(f"  kept: {summary['strategy']}: {summary['why_kept'] or 'the plan asked for it'}")
    if summary.get("fine_tuning"):
        print(f"  fine-tuning: {summary['fine_tuning']}")
