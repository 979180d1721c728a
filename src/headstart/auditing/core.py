"""The audit of a discovered dataset whose features are already extracted.

The expensive part of an audit is the backbone's forward pass; it is done once, by the same
:func:`~headstart.features.extract_features` call with the same caches as ``fit``, so an audit
(:func:`headstart.audit`) followed by a fit (or a fit, which audits first) computes every
feature once. The rest reads small thumbnails and feature vectors: a few percent of the
extraction's time.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..console import progress_bar
from ..data.decoded import DecodedImages
from ..data.sources import Dataset
from .balance import class_balance
from .duplicates import CANDIDATES_PER_IMAGE, FEATURE_SIMILARITY, find_duplicates
from .files import unusable
from .labels import check_labels
from .neighbours import EXACT_UP_TO, neighbours
from .pixels import measure
from .properties import OUTLIER_NEIGHBOUR, image_properties
from .report import AuditReport
from .split import keep_together

if TYPE_CHECKING:  # the audit reads the features' arrays; it needs no PyTorch itself
    from ..features import ExtractedFeatures

__all__ = ["audit_dataset"]


def audit_dataset(
    dataset: Dataset,
    features: ExtractedFeatures | None,
    images: DecodedImages,
    *,
    seed: int = 0,
    quiet: bool = False,
) -> AuditReport:
    """Audit a discovered ``dataset`` with features already extracted: what ``fit`` calls.

    Args:
        dataset: as :func:`~headstart.data.discover` returns it (after ``drop`` of the files
            that failed to decode, if any: they are reported as unusable).
        features: the samples' backbone features (the plain view is read); None (no
            pretrained backbone) limits the audit to what pixels tell: exact and hash-based
            duplicates, no outliers, no label issues. Samples missing from it are audited
            without.
        images: the decoded-pixel cache the features were extracted from; thumbnails and
            image grids read it.
        seed: for the cross-validation folds of the label check.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    notes: list[str] = []

    with progress_bar("audit", len(dataset.samples), quiet=quiet) as advance:
        by_path, failed = measure([s.path for s in dataset.samples], images, on_image=advance)
    if failed:
        dataset = dataset.drop(failed)
    samples = list(dataset.samples)
    stats = {s: by_path[s.path] for s in samples}
    keys = {s: images.key(s.path) for s in samples}  # remembered since extraction: no re-read
    timings["pixels"] = _lap(started)

    featured = [s for s in samples if features is not None and s.path in features]
    if features is None:
        notes.append(
            "no backbone features: near duplicates found by perceptual hash only (not crops); "
            "outliers and label errors not sought"
        )
    elif len(featured) < len(samples):
        notes.append(f"{len(samples) - len(featured)} images have no features: not in label check")
    nearest = matrix = None
    if len(featured) >= 2:
        # The audit's own array: the label check standardises it in place, once done with it.
        matrix = features.of([s.path for s in featured], copy=True)
        nearest = neighbours(
            matrix,
            threshold=FEATURE_SIMILARITY,
            per_image=CANDIDATES_PER_IMAGE,
            k=OUTLIER_NEIGHBOUR,
        )
        if nearest.method == "index":
            notes.append(f"near duplicates and outliers sought by {nearest.described}")
        elif len(featured) > EXACT_UP_TO:
            notes.append(
                f"neighbours sought exactly among {len(featured)} images, work that grows as "
                "the square of their number: `pip install 'headstart[scale]'` (faiss) for an "
                "index"
            )
    groups = find_duplicates(samples, keys, stats, images, nearest, featured)
    dataset, groups, moved = keep_together(dataset, groups)
    if moved:
        renamed = {old: new for old, new in zip(samples, dataset.samples, strict=True)}
        samples = list(dataset.samples)
        stats = {renamed[s]: value for s, value in stats.items()}
        keys = {renamed[s]: value for s, value in keys.items()}
        featured = [renamed[s] for s in featured]
        notes.append(
            f"{moved} held-out file(s) were copies of training images: headstart had split "
            "them itself, so they were moved into train (the held-out score then measures "
            "generalisation, not memory)"
        )
    timings["duplicates"] = _lap(started, timings)

    isolation = dict(zip(featured, nearest.kth, strict=True)) if nearest else None
    properties = image_properties(stats, images.resize_size, isolation)

    check = None
    if matrix is not None:
        group_of = {s: i for i, group in enumerate(groups) for s in group.samples}
        ids = [group_of.get(s, len(groups) + i) for i, s in enumerate(featured)]
        check = check_labels(featured, matrix, ids, seed=seed, overwrite=True)
        del matrix
        if check is None:
            notes.append(
                "label errors not sought: too few classes or independent images "
                "(copies count once) to cross-validate a probe"
            )
    timings["labels"] = _lap(started, timings)

    return AuditReport(
        dataset=dataset,
        unusable=unusable(dataset.skipped),
        duplicates=groups,
        balance=class_balance(dataset),
        properties=properties,
        label_check=check,
        notes=notes,
        seconds=time.perf_counter() - started,
        timings=timings,
        keys=keys,
        images=images,
    )


def _lap(started: float, earlier: dict[str, float] | None = None) -> float:
    """Seconds since ``started`` not already counted in ``earlier``."""
    return time.perf_counter() - started - sum((earlier or {}).values())
