"""Nearest neighbours in feature space, in one pass over the similarity matrix.

Two findings need them: near-duplicate candidates (pairs far more similar than distinct
images) and outliers (images whose neighbours are all far away). The matrix is computed in
blocks of rows, so memory stays at ``block x n`` however many images there are; the work is
one ``n x n x d`` product, a few seconds for 5,000 images on a CPU, small next to extracting
the features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Neighbours", "neighbours"]

_BLOCK = 1024


@dataclass(frozen=True)
class Neighbours:
    """``pairs``: ``(i, j, similarity)`` with ``i < j``, each image's closest above the threshold.
    ``kth``: each image's similarity to its ``k``-th nearest other image (NaN if there are
    not ``k`` others)."""

    pairs: list[tuple[int, int, float]]
    kth: np.ndarray


def neighbours(features: np.ndarray, *, threshold: float, per_image: int, k: int) -> Neighbours:
    """Cosine similarities of mean-centred features: pairs above ``threshold`` and the ``k``-th.

    Centring removes what all images of this dataset share (the backbone's response to "a
    photo"), so that the similarity measures what sets two images apart from the rest; without
    it, unrelated images of one dataset score 0.6 to 0.9 and duplicates barely stand out.
    At most ``per_image`` pairs are kept per image (its most similar), which bounds the
    verification work in a dense cluster; a cluster stays connected through its members.
    """
    n = len(features)
    unit = features.astype(np.float32) - features.mean(axis=0, dtype=np.float64).astype(np.float32)
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    unit /= np.maximum(norms, 1e-12)
    kth = np.full(n, np.nan)
    found: dict[tuple[int, int], float] = {}
    for start in range(0, n, _BLOCK):
        block = unit[start : start + _BLOCK] @ unit.T
        rows = np.arange(len(block))
        block[rows, start + rows] = -np.inf  # an image is not its own neighbour
        if 0 < k < n:
            kth[start : start + len(block)] = -np.partition(-block, k - 1, axis=1)[:, k - 1]
        take = min(per_image, n - 1)
        if take < 1:
            continue
        closest = np.argpartition(-block, take - 1, axis=1)[:, :take]
        similarity = np.take_along_axis(block, closest, axis=1)
        for row, column in zip(*np.nonzero(similarity >= threshold), strict=True):
            i, j = start + int(row), int(closest[row, column])
            found[min(i, j), max(i, j)] = float(similarity[row, column])
    pairs = [(i, j, s) for (i, j), s in sorted(found.items())]
    return Neighbours(pairs, kth)
