"""Class imbalance: weigh the loss by class, or draw the batches balanced, and decide which.

Either remedy trains the model for a world where every class is equally likely: balanced
accuracy and the small classes' recall rise, and the predicted probabilities shift towards the
small classes (plain accuracy on data as imbalanced as the training set may fall a little).
Mild imbalance needs neither: the head's bias absorbs the class priors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..config import BALANCING
from ..errors import HeadstartError

__all__ = ["balanced_order", "choose_balancing", "class_weights"]

#: What ``choose_balancing`` accepts; "auto" picks one of the others from the class counts.
#: Largest/smallest class ratio up to which "auto" leaves the data as it is.
WEIGHTING_FROM = 3.0
#: Ratio above which "auto" draws balanced batches instead of weighing the loss.
SAMPLING_ABOVE = 10.0


def class_weights(counts: Sequence[int]) -> torch.Tensor:
    """Inverse-frequency weights for ``nn.CrossEntropyLoss(weight=...)``: ``N / (C * n_c)``.

    Every class then carries the same total weight in the loss, and the weights average 1 over
    the training samples, so the loss keeps its scale (which matters for soft Mixup targets,
    where torch does not divide by the summed weights). This is scikit-learn's
    ``class_weight="balanced"``, so the fine-tuned model and the linear probe weigh alike.

    Inverse frequency rather than Cui et al.'s "effective number of samples" (2019): that scheme
    discounts large classes for redundancy among their images, through a parameter beta tuned on
    long-tailed datasets with thousands of images per class. At our sizes it differs little
    (beta = 0.999: 20 vs 100 images weigh 4.8x apart instead of 5x, 100 vs 500 4.1x), and
    inverse frequency needs no knob to explain. A class with no training images gets weight 0
    (it never appears as a target).
    """
    counts = _checked_counts(counts)
    present = counts > 0
    weights = np.zeros(len(counts))
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def balanced_order(labels: Sequence[int], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices into ``labels``, drawn with replacement so every class present is equally
    likely (as ``torch.utils.data.WeightedRandomSampler`` with inverse-frequency weights);
    within a class, every image is equally likely. The same ``rng`` state gives the same order.

    Small classes' images come back several times per epoch; the training augmentation makes
    each repeat a different view.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise HeadstartError(f"labels: need a non-empty list of class indices, got {labels!r}")
    if n < 0:
        raise HeadstartError(f"n={n}: the number of indices to draw must be >= 0")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    probabilities = 1.0 / (len(classes) * counts[inverse])
    return rng.choice(len(labels), size=n, replace=True, p=probabilities / probabilities.sum())


def choose_balancing(counts: Sequence[int], requested: str = "auto") -> tuple[str, str]:
    """``("none" | "weighted-loss" | "sampler", reason)`` for these training class counts.

    The rule for "auto", by the ratio of the largest to the smallest class:

    - up to 3: "none". The bias learns the priors; reweighting would trade calibrated
      probabilities for a gain within noise.
    - up to 10: "weighted-loss". Every batch still holds a few images of each class, so
      upweighting them costs little gradient noise, and each image is seen once an epoch.
    - above 10: "sampler". A batch of 32 at 1:20 misses a class of two entirely about a fifth of
      the time, and a batch that has one gives it 20 times the weight: noisy steps. Balanced
      batches show every class in every batch at ordinary weight, and augmentation varies the
      repeated images.
    """
    if requested not in BALANCING:
        raise HeadstartError(
            f"balancing={requested!r}: must be one of {', '.join(repr(b) for b in BALANCING)}"
        )
    counts = _checked_counts(counts)
    present = counts[counts > 0]
    ratio = present.max() / present.min()
    measured = f"the largest class has {ratio:.1f}x the images of the smallest"
    if requested != "auto":
        return requested, f"requested ({measured})"
    if ratio <= WEIGHTING_FROM:
        return "none", f"{measured}: at most {WEIGHTING_FROM:g}x, the head's bias absorbs it"
    if ratio <= SAMPLING_ABOVE:
        return "weighted-loss", (
            f"{measured}: above {WEIGHTING_FROM:g}x, each class weighs the same in the loss"
        )
    return "sampler", (
        f"{measured}: above {SAMPLING_ABOVE:g}x, batches are drawn with every class equally "
        "likely (weights that large would make the steps noisy)"
    )


def _checked_counts(counts: Sequence[int]) -> np.ndarray:
    array = np.asarray(counts)
    if array.ndim != 1 or len(array) == 0 or (array < 0).any() or array.sum() == 0:
        raise HeadstartError(
            f"counts={list(counts)!r}: need one count >= 0 per class, with some images in all"
        )
    return array.astype(float)
