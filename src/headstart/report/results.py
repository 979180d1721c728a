"""How good the model is: confusion matrices, per-class scores, calibration, the images it
gets most wrong, and, for a distilled student, how it compares with its teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..runfolder import ADAPTATION, DISTILLATION, SUMMARY
from . import plots
from .calibration import calibrate, ece
from .folder import ReportedRun, percent
from .html import Html, badge, bullets, figure, image, join, note, paragraph, table, tag
from .images import png
from .records import SplitPredictions, confident_mistakes, highest_loss, softmax

__all__ = ["adaptation", "calibration", "confusion", "distillation", "examples", "per_class"]

#: Up to this many classes the confusion matrix is drawn; beyond, the most confused pairs are
#: listed (a 100 x 100 heatmap is unreadable at any size a page allows) and the per-class
#: table starts from the worst class.
MOST_DRAWN_CLASSES = 30
#: Rows of the most-confused-pairs table, and of the worst classes shown when there are many.
CONFUSED_PAIRS = 20
#: Images in each grid of examples.
EXAMPLES = 16
_SPLITS = {"val": "validation", "test": "test"}


def confusion(run: ReportedRun) -> Html:
    classes, parts = run.classes, []
    for split, name in _SPLITS.items():
        scores = run.scores.get(split)
        if not scores:
            continue
        matrix = np.asarray(scores["confusion_matrix"])
        title = f"Confusion matrix, {name} (n={scores['n']:,})"
        if len(classes) <= MOST_DRAWN_CLASSES:
            caption = "rows: the true class; columns: the prediction; colour: share of the row"
            parts.append(figure(plots.confusion_matrix(matrix, classes, title), title, caption))
        else:
            parts += [
                tag("h3", f"Most confused pairs, {name}"),
                _confused_pairs(matrix, classes, run.unit),
            ]
    return join(parts) if parts else note("summary.json holds no scores")


def _confused_pairs(matrix: np.ndarray, classes: list[str], unit: str) -> Html:
    errors = matrix.copy()
    np.fill_diagonal(errors, 0)
    order = np.argsort(-errors, axis=None, kind="stable")[:CONFUSED_PAIRS]
    rows = []
    for flat in order:
        true, predicted = np.unravel_index(flat, errors.shape)
        if errors[true, predicted] == 0:
            break
        support = matrix[true].sum()
        rows.append(
            (
                classes[true],
                classes[predicted],
                f"{errors[true, predicted]:,}",
                percent(errors[true, predicted] / support),
            )
        )
    if not rows:
        return note("no mistakes")
    explain = note(
        f"{len(classes)} classes: too many for a readable matrix; the {len(rows)} most frequent "
        "mistakes instead (the full matrix is in summary.json)"
    )
    return join(
        [
            explain,
            table(["true class", "predicted as", unit, "share of true class"], rows, "llrr"),
        ]
    )


def per_class(run: ReportedRun) -> Html:
    parts = []
    for split, name in _SPLITS.items():
        scores = run.scores.get(split)
        if not scores:
            continue
        items = list(scores["per_class"].items())
        many = len(items) > MOST_DRAWN_CLASSES
        if many:
            items.sort(key=lambda item: item[1]["f1"])
        rows = [
            (
                c,
                percent(s["precision"]),
                percent(s["recall"]),
                percent(s["f1"]),
                f"{s['support']:,}",
            )
            for c, s in items
        ]
        present = [s for _, s in items if s["support"]]
        rows.append(
            (
                tag("strong", "macro average"),
                percent(np.mean([s["precision"] for s in present]) if present else None),
                percent(scores["balanced_accuracy"]),
                percent(scores["macro_f1"]),
                f"{scores['n']:,}",
            )
        )
        header = ["class", "precision", "recall", "F1", run.unit]
        parts.append(tag("h3", name.capitalize()))
        if many:  # the worst in view; the rest one click away (<details> needs no script)
            worst = [*rows[:CONFUSED_PAIRS], rows[-1]]
            parts += [
                note(f"{len(items)} classes: the {CONFUSED_PAIRS} with the lowest F1"),
                table(header, worst, "lrrrr"),
                tag(
                    "details",
                    tag("summary", f"all {len(items)} classes, the lowest F1 first")
                    + table(header, rows, "lrrrr"),
                ),
            ]
        else:
            parts.append(table(header, rows, "lrrrr"))
    parts.append(
        note(
            f"precision: of the {run.unit} predicted as the class, the share that are; recall: of "
            f"the class's {run.unit}, the share found; macro averages weigh every class equally "
            f"(classes without {run.unit} in the split left out)"
        )
    )
    return join(parts)


def calibration(run: ReportedRun) -> Html:
    val = run.predictions.get("val")
    if val is None:
        return note("predictions.npz is missing: no per-example predictions were saved")
    if len(val.labels) == 0:
        return note("no validation predictions")
    result = calibrate(val.logits, val.labels)
    test = run.predictions.get("test")
    if test is not None and not len(test.labels):
        test = None
    figure_ = figure(
        plots.reliability(result),
        "reliability diagram",
        "bars: the accuracy of the predictions in each confidence bin; on the dashed line, "
        "confidence means what it says",
    )
    if result.temperature is None:
        rows = [
            ("expected calibration error (ECE)", percent(result.ece)),
            ("negative log-likelihood (nats)", f"{result.nll:.3f}"),
        ]
        if test is not None:
            rows.append(("ECE on the test split", percent(ece(softmax(test.logits), test.labels))))
        explain = note(
            f"no temperature fitted: every validation {run.unit[:-1]} is predicted right, and "
            "without a mistake ever sharper predictions always lower the loss"
        )
        parts = [figure_, table(["", "as trained"], rows, "lr"), explain]
    else:
        t = result.temperature
        rows = [
            ("expected calibration error (ECE)", percent(result.ece), percent(result.ece_scaled)),
            ("negative log-likelihood (nats)", f"{result.nll:.3f}", f"{result.nll_scaled:.3f}"),
        ]
        if test is not None:
            rows.append(
                (
                    "ECE on the test split",
                    percent(ece(softmax(test.logits), test.labels)),
                    percent(ece(softmax(test.logits / t), test.labels)),
                )
            )
        direction = "overconfident" if t > 1 else "underconfident"
        parts = [
            figure_,
            table(["", "as trained", f"after T = {t:.2f}"], rows, "lrr"),
            paragraph(
                f"Temperature scaling divides the logits by T = {t:.2f} (T {'>' if t > 1 else '<'}"
                f" 1: the model was {direction}; the predicted classes do not change). T is "
                f"fitted on the same validation {run.unit} the after-values are measured on, so "
                "they are optimistic"
                + (
                    "; the test row, with T from validation, is an honest estimate."
                    if test is not None
                    else "."
                )
            ),
        ]
        if result.at_bound:
            parts.append(
                note("T reached the edge of its search range (1/20 to 20): read it loosely")
            )
    if result.n < 200:
        parts.append(
            note(
                f"{result.n} validation {run.unit}: too few for a precise ECE (a bin of a few "
                f"{run.unit} swings it by whole percentage points)"
            )
        )
    applied = (run.json(SUMMARY) or {}).get("calibration")
    if applied:  # what the bundle's predict returns (fits before this stage recorded none)
        parts.append(paragraph(f"The model bundle: {applied['why']}."))
    return join(parts)


def examples(run: ReportedRun) -> Html:
    val = run.predictions.get("val")
    if val is None:
        return note("predictions.npz is missing: no per-image predictions were saved")
    mistakes = confident_mistakes(val, EXAMPLES)
    wrong = int((val.predicted != val.labels).sum())
    rest = highest_loss(val, EXAMPLES, exclude=mistakes)
    missing = sum(val.paths[i] not in run.thumbnails for i in mistakes + rest)
    parts = [
        paragraph(
            "Under each image: its true class; the predicted class (✓ right, ✗ wrong) with the "
            "model's confidence in it; the file."
        ),
        tag("h3", "Most confident mistakes"),
    ]
    if mistakes:
        parts += [
            note(f"{len(mistakes)} of {wrong} mistakes on {len(val.labels):,} validation images"),
            _tiles(run, val, mistakes),
        ]
    else:
        parts.append(note(f"no mistakes on the {len(val.labels):,} validation images"))
    parts += [
        tag("h3", "Highest-loss validation examples" + (" (besides those)" if mistakes else "")),
        note("the images whose true class got the lowest probability"),
        _tiles(run, val, rest),
    ]
    if missing:
        parts.append(note(f"{missing} of these images have no thumbnail in thumbnails.npz"))
    return join(parts)


def _tiles(run: ReportedRun, predictions: SplitPredictions, rows: list[int]) -> Html:
    classes, probabilities = predictions.classes, predictions.probabilities
    tiles = []
    for i in rows:
        path, true, guess = predictions.paths[i], predictions.labels[i], predictions.predicted[i]
        right = true == guess
        said = f"{'✓' if right else '✗'} {classes[guess]} {percent(probabilities[i, guess])}"
        caption = [
            f"true: {classes[true]}",
            tag("span", said, class_=None if right else "wrong"),
            tag("span", Path(path).name, class_="path"),
        ]
        tiles.append(
            tag(
                "figure",
                join([thumbnail(run, path), tag("figcaption", join(caption, "<br>"))]),
                class_="tile",
                title=path,
            )
        )
    return tag("div", join(tiles), class_="tiles")


def thumbnail(run: ReportedRun, path: str) -> Html:
    """The image's thumbnail from thumbnails.npz, or a grey box that says it is missing."""
    pixels = run.thumbnails.get(path)
    if pixels is None:
        return tag("div", "no thumbnail", class_="missing")
    return image(png(pixels), path)


