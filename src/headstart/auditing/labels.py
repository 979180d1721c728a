"""Wrong labels: how many there are likely to be, which ones, and whether to believe it.

A logistic-regression probe on the cached backbone features predicts every image's class
*out of sample* (5-fold cross-validation: an image is never scored by a model that saw it).
Confident learning (Northcutt, Jiang and Chuang, 2021, as implemented by ``cleanlab``) then
estimates how many labels are wrong: per class, how confident the probe must be to overrule a
label, and how many images it overrules that confidently. The images listed are that many,
those whose given label the probe finds least likely, most likely wrong first.

The probe judges the labels, so the list is only as good as the probe: where the features
cannot tell the classes apart, its own mistakes look like wrong labels, and cleanlab counts
them too. The probe's cross-validated accuracy says how much to trust the list; below
:data:`RELIABLE_ACCURACY` (or a balanced accuracy below :data:`RELIABLE_BALANCED_ACCURACY`)
the audit says the list is unreliable, and why.

Copies of one image are kept in the same fold (the duplicate groups are the CV groups), so a
copy cannot vouch for its twin's label.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data.sources import Sample
from ..scaling import mean_and_spread

__all__ = [
    "FOLDS",
    "RELIABLE_ACCURACY",
    "RELIABLE_BALANCED_ACCURACY",
    "LabelCheck",
    "LabelIssue",
    "check_labels",
]

#: Held-out rows scored at a time.
_BLOCK_ROWS = 2048
#: Cross-validation folds: each probe trains on 80% of the images.
FOLDS = 5
#: Inverse regularisation of the probe (on standardised features). Recall of planted flips
#: and false alarms were the same for every C from 0.01 to 0.3; a middle value.
C = 0.1
#: The probe accuracy (cross-validated, against the given labels) below which the list is
#: called unreliable. A list is worth acting on when most of it is wrong labels rather than
#: the probe's own mistakes, and real datasets hold a few percent of wrong labels (3.3% on
#: average in the ten benchmark test sets Northcutt, Athalye and Mueller examined in 2021).
#: Measured by benchmarks/label_errors.py with every label right, cleanlab still listed
#: 0.4-0.7% of the images where the probe scored 95-97%, 0.9% at 93%, 2.7% at 88%, 3.3% at
#: 85%, 11% at 75% and 79% at chance. With 3% of the labels flipped on purpose, the list was
#: 79-100% flips where the probe scored 90% or more, 65% at 89%, 37-53% at 82-85% and under
#: 30% below 80%: the two cross at 85-89%; 90% keeps a margin. The accuracy cannot tell weak
#: features from many wrong labels: with 10% flipped, good features score 81-90% and their
#: list (86-100% flips) is called unreliable too, which the printed advice allows for.
RELIABLE_ACCURACY = 0.90
#: The balanced accuracy (the per-class accuracies averaged) below which the list is called
#: unreliable however high the accuracy: a probe that mostly answers the largest class scores
#: well on imbalanced data and lists the small classes' images as wrong. With one large class
#: and small ones, every label right, the probes scored 86-94% but 38-77% balanced and listed
#: small-class images only; the planted faults of the tests (a class of 22 images, 11 wrong
#: labels) score 90% balanced, with a list 85% right.
RELIABLE_BALANCED_ACCURACY = 0.80
#: A probe within this much of the largest class's share is said to be no better than guessing.
GUESSING_MARGIN = 0.05


@dataclass(frozen=True)
class LabelIssue:
    """An image whose label the out-of-sample prediction contradicts."""

    sample: Sample
    suggested: str  # the class the probe finds most likely, other than the given one
    given_probability: float  # the probe's probability of the given label
    suggested_probability: float

    def to_dict(self) -> dict:
        return {
            "path": str(self.sample.path),
            "split": self.sample.split,
            "label": self.sample.label,
            "suggested": self.suggested,
            "label_probability": round(self.given_probability, 4),
            "suggested_probability": round(self.suggested_probability, 4),
        }


@dataclass(frozen=True)
class LabelCheck:
    """What the label check found: how many labels are likely wrong, which, and how far the
    probe that judged them can be trusted."""

    estimated: int  # cleanlab's estimate of the number of wrong labels
    issues: list[LabelIssue]  # the images most likely wrong, most likely first
    images: int  # the images checked
    probe_accuracy: float  # how often the probe agrees with the given labels, out of sample
    probe_balanced_accuracy: float  # the same, averaged over classes
    chance: float  # the share of the largest class: the accuracy of always guessing it

    @property
    def reliable(self) -> bool:
        """Whether the probe is good enough for its disagreements to mean wrong labels."""
        return (
            self.probe_accuracy >= RELIABLE_ACCURACY
            and self.probe_balanced_accuracy >= RELIABLE_BALANCED_ACCURACY
        )

    @property
    def why(self) -> str:
        """The probe's accuracy in words: the reason the list can, or cannot, be trusted."""
        only = "" if self.probe_accuracy >= RELIABLE_ACCURACY else "only "
        words = [
            f"the probe that judges the labels agrees with {only}"
            f"{_percent(self.probe_accuracy)} of them (cross-validated)"
        ]
        if self._favours_large_classes:
            words.append(
                f"but only {_percent(self.probe_balanced_accuracy)} in an average class "
                "(balanced accuracy)"
            )
        if self.probe_accuracy <= self.chance + GUESSING_MARGIN:
            words.append(
                f"no better than always answering the largest class ({_percent(self.chance)})"
            )
        return ", ".join(words)

    @property
    def advice(self) -> str:
        """What to do with an unreliable list (nothing to add to a reliable one)."""
        if self.reliable:
            return ""
        if self._favours_large_classes and self.probe_accuracy >= RELIABLE_ACCURACY:
            return (
                "a probe that mostly answers the large classes takes the small classes' images "
                "for wrong labels: look at a few before relabelling any"
            )
        return (
            "a probe that agrees with so few labels cannot tell the classes apart well (then "
            "most images it doubts are its own mistakes) or faces many wrong labels, and the "
            "list cannot say which: look at a few before relabelling any"
        )

    @property
    def _favours_large_classes(self) -> bool:
        """A balanced accuracy too low, and clearly below the accuracy: the small classes
        are where the probe goes wrong."""
        balanced = self.probe_balanced_accuracy
        return balanced < RELIABLE_BALANCED_ACCURACY and balanced < self.probe_accuracy - 0.05

    def headline(self) -> str:
        """The finding in one phrase: cleanlab's estimate, and whether to believe it."""
        if self.estimated == 0:
            found = "no wrong labels found"
            return found if self.reliable else f"{found}, but the check is unreliable: {self.why}"
        estimate = (
            f"about {self.estimated} labels may be wrong (cleanlab's estimate, "
            f"{self.estimated / self.images:.0%} of {self.images})"
        )
        return estimate if self.reliable else f"{estimate}; the list is unreliable: {self.why}"

    def to_dict(self) -> dict:
        """The ``label_issues`` section of ``audit.json``."""
        return {
            "count": len(self.issues),  # the images listed: the estimate, most likely first
            "estimated_count": self.estimated,
            "images": self.images,
            "reliable": self.reliable,
            "why": self.why,
            "probe_accuracy": round(self.probe_accuracy, 4),
            "probe_balanced_accuracy": round(self.probe_balanced_accuracy, 4),
            "chance": round(self.chance, 4),
            "reliable_accuracy": RELIABLE_ACCURACY,
            "reliable_balanced_accuracy": RELIABLE_BALANCED_ACCURACY,
            "list": [issue.to_dict() for issue in self.issues],
        }


