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
from dataclasses import asdict
from functools import cached_property
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors import safe_open

from .data.decoded import PIXELS_VERSION, DecodedImages, content_hash
from .data.images import UnreadableImage
from .data.sources import Skipped
from .errors import HeadstartError
from .inputs import VIEWS, InputPipeline, forward, view
from .models import Preprocessing, WeightsSource
from .storage import write_tensors

__all__ = ["VIEWS", "ExtractedFeatures", "FeatureStore", "extract_features", "feature_stores"]

# VIEWS: the views a feature can be computed from. "hflip" is the mirror image: averaging the
# two is the cheapest test-time augmentation, and training on both doubles a small dataset.

# Shards are written every this many images, so an interrupted extraction keeps its work.
_SHARD_SIZE = 1024


class FeatureStore:
    """Feature vectors of one (backbone, weights, preprocessing, view), by file content hash.

    Only an index stays in memory (which shard holds each image's vector, at which row): the
    vectors are read from their shards when asked for, into the caller's array. An open store
    costs some 200 bytes an image whatever the vectors' size, so that the one copy of the
    features in memory is the array they are read into (``benchmarks/scale.py``).
    """

    def __init__(self, root: Path, identity: dict):
        self.dimension = identity["dimension"]
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        self.directory = Path(root) / digest[:20]
        self.directory.mkdir(parents=True, exist_ok=True)
        identity_file = self.directory / "identity.json"
        if not identity_file.exists():
            identity_file.write_text(json.dumps(identity, indent=2, sort_keys=True))
        self._where: dict[str, tuple[str, int]] = {}  # key -> (shard name, row in it)
        self._shards: set[str] = set()  # the shards indexed (or written) so far
        self.refresh()

    def refresh(self) -> None:
        """Index the shards written since this store was opened (by other processes)."""
        for shard in sorted(self.directory.glob("*.safetensors")):
            if shard.name not in self._shards:
                self._shards.add(shard.name)
                self._index(shard)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def read_into(self, keys: Sequence[str], out: np.ndarray, rows: Sequence[int]) -> list[str]:
        """Put the vector of ``keys[i]`` in ``out[rows[i]]``, reading each shard once. Returns
        the keys whose vectors could not be read (their shard damaged or removed since it was
        indexed): forgotten by the store, so that they are recomputed, never served."""
        wanted: dict[str, list[tuple[str, int, int]]] = {}  # shard -> (key, position, row)
        lost = []
        for key, row in zip(keys, rows, strict=True):
            if key not in self._where:  # lost by an earlier read
                lost.append(key)
                continue
            shard, position = self._where[key]
            wanted.setdefault(shard, []).append((key, position, row))
        for shard, entries in wanted.items():
            usable = np.zeros(len(entries), dtype=bool)
            read = _read_shard(self.directory / shard, self.dimension)
            positions = [position for _, position, _ in entries]
            if read is not None and all(
                position < len(read[0]) and read[0][position] == key for key, position, _ in entries
            ):
                vectors = read[1][positions]
                usable = np.isfinite(vectors).all(axis=1)
                out[[row for _, _, row in entries]] = vectors  # a lost row is recomputed
            for (key, _, _), good in zip(entries, usable, strict=True):
                if not good:
                    self._where.pop(key, None)  # a copy of an image may be asked for twice
                    lost.append(key)
        return lost

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        if not keys:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        name = f"{time.time_ns()}-{os.getpid()}.safetensors"  # a new shard's name; not read back
        metadata = {"keys": json.dumps(list(keys))}
        write_tensors({"features": vectors}, self.directory / name, metadata)
        self._shards.add(name)
        for row, key in enumerate(keys):
            self._where.setdefault(key, (name, row))

    def _index(self, shard: Path) -> None:
        read = _read_shard(shard, self.dimension)
        if read is None:
            shard.unlink(missing_ok=True)  # recomputed, never served
            return
        keys, vectors = read
        # A vector that is not finite (a bit flipped on disk, a network that overflowed on
        # one image) is a miss for its image alone: the shard's other vectors are served.
        finite = np.isfinite(vectors).all(axis=1)
        for row, (key, usable) in enumerate(zip(keys, finite, strict=True)):
            # The first vector indexed stays: processes that computed one image twice (a
            # float apart) go on with the same features each.
            if usable:
                self._where.setdefault(key, (shard.name, row))


