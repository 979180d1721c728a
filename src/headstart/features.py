"""A frozen backbone's features, computed once and cached on disk.

The cache is keyed by everything that changes a feature vector: the architecture, the weights,
the preprocessing, the view (plain or mirrored) and the image file's contents. A second ``fit``
on the same folder, an ``audit`` followed by a ``fit``, or a new split of the same files reuse
what was computed; only new or edited files go through the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.numpy import load_file

from .data.decoded import PIXELS_VERSION, DecodedImages, content_hash
from .data.images import UnreadableImage
from .data.sources import Skipped
from .inputs import VIEWS, InputPipeline, forward, view
from .models import Preprocessing, WeightsSource
from .storage import write_tensors

__all__ = ["VIEWS", "ExtractedFeatures", "FeatureStore", "extract_features", "feature_stores"]

# VIEWS: the views a feature can be computed from. "hflip" is the mirror image: averaging the
# two is the cheapest test-time augmentation, and training on both doubles a small dataset.

# Shards are written every this many images, so an interrupted extraction keeps its work.
_SHARD_SIZE = 1024


class FeatureStore:
    """Feature vectors of one (backbone, weights, preprocessing, view), by file content hash."""

    def __init__(self, root: Path, identity: dict):
        self.dimension = identity["dimension"]
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        self.directory = Path(root) / digest[:20]
        self.directory.mkdir(parents=True, exist_ok=True)
        identity_file = self.directory / "identity.json"
        if not identity_file.exists():
            identity_file.write_text(json.dumps(identity, indent=2, sort_keys=True))
        self._vectors: dict[str, np.ndarray] = {}
        self._shards: set[str] = set()  # the shards read (or written) so far
        self.refresh()

    def refresh(self) -> None:
        """Read the shards written since this store was opened (by other processes)."""
        for shard in sorted(self.directory.glob("*.safetensors")):
            if shard.name not in self._shards:
                self._shards.add(shard.name)
                self._load(shard)

    def __contains__(self, key: str) -> bool:
        return key in self._vectors

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, keys: Sequence[str]) -> np.ndarray:
        return np.stack([self._vectors[key] for key in keys])

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        if not keys:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        name = f"{time.time_ns()}-{os.getpid()}"  # a new shard's name; never read back
        metadata = {"keys": json.dumps(list(keys))}
        write_tensors({"features": vectors}, self.directory / f"{name}.safetensors", metadata)
        self._shards.add(f"{name}.safetensors")
        self._vectors.update(zip(keys, vectors, strict=True))

    def _load(self, shard: Path) -> None:
        try:
            from safetensors import safe_open

            with safe_open(shard, framework="numpy") as file:
                keys = json.loads(file.metadata()["keys"])
            vectors = load_file(shard)["features"]
        except Exception:  # a damaged shard is only a cache miss
            vectors = keys = None
        if not self._made_here(keys, vectors):
            shard.unlink(missing_ok=True)  # recomputed, never served
            return
        # A vector that is not finite (a bit flipped on disk, a network that overflowed on
        # one image) is a miss for its image alone: the shard's other vectors are served.
        finite = np.isfinite(vectors).all(axis=1)
        for key, vector, usable in zip(keys, vectors, finite, strict=True):
            # The first vector read stays: processes that computed one image twice (a float
            # apart) go on with the same features each.
            if usable:
                self._vectors.setdefault(key, vector)

    def _made_here(self, keys: list | None, vectors: np.ndarray | None) -> bool:
        """Whether a shard holds what :meth:`add` writes: one float32 vector of the
        backbone's width per key."""
        return (
            isinstance(keys, list)
            and vectors is not None
            and vectors.dtype == np.float32
            and vectors.ndim == 2
            and len(vectors) == len(keys)
            and vectors.shape[1] == self.dimension
        )


def feature_stores(
    root: Path, arch: str, source: WeightsSource, preprocessing: Preprocessing, dimension: int
) -> dict[str, FeatureStore]:
    """The stores for one backbone (``dimension`` features an image), one per view: shared
    by ``fit``, ``audit`` and ``check``."""
    weights = asdict(source)
    if source.kind == "file":  # the same path may later hold other weights
        weights["content"] = content_hash(source.location)
    identity = {
        "arch": arch,
        "weights": weights,
        "preprocessing": preprocessing.to_dict(),
        # A new timm may change an architecture's computation; a new decoder, the pixels.
        "timm": timm.__version__,
        "pixels": PIXELS_VERSION,
        "dimension": dimension,
    }
    return {view: FeatureStore(root, {**identity, "view": view}) for view in VIEWS}


