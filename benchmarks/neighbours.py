"""The audit's neighbour search: exact against the inverted-file index, by size.

For each size, feature vectors of the built-in backbone's width (1,280) in clusters (classes,
each with its own low-rank variation, as pooled CNN features are), with near-duplicate pairs
planted (a copy plus a little noise: the features of a re-encoded or resized photo), and the
audit's own search run both ways (``headstart.auditing.neighbours.neighbours``, the audit's
threshold, candidates and k). It prints the time of each, and of the index: the recall of
the exact search's pairs above the threshold, the recall of the planted pairs, and how far
each image's k-th neighbour similarity (the outlier measure) is from the exact one. Numbers
only; nothing is asserted. Needs faiss (``pip install 'headstart[scale]'``).

Usage: python benchmarks/neighbours.py [--sizes 5000 20000 50000] [--classes 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from headstart.auditing.duplicates import CANDIDATES_PER_IMAGE, FEATURE_SIMILARITY
from headstart.auditing.neighbours import neighbours
from headstart.auditing.properties import OUTLIER_NEIGHBOUR


def features(n: int, classes: int, dimension: int = 1280, seed: int = 0):
    """``n`` vectors in ``classes`` clusters, the last 2% of them near copies of earlier ones;
    the planted pairs."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.0, 1.0, (classes, dimension)).astype(np.float32)
    bases = rng.standard_normal((classes, 32, dimension)).astype(np.float32) * 0.15
    label = rng.integers(0, classes, n)
    vectors = centres[label] + np.einsum(
        "nr,nrd->nd", rng.standard_normal((n, 32)).astype(np.float32), bases[label]
    )
    vectors += rng.standard_normal((n, dimension)).astype(np.float32) * 0.3
    copies = n // 50
    originals = rng.choice(n - copies, copies, replace=False)
    noise = rng.standard_normal((copies, dimension)).astype(np.float32) * 0.05
    vectors[n - copies :] = vectors[originals] + noise
    planted = {(int(o), n - copies + i) for i, o in enumerate(originals)}
    return np.maximum(vectors, 0), planted


def search(vectors: np.ndarray, method: str):
    started = time.perf_counter()
    found = neighbours(
        vectors,
        threshold=FEATURE_SIMILARITY,
        per_image=CANDIDATES_PER_IMAGE,
        k=OUTLIER_NEIGHBOUR,
        method=method,
    )
    return found, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 50000])
    parser.add_argument("--classes", type=int, default=20)
    args = parser.parse_args()
    print(
        f"{'images':>8} {'exact s':>8} {'index s':>8} {'pairs':>7} {'recall':>7} "
        f"{'planted':>8} {'kth error (median, max)':>24}  index"
    )
    for n in args.sizes:
        vectors, planted = features(n, args.classes)
        exact, exact_seconds = search(vectors, "exact")
        index, index_seconds = search(vectors, "index")
        truth = {(i, j) for i, j, _ in exact.pairs}
        got = {(i, j) for i, j, _ in index.pairs}
        recall = len(truth & got) / max(len(truth), 1)
        planted_recall = len(planted & got) / max(len(planted), 1)
        error = np.abs(np.nan_to_num(exact.kth - index.kth, nan=0.0, posinf=1, neginf=1))
        print(
            f"{n:>8} {exact_seconds:>8.1f} {index_seconds:>8.1f} {len(truth):>7} "
            f"{recall:>7.3f} {planted_recall:>8.3f} {np.median(error):>12.4f} "
            f"{error.max():>11.4f}  {index.described}",
            flush=True,
        )


if __name__ == "__main__":
    main()