def distillation(run: ReportedRun) -> Html:
    """The distilled student beside its teacher: accuracy, size and cost, and the verdict."""
    data = run.json(DISTILLATION)
    if data is None:
        return note(
            "not a distillation (`headstart distill RUN --student ARCH` trains one network on "
            "a run's probabilities, an ensemble's say, and compares the two here)"
        )
    sides, bar = [data["teacher"], data["student"]], data["bar"]

    def accuracy(side: dict, split: str) -> str:
        found = side["accuracy"].get(split)
        return percent(found) if found is not None else "–"

    rows = [
        ("model", *(f"{side['architecture']} ({side['strategy']})" for side in sides)),
        ("validation accuracy", *(accuracy(side, "val") for side in sides)),
        ("test accuracy", *(accuracy(side, "test") for side in sides)),
        ("parameters", *(f"{side['parameters'] / 1e6:.2f} M" for side in sides)),
        ("weights", *(f"{side['weights_bytes'] / 2**20:.1f} MiB" for side in sides)),
        ("input size", *("x".join(map(str, side["input_size"])) for side in sides)),
        ("networks run per image", *(str(side["networks_per_image"]) for side in sides)),
        ("latency, one image", *(f"{side['latency_ms']:.0f} ms" for side in sides)),
    ]
    unlabelled = data.get("unlabelled") or 0
    left_out = data.get("unlabelled_left_out") or {}
    parts = [
        table(["", "teacher", "student"], rows, "lrr"),
        paragraph(
            badge(
                "pass" if data["passed"] else "fail",
                "clears the bar" if data["passed"] else "does not clear the bar",
            ),
            f" {data['verdict']} (the bar: at least {bar['keeps']:.0%} of its accuracy at no "
            f"more than {bar['smaller']:.0%} of its parameters or latency).",
        ),
    ]
    if data.get("why_not"):
        parts += [paragraph("What may explain it:"), bullets(data["why_not"])]
    if unlabelled or left_out:
        said = "; ".join(f"{n} {reason} left out" for reason, n in left_out.items())
        parts.append(
            note(f"{unlabelled} unlabelled images taught as well" + (f" ({said})" if said else ""))
        )
    parts.append(
        note(
            f"teacher: {data['teacher_run']}; latency measured on this machine as loaded at "
            "the time, one image at a time, with each model's test-time crops and views"
        )
    )
    return join(parts)


