"""The hyperparameter search of a run that ``headstart tune`` wrote: each step of the
procedure, every trial of each round, which settings mattered, and the best."""

from __future__ import annotations

from ..runfolder import SEARCH
from . import plots
from .folder import ReportedRun, percent
from .html import Html, figure, join, note, paragraph, table, tag

__all__ = ["search"]

#: The settings a trial drew, in the order the trials table shows them.
SHOWN = (
    "lr",
    "layer_decay",
    "weight_decay",
    "label_smoothing",
    "freeze",
    "augment",
    "mixup",
    "cutmix",
)


#: Below this many finished trials, the importance of each setting is said to be rough.
ROUGH_BELOW = 20


def search(run: ReportedRun) -> Html:
    data = run.json(SEARCH)
    if data is None:
        return note(
            "no hyperparameter search in this run (`headstart tune DATA --trials N` searches "
            "the fine-tuning settings, then fits the best)"
        )
    parts = [
        paragraph(
            f"Study {data['study']} in {data['storage']}. Before the first trial: the sanity "
            f"checks ({data['checks']['headline']}); " + _lr_find(data.get("lr_find") or {})
        )
    ]
    rounds = data.get("rounds") or []
    if rounds:
        parts.append(figure(plots.search_history(rounds), "validation accuracy of every trial"))
    for found in rounds:
        parts += _round(found)
        if found["round"] == "coarse" and data.get("reading"):
            parts.append(paragraph(f"Reading the curves: {data['reading']}."))
    best = data.get("best")
    if best:
        parts.append(
            paragraph(
                f"Best: trial {best['number']} of the {best['round']} round, "
                f"{percent(best['accuracy'])} on validation; fitted as this run's model with "
                "those settings (see the plan)."
            )
        )
    return join(parts)


def _lr_find(found: dict) -> str:
    if not found:
        return "no range test."
    if found.get("rule") == "given (--lr)":
        return f"the learning rate given, {found['centre']:.3g}, is the centre of those searched."
    if found.get("suggestion"):
        return (
            f"the range test suggested {found['suggestion']:.3g} ({found['rule']}), the "
            "centre of the learning rates searched."
        )
    return f"the range test suggested no rate ({found.get('rule')}); the plan's is the centre."


def _round(found: dict) -> list:
    rows = []
    for trial in found["history"]:
        settings = trial.get("settings") or {}
        rows.append(
            (
                trial["number"],
                trial["state"],
                percent(trial["value"]) if trial["value"] is not None else "–",
                trial["epochs"],
                *(_shown(settings.get(name)) for name in SHOWN),
            )
        )
    parts = [
        tag("h3", f"The {found['round']} round"),
        paragraph(
            f"{found['trials']} trials ({found['pruned']} pruned from their epoch curves"
            + (
                f", {found['out_of_time']} more stopped by the time budget"
                if found.get("out_of_time")
                else ""
            )
            + f", {found['failed']} failed) over: {found['described']}."
        ),
        table(["trial", "state", "validation", "epochs", *SHOWN], rows, "rlrr" + "r" * len(SHOWN)),
    ]
    if found.get("importance"):
        importance = sorted(found["importance"].items(), key=lambda item: -item[1])
        counted = found.get("importance_trials", 0)
        rough = (
            f" From {counted} finished trials, a rough guide: fANOVA needs tens to be sure."
            if counted < ROUGH_BELOW
            else ""
        )
        parts += [
            paragraph(
                "What mattered (Optuna's fANOVA importance: the share of the variance of "
                f"the validation accuracy each setting explains).{rough}"
            ),
            table(["setting", "importance"], [(k, f"{v:.2f}") for k, v in importance], "lr"),
        ]
    return parts


def _shown(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