def check_labels(
    samples: Sequence[Sample],
    features: np.ndarray,
    groups: Sequence[int] | None = None,
    *,
    seed: int = 0,
    overwrite: bool = False,
) -> LabelCheck | None:
    """How many labels among ``samples`` (rows of ``features``) are likely wrong, and which.

    ``groups`` (one integer per sample) keeps copies in one fold. Returns None when the data
    cannot be cross-validated: fewer than two classes, or fewer than two independent groups,
    or a training fold with a single class. ``overwrite``: ``features`` is the caller's to
    give up, standardised in place rather than copied (at 50,000 images, 256 MB).
    """
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues
    from sklearn.metrics import balanced_accuracy_score

    names = sorted({s.label for s in samples})
    labels = np.array([names.index(s.label) for s in samples])
    features = features if overwrite else features.astype(np.float32)  # standardised in place
    probabilities = _out_of_sample(features, labels, len(names), groups, seed)
    if probabilities is None:
        return None
    # Counted off the confident joint, uncalibrated: closer to the planted flips than the
    # calibrated count (20 flipped in LFW: 19-24 against 22-26; 54 in digits: 70-76 against
    # 89-95).
    estimated = int(num_label_issues(labels, probabilities))
    # cleanlab's own ranking cut at its own estimate: the `estimated` images whose given
    # label the probe finds least likely. Of the ways cleanlab offers to pick them, this one
    # listed the most planted flips for the same length (3% of digits' labels flipped: 66-73%
    # of the list, against 57-64% for the very images its estimate counts).
    ranked = find_label_issues(
        labels,
        probabilities,
        filter_by="low_self_confidence",
        return_indices_ranked_by="self_confidence",
        n_jobs=1,
    )
    predicted = probabilities.argmax(axis=1)
    return LabelCheck(
        estimated=estimated,
        issues=[_issue(samples[i], labels[i], probabilities[i], names) for i in ranked],
        images=len(samples),
        probe_accuracy=float(np.mean(predicted == labels)),
        probe_balanced_accuracy=float(balanced_accuracy_score(labels, predicted)),
        chance=float(np.bincount(labels).max() / len(labels)),
    )