def adaptation(run: ReportedRun) -> Html:
    """The shift to the target images, every move tried and its reverse validation."""
    data = run.json(ADAPTATION)
    if data is None:
        return note(
            "no target images (`headstart fit DATA --target-images DIR` measures the shift to "
            "unlabelled images of the domain the model is for, and adapts to them)"
        )
    target, why = data["target"], data["why"]
    parts = [
        paragraph(
            f"{target['images']} target images ({target['skipped']} skipped); a classifier "
            f"tells them from the training images with "
            f"{percent(target['domain_classifier_balanced_accuracy'])} balanced accuracy "
            "(50%: alike)."
        ),
        paragraph(badge("pass" if data["kept"] != "none" else "info", data["kept"]), " ", why),
    ]
    rows = [
        (
            move["move"],
            percent(move["reverse_accuracy"]),
            str(move["pseudo_labelled"] or "–"),
            f"{move['against_unadapted']['z']:+.1f}" if "against_unadapted" in move else "–",
        )
        for move in data["tried"]
    ]
    if rows:
        parts.append(
            table(
                ["move", "reverse validation", "target images self-trained on", "z"], rows, "lrrr"
            )
        )
        parts.append(
            note(
                "reverse validation: a head fitted on the target images alone, with the labels "
                "the move gave them, scored on the validation images; z: McNemar's, against "
                "the unadapted head"
            )
        )
    return join(parts)
