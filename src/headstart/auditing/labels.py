"""Likely label errors: confident learning on a cross-validated linear probe's predictions.

A logistic-regression probe on the cached backbone features predicts every image's class
*out of sample* (5-fold cross-validation: an image is never scored by a model that saw it).
Confident learning (Northcutt, Jiang and Chuang, 2021, as implemented by ``cleanlab``) then
estimates, per class, how confident the probe must be to overrule a label, and flags the images
whose label the evidence contradicts; they are ranked by the probability the probe gives
their given label, lowest first.

Copies of one image are kept in the same fold (the duplicate groups are the CV groups), so a
copy cannot vouch for its twin's label.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data.sources import Sample

__all__ = ["FOLDS", "LabelIssue", "label_issues"]

#: Cross-validation folds: each probe trains on 80% of the images.
FOLDS = 5
#: Inverse regularisation of the probe (on standardised features). Recall of planted flips
#: and false alarms were the same for every C from 0.01 to 0.3; a middle value.
C = 0.1


@dataclass(frozen=True)
class LabelIssue:
    """An image whose label the out-of-sample prediction contradicts."""

    sample: Sample
    suggested: str  # the label the probe predicts
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


def label_issues(
    samples: Sequence[Sample],
    features: np.ndarray,
    groups: Sequence[int] | None = None,
    *,
    seed: int = 0,
) -> list[LabelIssue] | None:
    """The likely label errors among ``samples`` (rows of ``features``), most likely first.

    ``groups`` (one integer per sample) keeps copies in one fold. Returns None when the data
    cannot be cross-validated: fewer than two classes, or fewer than two independent groups,
    or a training fold with a single class.
    """
    from cleanlab.filter import find_label_issues
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    names = sorted({s.label for s in samples})
    labels = np.array([names.index(s.label) for s in samples])
    groups = np.arange(len(samples)) if groups is None else np.asarray(groups)
    # Folds are made of whole groups: there cannot be more folds than groups. A class smaller
    # than the folds is still checked (scikit-learn warns that it is absent from some folds).
    folds = min(FOLDS, len(np.unique(groups)))
    if len(names) < 2 or folds < 2:
        return None

    probabilities = np.zeros((len(samples), len(names)))
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    # One BLAS thread: on these matrix sizes (thousands x 1280) the threaded BLAS spends
    # more on synchronisation than it saves; one thread was 5 to 15 times faster, measured.
    with threadpool_limits(1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        for train, held_out in splitter.split(features, labels, groups):
            probe = make_pipeline(
                StandardScaler(), LogisticRegression(C=C, max_iter=300, random_state=seed)
            )
            if len(np.unique(labels[train])) < 2:
                return None  # a fold of one class: nothing to tell the labels apart with
            probe.fit(features[train], labels[train])
            # A class absent from a training fold gets probability 0 for its held-out images.
            probabilities[np.ix_(held_out, probe.classes_)] = probe.predict_proba(
                features[held_out]
            )
        ranked = find_label_issues(
            labels, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1
        )
    issues = []
    for i in ranked:
        suggested = int(probabilities[i].argmax())
        issues.append(
            LabelIssue(
                samples[i],
                names[suggested],
                float(probabilities[i, labels[i]]),
                float(probabilities[i, suggested]),
            )
        )
    return issues