@dataclass
class ExtractedFeatures:
    """Features of ``paths`` (in order), one array per view, and the files that failed."""

    paths: list[Path]
    views: dict[str, np.ndarray]
    skipped: list[Skipped]
    seconds: float
    computed: int  # how many images went through the network (the rest came from the cache)

    def rows(self, paths: Sequence[Path]) -> list[int]:
        """Row numbers of ``paths`` in the feature arrays."""
        return [self._row_of[path] for path in paths]

    @cached_property
    def _row_of(self) -> dict[Path, int]:
        return {path: i for i, path in enumerate(self.paths)}


@torch.inference_mode()
def extract_features(
    backbone: torch.nn.Module,
    inputs: InputPipeline,
    paths: Sequence[Path],
    images: DecodedImages,
    stores: dict[str, FeatureStore] | None = None,
    *,
    views: Sequence[str] = ("plain",),
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> ExtractedFeatures:
    """Pooled features of every readable file in ``paths`` for each of ``views``.

    Unreadable files are returned in ``skipped`` (with the reason) and left out of ``paths``.
    ``on_batch(n)`` is called after each ``n`` files, for progress bars.
    """
    start = time.perf_counter()
    unknown = set(views) - set(VIEWS)
    if unknown:
        raise ValueError(f"views={sorted(unknown)}; expected some of {VIEWS}")
    stores = stores or {}
    device = next(backbone.parameters()).device
    normalize = inputs.normalizer().to(device)
    backbone = backbone.eval().to(memory_format=torch.channels_last)

    keys: dict[Path, str] = {}
    skipped: list[Skipped] = []
    for path in paths:
        try:
            keys[path] = images.key(path)
        except UnreadableImage as error:
            skipped.append(Skipped(path, error.reason))
    todo = [p for p in keys if not all(keys[p] in stores.get(v, ()) for v in views)]
    if on_batch and len(keys) > len(todo):
        on_batch(len(keys) - len(todo))

    computed: dict[str, dict[str, np.ndarray]] = {v: {} for v in views}
    unsaved: dict[str, list[str]] = {v: [] for v in views}
    try:
        # On a CPU, decoding and the network take turns on every core (see map_batches).
        for crops in inputs.read(todo, images, batch_size, overlap=device.type != "cpu"):
            skipped.extend(crops.skipped)
            for failed in crops.skipped:
                keys.pop(failed.path)
            if crops.paths:
                normalised = normalize(crops.pixels)
                for name in views:
                    vectors = forward(backbone, view(normalised, name)).float().cpu().numpy()
                    for path, vector in zip(crops.paths, vectors, strict=True):
                        computed[name][keys[path]] = vector
                        unsaved[name].append(keys[path])
            if on_batch:
                on_batch(len(crops))
            if sum(map(len, unsaved.values())) >= _SHARD_SIZE:
                _flush(computed, unsaved, stores)
    finally:
        # Also on Ctrl-C: what was computed is kept for the next run.
        _flush(computed, unsaved, stores)

    kept = [p for p in paths if p in keys]
    arrays = {}
    for name in views:
        found = computed[name]
        rows = [
            found[keys[p]] if keys[p] in found else stores[name].get([keys[p]])[0] for p in kept
        ]
        arrays[name] = np.stack(rows) if rows else np.zeros((0, backbone.num_features), np.float32)
    return ExtractedFeatures(kept, arrays, skipped, time.perf_counter() - start, len(todo))


def _flush(
    computed: dict[str, dict[str, np.ndarray]],
    unsaved: dict[str, list[str]],
    stores: dict[str, FeatureStore],
) -> None:
    for name, keys in unsaved.items():
        store = stores.get(name)
        if store is not None:
            new = [key for key in dict.fromkeys(keys) if key not in store]
            if new:
                store.add(new, np.stack([computed[name][key] for key in new]))
            for key in keys:  # the store holds them now: one copy in memory, not two
                computed[name].pop(key, None)
        keys.clear()
