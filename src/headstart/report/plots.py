"""The report's figures, each drawn from run-folder data and returned as PNG bytes.

One look for all: the same size, fonts and grid; every plot has a title and axes labelled
with their units. ``Figure`` objects are used directly (not pyplot), so nothing global is
touched and no display is needed. Class names are drawn as given: ``$`` in one is not maths.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .calibration import Calibration

__all__ = [
    "compare_scratch",
    "confusion_matrix",
    "learning_rates",
    "lr_find",
    "reliability",
    "residuals",
    "score_curves",
    "short_names",
    "training_curves",
]

#: Pixels per inch. Modest: the figures are read on a screen, and the report stays small.
DPI = 100
WIDTH = 8.0  # inches: the report's text column
_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titlelocation": "left",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
}
TRANSFER, SCRATCH, REFERENCE, WRONG = "#1f6fb4", "#d2691e", "#555555", "#c62828"
_NAME = 18  # characters of a class name shown on an axis


@contextmanager
def _figure(height: float, width: float = WIDTH, **subplots) -> Iterator[tuple[Figure, object]]:
    """A figure and its axes in the report's style: draw on them, then :func:`_png` it."""
    with rc_context(_STYLE):
        figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        yield figure, figure.subplots(**subplots)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    with rc_context(_STYLE):
        figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _percent(axes, axis: str = "y") -> None:
    getattr(axes, f"{axis}axis").set_major_formatter(PercentFormatter(1.0, decimals=0))


def lr_find(data: dict) -> bytes:
    """The range test: loss against learning rate (log axis), the suggestion marked."""
    lrs = np.asarray(data["lrs"], dtype=float)
    losses = np.asarray([np.nan if v is None else v for v in data["losses"]], dtype=float)
    smoothed = np.asarray([np.nan if v is None else v for v in data["smoothed"]], dtype=float)
    suggestion = data.get("suggestion")
    with _figure(3.6) as (figure, axes):
        axes.plot(lrs, losses, color="0.75", lw=1, label="loss of each batch")
        axes.plot(lrs, smoothed, color=TRANSFER, lw=2, label="smoothed loss")
        finite = smoothed[np.isfinite(smoothed)]
        if suggestion is not None and finite.size:
            ok = np.isfinite(smoothed)
            at = np.interp(np.log(suggestion), np.log(lrs[ok]), smoothed[ok])
            axes.axvline(suggestion, color=WRONG, ls="--", lw=1.2)
            axes.plot([suggestion], [at], "o", color=WRONG, label=f"suggested {suggestion:.2g}")
        axes.set_xscale("log")
        if finite.size:  # the whole descent in view, the explosion after it cut off
            descent = finite[: int(np.argmin(finite)) + 1]
            axes.set_ylim(finite.min() * 0.9, max(descent.max(), 1.5 * finite.min()) * 1.05)
        axes.set_xlabel("learning rate of the top stage (log scale)")
        axes.set_ylabel("training loss (nats)")
        axes.set_title("Learning-rate range test: loss while the learning rate grows each step")
        axes.grid(True, which="both", alpha=0.2)
        axes.legend(loc="upper left")
    return _png(figure)


def training_curves(epochs: Sequence[dict], probe: dict | None) -> bytes:
    """Loss and accuracy per epoch, training and validation side by side; the linear probe's
    cross-validated accuracy (and log loss) as the reference the fine-tuning must beat."""
    x = np.arange(1, len(epochs) + 1)

    def series(name: str) -> np.ndarray:
        return np.array([np.nan if r.get(name) is None else r[name] for r in epochs], dtype=float)

    probe = probe or {}
    references = {
        "loss": (probe.get("cv_log_loss") or {}).get(str(probe.get("C"))),
        "accuracy": probe.get("cv_accuracy"),
    }
    with _figure(3.3, ncols=2) as (figure, (loss, accuracy)):
        for axes, kind in ((loss, "loss"), (accuracy, "accuracy")):
            axes.plot(x, series(f"train_{kind}"), "o-", color=TRANSFER, ms=3, label="training")
            axes.plot(x, series(f"val_{kind}"), "s-", color=SCRATCH, ms=3, label="validation")
            if references[kind] is not None:
                label = "linear probe (cross-validated)"
                axes.axhline(references[kind], color=REFERENCE, ls="--", lw=1, label=label)
            axes.set_xlabel("epoch")
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.legend(loc="best")
        loss.set_title("Loss per epoch")
        loss.set_ylabel("loss (cross-entropy, nats)")
        loss.set_ylim(bottom=0)
        accuracy.set_title("Accuracy per epoch")
        accuracy.set_ylabel("accuracy (%)")
        accuracy.set_ylim(top=1.005)  # nothing lies above 100%, even when everything is at it
        _percent(accuracy)
    return _png(figure)


def learning_rates(epochs: Sequence[dict]) -> bytes:
    """The learning rate (top stage) at the end of each epoch: warm-up, then cosine decay."""
    x = np.arange(1, len(epochs) + 1)
    with _figure(2.2) as (figure, axes):
        axes.plot(x, [r["lr"] for r in epochs], "o-", color=TRANSFER, ms=3)
        axes.set_yscale("log")
        axes.set_title("Learning-rate schedule")
        axes.set_xlabel("epoch")
        axes.set_ylabel("learning rate (log scale)")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(figure)


