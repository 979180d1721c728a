"""``headstart fit``: from a folder of labelled images to a trained, evaluated model bundle.

The stages, each a plain function call with plain inputs and outputs::

    discover the data -> load the backbone -> cached features -> audit -> linear probe
      -> plan -> (fine-tune) -> evaluate -> model bundle + run folder

Everything a stage decides or measures is written to the run folder as it happens.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from .audit import AuditReport, audit_dataset, check_leakage
from .bundle import Model, save
from .checks import CheckReport, EarlyLoss, FixedBatch, sanity_checks
from .classifier import Classifier, layer_groups, new_head
from .compare import Curve, compare, scratch_settings, train_from_scratch
from .config import FitConfig, load_config, save_config
from .console import err, progress_bar
from .data.decoded import DecodedImages, prefetch
from .data.images import UnreadableImage, detect_channels
from .data.sources import Dataset, Sample, Skipped, discover
from .diagnosis import Diagnosis, diagnose
from .errors import HeadstartError
from .features import ExtractedFeatures, extract_features, feature_stores
from .metrics import classification_metrics
from .models import Preprocessing, WeightsSource, create_backbone
from .monitor import TrainingBoard
from .report import build_report, examples_to_show, save_thumbnails, write_predictions
from .run import RunDir
from .training import distributed
from .training.domain import DomainReport, measure_domain
from .training.finetune import FineTuneSettings, fine_tune, resolve_precision
from .training.freezing import trainable_stages_for
from .training.imbalance import choose_balancing
from .training.lr_find import LRFindResult, lr_range_test
from .training.plan import Plan, make_plan
from .training.probe import ProbeResult, fit_probe

__all__ = ["FitConfig", "FitResult", "check", "default_cache_dir", "fit", "lr_find", "resume"]


def default_cache_dir() -> Path:
    """Where decoded pixels and features are kept: ``$HEADSTART_CACHE`` or the user cache."""
    env = os.environ.get("HEADSTART_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "headstart"


@dataclass
class FitResult:
    run_dir: Path
    model: Model
    plan: Plan
    scores: dict[str, dict]  # split -> classification_metrics(...)
    seconds: float
    skipped: list[Skipped] = field(default_factory=list)
    stopped: str = "finished"
    dataset: Dataset | None = None


def fit(data: str | Path, config: FitConfig | None = None, **settings) -> FitResult:
    """Train a classifier on ``data`` (class folders, train/val folders, or a CSV).

    ``settings`` override fields of :class:`FitConfig`, e.g. ``fit("photos", strategy="full")``.
    Launched by ``torchrun``, every process runs this and the fine-tuning is shared between
    them (see :mod:`headstart.training.distributed`); the main process writes the run.
    """
    known = {f.name for f in fields(FitConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise HeadstartError(f"unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
    config = replace(config or FitConfig(), **settings)
    config.validate()
    resolve_precision(config.precision, _device(config.device))
    with _scratch_unless_main() as scratch:
        if scratch is not None:
            config = replace(config, runs_dir=str(scratch), quiet=True)
        run = RunDir.create(config.runs_dir, config.name, Path(str(data)).stem)
        return _fit(data, config, run, resumed=None)


def resume(run_dir: str | Path, *, epochs: int | None = None, quiet: bool = False) -> FitResult:
    """Go on with the run in ``run_dir`` after a crash or Ctrl-C, from its last finished epoch,
    with the settings and the split it was started with; or, given more ``epochs`` than it has
    trained, train it longer ("leave it training"). An interrupted run resumed ends where an
    uninterrupted ``fit`` would have, within noise. Under ``torchrun``, as :func:`fit`."""
    run = RunDir(Path(run_dir))
    if not (run.path / "config.yaml").exists():
        raise HeadstartError(f"{run.path} is not a headstart run folder (no config.yaml)")
    saved = load_config(run.path / "config.yaml")
    data = yaml.safe_load((run.path / "config.yaml").read_text(encoding="utf-8"))["data"]
    plan = Plan.from_dict(run.read_json("plan.json")) if (run.path / "plan.json").exists() else None
    if plan is None or plan.fine_tune is None or not run.training_state.exists():
        raise HeadstartError(
            f"{run.path} has no fine-tuning to resume (it stopped before training, or its plan "
            "was the linear probe alone); start a new `headstart fit`"
        )
    progress = run.read_json("progress.json") if (run.path / "progress.json").exists() else {}
    done, stopped = progress.get("epoch", 0), progress.get("stopped", "interrupted")
    planned = plan.fine_tune.epochs
    if epochs is None and stopped != "interrupted":
        raise HeadstartError(
            f"{run.path} ended after {done} of {planned} epochs ({stopped}); pass --epochs N "
            f"(more than {done}) to train it longer"
        )
    if epochs is not None and epochs <= done:
        raise HeadstartError(
            f"epochs={epochs}: the run has already trained {done} epochs; ask for more to go on"
        )
    if epochs is not None and epochs < planned and stopped == "interrupted":
        raise HeadstartError(
            f"epochs={epochs} is fewer than the {planned} this interrupted run planned: resume "
            f"it without --epochs, or with more than {planned} to train longer"
        )
    config = replace(FitConfig(**saved), quiet=quiet, checks=False)
    if epochs is not None:
        config.epochs = epochs
    config.validate()
    with _scratch_unless_main() as scratch:
        if scratch is not None:  # read the state from a copy; write nothing of the run
            run = RunDir(shutil.copytree(run.path, scratch / run.path.name))
            config = replace(config, quiet=True)
        return _fit(data, config, run, resumed=plan)


@contextlib.contextmanager
def _scratch_unless_main() -> Iterator[Path | None]:
    """Under torchrun, a throwaway folder for every process but the main one: each computes
    what the main one does, and only the main one keeps it. None in the main process."""
    if distributed.init_from_environment() and not distributed.is_main():
        with tempfile.TemporaryDirectory(prefix="headstart-rank-") as scratch:
            yield Path(scratch)
    else:
        yield None


def _fit(
    data: str | Path,
    config: FitConfig,
    run: RunDir,
    resumed: Plan | None,
    first_look: Plan | None = None,
) -> FitResult:
    """The stages of a fit into ``run``; ``resumed`` is the plan of a run being resumed,
    ``first_look`` the plan that sent this fit to another input size."""
    started = time.perf_counter()
    _seed_everything(config.seed)
    ready = prepare(data, config)
    backbone, preprocessing, source = ready.backbone, ready.preprocessing, ready.source
    architecture, images = ready.architecture, ready.images
    if resumed is None:
        run.write_json("config.json", {"data": str(Path(data).resolve()), **asdict(config)})
        save_config(config, run.path / "config.yaml", data)
    built = f" as {architecture}" if architecture != config.arch else ""
    _log(config, f"run folder [bold]{run.path}[/]; {config.arch}{built}, {source.describe()}")

    ready.read(config)
    dataset, features = ready.dataset, ready.features
    for skip in dataset.skipped:
        _log(config, f"[yellow]skipped[/] {skip.path}: {skip.reason}")
    audit = _audit(dataset, features, images, run, config)
    dataset = audit.dataset
    if resumed is not None:
        _require_same_split(run, dataset)
    run.write_json("dataset.json", dataset.to_dict())
    _write_splits(run, dataset)
    _require_trainable(dataset)
    index = {name: i for i, name in enumerate(dataset.classes)}

    board = TrainingBoard(run.path / "tensorboard")
    balance = choose_balancing(_train_counts(dataset), config.balance)
    probe = _fit_probe(dataset, features, index, config, balance[0]) if features else None
    if probe is not None and resumed is None:
        run.log_metrics({"stage": "linear-probe", **_probe_record(probe)})
        board.probe(_probe_record(probe))
    if resumed is not None:
        plan = resumed
        plan.fine_tune.epochs = config.epochs or plan.fine_tune.epochs
        plan.strategy = plan.evidence.get("trained_strategy", plan.strategy)
    else:
        # Measured once, at the weights' own size (a second look reads the first one's).
        domain = _measure_domain(dataset, ready, probe, config) if first_look is None else None
        resized_from = None
        if first_look is not None:
            resized_from = first_look.evidence["domain_gap"]["input_size"]
        plan = _plan(
            config.strategy, dataset, probe, backbone, config, balance, domain, resized_from
        )
        plan = distributed.agree(plan)  # every process follows the main process's plan
        if plan.input_size is not None and plan.input_size != preprocessing.input_size[-1]:
            for reason in plan.reasons:
                _log(config, f"first look: {reason}")
            board.close()
            _start_again(run)
            return _fit(data, replace(config, input_size=plan.input_size), run, None, plan)
        if first_look is not None:
            plan.evidence["first_look"] = first_look.evidence
            plan.reasons[:0] = [f"first look at {resized_from} px: {r}" for r in first_look.reasons]
        if plan.fine_tune and config.time_budget:
            plan.fine_tune.max_seconds = config.time_budget * 60
        if plan.fine_tune and config.lr is None and distributed.is_main():
            _measure_lr(plan, dataset, ready, probe, run, config)
        plan = distributed.agree(plan)  # with the main process's learning rate
    run.write_json("plan.json", plan.to_dict())
    for reason in plan.reasons:
        _log(config, f"plan: {reason}")
    checks = CheckReport()
    if resumed is not None and (run.path / "checks.json").exists():
        checks = CheckReport.read(run.path / "checks.json")  # as the run began
    if config.checks and distributed.is_main():
        with torch.random.fork_rng(devices=_cuda_devices(backbone)):  # fit as without checks
            checks = sanity_checks(
                dataset,
                backbone,
                preprocessing,
                images,
                features=features,
                probe=probe,
                settings=plan.fine_tune,
                seed=config.seed,
            )
        checks.write(run.path / "checks.json")
        _log_checks(config, checks)

    head = probe.head if probe else new_head(backbone.num_features, _train_counts(dataset))
    model = Model(
        Classifier(backbone, copy.deepcopy(head), preprocessing).to(_device(config.device)),
        dataset.classes,
        preprocessing,
        architecture=architecture,
        test_time_flip=plan.test_time_flip,
        info={"weights": asdict(source), "strategy": "linear-probe" if probe else plan.strategy},
    )
    fixed = FixedBatch.choose(dataset.split("val"), dataset.classes, config.seed)
    if resumed is not None and (run.path / "fixed_batch.json").exists():
        fixed.records = json.loads((run.path / "fixed_batch.json").read_text())["records"]
    else:
        fixed.record(model, images, model.info["strategy"], 0)
    scored: dict[str, Scored] = {}
    if features is not None:
        scored = {
            split: _score_features(model, features, dataset, split, index)
            for split in _EVALUATED
            if dataset.split(split)
        }
        if resumed is None:  # a usable model before any fine-tuning, whatever happens then
            save(model, run.bundle)
    probe_accuracy = scored["val"].scores["accuracy"] if scored else None
    stopped, diagnosis = "finished", None
    if plan.fine_tune is not None:
        watch = EarlyLoss(len(index), plan.fine_tune.lr)
        tuned, stopped, diagnosis = _fine_tune(
            model,
            dataset,
            images,
            plan,
            run,
            config,
            index,
            board,
            fixed,
            watch,
            resumed is not None,
        )
        if config.checks:
            checks.extend([watch.check(stopped)])
        tuned.info["strategy"] = plan.strategy
        tuned_scored = {
            split: _score_pixels(tuned, dataset, split, images, index)
            for split in _EVALUATED
            if dataset.split(split)
        }
        tuned_accuracy = tuned_scored["val"].scores["accuracy"]
        if not scored or tuned_accuracy >= scored["val"].scores["accuracy"]:
            model, scored = tuned, tuned_scored
        else:
            plan.reasons.append(
                f"{plan.strategy} reached {tuned_accuracy:.1%} on validation, below the "
                f"linear probe's {scored['val'].scores['accuracy']:.1%}: kept the probe"
            )
            plan.evidence["trained_strategy"] = plan.strategy  # what --resume goes on with
            plan.strategy = "linear-probe"
            run.write_json("plan.json", plan.to_dict())
            _log(config, f"plan: {plan.reasons[-1]}")
        save(model, run.bundle)

    board.close()
    fixed.write(run.path / "fixed_batch.json")
    if config.checks:
        checks.extend([fixed.check()])
        checks.write(run.path / "checks.json")
    scores = {split: result.scores for split, result in scored.items()}
    if config.compare_scratch:
        _compare_scratch(
            run, dataset, images, preprocessing, architecture, plan, probe_accuracy, config
        )
    for split, result in scored.items():
        paths = [s.path for s in result.samples]
        write_predictions(
            run.path, split, paths, result.labels, result.log_probabilities, dataset.classes
        )
    shown = examples_to_show(run.path) + [s.path for s in fixed.samples]
    save_thumbnails(run.path, shown, images.get)
    seconds = time.perf_counter() - started
    run.write_json(
        "summary.json",
        {
            "scores": scores,
            "strategy": plan.strategy,
            "reasons": plan.reasons,
            "seconds": seconds,
            "stopped": stopped,
            "diagnosis": diagnosis.to_dict() if diagnosis else None,
            "skipped": len(dataset.skipped),
            "audit": audit.counts(),
            "checks": {"passed": checks.passed, "failed": [c.name for c in checks.failed]},
        },
    )
    report = build_report(run.path)
    _log(config, f"report: {report}")
    return FitResult(
        run.path, model, plan, scores, seconds, list(dataset.skipped), stopped, dataset
    )


def lr_find(
    data: str | Path, config: FitConfig | None = None, *, steps: int = 100, **settings
) -> LRFindResult:
    """The learning-rate range test for the fine-tuning that ``fit`` would run on ``data``.

    Same split, backbone, probe-trained head, trained stages, layer-wise multiples and
    augmentation as ``fit`` with these settings; when the plan would stop at the linear probe,
    the plan for ``strategy="fine-tune"`` is tested instead. Nothing is written.
    """
    ready, probe, plan, config = _fine_tuning_plan(data, config, settings)
    return _range_test(ready, probe, plan.fine_tune, steps, config)


def check(
    data: str | Path, config: FitConfig | None = None, *, steps: int = 20, **settings
) -> CheckReport:
    """The sanity checks ``fit`` runs before training, alone: nothing is kept or written.

    As with :func:`lr_find`, when the plan would stop at the linear probe, the fine-tuning
    path (``strategy="fine-tune"``) is tried, so that every check runs. Where ``fit`` watches
    its real training's first 100 steps for a falling loss, this runs and watches the first
    ``steps`` of the planned fine-tuning, at ``lr`` or the plan's default learning rate (``fit``
    may take the range test's suggestion instead, see :data:`LR_FIND_SHARE`).
    """
    ready, probe, plan, config = _fine_tuning_plan(data, config, settings)
    return sanity_checks(
        ready.dataset,
        ready.backbone,
        ready.preprocessing,
        ready.images,
        features=ready.features,
        probe=probe,
        settings=plan.fine_tune,
        watch_steps=steps,
        seed=config.seed,
    )


def _fine_tuning_plan(
    data: str | Path, config: FitConfig | None, settings: dict
) -> tuple[Prepared, ProbeResult | None, Plan, FitConfig]:
    """What ``fit`` would prepare, probe and plan, with a fine-tuning in the plan even where
    ``fit`` would stop at the probe: for the commands that try the fine-tuning alone."""
    config = replace(config or FitConfig(), **settings)
    config.validate()
    _seed_everything(config.seed)
    ready = prepare(data, config).read(config)
    dataset = ready.dataset
    _require_trainable(dataset)
    index = {name: i for i, name in enumerate(dataset.classes)}
    balance = choose_balancing(_train_counts(dataset), config.balance)
    probe = None
    if ready.features:
        probe = _fit_probe(dataset, ready.features, index, config, balance[0])
    plan = _plan(config.strategy, dataset, probe, ready.backbone, config, balance)
    if plan.fine_tune is None:
        plan = _plan("fine-tune", dataset, probe, ready.backbone, config, balance)
    return ready, probe, plan, config


def _range_test(
    ready: Prepared,
    probe: ProbeResult | None,
    settings: FineTuneSettings,
    steps: int,
    config: FitConfig,
) -> LRFindResult:
    """The range test from the head fine-tuning starts with, on a copy of the network."""
    dataset = ready.dataset
    index = {name: i for i, name in enumerate(dataset.classes)}
    head = probe.head if probe else new_head(ready.backbone.num_features, _train_counts(dataset))
    # A copy, as the test trains one: feature extraction leaves inference-mode tensors.
    network = copy.deepcopy(Classifier(ready.backbone, head, ready.preprocessing))
    network.to(_device(config.device))
    train = [(s.path, index[s.label]) for s in dataset.split("train")]
    _, height, width = ready.preprocessing.input_size
    with progress_bar("lr-find", steps, quiet=config.quiet) as advance:
        return lr_range_test(
            network,
            train,
            ready.images,
            (height, width),
            settings,
            steps=steps,
            seed=config.seed,
            on_step=advance,
        )


@dataclass
class Prepared:
    """The data and the network, ready to learn from: where ``fit``, ``lr_find`` and the
    audit all start, so that they read the same split, cache and features."""

    dataset: Dataset
    backbone: torch.nn.Module  # on the configured device
    preprocessing: Preprocessing
    source: WeightsSource
    architecture: str  # the network built: built-in weights may need a variant of the name
    images: DecodedImages  # the decoded-pixel cache
    stores: dict | None  # the feature caches; None without pretrained weights
    features: ExtractedFeatures | None = None  # both views, once `read`

    def read(self, config: FitConfig) -> Prepared:
        """Features of every image (from the cache where possible), or, without pretrained
        weights, every image decoded once; the files that fail are dropped and listed."""
        if self.stores is not None:
            if not distributed.is_main():
                distributed.barrier()  # the main process fills the cache; the others read it
            self.features = _extract(
                self.dataset, self.backbone, self.preprocessing, self.images, self.stores, config
            )
            self.dataset = self.dataset.drop(self.features.skipped)
            if distributed.is_main():
                distributed.barrier()
        else:  # no features to extract: decode everything once, to find unreadable files now
            self.dataset = self.dataset.drop(_decode_all(self.dataset, self.images, config))
        return self


def prepare(data: str | Path, config: FitConfig) -> Prepared:
    """Discover ``data``, build the backbone on its device and open the caches (cheap: no
    image is read yet; :meth:`Prepared.read` does that)."""
    dataset = discover(
        data, val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed
    )
    in_chans = config.in_chans or detect_channels([s.path for s in dataset.samples])
    regularisation = {
        name: value
        for name, value in (("drop_rate", config.dropout), ("drop_path_rate", config.drop_path))
        if value is not None
    }
    backbone, preprocessing, source = create_backbone(
        config.arch,
        weights=config.weights,
        pretrained=config.pretrained,
        in_chans=in_chans,
        input_size=config.input_size,
        **regularisation,
    )
    if isinstance(config.freeze, int):  # a freeze depth beyond the model: refused now
        trainable_stages_for(config.freeze, len(layer_groups(backbone)))
    backbone.to(_device(config.device))
    architecture = backbone.pretrained_cfg.get("architecture", config.arch)
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    images = DecodedImages(
        preprocessing.resize_size, preprocessing.interpolation, cache / "pixels", channels=in_chans
    )
    stores = None
    if config.pretrained:
        stores = feature_stores(cache / "features", architecture, source, preprocessing)
    return Prepared(dataset, backbone, preprocessing, source, architecture, images, stores)


def _plan(
    strategy: str,
    dataset: Dataset,
    probe: ProbeResult | None,
    backbone: torch.nn.Module,
    config: FitConfig,
    balance: tuple[str, str] = ("none", ""),
    domain: DomainReport | None = None,
    resized_from: int | None = None,
) -> Plan:
    """The plan for ``strategy`` from the measurements and the user's settings."""
    return make_plan(
        strategy,
        train_counts=dataset.counts()["train"],
        probe_accuracy=probe.cv_accuracy if probe else None,
        mirror_invariant=probe.mirror_invariant if probe else None,
        pretrained=config.pretrained,
        stages=len(layer_groups(backbone)),
        config=config,
        balance=balance,
        gap=domain,
        resized_from=resized_from,
    )


