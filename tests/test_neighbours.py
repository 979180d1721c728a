"""The audit's neighbour search: exact, and by an inverted-file index beyond the sizes where the
exact search pays; both find the same near copies and the same outliers."""

from __future__ import annotations

import numpy as np
import pytest

import headstart
from headstart.auditing import neighbours as search
from headstart.auditing.neighbours import index_available, neighbours

needs_faiss = pytest.mark.skipif(not index_available(), reason="faiss is not installed")


def clustered(n: int = 3000, dimension: int = 64, seed: int = 0):
    """Vectors in 8 clusters, the last 30 near copies of earlier ones, the one before them
    far from everything; the planted pairs."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, dimension))
    vectors = centres[rng.integers(0, 8, n)] + rng.standard_normal((n, dimension))
    originals = rng.choice(n - 31, 30, replace=False)
    vectors[n - 30 :] = vectors[originals] + 0.01 * rng.standard_normal((30, dimension))
    vectors[n - 31] = 40 * rng.standard_normal(dimension)  # an outlier
    return vectors.astype(np.float32), {(int(o), n - 30 + i) for i, o in enumerate(originals)}


def find(vectors: np.ndarray, method: str):
    return neighbours(vectors, threshold=0.95, per_image=10, k=5, method=method)


def test_the_exact_search_finds_the_near_copies_and_the_outlier():
    vectors, planted = clustered()
    found = find(vectors, "exact")
    assert found.method == "exact"
    assert {(i, j) for i, j, _ in found.pairs} == planted
    assert int(np.argmin(found.kth)) == len(vectors) - 31


@needs_faiss
def test_the_index_finds_what_the_exact_search_finds():
    vectors, planted = clustered()
    assert len(planted) == 30
    exact, approximate = find(vectors, "exact"), find(vectors, "index")
    assert approximate.method == "index"
    assert approximate.described.startswith("an approximate search (an inverted-file index of ")
    assert [(i, j) for i, j, _ in approximate.pairs] == [(i, j) for i, j, _ in exact.pairs]
    np.testing.assert_allclose(
        [s for *_, s in approximate.pairs], [s for *_, s in exact.pairs], atol=1e-5
    )
    # The k-th neighbour of almost every image is found; where it is not, a farther one is.
    close = np.isclose(approximate.kth, exact.kth, atol=1e-4)
    assert close.mean() > 0.95
    assert (approximate.kth[~close] < exact.kth[~close]).all()
    assert int(np.argmin(approximate.kth)) == len(vectors) - 31


@needs_faiss
def test_the_index_gives_the_same_answer_every_time():
    vectors, _ = clustered(seed=1)
    first, second = find(vectors, "index"), find(vectors, "index")
    assert first.pairs == second.pairs
    np.testing.assert_array_equal(first.kth, second.kth)


@needs_faiss
def test_the_size_decides_which_search_runs(monkeypatch):
    vectors, _ = clustered(n=400)
    assert find(vectors, "auto").method == "exact"
    monkeypatch.setattr(search, "EXACT_UP_TO", 100)
    assert find(vectors, "auto").method == "index"
    monkeypatch.setattr(search, "index_available", lambda: False)
    assert find(vectors, "auto").method == "exact"


@needs_faiss
def test_the_audit_says_how_it_sought_neighbours(small_faces, monkeypatch):
    monkeypatch.setattr(search, "EXACT_UP_TO", 10)
    report = headstart.audit(small_faces, quiet=True)
    assert any("sought by an approximate search (an inverted-file" in n for n in report.notes)


def test_the_exact_search_centres_without_a_copy_and_agrees_with_centred_cosines():
    # Features of photos share a positive mean (pooled features of photos: norms 1.7 times
    # their centred norms); the search centres a few rows at a time instead of keeping a
    # centred copy (256 MB at 50,000 images), and stays exact far beyond that offset.
    vectors, _ = clustered(n=600)
    vectors += 25.0  # norms some 20 times the centred ones
    found = find(vectors, "exact")
    centred = vectors - vectors.mean(axis=0, dtype=np.float64)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    fifth = -np.sort(-similarity, axis=1)[:, 4]
    assert np.allclose(found.kth, fifth, atol=1e-5)
    expected = {(i, j) for i, j in zip(*np.nonzero(np.triu(similarity >= 0.95)), strict=True)}
    assert {(i, j) for i, j, _ in found.pairs} == expected


def test_the_exact_search_holds_no_copy_of_the_features(monkeypatch):
    import tracemalloc

    monkeypatch.setattr(search, "_BLOCK_ELEMENTS", 1 << 18)  # blocks of 3 MB, not 48
    vectors = np.random.default_rng(0).normal(size=(8_000, 640)).astype(np.float32)  # 20 MB
    tracemalloc.start()
    try:
        find(vectors, "exact")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < vectors.nbytes / 2