def confusion_matrix(matrix: np.ndarray, classes: Sequence[str], title: str) -> bytes:
    """Counts in each cell; the colour is the share of the true class (row), so a rare class's
    errors show as clearly as a common one's."""
    matrix = np.asarray(matrix)
    n = len(classes)
    side = min(WIDTH, 2.2 + 0.3 * n)
    rows = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    names, left_out = short_names(classes)
    small = 9 if n <= 10 else 7 if n <= 20 else 6
    with _figure(side, width=side + 1.2) as (figure, axes):
        image = axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
        axes.grid(False)
        for i in range(n):
            for j in range(n):
                if matrix[i, j] or n <= 10:
                    color = "white" if share[i, j] > 0.6 else "black"
                    axes.text(j, i, matrix[i, j], ha="center", va="center", color=color, size=small)
        turn = {"rotation": 45, "ha": "right"} if n > 4 else {}
        axes.set_xticks(range(n), names, parse_math=False, **turn)
        axes.set_yticks(range(n), names, parse_math=False)
        axes.tick_params(labelsize=small)
        label = "predicted class" + (f" (names without {left_out})" if left_out else "")
        axes.set_xlabel(label, parse_math=False)
        axes.set_ylabel("true class")
        axes.set_title(title)
        bar = figure.colorbar(image, ax=axes, shrink=0.8)
        bar.set_label("share of the true class (%)")
        bar.ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    return _png(figure)


def short_names(classes: Sequence[str]) -> tuple[list[str], str]:
    """Class names short enough for an axis, and what was left out of all of them.

    Many datasets name classes with a shared prefix or suffix ("class_001_cat", ...): cutting
    the end off would leave only the part they share. So a prefix and a suffix common to all
    (ending at a space, ``_``, ``-`` or ``.``) are removed first, then long names are cut.
    """
    names = list(classes)
    left_out = []
    if len(names) > 1 and max(map(len, names)) > _NAME:
        prefix = _to_boundary(_common_start(names))
        suffix = _to_boundary(_common_start([n[::-1] for n in names]))[::-1]
        if prefix and all(len(n) > len(prefix) for n in names):
            names = [n[len(prefix) :] for n in names]
            left_out.append(f"the prefix {prefix!r}")
        if suffix and all(len(n) > len(suffix) for n in names):
            names = [n[: -len(suffix)] for n in names]
            left_out.append(f"the suffix {suffix!r}")
    names = [n if len(n) <= _NAME else n[: _NAME - 1] + "…" for n in names]
    return names, " and ".join(left_out)


def _common_start(names: Sequence[str]) -> str:
    shortest = min(names, key=len)
    for i, character in enumerate(shortest):
        if any(name[i] != character for name in names):
            return shortest[:i]
    return shortest


def _to_boundary(common: str) -> str:
    """``common`` cut back to its last separator (kept), so no word is split."""
    cut = max(common.rfind(c) for c in " _-.")
    return common[: cut + 1] if cut >= 0 else ""


def reliability(calibration: Calibration) -> bytes:
    """Accuracy against confidence per bin, before and after temperature scaling, with the
    number of predictions in each bin below (a bin of three says little)."""
    before, after = calibration.bins, calibration.bins_scaled
    centres = np.array([(b.lower + b.upper) / 2 for b in before])
    width = before[0].upper - before[0].lower
    with _figure(4.4, width=6.0, nrows=2, height_ratios=[3, 1], sharex=True) as (
        figure,
        (diagram, counts),
    ):
        diagram.plot([0, 1], [0, 1], ls="--", color=REFERENCE, lw=1, label="perfectly calibrated")
        filled = [b.count > 0 for b in before]
        label = f"as trained (ECE {calibration.ece:.1%})"
        accuracy = [b.accuracy for b in before if b.count]
        diagram.bar(
            centres[filled], accuracy, width=width * 0.9, color=TRANSFER, alpha=0.6, label=label
        )
        if calibration.temperature is not None:
            kept = [b for b in after if b.count]
            label = f"after temperature {calibration.temperature:.2f}"
            label += f" (ECE {calibration.ece_scaled:.1%})"
            points = ([b.confidence for b in kept], [b.accuracy for b in kept])
            diagram.plot(*points, "o-", color=SCRATCH, ms=4, label=label)
        diagram.set_xlim(0, 1)
        diagram.set_ylim(0, 1.02)
        diagram.set_title(f"Reliability diagram, validation (n={calibration.n})")
        diagram.set_ylabel("accuracy in the bin (%)")
        _percent(diagram)
        diagram.legend(loc="upper left")
        counts.bar(centres, [b.count for b in before], width=width * 0.9, color=TRANSFER, alpha=0.6)
        counts.set_title("Predictions per confidence bin (as trained)", fontsize=9)
        counts.set_ylabel("images")
        counts.set_xlabel("confidence: predicted probability of the chosen class (%)")
        _percent(counts, "x")
    return _png(figure)