def _start_again(run: RunDir) -> None:
    """Forget what a first look at another input size logged: the run records one fit."""
    (run.path / "metrics.jsonl").unlink(missing_ok=True)
    shutil.rmtree(run.path / "tensorboard", ignore_errors=True)


def _measure_domain(
    dataset: Dataset, ready: Prepared, probe: ProbeResult | None, config: FitConfig
) -> DomainReport | None:
    """How far the training images are from the pretraining data (see
    :mod:`headstart.training.domain`), on a sample; None when no image can be measured."""
    counts = _train_counts(dataset)
    chance = 1 / len(counts)
    skill = None
    if probe is not None and np.isfinite(probe.cv_accuracy):
        skill = (probe.cv_accuracy - chance) / (1 - chance)
    preprocessing = ready.preprocessing
    try:
        return measure_domain(
            [s.path for s in dataset.split("train")],
            input_size=preprocessing.input_size[-1],
            sample=DOMAIN_SAMPLE,
            seed=config.seed,
            backbone=ready.backbone if config.pretrained else None,
            mean=preprocessing.mean,
            std=preprocessing.std,
            probe_skill=skill,
            images_per_class=float(np.median(counts)),
        )
    except HeadstartError:
        return None


#: Images the domain measurements look at: enough for stable medians, and a forward pass of
#: them costs about a second on a laptop CPU.
DOMAIN_SAMPLE = 32


