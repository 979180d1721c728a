"""The other front doors, beside :func:`headstart.fit`: look at the data (``audit``), try the
fine-tuning before fitting (``check``, ``lr_find``) and score a model (``evaluate``).

Each takes the data as ``fit`` does and the same settings, so that with the same values it
sees the same split, the same network and the same caches.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .auditing import AuditReport, audit_dataset
from .checks import CheckReport, sanity_checks
from .config import FitConfig
from .console import say
from .data.decoded import content_hash
from .data.images import UnreadableImage
from .data.sources import Dataset, Skipped, discover
from .errors import HeadstartError
from .loading import load
from .metrics import classification_metrics, label_metrics, regression_metrics
from .prediction import Predictor
from .runfolder import RunFolder
from .stages.data import prepare
from .stages.plan import fine_tuning_plan, range_test
from .text.data import is_text_data
from .training.lr_find import LRFindResult

if TYPE_CHECKING:
    from .tasks.multilabel.data import LabelSets
    from .tasks.regression.data import TargetDataset
    from .text.audit import TextAudit

__all__ = ["audit", "check", "evaluate", "lr_find"]


def audit(data: str | Path, config: FitConfig | None = None, **settings) -> AuditReport | TextAudit:
    """Audit the dataset at ``data`` (class folders, train/val folders, or a CSV).

    The settings are those of ``fit`` (only the data and network ones matter): given the same
    values, the audit judges the split that ``fit`` will train on, and its features are
    computed (or read from the cache) exactly as ``fit`` computes them, and left in the cache
    for it. ``pretrained=False`` audits from pixels alone (see
    :func:`~headstart.auditing.audit_dataset`). Texts (see :func:`headstart.fit`) get the
    audit of texts, a :class:`~headstart.text.audit.TextAudit`.
    """
    started = time.perf_counter()
    config = FitConfig.of(config, **settings)
    if is_text_data(data):
        from .text.recipe import audit_text_data

        return audit_text_data(data, config)
    ready = prepare(data, config)
    report = audit_dataset(
        ready.dataset, ready.features, ready.images, seed=config.seed, quiet=config.quiet
    )
    if ready.features is not None:
        report.timings = {"features": ready.features.seconds, **report.timings}
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
    """Metrics of the bundle's predictions on ``data``'s labelled images; for a regressor,
    its errors (MAE, RMSE, R², beside predicting the training mean) on a table of images and
    numbers.

    ``split``: ``"all"``, or one of the data's splits; by default its test split when it has
    one (a train/val/test folder or a CSV with a split column), else every image.

    A model is never scored on the images it was trained on without being told so. When
    ``bundle`` is a run folder (or the ``model/`` in one) and ``data`` is what it was fitted
    on, the run's own split is used: by default its held-out images (its test split, else
    validation); ``split="train"`` asks for the training images. On other data, the images
    the run trained on, as the same file or an exact copy, are left out, said, and counted
    in ``scores["left_out"]``. A progress bar on stderr counts the images predicted, unless
    ``quiet``.
    """
    model = load(bundle)
    run = RunFolder.of_bundle(bundle)
    if getattr(model, "modality", "image") == "text":
        from .text.scoring import evaluate_texts

        return evaluate_texts(model, run, data, split=split, quiet=quiet)
    task = getattr(model, "task", "classification")
    skipped: list[Skipped] = []
    if run is not None and run.data is not None and run.data == Path(data).resolve():
        examples, split = _run_split(run, split)
        examples = [(path, _answer_of(task, label)) for path, label in examples]
        left_out = 0
        if split == "all":
            say(quiet, f"evaluate: split 'all' of {data} includes the images the run trained on")
    else:
        # No random split (every image is scored), and no training images needed.
        dataset = _scored_data(model, data)
        if split is None:
            split = "test" if dataset.split("test") else "all"
        samples = list(dataset.samples) if split == "all" else dataset.split(split)
        examples = [(s.path, _answer(task, s)) for s in samples]
        skipped += dataset.skipped
        if task == "classification":
            _require_known_labels(examples, model.classes, data)
        trained_on = _trained_on(model, run, [path for path, _ in examples])
        examples = [(path, label) for path, label in examples if path not in trained_on]
        left_out = len(trained_on)
        if left_out:
            say(
                quiet,
                f"evaluate: left out {left_out} image(s) of {data} that the model was trained "
                f"on (the same file or an exact copy); scoring the other {len(examples)}",
            )
        elif not model.trained_on and run is None:
            say(
                quiet,
                f"evaluate: {bundle} does not record its training images (a bundle from an "
                "older headstart, away from its run): any among these are scored too",
            )
    if not examples:
        why = f" (all {left_out} are images the run trained on)" if left_out else ""
        raise HeadstartError(f"{data}: no images to score in split {split!r}{why}")
    predictions, unreadable = model.predict_files([path for path, _ in examples], quiet=quiet)
    if not predictions:
        why = f" ({unreadable[0].path}: {unreadable[0].reason})" if unreadable else ""
        raise HeadstartError(f"{data}: none of the {len(examples)} images could be read{why}")
    scores = _scores(model, task, dict(examples), predictions)
    return {**scores, "split": split, "left_out": left_out}, skipped + unreadable


def _scored_data(model: Predictor, data: str | Path) -> Dataset | TargetDataset | LabelSets:
    """``data`` as a dataset to score ``model`` on: a regression's table (its target found
    under the model's own name when the table has it), a table of label sets (read with the
    model's labels), or labelled images."""
    task = getattr(model, "task", "classification")
    if task == "regression":
        from .tasks.regression.data import read_targets

        return read_targets(data, preferred=model.target.name, val_fraction=0.0, training=False)
    if task == "multi-label":
        from .tasks.multilabel.data import read_label_sets

        return read_label_sets(data, val_fraction=0.0, training=False, known=model.classes)
    return discover(data, val_fraction=0.0, training=False)


