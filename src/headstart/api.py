"""The other front doors, beside :func:`headstart.fit`: look at the data (``audit``), try the
fine-tuning before fitting (``check``, ``lr_find``) and score a model (``evaluate``).

Each takes the data as ``fit`` does and the same settings, so that with the same values it
sees the same split, the same network and the same caches.
"""

from __future__ import annotations

import time
from pathlib import Path

from .auditing import AuditReport, audit_dataset
from .bundle import load
from .checks import CheckReport, sanity_checks
from .config import FitConfig
from .data.sources import Skipped, discover
from .errors import HeadstartError
from .metrics import classification_metrics
from .stages.data import prepare
from .stages.plan import fine_tuning_plan, range_test
from .training.lr_find import LRFindResult

__all__ = ["audit", "check", "evaluate", "lr_find"]


def audit(data: str | Path, config: FitConfig | None = None, **settings) -> AuditReport:
    """Audit the dataset at ``data`` (class folders, train/val folders, or a CSV).

    The settings are those of ``fit`` (only the data and network ones matter): given the same
    values, the audit judges the split that ``fit`` will train on, and its features are
    computed (or read from the cache) exactly as ``fit`` computes them, and left in the cache
    for it. ``pretrained=False`` audits from pixels alone (see
    :func:`~headstart.auditing.audit_dataset`).
    """
    started = time.perf_counter()
    config = FitConfig.of(config, **settings)
    ready = prepare(data, config)
    extracted = ready.features
    features = None
    if extracted is not None:
        features = dict(zip(extracted.paths, extracted.views["plain"], strict=True))
    report = audit_dataset(
        ready.dataset, features, ready.images, seed=config.seed, quiet=config.quiet
    )
    if extracted is not None:
        report.timings = {"features": extracted.seconds, **report.timings}
    report.seconds = time.perf_counter() - started
    return report


def check(
    data: str | Path, config: FitConfig | None = None, *, steps: int = 20, **settings
) -> CheckReport:
    """The sanity checks ``fit`` runs before training, alone: nothing is kept or written.

    When the plan would stop at the linear probe, the fine-tuning path
    (``strategy="fine-tune"``) is tried, so that every check runs. Where ``fit`` watches its
    real training's first 100 steps for a falling loss, this runs and watches the first
    ``steps`` of the planned fine-tuning, at ``lr`` or the plan's default learning rate (``fit``
    may take the range test's suggestion instead). Unless ``quiet``, progress bars on stderr
    follow the feature extraction and the checks.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise HeadstartError(f"steps={steps!r}: a whole number of training steps, at least 1")
    config = FitConfig.of(config, **settings)
    ready, probe, plan = fine_tuning_plan(data, config)
    return sanity_checks(
        ready.dataset,
        ready.backbone,
        ready.inputs,
        ready.images,
        features=ready.features,
        probe=probe,
        settings=plan.fine_tune,
        watch_steps=steps,
        seed=config.seed,
        progress=not config.quiet,
    )


def lr_find(
    data: str | Path, config: FitConfig | None = None, *, steps: int = 100, **settings
) -> LRFindResult:
    """The learning-rate range test for the fine-tuning that ``fit`` would run on ``data``.

    Same split, backbone, probe-trained head, trained stages, layer-wise multiples and
    augmentation as ``fit`` with these settings; when the plan would stop at the linear probe,
    the plan for ``strategy="fine-tune"`` is tested instead. Nothing is written.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 10:
        raise HeadstartError(f"steps={steps!r}: a range test needs at least 10 steps (try 100)")
    config = FitConfig.of(config, **settings)
    ready, probe, plan = fine_tuning_plan(data, config)
    return range_test(ready, probe, plan.fine_tune, steps, config)


def evaluate(
    bundle: str | Path, data: str | Path, *, split: str | None = None, quiet: bool = False
) -> tuple[dict, list[Skipped]]:
    """Metrics of the bundle's predictions on ``data``'s labelled images.

    ``split``: ``"all"``, or one of the data's splits; by default its test split when it has
    one (a train/val/test folder or a CSV with a split column), else every image. A progress
    bar on stderr counts the images predicted, unless ``quiet``.
    """
    model = load(bundle)
    # No random split here: every image of a plain class-folder tree is scored.
    dataset = discover(data, val_fraction=0.0)
    if split is None:
        split = "test" if dataset.split("test") else "all"
    samples = list(dataset.samples) if split == "all" else dataset.split(split)
    if not samples:
        raise HeadstartError(f"{data}: no images in split {split!r}")
    unknown = sorted({s.label for s in samples} - set(model.classes))
    if unknown:
        raise HeadstartError(
            f"{data}: label(s) {', '.join(map(repr, unknown))} are not among the "
            f"model's classes ({', '.join(model.classes)})"
        )
    predictions, skipped = model.predict_files([s.path for s in samples], quiet=quiet)
    labels = {s.path: s.label for s in samples}
    index = {name: i for i, name in enumerate(model.classes)}
    scores = classification_metrics(
        [index[labels[path]] for path, _ in predictions],
        [index[p.label] for _, p in predictions],
        model.classes,
    )
    return scores, list(dataset.skipped) + skipped