def compare_scratch(data: dict) -> bytes:
    """Validation accuracy per epoch, pretrained start against random start."""
    with _figure(3.4) as (figure, axes):
        for name, color, label in (
            ("transfer", TRANSFER, "transfer (pretrained start)"),
            ("scratch", SCRATCH, "from scratch (random start)"),
        ):
            curve = data.get(name) or {}
            if curve.get("epochs"):
                axes.plot(
                    curve["epochs"], curve["val_accuracy"], "o-", ms=3, color=color, label=label
                )
        if data.get("chance") is not None:
            axes.axhline(data["chance"], color=REFERENCE, ls=":", lw=1, label="chance")
        axes.set_ylim(0, 1.02)
        _percent(axes)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title("Transfer against training from scratch: validation accuracy")
        axes.set_xlabel("epoch")
        axes.set_ylabel("validation accuracy (%)")
        axes.legend(loc="lower right")
    return _png(figure)


def search_history(rounds: list[dict]) -> bytes:
    """Every trial's validation accuracy by trial, round by round (trials stopped early,
    hollow, at the best epoch they reached), with the best so far."""
    with _figure(3.2) as (figure, axes):
        x, best, shown = 0, None, []
        for found, color in zip(rounds, (SCRATCH, TRANSFER), strict=False):
            done, stopped = [], []
            for trial in found["history"]:
                x += 1
                value = trial["value"]
                if value is None:
                    continue
                (done if trial["state"] == "complete" else stopped).append((x, value))
                if trial["state"] == "complete":
                    best = value if best is None else max(best, value)
                    shown.append((x, best))
            if done:
                axes.plot(
                    *zip(*done, strict=True),
                    "o",
                    ms=5,
                    color=color,
                    label=f"{found['round']} round",
                )
            if stopped:
                axes.plot(
                    *zip(*stopped, strict=True),
                    "o",
                    ms=5,
                    mfc="none",
                    color=color,
                    label=f"{found['round']} round, stopped early",
                )
        if shown:
            axes.step(
                *zip(*shown, strict=True), where="post", color=REFERENCE, lw=1, label="best so far"
            )
        _percent(axes)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title("The search: validation accuracy of each trial")
        axes.set_xlabel("trial")
        axes.set_ylabel("validation accuracy (%)")
        axes.legend(loc="lower right")
    return _png(figure)


def score_curves(
    epochs: Sequence[dict], score: str, name: str, reference: tuple[str, float | None]
) -> bytes:
    """The loss and a task's score (``score``: the records' key suffix, ``name``: its name)
    per epoch, training and validation; ``reference``: the probe's out-of-sample score and
    its label, the bar the fine-tuning has to clear."""
    x = np.arange(1, len(epochs) + 1)

    def series(key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else r[key] for r in epochs], dtype=float)

    with _figure(3.3, ncols=2) as (figure, (loss, scored)):
        for axes, key in ((loss, "loss"), (scored, score)):
            axes.plot(x, series(f"train_{key}"), "o-", color=TRANSFER, ms=3, label="training")
            axes.plot(x, series(f"val_{key}"), "s-", color=SCRATCH, ms=3, label="validation")
            axes.set_xlabel("epoch")
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        label, value = reference
        if value is not None:
            scored.axhline(value, color=REFERENCE, ls="--", lw=1, label=label)
        loss.legend(loc="best")
        scored.legend(loc="best")
        loss.set_title("Loss per epoch")
        loss.set_ylabel("loss")
        loss.set_ylim(bottom=0)
        scored.set_title(f"{name} per epoch")
        scored.set_ylabel(name)
        scored.set_ylim(top=1.005)
    return _png(figure)


def residuals(by_split: dict[str, tuple[np.ndarray, np.ndarray]], target: str) -> bytes:
    """Predicted against true numbers (the diagonal: no error) and the residuals against the
    predictions (a trend or a funnel there is error the model could still learn, or noise
    that grows with the number), one colour per split."""
    colours = {"val": TRANSFER, "test": SCRATCH}
    with _figure(3.6, ncols=2) as (figure, (versus, spread)):
        low = min(min(t.min(), p.min()) for t, p in by_split.values())
        high = max(max(t.max(), p.max()) for t, p in by_split.values())
        versus.plot([low, high], [low, high], color=REFERENCE, lw=1, ls="--", label="no error")
        spread.axhline(0, color=REFERENCE, lw=1, ls="--")
        for split, (true, predicted) in by_split.items():
            name = {"val": "validation", "test": "test"}.get(split, split)
            colour = colours.get(split, REFERENCE)
            versus.scatter(true, predicted, s=8, alpha=0.5, color=colour, label=name)
            spread.scatter(predicted, predicted - true, s=8, alpha=0.5, color=colour, label=name)
        versus.set_title("Predicted against true")
        versus.set_xlabel(f"true {target}")
        versus.set_ylabel(f"predicted {target}")
        versus.legend(loc="best")
        spread.set_title("Residuals against the prediction")
        spread.set_xlabel(f"predicted {target}")
        spread.set_ylabel("predicted − true")
        spread.legend(loc="best")
    return _png(figure)
