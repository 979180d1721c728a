"""What the command line prints about a finished fit: the plan, the scores, and what transfer
bought against training from scratch."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from .console import out
from .recipe import FitResult
from .runfolder import COMPARE_SCRATCH, DATASET, MODEL, RunFolder

__all__ = ["print_comparison", "print_fit_summary"]


def print_fit_summary(result: FitResult) -> None:
    """The plan, the scores per split (and class), skipped files and where the model is."""
    out.print()
    out.print(f"[bold]strategy[/]: {result.strategy}")
    for reason in (*result.plan.reasons, *([result.why_kept] if result.why_kept else [])):
        out.print(f"  - {reason}", soft_wrap=True)
    if result.task == "regression":
        _print_errors(result)
    elif result.task == "multi-label":
        _print_label_scores(result)
    else:
        _print_scores(result)
    _print_ending(result)


def _print_scores(result: FitResult) -> None:
    """A classifier's scores per split and class."""
    for split, scores in result.scores.items():
        out.print(
            f"\n[bold]{split}[/]: accuracy {scores['accuracy']:.1%}, balanced "
            f"{scores['balanced_accuracy']:.1%}, macro-F1 {scores['macro_f1']:.3f} "
            f"({scores['n']} {result.unit})"
        )
        if split == "val" and "test" not in result.scores:
            out.print("  (validation also chose the model; --test-fraction holds out a test set)")
        table = Table()
        for column in ("class", "recall", "precision", result.unit):
            table.add_column(column, justify="left" if column == "class" else "right")
        for name, row in scores["per_class"].items():
            table.add_row(
                name, f"{row['recall']:.1%}", f"{row['precision']:.1%}", str(row["support"])
            )
        out.print(table)


def _print_errors(result: FitResult) -> None:
    """A regression's errors per split, beside predicting the training mean."""
    for split, scores in result.scores.items():
        baseline = scores["mean_baseline"]
        out.print(
            f"\n[bold]{split}[/]: MAE {scores['mae']:.4g}, RMSE {scores['rmse']:.4g}, R² "
            f"{scores['r2']:.3f} ({scores['n']} images); predicting the training mean "
            f"{baseline['value']:.4g}: MAE {baseline['mae']:.4g}, RMSE {baseline['rmse']:.4g}"
        )
        if split == "val" and "test" not in result.scores:
            out.print("  (validation also chose the model; --test-fraction holds out a test set)")


def _print_label_scores(result: FitResult) -> None:
    """A multi-label model's scores per split, and per label."""
    for split, scores in result.scores.items():
        baseline = scores["frequency_baseline"]
        out.print(
            f"\n[bold]{split}[/]: mAP {scores['map']:.3f}, micro-F1 {scores['micro_f1']:.3f}, "
            f"macro-F1 {scores['macro_f1']:.3f}, every label right on "
            f"{scores['subset_accuracy']:.1%} ({scores['n']} images); knowing only the labels' "
            f"frequencies: mAP {baseline['map']:.3f}"
        )
        table = Table()
        for column in ("label", "AP", "precision", "recall", "threshold", "images"):
            table.add_column(column, justify="left" if column == "label" else "right")
        for name, row in scores["per_label"].items():
            ap = "-" if row["ap"] is None else f"{row['ap']:.3f}"
            table.add_row(
                name,
                ap,
                f"{row['precision']:.1%}",
                f"{row['recall']:.1%}",
                f"{row['threshold']:.2f}",
                str(row["support"]),
            )
        out.print(table)


def _print_ending(result: FitResult) -> None:
    if result.skipped:
        out.print(
            f"[yellow]{len(result.skipped)} file(s) skipped[/] "
            f"(listed in {result.run_dir / DATASET}):"
        )
        for skip in result.skipped[:10]:
            out.print(f"  {skip.path}: {skip.reason}", soft_wrap=True)
    for warning in result.dataset.warnings if result.dataset else ():
        out.print(f"[yellow]warning[/]: {warning}", soft_wrap=True)
    if result.stopped != "finished":
        out.print(f"[yellow]training stopped early: {result.stopped}[/]; best model kept")
    out.print(f"time: {result.seconds:.0f} s; model bundle: [bold]{result.run_dir / MODEL}[/]")


def print_comparison(run_dir: Path) -> None:
    """The three benefits of transfer, from a run's ``compare_scratch.json``."""
    comparison = RunFolder(run_dir).json(COMPARE_SCRATCH)
    table = Table(
        "validation accuracy",
        "pretrained (transfer)",
        "random init (scratch)",
        "",
        title="transfer learning vs training from scratch",
        title_justify="left",
    )
    names = {
        "start": "start (after the first epoch)",
        "slope": "gain above chance per epoch",
        "final": "final (best epoch)",
    }
    verdicts = {True: "[green]transfer ahead[/]", False: "[yellow]not ahead[/]", None: "-"}
    for key, benefit in comparison["benefits"].items():
        table.add_row(
            names[key],
            "-" if benefit["transfer"] is None else f"{benefit['transfer']:.1%}",
            "-" if benefit["scratch"] is None else f"{benefit['scratch']:.1%}",
            verdicts[benefit["holds"]],
        )
    out.print(table)
    out.print(comparison["summary"])