#: The splits scored at the end: validation (also used to choose the model) and test.
_EVALUATED = ("val", "test")


def _extract(
    dataset: Dataset,
    backbone: torch.nn.Module,
    preprocessing: Preprocessing,
    images: DecodedImages,
    stores: dict,
    config: FitConfig,
) -> ExtractedFeatures:
    """Features of every sample, both views, from the cache where possible."""
    paths = [sample.path for sample in dataset.samples]
    with progress_bar("features", len(paths), quiet=config.quiet) as advance:
        return extract_features(
            backbone,
            preprocessing,
            paths,
            images,
            stores,
            views=("plain", "hflip"),
            batch_size=config.batch_size,
            on_batch=advance,
        )


def _audit(
    dataset: Dataset,
    features: ExtractedFeatures | None,
    images: DecodedImages,
    run: RunDir,
    config: FitConfig,
) -> AuditReport:
    """The audit of the data about to be trained on, written to ``<run>/audit/``; refuses
    to go on when copies of an image span train and validation (unless allowed)."""
    plain = None
    if features is not None:
        plain = dict(zip(features.paths, features.views["plain"], strict=True))
    report = audit_dataset(dataset, plain, images, seed=config.seed, quiet=config.quiet)
    report.write(run.path / "audit")
    _log(config, f"audit: {report.headline()}; details in {run.path / 'audit'}")
    if config.allow_leakage:
        if report.leaks:
            _log(
                config,
                f"[yellow]training despite {len(report.leaks)} leaking group(s)[/]: "
                "validation scores are flattered",
            )
    else:
        check_leakage(report)
    return report


