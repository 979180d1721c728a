"""The train stage: the linear probe's model first (usable before any fine-tuning), then the
planned fine-tuning, watched by callbacks: checkpoints and the resumable state, the metrics
log, TensorBoard, the sanity checks' watch on the first steps and the fixed batch, progress."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

from ..checks import EarlyLoss, FixedBatch
from ..classifier import Classifier, new_head
from ..config import FitConfig
from ..console import say
from ..diagnosis import Diagnosis, diagnose
from ..monitor import TrainingBoard
from ..runfolder import DIAGNOSIS, FIXED_BATCH, RunFolder
from ..torch_model import Model, save
from ..training.callbacks import (
    Callback,
    Checkpoints,
    FineTuneResult,
    MetricsLog,
    Progress,
    Training,
)
from ..training.finetune import FineTuneSettings, Resume, fine_tune
from .data import device_of
from .distill import training_examples
from .evaluate import Candidate, score_features, score_pixels
from .plan import Decision, probe_record

__all__ = ["EpochLine", "Trained", "fine_tune_planned", "starting_model", "train"]


@dataclass
class Trained:
    """What the train stage produced: the probe's model and the fine-tuned one (either may be
    missing), how the fine-tuning ended, and the watchers whose verdicts the checks read."""

    probe: Candidate | None
    tuned: Candidate | None
    fixed: FixedBatch
    watch: EarlyLoss | None = None
    stopped: str = "finished"
    diagnosis: Diagnosis | None = None


def train(
    decision: Decision, run: RunFolder, config: FitConfig, *, resume: Resume | None = None
) -> Trained:
    """The probe's model (scored on the cached features and saved at once), then the planned
    fine-tuning of a copy of it, if any (scored on the images, its curves diagnosed); or,
    with ``resume``, the fine-tuning of a run that goes on from its saved state."""
    resuming = resume is not None
    ready, probe, plan = decision.ready, decision.probe, decision.plan
    inputs = ready.inputs.with_flip(plan.test_time_flip)
    model = starting_model(decision, config)
    fixed = FixedBatch.choose(ready.dataset.split("val"), ready.dataset.classes, config.seed)
    if resuming and run.exists(FIXED_BATCH):
        fixed.records = run.json(FIXED_BATCH)["records"]
    else:
        fixed.record(model.network, inputs, ready.images, model.info["strategy"], 0)
    trained = Trained(None, None, fixed)
    with TrainingBoard(run.tensorboard) as board:
        if probe is not None and not resuming:
            run.log_metrics({"stage": "linear-probe", **probe_record(probe)})
            board.probe(probe_record(probe))
        if ready.features is not None:
            trained.probe = Candidate(model, "linear-probe", score_features(model, ready))
            if not resuming:  # a usable model before any fine-tuning, whatever happens then
                save(model, run.bundle)
        if plan.fine_tune is None:
            return trained
        trained.watch = EarlyLoss(len(ready.index), plan.fine_tune.lr)
        tuned = copy.deepcopy(model)
        tuned.info["strategy"] = plan.strategy
        callbacks: list[Callback] = [
            Checkpoints(best=run.best_checkpoint, state=run.training_state),
            MetricsLog(run, plan.strategy),
            board,
            fixed.watch(inputs, ready.images, plan.strategy),
            EpochLine(config.quiet),
            trained.watch,
            Progress(plan.strategy, quiet=config.quiet),
        ]
        result = fine_tune_planned(tuned, decision, config, callbacks, resume)
    trained.tuned = Candidate(tuned, plan.strategy, score_pixels(tuned, ready))
    trained.stopped = result.stopped
    trained.diagnosis = _diagnose(result, len(ready.index), plan.fine_tune)
    run.write_json(DIAGNOSIS, trained.diagnosis.to_dict())
    for line in trained.diagnosis.lines():
        say(config.quiet, f"diagnosis: {line}")
    return trained


def starting_model(decision: Decision, config: FitConfig) -> Model:
    """The backbone with the probe's head (or a new one, without features): the linear
    probe's model, and where fine-tuning starts."""
    ready, probe, plan = decision.ready, decision.probe, decision.plan
    head = probe.head if probe else new_head(ready.backbone.num_features, ready.train_counts)
    network = Classifier(ready.backbone, copy.deepcopy(head), ready.preprocessing)
    return Model(
        network.to(device_of(config.device)),
        ready.dataset.classes,
        ready.preprocessing,
        architecture=ready.architecture,
        test_time_flip=plan.test_time_flip,
        info={
            "weights": asdict(ready.source),
            "strategy": "linear-probe" if probe else plan.strategy,
        },
    )


def fine_tune_planned(
    model: Model,
    decision: Decision,
    config: FitConfig,
    callbacks: list[Callback],
    resume: Resume | None,
    *,
    seed: int | None = None,
) -> FineTuneResult:
    """``model`` fine-tuned in place as the plan says, on the training images (and a
    distillation's unlabelled ones, its teacher's probabilities the targets), its epochs
    chosen on the validation images; from the fit's seed, or ``seed``."""
    ready, plan, teaching = decision.ready, decision.plan, decision.teaching
    result = fine_tune(
        model.network,
        training_examples(ready, teaching),
        [(s.path, ready.index[s.label]) for s in ready.dataset.split("val")],
        ready.images,
        ready.inputs.with_flip(plan.test_time_flip),
        plan.fine_tune,
        seed=config.seed if seed is None else seed,
        callbacks=callbacks,
        resume_from=resume,
        teacher=teaching.teacher if teaching is not None else None,
    )
    if result.stopped != "finished":
        say(
            config.quiet,
            f"training stopped ({result.stopped}); best epoch {result.best_epoch} kept",
        )
    return result


def _diagnose(result: FineTuneResult, classes: int, settings: FineTuneSettings) -> Diagnosis:
    return diagnose(
        result.history,
        n_classes=classes,
        label_smoothing=settings.label_smoothing,
        stopped=result.stopped,
        lr=settings.lr,
    )


class EpochLine(Callback):
    """One line per epoch on the console (after ``prefix``: which training it is)."""

    def __init__(self, quiet: bool, prefix: str = ""):
        self.quiet, self.prefix = quiet, prefix

    def on_epoch_end(self, record: dict, training: Training) -> None:
        say(
            self.quiet,
            f"{self.prefix}epoch {record['epoch']}: train loss {record['train_loss']:.3f}, "
            f"val loss {record['val_loss']:.3f}, val accuracy {record['val_accuracy']:.1%}",
        )