def _read_shard(shard: Path, dimension: int) -> tuple[list[str], np.ndarray] | None:
    """The keys and vectors of a shard, or None unless it holds what
    :meth:`FeatureStore.add` writes: one float32 vector of ``dimension`` per key."""
    try:
        with safe_open(shard, framework="numpy") as file:
            keys = json.loads(file.metadata()["keys"])
            vectors = file.get_tensor("features")
    except Exception:  # damaged, truncated or gone: only a cache miss
        return None
    if (
        isinstance(keys, list)
        and vectors.dtype == np.float32
        and vectors.ndim == 2
        and len(vectors) == len(keys)
        and vectors.shape[1] == dimension
    ):
        return keys, vectors
    return None


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


class ExtractedFeatures:
    """Features of ``paths`` (in order) in each of ``views``, and the files that failed.

    With a cache, the features live in it: each call of :meth:`of` or :meth:`read_into` reads
    the rows asked for from its shards, so that a stage holds the features it asked for, and
    frees them when it is done with them, instead of every view of every image staying in
    memory for the whole run (at 50,000 images, 512 MB: the audit needs the plain view alone,
    the probe the training rows). Reading every shard takes about a second at 50,000 images.
    Without a cache, they are held in memory.
    """

    def __init__(
        self,
        paths: list[Path],
        keys: dict[Path, str],
        held: dict[str, np.ndarray],
        stores: dict[str, FeatureStore],
        *,
        views: Sequence[str],
        skipped: list[Skipped],
        seconds: float,
        computed: int,
        unstorable: dict[str, dict[str, np.ndarray]] | None = None,
        recompute: Callable[[list[Path], str], ExtractedFeatures] | None = None,
    ):
        self.paths = paths
        self.views = tuple(views)
        self.skipped = skipped
        self.seconds = seconds
        self.computed = computed  # images put through the network (the rest were cached)
        self._keys = keys
        self._held = held
        self._stores = stores
        self._unstorable = unstorable or {}  # view -> key -> a vector not finite, kept here
        self._recompute = recompute  # puts the vectors of paths back into a view's store

    def __contains__(self, path: Path) -> bool:
        return path in self._row_of

    def of(self, paths: Sequence[Path], view: str = "plain", *, copy: bool = False) -> np.ndarray:
        """The vectors of ``paths`` in ``view``, a row each. Held in memory and asked for all
        at once, in order, they are the array itself, unless ``copy``: a new array the caller
        may overwrite (read from the cache, it always is)."""
        held = self._held.get(view)
        if held is not None and len(paths) == len(held) and list(paths) == self.paths:
            return held.copy() if copy else held
        out = np.empty((len(paths), self.dimension), np.float32)
        self.read_into(paths, view, out)
        return out

    def read_into(self, paths: Sequence[Path], view: str, out: np.ndarray) -> None:
        """Write the vectors of ``paths`` in ``view`` into the rows of ``out``, in order, with
        no copy between: how a caller fills a buffer of its own."""
        if view not in self.views:
            raise ValueError(f"view={view!r}; extracted: {self.views}")
        if len(out) != len(paths):
            raise ValueError(f"{len(out)} rows for the vectors of {len(paths)} paths")
        held = self._held.get(view)
        if held is not None:
            rows = [self._row_of[path] for path in paths]
            np.take(held, rows, axis=0, out=out, mode="clip")  # "raise" would buffer a copy
            return
        store, kept_here = self._stores[view], self._unstorable.get(view, {})
        keys = [self._keys[path] for path in paths]
        stored = [i for i, key in enumerate(keys) if key not in kept_here]
        for i in (i for i, key in enumerate(keys) if key in kept_here):
            out[i] = kept_here[keys[i]]
        lost = set(store.read_into([keys[i] for i in stored], out, stored))
        if lost and self._recompute is not None:
            # A shard damaged or removed since the store was opened: computed again, never
            # served (each shard is checked as it is read).
            again = [i for i, key in enumerate(keys) if key in lost]
            recomputed = self._recompute([paths[i] for i in again], view)
            # What is not finite is not stored: kept here, as at extraction.
            kept_here.update(recomputed._unstorable.get(view, {}))
            self._unstorable[view] = kept_here
            for i in (i for i in again if keys[i] in kept_here):
                out[i] = kept_here[keys[i]]
            again = [i for i in again if keys[i] not in kept_here]
            lost = set(store.read_into([keys[i] for i in again], out, again))
        if lost:
            raise HeadstartError(
                f"the feature cache {store.directory} lost {len(lost)} vector(s) while this "
                "run read it, and they could not be computed again: run the command again"
            )

    @property
    def dimension(self) -> int:
        held = next(iter(self._held.values()), None)
        return held.shape[1] if held is not None else next(iter(self._stores.values())).dimension

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
    """Pooled features of every readable file in ``paths`` for each of ``views``: put in
    ``stores`` (what they lack), or held in memory for a view without a store.

    Unreadable files are returned in ``skipped`` (with the reason) and left out of ``paths``.
    ``on_batch(n)`` is called after each ``n`` files, for progress bars.
    """
    start = time.perf_counter()
    unknown = set(views) - set(VIEWS)
    if unknown:
        raise ValueError(f"views={sorted(unknown)}; expected some of {VIEWS}")
    stores = {name: store for name, store in (stores or {}).items() if name in views}
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
    kept = list(keys)
    row_of = {path: row for row, path in enumerate(kept)}
    # A view without a store is held in memory, each vector in its row of one array.
    held = {
        name: np.empty((len(kept), backbone.num_features), np.float32)
        for name in views
        if name not in stores
    }
    # What each view lacks: a ranking may have cached one view of an image and not the other.
    missing = {name: {p for p in kept if keys[p] not in stores.get(name, ())} for name in views}
    todo = [path for path in kept if any(path in missing[name] for name in views)]
    if on_batch and len(kept) > len(todo):
        on_batch(len(kept) - len(todo))

    unsaved: dict[str, dict[str, np.ndarray]] = {name: {} for name in stores}  # key -> vector
    unstorable: dict[str, dict[str, np.ndarray]] = {name: {} for name in stores}
    try:
        # On a CPU, decoding and the network take turns on every core (see map_batches).
        for crops in inputs.read(todo, images, batch_size, overlap=device.type != "cpu"):
            skipped.extend(crops.skipped)
            for failed in crops.skipped:
                keys.pop(failed.path)
            if crops.paths:
                normalised = normalize(crops.pixels)
                for name in views:
                    lacking = [i for i, path in enumerate(crops.paths) if path in missing[name]]
                    if not lacking:
                        continue
                    everything = len(lacking) == len(crops.paths)
                    batch = normalised if everything else normalised[lacking]
                    vectors = forward(backbone, view(batch, name)).float().cpu().numpy()
                    done = [crops.paths[i] for i in lacking]
                    if name in held:
                        held[name][_rows(done, row_of)] = vectors
                    else:  # a copy of an image (another path) is written once
                        for path, vector in zip(done, vectors, strict=True):
                            # A store never serves a vector that is not finite (a network
                            # that overflowed): this run keeps it, for the caller to see.
                            finite = np.isfinite(vector).all()
                            (unsaved if finite else unstorable)[name].setdefault(keys[path], vector)
            if on_batch:
                on_batch(len(crops))
            if sum(map(len, unsaved.values())) >= _SHARD_SIZE:
                _flush(unsaved, stores)
    finally:
        # Also on Ctrl-C: what was computed is kept for the next run.
        _flush(unsaved, stores)

    if len(keys) < len(kept):  # files that failed to decode: their rows go
        rows = _rows([path for path in kept if path in keys], row_of)
        held = {name: array[rows] for name, array in held.items()}
        kept = [path for path in kept if path in keys]

    def recompute(lost: list[Path], name: str) -> ExtractedFeatures:
        return extract_features(
            backbone, inputs, lost, images, stores, views=(name,), batch_size=batch_size
        )

    return ExtractedFeatures(
        kept,
        keys,
        held,
        stores,
        views=views,
        unstorable=unstorable,
        skipped=skipped,
        seconds=time.perf_counter() - start,
        computed=len(todo),
        recompute=recompute,
    )


def _rows(paths: Sequence[Path], row_of: dict[Path, int]) -> list[int]:
    return [row_of[path] for path in paths]


def _flush(unsaved: dict[str, dict[str, np.ndarray]], stores: dict[str, FeatureStore]) -> None:
    """Write the vectors computed since the last flush to their stores, one shard a view."""
    for name, vectors in unsaved.items():
        new = {key: vector for key, vector in vectors.items() if key not in stores[name]}
        if new:
            stores[name].add(list(new), np.stack(list(new.values())))
        vectors.clear()