def _decode_all(dataset: Dataset, images: DecodedImages, config: FitConfig) -> list[Skipped]:
    """Decode every file into the pixel cache; the unreadable ones, with their reasons."""

    def check(path: Path) -> Skipped | None:
        try:
            images.get(path)
        except UnreadableImage as error:
            return Skipped(path, error.reason)
        return None

    paths = [sample.path for sample in dataset.samples]
    skipped = []
    with progress_bar("decoding", len(paths), quiet=config.quiet) as advance:
        for failure in prefetch(check, paths):
            advance(1)
            if failure is not None:
                skipped.append(failure)
    return skipped


def _fit_probe(
    dataset: Dataset,
    features: ExtractedFeatures,
    index: dict[str, int],
    config: FitConfig,
    balance: str,
) -> ProbeResult:
    rows = features.rows([s.path for s in dataset.split("train")])
    labels = np.array([index[s.label] for s in dataset.split("train")])
    return fit_probe(
        features.views["plain"][rows],
        labels,
        len(index),
        mirrored=features.views["hflip"][rows],
        seed=config.seed,
        penalty=config.probe_penalty,
        balanced=balance != "none",
    )


def _probe_record(probe: ProbeResult) -> dict:
    return {
        "C": probe.C,
        "cv_accuracy": probe.cv_accuracy,
        "cv_mirrored_accuracy": probe.cv_mirrored_accuracy,
        "trained_on_mirrored": probe.mirrored,
        "cv_log_loss": probe.cv_log_loss,
        "folds": probe.folds,
    }


