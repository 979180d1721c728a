"""Each label's threshold: the probability from which the model says yes, chosen on the
validation images to give that label its best F1 (precision and recall weighed alike).

A label with too few validation images to choose on keeps 0.5; the thresholds are chosen on
the images that also score them, so validation's F1 flatters a little: the test split's (with
``--test-fraction``) does not.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve

__all__ = ["FEWEST", "choose_thresholds"]

#: Validation images with a label, at least, for its threshold to be chosen on them.
FEWEST = 3
DEFAULT = 0.5


def choose_thresholds(targets: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """A threshold per label (a column of ``targets``, 0/1, and of ``probabilities``)."""
    chosen = np.full(targets.shape[1], DEFAULT)
    for label in range(targets.shape[1]):
        truth = targets[:, label] > 0.5
        if truth.sum() < FEWEST or truth.all():
            continue
        precision, recall, cuts = precision_recall_curve(truth, probabilities[:, label])
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        best = int(np.argmax(f1[:-1]))  # the last point has no threshold
        # Halfway to the next lower score, so that a new image a little below the lowest
        # accepted validation score is still accepted.
        below = probabilities[:, label][probabilities[:, label] < cuts[best]]
        chosen[label] = (cuts[best] + below.max()) / 2 if len(below) else cuts[best]
    return chosen
