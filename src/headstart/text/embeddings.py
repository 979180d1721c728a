"""Sentence embeddings computed once and cached on disk, as image features are.

The cache is a :class:`~headstart.features.FeatureStore` keyed by the encoder's identity (its
name, the content of its weights, how many tokens it reads) and each text's SHA-256: a second
``fit`` of the same texts, an ``audit`` then a ``fit``, or a new split, encode nothing again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..console import progress_bar
from ..features import FeatureStore
from .data import text_key
from .encoder import TextEncoder

__all__ = ["embed"]

_SHARD = 1024  # texts a shard: an interrupted encoding keeps what it finished


def embed(
    texts: Sequence[str],
    encoder: TextEncoder,
    cache_dir: Path | None,
    *,
    batch_size: int = 64,
    quiet: bool = True,
) -> np.ndarray:
    """float32 ``(len(texts), dimension)`` embeddings of ``texts``, in order: read from the
    cache where they are there, the others encoded (each distinct text once) and added."""
    out = np.empty((len(texts), encoder.dimension), dtype=np.float32)
    keys = [text_key(text) for text in texts]
    store = FeatureStore(cache_dir / "text", encoder.identity()) if cache_dir else None
    if store is not None:
        cached = [row for row, key in enumerate(keys) if key in store]
        store.read_into([keys[row] for row in cached], out, cached)
    first: dict[str, int] = {}  # key -> the first row that needs it
    for row, key in enumerate(keys):
        if store is None or key not in store:
            first.setdefault(key, row)
    todo = list(first.values())
    with progress_bar("encoding texts", len(todo), quiet=quiet or not todo) as advance:
        for start in range(0, len(todo), _SHARD):
            rows = todo[start : start + _SHARD]
            vectors = encoder.encode([texts[row] for row in rows], batch_size=batch_size)
            out[rows] = vectors
            if store is not None:
                store.add([keys[row] for row in rows], vectors)
            advance(len(rows))
    copies = [row for row, key in enumerate(keys) if key in first and first[key] != row]
    if copies:
        out[copies] = out[[first[keys[row]] for row in copies]]
    return out
