"""Nearest neighbours in feature space: exact for the sizes headstart usually meets, an
inverted-file index beyond them.

Two findings need them: near-duplicate candidates (pairs far more similar than distinct
images) and outliers (images whose neighbours are all far away). Both read each image's few
closest others. Up to :data:`EXACT_UP_TO` images the similarity matrix is computed in blocks of
rows (at most 4 million similarities at once, 16 MB, whatever the number of images; the work
is one ``n x n x d`` product, a few seconds for 5,000 images on a CPU, small next to
extracting the features). Beyond that its ``n^2`` work
outgrows that of an inverted-file index (faiss's ``IndexIVFFlat``: the
vectors clustered into about ``4 sqrt(n)`` cells, each query compared with the vectors of
its nearest cells only) does the same search in ``n^1.5``. Near duplicates lie in one cell or
in neighbouring ones, so the index finds them; ``benchmarks/neighbours.py`` measures its
recall against the exact search and where it starts to pay.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["EXACT_UP_TO", "Neighbours", "index_available", "neighbours"]

_BLOCK = 1024
#: Similarities the exact search holds at once, at most (16 MB of float32, and 32 MB of
#: argpartition's indices): its blocks of rows shrink as the images grow, so that its memory
#: does not. At 50,000 images, blocks of 1,024 rows put the audit's peak 1 GB above what it
#: held before the search. Blocks this small cost no time: 5.5 s at 20,000 images against
#: 6.0 s with four times the elements (2 CPU cores).
_BLOCK_ELEMENTS = 1 << 22
#: Up to this many images the search is exact; beyond, approximate where faiss is installed
#: (``pip install headstart[scale]``). Measured by benchmarks/neighbours.py on 2 CPU cores:
#: exact 5.8 s at 20,000 images and 39 s at 50,000, the index 10.8 s and 46 s (its
#: clustering, trained on one thread for repeatable cells, dominates), with full recall of the
#: near-duplicate pairs; the exact search's n^2 overtakes it near 100,000.
EXACT_UP_TO = 100_000
#: Cells probed per query by the inverted-file index: recall of the near-duplicate pairs
#: and of the outliers' neighbours measured at 1.0 on the benchmark's sets.
PROBES = 16


@dataclass(frozen=True)
class Neighbours:
    """``pairs``: ``(i, j, similarity)`` with ``i < j``, each image's closest above the threshold.
    ``kth``: each image's similarity to its ``k``-th nearest other image (NaN if there are
    not ``k`` others). ``method``: how they were found, ``"exact"`` or ``"index"``;
    ``described``: the same in words."""

    pairs: list[tuple[int, int, float]]
    kth: np.ndarray
    method: str = "exact"
    described: str = "an exact search"


def index_available() -> bool:
    """Whether faiss, which the approximate search needs, is installed and imports."""
    try:
        import faiss  # noqa: F401
    except ImportError:  # absent, or installed against another NumPy
        return False
    return True


def neighbours(
    features: np.ndarray,
    *,
    threshold: float,
    per_image: int,
    k: int,
    method: str = "auto",
) -> Neighbours:
    """Cosine similarities of mean-centred features: pairs above ``threshold`` and the ``k``-th.

    Centring removes what all images of this dataset share (the backbone's response to "a
    photo"), so that the similarity measures what sets two images apart from the rest; without
    it, unrelated images of one dataset score 0.6 to 0.9 and duplicates barely stand out.
    At most ``per_image`` pairs are kept per image (its most similar), which bounds the
    verification work in a dense cluster; a cluster stays connected through its members.
    ``method``: ``"exact"``, ``"index"`` (faiss's inverted-file index), or ``"auto"``: the
    index beyond :data:`EXACT_UP_TO` images where faiss is installed, else exact.
    """
    if method not in ("auto", "exact", "index"):
        raise ValueError(f"method={method!r}; expected 'auto', 'exact' or 'index'")
    n = len(features)
    width = min(max(per_image, k), n - 1)
    if method == "auto":
        method = "index" if n > EXACT_UP_TO and index_available() else "exact"
    if width < 1:
        return Neighbours([], np.full(n, np.nan))
    described = "an exact search"
    if method == "exact":
        search = _exact(features, width)
    else:
        cells = _cells(n)
        described = (
            f"an approximate search (an inverted-file index of {cells} cells, {PROBES} probed)"
        )
        search = _inverted_file(_centred_unit(features), width, cells)

    kth = np.full(n, np.nan)
    found: dict[tuple[int, int], float] = {}
    for start, similarity, index in search:
        # Rows sorted by similarity, most similar first; the image itself left out.
        if 0 < k < n:
            kth[start : start + len(index)] = similarity[:, k - 1]
        take = min(per_image, width)
        for row, column in zip(*np.nonzero(similarity[:, :take] >= threshold), strict=True):
            i, j = start + int(row), int(index[row, column])
            found[min(i, j), max(i, j)] = float(similarity[row, column])
    pairs = [(i, j, s) for (i, j), s in sorted(found.items())]
    return Neighbours(pairs, kth, method, described)


def _centred_unit(features: np.ndarray) -> np.ndarray:
    unit = features.astype(np.float32)  # one copy, centred and scaled in place
    unit -= features.mean(axis=0, dtype=np.float64).astype(np.float32)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    return unit


def _exact(features: np.ndarray, width: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Each block of rows: the ``width`` most similar others of each, by similarity.

    The centred vectors are never made (at 50,000 images, a copy of 256 MB): the block's rows
    are centred (a copy of a few rows) and their products with the raw vectors corrected after
    the fact, ``(x - m).(y - m) = (x - m).y - (x - m).m``, then divided by the centred norms.
    Only one side is raw, so float32's rounding grows with how far the vectors lie from their
    mean as a ratio, not its square.
    """
    n = len(features)
    mean = features.mean(axis=0, dtype=np.float64).astype(np.float32)
    norms = np.empty(n, np.float32)
    for start in range(0, n, _BLOCK):
        centred = features[start : start + _BLOCK] - mean
        norms[start : start + len(centred)] = np.linalg.norm(centred, axis=1)
    np.maximum(norms, 1e-12, out=norms)
    rows = max(1, min(_BLOCK, _BLOCK_ELEMENTS // n))
    for start in range(0, n, rows):
        block = np.arange(start, min(start + rows, n))
        centred = features[block] - mean
        similarity = centred @ features.T
        similarity -= (centred @ mean)[:, None]
        similarity /= norms[block, None]
        similarity /= norms[None, :]
        yield start, *_most_similar(similarity, block, width)


def _closest(unit: np.ndarray, rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``width`` most similar others of each of ``rows`` among the unit vectors ``unit``,
    most similar first: their similarities and indices."""
    return _most_similar(unit[rows] @ unit.T, rows, width)


def _most_similar(block: np.ndarray, rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """From ``block``, the similarities of ``rows`` to every vector (overwritten): the
    ``width`` most similar others of each, most similar first, and their indices."""
    block[np.arange(len(rows)), rows] = -np.inf  # an image is not its own neighbour
    np.negative(block, out=block)  # in place: the most similar first, without a copy
    index = np.argpartition(block, width - 1, axis=1)[:, :width]
    similarity = -np.take_along_axis(block, index, axis=1)
    order = np.argsort(-similarity, axis=1, kind="stable")
    return np.take_along_axis(similarity, order, 1), np.take_along_axis(index, order, 1)


def _cells(n: int) -> int:
    """How many cells the index clusters ``n`` vectors into: faiss's rule of thumb, ``4
    sqrt(n)``, with at least 39 vectors a cell to train the clustering on."""
    return max(1, min(int(4 * np.sqrt(n)), n // 39))


def _inverted_file(
    unit: np.ndarray, width: int, cells: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """As :func:`_exact`, from faiss's inverted-file index (inner products of unit vectors)."""
    import faiss

    dimension = unit.shape[1]
    quantizer = faiss.IndexFlatIP(dimension)
    index = faiss.IndexIVFFlat(quantizer, dimension, cells, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 0  # the clustering's own seed: the same cells on every run
    index.cp.spherical = True  # centroids of unit vectors, compared by inner product
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # sums in one order: the same cells on any machine
    try:
        index.train(unit)
    finally:
        faiss.omp_set_num_threads(threads)
    index.add(unit)
    index.nprobe = min(PROBES, cells)
    for start in range(0, len(unit), _BLOCK):
        queries = unit[start : start + _BLOCK]
        similarity, found = index.search(queries, width + 1)
        rows = start + np.arange(len(queries))
        # Drop each image itself (not always first: an exact copy ties with it), else the
        # last, least similar answer.
        itself = found == rows[:, None]
        drop = np.where(itself.any(axis=1), itself.argmax(axis=1), width)
        keep = np.ones_like(itself)
        keep[np.arange(len(queries)), drop] = False
        similarity = similarity[keep].reshape(len(queries), width)
        found = found[keep].reshape(len(queries), width)
        # The few images whose probed cells held fewer than ``width`` others: compared with
        # every vector, so that no image goes without its neighbours.
        short = np.flatnonzero((found < 0).any(axis=1))
        if short.size:
            similarity[short], found[short] = _closest(unit, rows[short], width)
        yield start, similarity, found