def _out_of_sample(
    features: np.ndarray,
    labels: np.ndarray,
    classes: int,
    groups: Sequence[int] | None,
    seed: int,
) -> np.ndarray | None:
    """Each image's class probabilities from a probe that did not see it (or its copies);
    None when the data cannot be cross-validated."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold
    from threadpoolctl import threadpool_limits

    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    # Folds are made of whole groups: there cannot be more folds than groups. Stratified
    # folds need every class in each of them: with a class of a single image, the folds are
    # drawn without stratifying (that class is absent from the training side once).
    folds = min(FOLDS, len(np.unique(groups)))
    if classes < 2 or folds < 2:
        return None
    smallest = int(np.bincount(labels, minlength=classes)[np.unique(labels)].min())
    probabilities = np.zeros((len(labels), classes))
    if smallest >= 2:
        splitter = StratifiedGroupKFold(min(folds, smallest), shuffle=True, random_state=seed)
    else:
        splitter = GroupKFold(folds)
    # Standardised once, over every image (no label is read), in place: each fold's probe
    # then trains on its rows by weight, with no copy of them. Each fold used to scale by its
    # own training rows; the scales of four fifths of the images and of all of them differ
    # by sampling noise.
    _standardise(features)
    # One BLAS thread: on these matrix sizes (thousands x 1280) the threaded BLAS spends
    # more on synchronisation than it saves; one thread was 5 to 15 times faster, measured.
    with threadpool_limits(1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        for train, held_out in splitter.split(features, labels, groups):
            if len(np.unique(labels[train])) < 2:
                return None  # a fold of one class: nothing to tell the labels apart with
            # The held-out rows weigh nothing: the fold's probe is fitted on its training
            # rows without a copy of them (at 50,000 images, 205 MB), to the same optimum
            # (L-BFGS; the penalty is scaled by the weights' sum, as by the rows' count).
            weights = np.zeros(len(labels), features.dtype)
            weights[train] = 1
            probe = LogisticRegression(C=C, max_iter=300, random_state=seed)
            probe.fit(features, labels, sample_weight=weights)
            # A class absent from a fold's training rows gets probability 0 for its held-out
            # images: the probe knows it from its weightless rows and gives it a little
            # probability, which is taken away and the rest renormalised.
            trained = np.isin(probe.classes_, labels[train])
            for start in range(0, len(held_out), _BLOCK_ROWS):
                rows = held_out[start : start + _BLOCK_ROWS]
                found = probe.predict_proba(features[rows])[:, trained]
                found /= found.sum(axis=1, keepdims=True)
                probabilities[np.ix_(rows, probe.classes_[trained])] = found
    return probabilities


def _standardise(rows: np.ndarray) -> None:
    """Centre and scale the columns of ``rows`` in place, as scikit-learn's ``StandardScaler``
    does (the mean and the population spread; a constant column only centred). In place and
    summed a block of rows at a time, because the scaler holds two more copies of the matrix
    while it works: the label check's peak was 800 MB above the audit's at 50,000 images."""
    mean, scale = mean_and_spread(rows)
    rows -= mean.astype(rows.dtype)
    rows /= scale.astype(rows.dtype)


def _percent(share: float) -> str:
    """Rounded down, so that an accuracy below the threshold never reads as the threshold."""
    return f"{math.floor(100 * share)}%"


def _issue(sample: Sample, label: int, probabilities: np.ndarray, names: list[str]) -> LabelIssue:
    """The image and the class the probe would give it instead of its label."""
    others = probabilities.copy()
    others[label] = -1.0
    suggested = int(others.argmax())
    return LabelIssue(
        sample, names[suggested], float(probabilities[label]), float(probabilities[suggested])
    )
