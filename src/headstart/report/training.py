"""How the training went: the learning-rate range test, the curves and their diagnosis, the
first layer's filters, predictions on a fixed batch as epochs pass, and transfer against
training from scratch."""

from __future__ import annotations

import numpy as np

from ..bundle import WEIGHTS
from ..diagnosis import smoothing_floor
from ..runfolder import (
    COMPARE_SCRATCH,
    CONFIG_JSON,
    DIAGNOSIS,
    FIXED_BATCH,
    LR_FIND,
    MODEL,
    PLAN,
    SUMMARY,
)
from . import plots
from .folder import ReportedRun, duration, number, percent
from .html import Cell, Html, badge, bullets, figure, image, join, note, paragraph, table, tag
from .images import MOST_FILTERS, filter_grid, first_layer, png
from .results import thumbnail

__all__ = ["compare_scratch", "curves", "filters", "fixed_batch", "lr_find"]

#: Longest epoch table; a longer run's numbers are in metrics.jsonl.
MOST_EPOCH_ROWS = 40
#: Diagnosis verdicts shown in the colours of a failure or a success (the others: neutral).
_URGENT = {"diverging": "fail", "train-eval mismatch": "fail", "converged": "pass"}


def lr_find(run: ReportedRun) -> Html:
    data = run.json(LR_FIND)
    if data is None:
        return note(
            "lr_find.json is missing: the learning-rate range test was not run with this fit"
        )
    suggestion = data.get("suggestion")
    said = (
        f"suggested learning rate {suggestion:.2g}, by the rule: {data.get('rule')}"
        if suggestion is not None
        else f"no suggestion: {data.get('rule')}"
    )
    parts = [
        figure(plots.lr_find(data), "learning-rate range test", said),
        paragraph(
            f"{len(data.get('lrs') or [])} steps of batch size {data.get('batch_size', '?')} from "
            f"{number(data.get('start'))} to {number(data.get('end'))} in "
            f"{duration(data.get('seconds'))}; the sweep stopped: {data.get('stopped', '?')}."
        ),
    ]
    group_lrs = data.get("group_lrs") or {}
    if group_lrs:
        parts.append(
            table(
                ["parameter group", "multiple of the top LR", "learning rate at the suggestion"],
                [
                    (name, number((data.get("group_scales") or {}).get(name)), f"{lr:.2g}")
                    for name, lr in group_lrs.items()
                ],
                "lrr",
            )
        )
    alternatives = data.get("alternatives") or {}
    if len(alternatives) > 1:
        parts += [
            paragraph("What each rule would suggest:"),
            bullets(f"{rule}: {lr:.2g}" for rule, lr in alternatives.items()),
        ]
    return join(parts)


def curves(run: ReportedRun) -> Html:
    epochs, probe = run.epochs, run.probe
    plan = run.json(PLAN) or {}
    if not epochs:
        reference = (
            f" (its cross-validated accuracy {percent(probe['cv_accuracy'])})" if probe else ""
        )
        if plan.get("fine_tune") is None:
            return note(f"no fine-tuning in this run: the plan kept the linear probe{reference}")
        return note("metrics.jsonl holds no epochs: the fine-tuning stopped before its first")
    settings = plan.get("fine_tune") or {}
    parts = [
        figure(
            plots.training_curves(epochs, probe),
            "training curves",
            "dashed: the linear probe on frozen features (cross-validated), the bar the "
            "fine-tuning has to clear",
        ),
    ]
    smoothing = settings.get("label_smoothing")
    if smoothing:
        floor = smoothing_floor(smoothing, max(2, len(run.classes)))
        parts.append(
            note(
                f"the training loss is label-smoothed (ε = {smoothing:g}): it cannot fall below "
                f"{floor:.3f} nats; the validation loss is plain cross-entropy"
            )
        )
    if all(r.get("lr") for r in epochs):
        parts.append(figure(plots.learning_rates(epochs), "learning-rate schedule"))
    parts.append(_epoch_table(epochs))
    parts += [tag("h3", "Diagnosis of the curves"), _diagnosis(run)]
    return join(parts)


def _epoch_table(epochs: list[dict]) -> Html:
    best = int(
        np.nanargmax(
            [np.nan if r.get("val_accuracy") is None else r["val_accuracy"] for r in epochs]
        )
    )
    rows = [
        (
            f"{r['epoch']}" + (" (best)" if i == best else ""),
            r.get("stage", ""),
            number(r.get("train_loss")),
            number(r.get("val_loss")),
            percent(r.get("train_accuracy")),
            percent(r.get("val_accuracy")),
            f"{r['lr']:.2g}" if r.get("lr") else "–",
            duration(r.get("seconds")),
        )
        for i, r in enumerate(epochs[:MOST_EPOCH_ROWS])
    ]
    header = ["epoch", "stage", "train loss (nats)", "val loss (nats)", "train accuracy"]
    header += ["val accuracy", "learning rate", "time"]
    parts = [table(header, rows, "llrrrrrr")]
    if len(epochs) > MOST_EPOCH_ROWS:
        parts.append(
            note(f"the first {MOST_EPOCH_ROWS} of {len(epochs)} epochs; all in metrics.jsonl")
        )
    return join(parts)