#: What each task's samples are labelled with.
_ANSWERS = {"classification": "label", "regression": "target", "multi-label": "labels"}


def _answer(task: str, sample: object) -> object:
    """What ``sample`` is labelled with: its class, its number or its labels."""
    return getattr(sample, _ANSWERS[task])


def _answer_of(task: str, written: str) -> object:
    """A label as a run's ``splits.csv`` writes it, read back."""
    if task == "regression":
        return float(written)
    if task == "multi-label":
        from .tasks.multilabel.data import JOIN

        return tuple(label for label in written.split(JOIN) if label)
    return written


def _scores(model: Predictor, task: str, answers: dict[Path, object], predictions: list) -> dict:
    """The task's metrics of ``predictions`` (path, prediction) against ``answers``."""
    paths = [path for path, _ in predictions]
    if task == "regression":
        scores = regression_metrics(
            [float(answers[path]) for path in paths],
            [value for _, value in predictions],
            model.target.mean,
        )
        return {**scores, "task": task}
    if task == "multi-label":
        index = {label: i for i, label in enumerate(model.classes)}
        targets = np.zeros((len(paths), len(model.classes)))
        for row, path in enumerate(paths):
            targets[row, [index[label] for label in answers[path]]] = 1
        found = np.array([[p.probabilities[c] for c in model.classes] for _, p in predictions])
        return {**label_metrics(targets, found, model.thresholds, model.classes), "task": task}
    index = {name: i for i, name in enumerate(model.classes)}
    return classification_metrics(
        [index[answers[path]] for path in paths],
        [index[p.label] for _, p in predictions],
        model.classes,
    )


def _require_known_labels(
    examples: list[tuple[Path, str]], classes: list[str], data: str | Path
) -> None:
    unknown = sorted({label for _, label in examples} - set(classes))
    if unknown:
        raise HeadstartError(
            f"{data}: label(s) {', '.join(map(repr, unknown))} are not among the "
            f"model's classes ({', '.join(classes)})"
        )


def _run_split(run: RunFolder, split: str | None) -> tuple[list[tuple[Path, str]], str]:
    """The images of ``run``'s own ``split`` (by default the held-out one: test, else val)."""
    present = {name for _, _, name in run.splits}
    if split is None:
        split = next((name for name in ("test", "val") if name in present), None)
        if split is None:
            raise HeadstartError(
                f"{run.path} trained on every image of {run.data} (no validation or test "
                "split): evaluate it on other labelled images, or pass --split train"
            )
    if split != "all" and split not in present:
        raise HeadstartError(
            f"{run.path} has no {split!r} split of {run.data} (it has {', '.join(sorted(present))})"
        )
    examples = [(path, label) for path, label, name in run.splits if split in ("all", name)]
    return examples, split


def _trained_on(model: Predictor, run: RunFolder | None, paths: list[Path]) -> set[Path]:
    """Those of ``paths`` that the model was trained on, by content: the same file or an exact
    copy. The hashes come from its bundle, or (a bundle from before they were recorded) from
    its run's training images."""
    digest = functools.cache(_digest)  # each file read once, in this call
    known = model.trained_on
    if not known and run is not None:
        known = {digest(path) for path, _, split in run.splits if split == "train"} - {None}
    return {path for path in paths if digest(path) in known} if known else set()


def _digest(path: Path) -> str | None:
    try:
        return content_hash(path)
    except UnreadableImage:
        return None
