"""Reading the training curves, as a practitioner would, in plain words with the evidence.

The classic reading (MISSION.md, "Reading the curves"): training and validation both still
improving -> train longer; a growing gap between them -> overfitting; curves flat, close together
and high -> underfitting; loss exploding or NaN -> learning rate too high or a bad
initialisation; otherwise the run converged. One reading is added, because the default
fine-tune showed it: a training loss far above guessing while validation is fine means the
network behaves differently in training mode. :func:`diagnose` applies it to the per-epoch
records of :func:`~headstart.training.finetune.fine_tune` (also the lines of a run's
``metrics.jsonl``: records without an ``epoch`` are other stages and are skipped).

Label smoothing. The training loss is the smoothed cross-entropy, whose minimum is not 0 but the
entropy of the smoothed target (:func:`smoothing_floor`: 0.199 nats for 2 classes at 0.1); the
validation loss is the plain cross-entropy. The two are therefore never compared with each other
when smoothing is on: the train-validation gap is read from the accuracies, and the training loss
is only compared with itself, as its *excess* over that floor. Without smoothing, the loss gap is
read as well.

Scales. Losses are judged relative to the loss of guessing, ln C for C classes, so that one rule
serves 2 classes and 1,000. Accuracies of a few dozen validation images move in steps of a few
points, so the accuracy thresholds are not finer than that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from .errors import HeadstartError

__all__ = ["VERDICTS", "Diagnosis", "Finding", "diagnose", "smoothing_floor"]

#: Every verdict, most urgent first: the first finding of a diagnosis is its headline.
VERDICTS = (
    "diverging",
    "train-eval mismatch",
    "overfitting",
    "underfitting",
    "still improving",
    "converged",
    "too short",
)

#: Trends are read over the last this many epochs: fewer and one noisy epoch decides, more and a
#: short run (6-8 epochs) is read mostly from its start.
WINDOW = 3
#: A curve still improves while its loss falls per epoch by at least this fraction of the way
#: from guessing to its floor (ln C - floor for training, ln C for validation). Measured on that
#: fixed scale, not relative to the current loss: near the floor, relative changes of a tiny
#: remainder are noise. A converged run falls by about 1% of it per epoch (the cosine schedule
#: ends at a small learning rate); 2% is a trend.
IMPROVING = 0.02
#: Overfitting, first sign: the validation loss ends this fraction above its minimum ...
VAL_RISE = 0.10
#: ... and at least this fraction of the loss of guessing above it, so that a rise from 0.010 to
#: 0.012 nats on a nearly perfect model is not read as overfitting.
MIN_RISE = 0.05
#: Overfitting, second sign: training accuracy ends this far above validation accuracy, and the
#: gap has grown this much from its smallest. Training accuracy is measured on augmented crops,
#: which are harder than validation's centre crops, so a gap despite that is real. Five points is
#: two images of 40: above the step of a small validation set.
ACCURACY_GAP = 0.05
#: Overfitting, third sign (without label smoothing only): validation loss ends this fraction of
#: the loss of guessing above the training loss, and the gap grew as much from its smallest.
LOSS_GAP = 0.10
#: Underfitting: the training loss has removed less than half of the way from guessing (ln C) to
#: its floor. A fitted pretrained network ends far below that (about a tenth on photos).
HIGH_LOSS = 0.5
#: A loss above this multiple of the loss of guessing. Predicting uniformly scores ln C and a
#: head started from the probe or the class priors scores less; only confidently wrong
#: predictions score twice that. Divergence without NaN, first sign: validation loss that high
#: with validation accuracy less than halfway from chance to perfect: the network is wrecked
#: (100x the planned learning rate: 2,600 nats and chance accuracy on 2 classes). Training loss
#: that high while validation is fine is not divergence: the network predicts differently in
#: training mode. Measured on the faces data: the probe-initialised network scores 0.38 nats and
#: 100% on training images in eval mode, 15 nats and 66% with its batch-norm layers in training
#: mode (batch statistics shift the features; a head with large weights makes that confident).
WORSE_THAN_GUESSING = 2.0
#: Divergence without NaN, second sign: the training loss ends this fraction of the loss of
#: guessing above its own minimum. Noise on a converging run is a few hundredths of it.
EXPLODED = 0.5


@dataclass(frozen=True)
class Finding:
    """One thing the curves show: what, the numbers that show it, and what to do."""

    verdict: str  # one of VERDICTS
    summary: str  # plain words, with the numbers
    advice: str
    evidence: dict[str, float | int | str | None] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.verdict}: {self.summary}; {self.advice}"


@dataclass
class Diagnosis:
    findings: list[Finding]
    label_smoothing: float
    n_classes: int

    @property
    def verdict(self) -> str:
        """The headline: the most urgent finding."""
        return self.findings[0].verdict

    def lines(self) -> list[str]:
        return [finding.line() for finding in self.findings]

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "findings": [asdict(finding) for finding in self.findings],
            "label_smoothing": self.label_smoothing,
            "n_classes": self.n_classes,
            "rules": {
                "window": WINDOW,
                "improving": IMPROVING,
                "val_rise": VAL_RISE,
                "min_rise": MIN_RISE,
                "accuracy_gap": ACCURACY_GAP,
                "loss_gap": LOSS_GAP,
                "high_loss": HIGH_LOSS,
                "worse_than_guessing": WORSE_THAN_GUESSING,
                "exploded": EXPLODED,
                "label_smoothing": "training loss compared only with itself, as its excess "
                "over the smoothed target's entropy; the train-validation gap read from "
                "accuracies (and from losses only without smoothing)",
            },
        }


def smoothing_floor(label_smoothing: float, n_classes: int) -> float:
    """The lowest training loss label smoothing allows: the entropy of the smoothed target.

    Cross-entropy against a target ``q`` is its entropy plus the divergence from the prediction,
    so no prediction goes below ``H(q)``; ``q`` puts ``1 - s + s/C`` on the label, ``s/C`` on
    each other class.
    """
    if label_smoothing <= 0:
        return 0.0
    on = 1 - label_smoothing + label_smoothing / n_classes
    off = label_smoothing / n_classes
    return -on * math.log(on) - (n_classes - 1) * off * math.log(off)


def diagnose(
    history: Iterable[Mapping],
    *,
    n_classes: int,
    label_smoothing: float = 0.0,
    stopped: str = "finished",
    lr: float | None = None,
) -> Diagnosis:
    """What the per-epoch curves of a fine-tuning say, and what to do about it.

    ``stopped`` is :attr:`FineTuneResult.stopped` (a run stopped for diverging says so there;
    by default it is read from the record of ``history`` that has one, as ``fit`` writes);
    ``lr``, the top stage's configured learning rate, makes the advice concrete.
    """
    if n_classes < 2:
        raise HeadstartError(f"n_classes={n_classes}: a diagnosis needs at least 2 classes")
    if not 0 <= label_smoothing < 1:
        raise HeadstartError(f"label_smoothing={label_smoothing}: expected a value in [0, 1)")
    history = list(history)
    if stopped == "finished":  # a run's metrics.jsonl records how its training ended
        stopped = next((r["stopped"] for r in reversed(history) if "stopped" in r), stopped)
    curves = _Curves([r for r in history if "epoch" in r], n_classes, label_smoothing)
    diverging = _diverging(curves, stopped, lr)
    if diverging:  # the other trends of a diverged run mean nothing
        return Diagnosis([diverging], label_smoothing, n_classes)
    if len(curves.epochs) < 2:
        return Diagnosis([_too_short(curves)], label_smoothing, n_classes)
    findings = [
        finding
        for finding in (
            _mismatch(curves),
            _overfitting(curves),
            _underfitting(curves),
            _still_improving(curves),
        )
        if finding
    ]
    if stopped == "interrupted":
        findings = [_note_stop(f, stopped) for f in findings]
    return Diagnosis(findings or [_converged(curves)], label_smoothing, n_classes)


class _Curves:
    """The records as columns, with the scales the rules use."""

    def __init__(self, records: list[Mapping], n_classes: int, label_smoothing: float):
        def column(key: str) -> list[float]:
            # metrics.jsonl stores NaN and infinity as null
            return [math.nan if r.get(key) is None else float(r[key]) for r in records]

        self.epochs = [int(r["epoch"]) for r in records]
        self.train_loss = column("train_loss")
        self.val_loss = column("val_loss")
        self.train_accuracy = column("train_accuracy")
        self.val_accuracy = column("val_accuracy")
        self.classes = n_classes
        self.chance = math.log(n_classes)  # the loss of guessing uniformly
        self.floor = smoothing_floor(label_smoothing, n_classes)
        self.smoothing = label_smoothing
        self.excess = [loss - self.floor for loss in self.train_loss]

    @property
    def window(self) -> int:
        """Epochs back to the start of the trend window (at least 1)."""
        return min(WINDOW, len(self.epochs) - 1)

    @property
    def reach(self) -> float:
        """How far the training loss can fall: from guessing down to its floor."""
        return self.chance - self.floor

    def train_fall(self) -> float:
        """Fall per epoch of the training loss over the window, in nats."""
        return (self.train_loss[-1 - self.window] - self.train_loss[-1]) / self.window

    def val_fall(self) -> float:
        """Fall per epoch of the validation loss over the window, in nats."""
        return (self.val_loss[-1 - self.window] - self.val_loss[-1]) / self.window

    def wrecked(self) -> int | None:
        """The first epoch whose validation is confidently wrong: loss above
        WORSE_THAN_GUESSING x ln C and accuracy less than halfway from chance to perfect."""
        halfway = (1 + 1 / self.classes) / 2
        for i, (loss, accuracy) in enumerate(zip(self.val_loss, self.val_accuracy, strict=True)):
            if loss >= WORSE_THAN_GUESSING * self.chance and accuracy < halfway:
                return i
        return None

    def accuracy_gaps(self) -> list[float]:
        return [t - v for t, v in zip(self.train_accuracy, self.val_accuracy, strict=True)]

    def best(self) -> tuple[int, float]:
        """Epoch and value of the best validation accuracy (the first, on ties)."""
        i = max(range(len(self.epochs)), key=lambda i: (self.val_accuracy[i], -i))
        return self.epochs[i], self.val_accuracy[i]

    def last(self) -> dict[str, float]:
        return {
            "train_loss": self.train_loss[-1],
            "val_loss": self.val_loss[-1],
            "train_accuracy": self.train_accuracy[-1],
            "val_accuracy": self.val_accuracy[-1],
        }


def _diverging(curves: _Curves, stopped: str, lr: float | None) -> Finding | None:
    lower = f"--lr {lr / 10:.2g}" if lr else "a 10x lower --lr"
    advice = (
        f"the learning rate is too high for these layers: try {lower} "
        "(`headstart lr-find` suggests one), or the initialisation is bad "
        "(the head should start from the linear probe or the class priors)"
    )
    evidence: dict = {"epochs": len(curves.epochs), "stopped": stopped, "lr": lr}
    if stopped.startswith("diverged"):
        why = stopped.removeprefix("diverged").lstrip(": ")
        kept = "; the model before it was kept" if curves.epochs else ""
        return Finding(
            "diverging", f"training diverged and was stopped ({why}){kept}", advice, evidence
        )
    values = curves.train_loss + curves.val_loss
    if any(not math.isfinite(v) for v in values):
        bad = next(
            e
            for e, t, v in zip(curves.epochs, curves.train_loss, curves.val_loss, strict=True)
            if not (math.isfinite(t) and math.isfinite(v))
        )
        return Finding(
            "diverging", f"the loss is NaN or infinite from epoch {bad}", advice, evidence
        )
    evidence["loss_of_guessing"] = curves.chance
    wrecked = curves.wrecked()
    if wrecked is not None:
        evidence |= {
            "val_loss": curves.val_loss[wrecked],
            "val_accuracy": curves.val_accuracy[wrecked],
            "at_epoch": curves.epochs[wrecked],
        }
        summary = (
            f"in epoch {curves.epochs[wrecked]} the validation loss reached "
            f"{curves.val_loss[wrecked]:.3g}, over {WORSE_THAN_GUESSING:g}x the "
            f"{curves.chance:.3f} of guessing, at accuracy {curves.val_accuracy[wrecked]:.1%}: "
            "the steps wrecked the network into confidently wrong predictions"
        )
        return Finding("diverging", summary, advice, evidence)
    if len(curves.epochs) < 2:
        return None
    lowest = min(range(len(curves.epochs)), key=lambda i: curves.train_loss[i])
    rise = curves.train_loss[-1] - curves.train_loss[lowest]
    if rise >= EXPLODED * curves.chance:
        evidence |= {
            "lowest_train_loss": curves.train_loss[lowest],
            "lowest_at_epoch": curves.epochs[lowest],
            "last_train_loss": curves.train_loss[-1],
        }
        summary = (
            f"the training loss rose from {curves.train_loss[lowest]:.3f} (epoch "
            f"{curves.epochs[lowest]}) to {curves.train_loss[-1]:.3f}; guessing scores "
            f"{curves.chance:.3f}"
        )
        return Finding("diverging", summary, advice, evidence)
    return None


def _mismatch(curves: _Curves) -> Finding | None:
    """Training loss far above guessing while validation is fine (see WORSE_THAN_GUESSING)."""
    worst = max(range(len(curves.epochs)), key=lambda i: curves.train_loss[i])
    loss = curves.train_loss[worst]
    if loss < WORSE_THAN_GUESSING * curves.chance:
        return None
    summary = (
        f"the training loss reached {loss:.3g} in epoch {curves.epochs[worst]}, over "
        f"{WORSE_THAN_GUESSING:g}x the {curves.chance:.3f} of guessing, while validation "
        f"scored loss {curves.val_loss[worst]:.3f} and accuracy "
        f"{curves.val_accuracy[worst]:.1%} (training accuracy "
        f"{curves.train_accuracy[worst]:.1%}): confidently wrong on training batches only"
    )
    evidence = {
        "worst_train_loss": loss,
        "at_epoch": curves.epochs[worst],
        "train_accuracy": curves.train_accuracy[worst],
        "val_loss": curves.val_loss[worst],
        "val_accuracy": curves.val_accuracy[worst],
        "loss_of_guessing": curves.chance,
    }
    advice = (
        "the network behaves differently in training mode: normalisation layers using batch "
        "statistics (or dropout) shift the features, and a head with large weights turns the "
        "shift into confident mistakes, so the first epochs go to undoing it; keep the "
        "normalisation statistics frozen while the head adapts, or start from a smaller head; "
        "check the augmented batch in TensorBoard too"
    )
    return Finding("train-eval mismatch", summary, advice, evidence)


def _overfitting(curves: _Curves) -> Finding | None:
    signs, evidence = [], {}
    low = min(range(len(curves.epochs)), key=lambda i: curves.val_loss[i])
    rise = curves.val_loss[-1] - curves.val_loss[low]
    if (
        rise >= VAL_RISE * curves.val_loss[low]
        and rise >= MIN_RISE * curves.chance
        and curves.excess[-1] < curves.excess[low]
    ):
        signs.append(
            f"validation loss rose from {curves.val_loss[low]:.3f} (epoch {curves.epochs[low]})"
            f" to {curves.val_loss[-1]:.3f} while the training loss fell from "
            f"{curves.train_loss[low]:.3f} to {curves.train_loss[-1]:.3f}"
        )
        evidence |= {"lowest_val_loss": curves.val_loss[low], "lowest_at_epoch": curves.epochs[low]}
    gaps = curves.accuracy_gaps()
    if gaps[-1] >= ACCURACY_GAP and gaps[-1] - min(gaps) >= ACCURACY_GAP:
        signs.append(
            f"training accuracy {curves.train_accuracy[-1]:.1%} against validation "
            f"{curves.val_accuracy[-1]:.1%}: a gap of {gaps[-1]:.1%}, up from {min(gaps):.1%}"
        )
        evidence |= {"accuracy_gap": gaps[-1], "smallest_accuracy_gap": min(gaps)}
    if not curves.smoothing:  # with smoothing the two losses measure different things
        loss_gaps = [v - t for t, v in zip(curves.train_loss, curves.val_loss, strict=True)]
        threshold = LOSS_GAP * curves.chance
        if loss_gaps[-1] >= threshold and loss_gaps[-1] - min(loss_gaps) >= threshold:
            signs.append(
                f"validation loss {curves.val_loss[-1]:.3f} against training "
                f"{curves.train_loss[-1]:.3f}: a gap of {loss_gaps[-1]:.3f}, up from "
                f"{min(loss_gaps):.3f}"
            )
            evidence |= {"loss_gap": loss_gaps[-1], "smallest_loss_gap": min(loss_gaps)}
    if not signs:
        return None
    best_epoch, best = curves.best()
    advice = (
        "regularise (more weight decay, label smoothing), augment more, get more data, or "
        f"train fewer stages; the best epoch ({best_epoch}, validation accuracy {best:.1%}) "
        "is the model kept"
    )
    evidence |= curves.last() | {"best_epoch": best_epoch}
    return Finding("overfitting", "; ".join(signs), advice, evidence)


def _underfitting(curves: _Curves) -> Finding | None:
    left = curves.excess[-1] / curves.reach  # the fraction of the way not fallen yet
    fall = curves.train_fall()
    gap = curves.accuracy_gaps()[-1]
    if not (left >= HIGH_LOSS and fall < IMPROVING * curves.reach and gap < ACCURACY_GAP):
        return None
    summary = (
        f"the training loss is flat ({-fall:+.3f} per epoch over the last {curves.window}) and "
        f"high ({curves.train_loss[-1]:.3f}, guessing scores {curves.chance:.3f}), and "
        f"validation is close (accuracy {curves.val_accuracy[-1]:.1%}, training "
        f"{curves.train_accuracy[-1]:.1%})"
    )
    advice = (
        "the model does not fit even the training data: raise the learning rate "
        "(`headstart lr-find`), train longer, unfreeze more stages (--strategy full), "
        "or use a bigger model"
    )
    evidence = curves.last() | {
        "train_loss_fall_per_epoch": fall,
        "loss_of_guessing": curves.chance,
        "training_loss_floor": curves.floor,
        "fraction_of_loss_left": left,
    }
    return Finding("underfitting", summary, advice, evidence)


def _still_improving(curves: _Curves) -> Finding | None:
    fall = curves.train_fall()
    start = -1 - curves.window
    best_epoch, best = curves.best()
    accuracy_rising = best_epoch == curves.epochs[-1] and best > curves.val_accuracy[start]
    val_fall = curves.val_fall()
    loss_falling = curves.val_loss[-1] == min(curves.val_loss) and val_fall >= (
        IMPROVING * curves.chance
    )
    if not (fall >= IMPROVING * curves.reach and (accuracy_rising or loss_falling)):
        return None
    summary = (
        f"both curves still improve: over the last {curves.window} epochs the training loss "
        f"fell {fall:.3f} per epoch and validation went from loss "
        f"{curves.val_loss[start]:.3f} and accuracy {curves.val_accuracy[start]:.1%} to "
        f"{curves.val_loss[-1]:.3f} and {curves.val_accuracy[-1]:.1%}, its best so far"
    )
    advice = (
        f"train longer: `headstart fit --resume RUN --epochs {2 * len(curves.epochs)}` goes on "
        f"from epoch {len(curves.epochs)} of this run"
    )
    evidence = curves.last() | {
        "train_loss_fall_per_epoch": fall,
        "val_loss_fall_per_epoch": val_fall,
        "best_epoch": best_epoch,
    }
    return Finding("still improving", summary, advice, evidence)


def _converged(curves: _Curves) -> Finding:
    best_epoch, best = curves.best()
    gap = curves.accuracy_gaps()[-1]
    summary = (
        f"the curves flattened (training loss {-curves.train_fall():+.3f} per epoch over the "
        f"last {curves.window}) with training and validation accuracy {gap:+.1%} apart; best "
        f"validation accuracy {best:.1%} at epoch {best_epoch}"
    )
    advice = (
        "healthy: more epochs of this setup will not help; to go further, get more data, "
        "try a bigger model, or ensemble"
    )
    evidence = curves.last() | {
        "train_loss_fall_per_epoch": curves.train_fall(),
        "accuracy_gap": gap,
        "best_epoch": best_epoch,
    }
    return Finding("converged", summary, advice, evidence)


def _too_short(curves: _Curves) -> Finding:
    summary = "one epoch is too few to read a trend" if curves.epochs else "no epoch finished"
    return Finding(
        "too short",
        summary,
        "train at least 3 epochs (--epochs 3)",
        curves.last() if curves.epochs else {},
    )


def _note_stop(finding: Finding, stopped: str) -> Finding:
    """A run cut short by Ctrl-C: the advice says what cut it and how to go on."""
    if finding.verdict not in ("still improving", "underfitting"):
        return finding
    cause = "`headstart fit --resume RUN` goes on from the last epoch"
    return Finding(
        finding.verdict,
        f"{finding.summary} (stopped early: {stopped})",
        f"{finding.advice}; {cause}",
        finding.evidence | {"stopped": stopped},
    )