def _write_splits(run: RunDir, dataset: Dataset) -> None:
    """Which file went where: ``headstart evaluate`` and audits can reproduce the split."""
    with open(
        run.path / "splits.csv", "w", newline="", encoding="utf-8", errors="surrogateescape"
    ) as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label", "split"])
        writer.writerows((s.path, s.label, s.split) for s in dataset.samples)


def _fine_tune(
    model: Model,
    dataset: Dataset,
    images: DecodedImages,
    plan: Plan,
    run: RunDir,
    config: FitConfig,
    index: dict[str, int],
    board: TrainingBoard,
    fixed: FixedBatch,
    watch: EarlyLoss,
    resume: bool,
) -> tuple[Model, str, Diagnosis]:
    tuned = copy.deepcopy(model)
    settings = plan.fine_tune
    train = [(s.path, index[s.label]) for s in dataset.split("train")]
    val = [(s.path, index[s.label]) for s in dataset.split("val")]
    steps = settings.epochs * max(1, len(train) // settings.batch_size)
    _, height, width = model.preprocessing.input_size

    def log(record: dict) -> None:
        run.log_metrics({"stage": plan.strategy, **record})
        run.write_json("progress.json", {"epoch": record["epoch"], "finished": False})
        board.epoch(record)
        fixed.record(tuned, images, plan.strategy, record["epoch"])
        _log(
            config,
            f"epoch {record['epoch']}: train loss {record['train_loss']:.3f}, "
            f"val loss {record['val_loss']:.3f}, val accuracy {record['val_accuracy']:.1%}",
        )

    board.watch_inputs(tuned.network)
    with progress_bar(plan.strategy, steps, quiet=config.quiet) as advance:
        result = fine_tune(
            tuned.network,
            train,
            val,
            images,
            (height, width),
            settings,
            seed=config.seed,
            checkpoint=run.best_checkpoint,
            state=run.training_state,
            resume=resume,
            log=log,
            on_step=advance,
            on_batch=lambda step: (board.batch(step), watch(step)),
        )
    run.log_metrics(
        {"stage": plan.strategy, "stopped": result.stopped, "best_epoch": result.best_epoch}
    )
    done = result.history[-1]["epoch"] if result.history else 0
    finished = result.stopped != "interrupted" and not result.stopped.startswith("stopped")
    run.write_json(
        "progress.json", {"epoch": done, "finished": finished, "stopped": result.stopped}
    )
    if result.stopped != "finished":
        _log(config, f"training stopped ({result.stopped}); best epoch {result.best_epoch} kept")
    diagnosis = diagnose(
        result.history,
        n_classes=len(index),
        label_smoothing=settings.label_smoothing,
        stopped=result.stopped,
        lr=settings.lr,
    )
    run.write_json("diagnosis.json", diagnosis.to_dict())
    for line in diagnosis.lines():
        _log(config, f"diagnosis: {line}")
    return tuned, result.stopped, diagnosis


def _score_features(
    model: Model,
    features: ExtractedFeatures,
    dataset: Dataset,
    split: str,
    index: dict[str, int],
) -> Scored:
    """Scores of a model whose body is the frozen backbone, from the cached features: the
    same logits as running the network on the images, without running it."""
    samples = dataset.split(split)
    rows = features.rows([s.path for s in samples])
    head = model.network.head
    with torch.inference_mode():
        device = head.weight.device
        logits = head(torch.from_numpy(features.views["plain"][rows]).to(device))
        if model.test_time_flip:
            mirrored = torch.from_numpy(features.views["hflip"][rows]).to(device)
            logits = (logits + head(mirrored)) / 2
    return Scored.of(logits.log_softmax(1).double().cpu().numpy(), samples, dataset, index)


def _score_pixels(
    model: Model, dataset: Dataset, split: str, images: DecodedImages, index: dict[str, int]
) -> Scored:
    samples: list[Sample] = dataset.split(split)
    probabilities = []
    for start in range(0, len(samples), 256):  # bounded memory on large splits
        pixels = [images.get(s.path) for s in samples[start : start + 256]]
        probabilities.append(model.probabilities(pixels))
    log_probabilities = np.log(np.clip(np.concatenate(probabilities), 1e-300, None))
    return Scored.of(log_probabilities, samples, dataset, index)


@dataclass
class Scored:
    """One split's predictions (as log-probabilities) and their scores."""

    samples: list[Sample]
    labels: np.ndarray
    log_probabilities: np.ndarray
    scores: dict

    @classmethod
    def of(
        cls,
        log_probabilities: np.ndarray,
        samples: list[Sample],
        dataset: Dataset,
        index: dict[str, int],
    ) -> Scored:
        labels = np.array([index[s.label] for s in samples])
        predicted = log_probabilities.argmax(1)
        scores = classification_metrics(labels, predicted, dataset.classes)
        return cls(samples, labels, log_probabilities, scores)


#: ``fit`` runs the learning-rate range test itself when its steps cost at most a tenth of
#: the planned fine-tuning (measured: 50 steps resolve the curve; a few hundred images
#: fine-tune in 30-70 steps, so the test would cost several times the training there).
LR_FIND_STEPS, LR_FIND_SHARE = 50, 0.1


def _measure_lr(
    plan: Plan,
    dataset: Dataset,
    ready: Prepared,
    probe: ProbeResult | None,
    run: RunDir,
    config: FitConfig,
) -> None:
    """Replace the plan's default learning rate by the range test's suggestion (kept within
    10x of the default) when the test is cheap next to the fine-tuning; say why either way."""
    settings = plan.fine_tune
    planned = settings.epochs * max(1, len(dataset.split("train")) // settings.batch_size)
    if settings.max_seconds is not None or planned * LR_FIND_SHARE < LR_FIND_STEPS:
        plan.reasons.append(
            f"learning rate {settings.lr:g} from the plan, without a range test: its "
            f"{LR_FIND_STEPS} steps would cost more than {LR_FIND_SHARE:.0%} of this "
            f"{'time-capped ' if settings.max_seconds else ''}fine-tuning ({planned} steps); "
            "`headstart lr-find` runs it"
        )
        return
    result = _range_test(ready, probe, settings, LR_FIND_STEPS, config)
    result.save(run.path)
    if result.suggestion is None:
        plan.reasons.append(
            f"learning rate {settings.lr:g} from the plan: the range test found none "
            f"({result.rule}); see lr_find.png"
        )
        return
    chosen = float(np.clip(result.suggestion, settings.lr / 10, settings.lr * 10))
    plan.evidence["lr_find_suggestion"] = result.suggestion
    clipped = "" if chosen == result.suggestion else ", kept within 10x of the default"
    plan.reasons.append(
        f"learning rate {chosen:.2g} from the range test ({result.rule}: "
        f"{result.suggestion:.2g}{clipped}; the plan's default was {settings.lr:g}); "
        "see lr_find.png"
    )
    settings.lr = chosen


def _compare_scratch(
    run: RunDir,
    dataset: Dataset,
    images: DecodedImages,
    preprocessing: Preprocessing,
    architecture: str,
    plan: Plan,
    probe_accuracy: float | None,
    config: FitConfig,
) -> None:
    """Train the same architecture from random weights with the same budget; write
    ``compare_scratch.json``."""
    transfer = Curve()
    if probe_accuracy is not None:
        transfer.add(0, probe_accuracy, 0.0)
    elapsed = 0.0
    for record in run.metrics():
        if "epoch" in record:
            elapsed += record["seconds"]
            transfer.add(record["epoch"], record["val_accuracy"], elapsed)
    settings = scratch_settings(
        dataset,
        epochs=plan.fine_tune.epochs if plan.fine_tune else None,  # None: the scratch plan's
        batch_size=config.batch_size,
        max_seconds=config.time_budget * 60 if config.time_budget else None,
    )
    _log(config, f"compare: the same {settings.epochs} epochs from random initialisation")
    steps = settings.epochs * max(1, len(dataset.split("train")) // settings.batch_size)
    with progress_bar("from scratch", steps, quiet=config.quiet) as advance:
        scratch = train_from_scratch(
            architecture,  # the network built: built-in weights may need a variant of the name
            dataset,
            images,
            preprocessing,
            settings,
            device=_device(config.device),
            seed=config.seed,
            on_step=advance,
        )
    comparison = compare(transfer, scratch, chance=1 / len(dataset.classes))
    run.write_json("compare_scratch.json", comparison)
    _log(config, f"compare: {comparison['summary']}")


def _train_counts(dataset: Dataset) -> list[int]:
    counts = dataset.counts()["train"]
    return [counts[name] for name in dataset.classes]


def _log_checks(config: FitConfig, checks: CheckReport) -> None:
    _log(config, f"sanity checks: {checks.headline()}; details in checks.json")
    for check in checks.failed:
        _log(config, f"[bold red]check failed[/] {check.title}: {check.summary}; {check.advice}")


def _require_same_split(run: RunDir, dataset: Dataset) -> None:
    """A resumed run must train and validate on the files it began with."""
    with open(run.path / "splits.csv", newline="", encoding="utf-8", errors="surrogateescape") as f:
        before = {(row["path"], row["label"], row["split"]) for row in csv.DictReader(f)}
    now = {(str(s.path), s.label, s.split) for s in dataset.samples}
    if before != now:
        changed = sorted(before ^ now)
        raise HeadstartError(
            f"cannot resume {run.path}: the data changed since it began ({len(changed)} "
            f"file(s) added, removed or moved, e.g. {changed[0][0]}); a resumed run must see "
            "the same split: start a new fit"
        )


def _require_trainable(dataset: Dataset) -> None:
    counts = dataset.counts()
    present = [c for c, n in counts["train"].items() if n > 0]
    if len(present) < 2:
        raise HeadstartError(
            f"{dataset.root}: after skipping unreadable files, fewer than two "
            f"classes have training images ({', '.join(present) or 'none'})"
        )
    if not dataset.split("val"):
        raise HeadstartError(
            f"{dataset.root}: no validation images; add a val/ folder or more images per class"
        )


def _device(name: str) -> torch.device:
    if name == "auto":
        return distributed.local_device()  # CUDA when there is one; torchrun's own device
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HeadstartError(f"device={name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HeadstartError(f"device={name!r}, but this machine has no CUDA device; use cpu")
    return device


def _cuda_devices(module: torch.nn.Module) -> list[torch.device]:
    device = next(module.parameters()).device
    return [device] if device.type == "cuda" else []


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _log(config: FitConfig, message: str) -> None:
    if not config.quiet:
        err.print(message)