def _diagnosis(run: ReportedRun) -> Html:
    diagnosis = run.json(DIAGNOSIS) or (run.json(SUMMARY) or {}).get("diagnosis")
    if not diagnosis:
        return note("diagnosis.json is missing")
    findings = [
        tag(
            "div",
            join(
                [
                    badge(_URGENT.get(finding["verdict"], "info"), finding["verdict"]),
                    " ",
                    finding["summary"],
                    Html("<br>"),
                    tag("em", "what to do: "),
                    finding["advice"],
                ]
            ),
            class_="finding",
        )
        for finding in diagnosis.get("findings", [])
    ]
    return join(findings)


def filters(run: ReportedRun) -> Html:
    weights = run.bundle / WEIGHTS
    if not weights.exists():
        return note(f"{MODEL}/{WEIGHTS} is missing: no model was saved")
    found = first_layer(weights)
    if found is None:
        return note("the model has no convolution over the 3 colour channels to draw")
    name, tensor = found
    count, _, height, width = tensor.shape
    shown = f"the first {MOST_FILTERS} of {count}" if count > MOST_FILTERS else f"all {count}"
    grid = filter_grid(tensor)
    plan = run.json(PLAN) or {}
    settings = plan.get("fine_tune") or {}
    kept = (run.json(SUMMARY) or {}).get("strategy", plan.get("strategy"))
    trained_here = kept != "linear-probe" and settings.get("freeze") in ("none", 0)
    config = run.json(CONFIG_JSON) or {}
    origin = (
        "trained in this run"
        if trained_here
        else "the pretrained filters (the stem was not trained in this run)"
        if config.get("pretrained", True)
        else "random, untrained"
    )
    return join(
        [
            tag(
                "figure",
                join(
                    [
                        image(png(grid), "first-layer filters", class_="filters"),
                        tag(
                            "figcaption",
                            f"{name}: {shown} filters, {height}×{width} pixels over red, green "
                            f"and blue; each scaled to its own range; {origin}",
                        ),
                    ]
                ),
            ),
            note(
                "well-trained first layers show smooth colour blobs and oriented edges; noisy, "
                "patternless filters have learned little (expected from scratch on little data)"
            ),
        ]
    )


def fixed_batch(run: ReportedRun) -> Html:
    data = run.json(FIXED_BATCH)
    if data is None:
        return note("fixed_batch.json is missing: predictions on a fixed batch were not recorded")
    classes, records = data["classes"], data.get("records") or []
    if not records:
        return note("fixed_batch.json holds no epochs")
    header: list[object] = ["image", "true class"]
    header += [
        join([f"epoch {r['epoch']}", Html("<br>"), tag("small", r.get("stage", ""))])
        for r in records
    ]
    rows = []
    for i, (path, label) in enumerate(zip(data["paths"], data["labels"], strict=True)):
        cells: list[object] = [thumbnail(run, path), classes[label]]
        for record in records:
            p = np.asarray(record["probabilities"][i], dtype=float)
            guess = int(p.argmax())
            right = guess == label
            mark = "✓" if right else "✗"
            text = join([f"{mark} {classes[guess]}", Html("<br>"), f"p(true) {percent(p[label])}"])
            cells.append(Cell(text, "good" if right else "bad"))
        rows.append(cells)
    body = table(header, rows, class_="batch")
    return join(
        [
            paragraph(
                f"The same {len(data['paths'])} validation images after each epoch (epoch 0: "
                "before fine-tuning, the linear probe). Each cell: the predicted class and the "
                "probability of the true class; ✓ right, ✗ wrong."
            ),
            body,
            note(
                "read it for images that flip back and forth (hard or mislabelled) and for "
                "confidence that grows steadily (learning) or collapses (a learning rate too high)"
            ),
        ]
    )


def compare_scratch(run: ReportedRun) -> Html:
    data = run.json(COMPARE_SCRATCH)
    if data is None:
        return note(
            "not compared with training from scratch in this run (fit --compare-scratch "
            "shows whether the pretrained start pays off on this data)"
        )
    names = {
        "start": ("higher start", "validation accuracy after the first epoch"),
        "slope": ("steeper curve", "accuracy gained per epoch (percentage points)"),
        "final": ("higher final", "best validation accuracy"),
    }
    rows = []
    for key, (title, meaning) in names.items():
        benefit = (data.get("benefits") or {}).get(key)
        if benefit is None:
            continue
        show = _points if key == "slope" else percent
        rows.append(
            (
                title,
                meaning,
                show(benefit["transfer"]),
                show(benefit["scratch"]),
                "not measured"
                if benefit["holds"] is None
                else badge("holds" if benefit["holds"] else "does not hold"),
            )
        )
    return join(
        [
            figure(plots.compare_scratch(data), "transfer against scratch"),
            table(["benefit", "measured as", "transfer", "scratch", ""], rows, "llrrl"),
            paragraph(data.get("summary", "")),
        ]
    )


def _points(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:+.1f} pp/epoch"
