"""Fine-tuning: the top of the pretrained body trained further at a small learning rate.

The head arrives already trained (a linear probe on cached features), so the body's features
are not disturbed by gradients from a random head, and the body's learning rate decays layer by
layer towards the stem: early layers hold general features and move least.

Every knob of the recipe lives in :class:`FineTuneSettings`, under the name the setting has
from the command line down (:class:`headstart.config.FitConfig`): which stages train and when
(:mod:`.freezing`), the optimiser and schedule (:mod:`.optim`), the regularisers
(:mod:`.regularise`), class balance (:mod:`.imbalance`) and augmentation
(:mod:`headstart.data.augment`). The loop itself only runs them, and fires named events for
everything around it (:mod:`.callbacks`: progress, checkpoints, logs, monitoring, checks).

Randomness is drawn per epoch, per batch and per image from the seed, never carried over from
step to step: a run resumed from its last epoch (``resume=True``) draws what an uninterrupted
run would have drawn, and a distributed run augments every image as a single process would.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..classifier import Classifier, layer_groups
from ..config import PRECISIONS
from ..data.augment import AugmentSettings, build_augmentation
from ..data.decoded import DecodedImages, prefetch
from ..errors import HeadstartError
from ..inputs import InputPipeline, to_tensor
from ..storage import write_atomically
from . import distributed
from .callbacks import Callback, FineTuneResult, StopTraining, TrainingStep
from .distill import Teacher
from .freezing import parameter_groups, stages_trained, train_mode, unfreeze
from .imbalance import balanced_order, class_weights
from .objective import Classification, Objective
from .optim import Schedule, create_optimizer
from .regularise import BatchMixer, WeightAverage, clip_gradients, head_penalty

__all__ = [
    "FineTuneResult",
    "FineTuneSettings",
    "NothingToTrain",
    "Resume",
    "Training",
    "autocast",
    "decode_batch",
    "evaluate_pixels",
    "fine_tune",
    "resolve_precision",
    "training_crop",
]


@dataclass(frozen=True)
class FineTuneSettings:
    """How one fine-tuning trains: the plan's decision, as data (``plan.json``)."""

    epochs: int = 8
    lr: float = 3e-4  # the top stage's learning rate
    head_lr_scale: float = 3.0  # the (already trained) head moves a little faster
    layer_decay: float = 0.6  # each stage further down gets this factor of the one above
    freeze: str | int = "none"  # "none" | "all" (the head only) | bottom stages frozen
    unfreeze: str = "none"  # "none" | "gradual": top stage first, one more per epoch
    optimizer: str = "adamw"  # see headstart.config.OPTIMIZERS
    momentum: float = 0.9  # SGD, Nesterov and RMSProp
    schedule: str = "cosine"  # see headstart.config.SCHEDULES
    warmup: float = 0.1  # share of all steps spent in a linear warm-up from zero
    weight_decay: float = 0.02  # decoupled (AdamW) or L2; never on biases and norm layers
    head_l1: float = 0.0  # L1 penalty on the head's weights; with weight decay: elastic net
    label_smoothing: float = 0.1
    mixup: float = 0.0  # Mixup's alpha; 0: off
    cutmix: float = 0.0  # CutMix's alpha; 0: off
    ema: float | None = None  # decay of a moving average of the weights, which is evaluated
    clip_grad: float | None = None  # gradients rescaled to at most this norm
    balance: str = "none"  # "none" | "weighted-loss" | "sampler"
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    batch_size: int = 32
    patience: int | None = 3  # epochs without a better validation score; None: never stop
    # The side of the training crops; None: the network's input size. Smaller crops cost less
    # (the square of the side), and a network that trains on random crops smaller than it
    # will see does well at the full size (FixRes, Touvron et al. 2019): validation and
    # predictions always use the full input size.
    train_size: int | None = None
    # Batch-norm layers keep their pretrained running statistics (eval mode) while their
    # scale and shift train, as Keras's fine-tuning guide advises; False: statistics from
    # each batch, as training from scratch needs.
    frozen_norm_statistics: bool = True
    precision: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FineTuneSettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        augment = values.pop("augment", None) or {}
        augment = {k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()}
        return cls(**values, augment=AugmentSettings(**augment))


#: An image and its target: a class index (-1: no label, a distillation's teacher labels it),
#: a standardised number (a regression), or a row of 0/1 (several labels an image).
Example = tuple[Path, int | float | tuple[float, ...]]


class NothingToTrain(HeadstartError):
    """Every parameter the settings would train is frozen."""


@dataclass(frozen=True)
class Resume:
    """How a run goes on from the training state it saved (``fit --resume``)."""

    state: Path
    #: Why its training had ended, when a kill came after that and before the run finished:
    #: no epoch more, the same best weights.
    ended: str | None = None
    #: Trained longer than it ended (``--resume --epochs N`` after it stopped): early
    #: stopping's patience counts anew.
    longer: bool = False


def fine_tune(
    model: Classifier,
    train: Sequence[Example],
    val: Sequence[Example],
    images: DecodedImages,
    inputs: InputPipeline,
    settings: FineTuneSettings,
    *,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    resume_from: Path | Resume | None = None,
    teacher: Teacher | None = None,
    objective: Objective | None = None,
) -> FineTuneResult:
    """Train ``model`` in place; on return it holds the weights of the best validation epoch.

    ``inputs`` says how images are cropped and which views validation averages (as the model
    will predict). ``callbacks`` receive the loop's events (see :mod:`.callbacks`); any of them
    may raise :class:`StopTraining` to end the run, and Ctrl-C ends it after the current step:
    either way the best model so far is kept. ``resume_from`` is a state written by
    :meth:`Training.save` (the :class:`~.callbacks.Checkpoints` callback writes one after every
    epoch): training goes on from its last finished epoch, or trains longer when ``settings``
    ask for more epochs than it was planned with; a :class:`Resume` says more (a training
    that had ended, one trained longer).

    Under ``torchrun`` (a process group initialised, see :mod:`.distributed`) every process
    trains its share of each batch and gradients are averaged: the same model as one process
    training the whole batch, within noise.

    With a ``teacher`` the model learns the teacher's probabilities on each augmented batch in
    place of the labels (:mod:`.distill`); training examples may then be unlabelled (label
    -1). Validation still scores the labels.

    ``objective`` says what the outputs mean (:mod:`.objective`): by default a class, as the
    settings' label smoothing and balance weigh it; :class:`~.objective.Regression` for a
    number (the examples' targets then standardised floats). The best epoch is the one with
    the best validation score (accuracy, or R²).
    """
    run = Training(model, train, images, inputs, settings, seed, teacher, objective)
    resume = Resume(Path(resume_from)) if isinstance(resume_from, str | Path) else resume_from
    if resume is not None:
        if not resume.state.exists():
            raise HeadstartError(f"nothing to resume: no training state at {resume.state}")
        run.load(resume.state, longer=resume.longer)
    result = run.result
    first = run.epoch + 1
    if resume is not None and resume.ended:
        result.stopped, first = resume.ended, settings.epochs + 1
    try:
        for callback in callbacks:
            callback.on_train_begin(run)
        for epoch in range(first, settings.epochs + 1):
            epoch_start = time.perf_counter()
            record = run.train_epoch(epoch, callbacks)
            if result.stopped.startswith("diverged"):
                break
            evaluated = run.evaluated()
            score = f"val_{run.objective.score}"
            record["val_loss"], record[score] = evaluate_pixels(
                evaluated,
                val,
                images,
                inputs,
                precision=settings.precision,
                objective=run.objective,
            )
            record["seconds"] = time.perf_counter() - epoch_start
            record = distributed.agree(record)  # one set of numbers decides, in every process
            result.history.append(record)
            if record[score] > result.best_accuracy:
                result.best_epoch, result.best_accuracy = epoch, record[score]
                run.best_state = _copy_state(evaluated)
                for callback in callbacks:
                    callback.on_improved(epoch, run.best_state)
            run.epoch = epoch
            run.elapsed += record["seconds"]
            with _deferred_interrupt():  # the state and the epoch's record, both or neither
                for callback in callbacks:
                    callback.on_epoch_end(record, run)
            if run.patience_spent():
                result.stopped = "early stopping"
                break
    except KeyboardInterrupt:
        result.stopped = "interrupted"
    except StopTraining as reason:
        result.stopped = str(reason)
    finally:
        model.load_state_dict(run.best_state)
        model.eval()
        for callback in callbacks:
            callback.on_train_end(result)
    return result


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """Ctrl-C inside the block takes effect when it ends, so that what the block writes
    together (the resumable state and the epoch's record) is never half written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: pressed.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


class Training:
    """The state of one fine-tuning: what an epoch needs and what a resumed run restores."""

    def __init__(
        self,
        model: Classifier,
        train: Sequence[Example],
        images: DecodedImages,
        inputs: InputPipeline,
        settings: FineTuneSettings,
        seed: int,
        teacher: Teacher | None = None,
        objective: Objective | None = None,
    ):
        self.model, self.train, self.images = model, train, images
        self.settings, self.seed = settings, seed
        self.device = next(model.parameters()).device
        self.teacher = teacher.to(self.device) if teacher is not None else None
        channels = model.normalize.mean.shape[1]
        self.augment = build_augmentation(
            *training_crop(inputs, settings), settings.augment, channels=channels
        )
        self.stages = len(layer_groups(model.backbone))
        self.groups = parameter_groups(model, settings)
        if not any(p.requires_grad for group in self.groups for p in group["params"]):
            raise NothingToTrain(
                "nothing to train: every parameter of the head and the trained stages is frozen "
                "(requires_grad is off)"
            )
        self.optimizer = create_optimizer(
            self.groups,
            settings.optimizer,
            weight_decay=settings.weight_decay,
            momentum=settings.momentum,
        )
        world = distributed.rank_and_size()[1]
        if settings.batch_size % world:
            raise HeadstartError(
                f"batch_size={settings.batch_size} does not split evenly over {world} "
                f"processes: use a multiple of {world}"
            )
        self.steps_per_epoch = max(1, len(train) // settings.batch_size)
        total = self.steps_per_epoch * settings.epochs
        self.schedule = Schedule(
            self.optimizer,
            settings.schedule,
            total_steps=total,
            warmup_steps=int(settings.warmup * total),
        )
        self.labels = np.array([label for _, label in train])
        n_classes = model.head.out_features
        self.mixing = settings.mixup > 0 or settings.cutmix > 0
        if objective is not None and not isinstance(objective, Classification):
            _refuse_without_classes(settings, teacher)
            self.objective: Objective = objective
        else:
            if (self.labels < 0).any() and (self.teacher is None or settings.balance != "none"):
                raise HeadstartError(
                    "unlabelled training images need a teacher to label them, and no class "
                    f"balancing (balance={settings.balance!r})"
                )
            counts = np.bincount(self.labels[self.labels >= 0], minlength=n_classes)
            weight = None
            if settings.balance == "weighted-loss":
                weight = class_weights(counts).to(self.device)
            self.objective = objective or Classification(weight, settings.label_smoothing)
        self.n_classes = n_classes
        if self.mixing:  # refused now, not in the first step: Mixup with one class, say
            BatchMixer(n_classes, mixup=settings.mixup, cutmix=settings.cutmix)
        self.average = WeightAverage(model, settings.ema) if settings.ema is not None else None
        self.precision = resolve_precision(settings.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        model.to(memory_format=torch.channels_last)

        # Below any score: an R² can be any negative number.
        self.result = FineTuneResult(best_epoch=0, best_accuracy=-float("inf"))
        # Until an epoch is scored, the best model is the one training started from.
        self.best_state: dict[str, torch.Tensor] = _copy_state(model)
        self.epoch, self.step, self.elapsed = 0, 0, 0.0
        # Early stopping counts epochs without gain from the best epoch, or from here when
        # later than it (a finished run trained longer starts its patience anew).
        self.patience_from = 0
        self.network: nn.Module = model
        self.network_stages = -1  # how many stages the distributed wrapper was built for

    def train_epoch(self, epoch: int, callbacks: Sequence[Callback] = ()) -> dict:
        settings = self.settings
        trained = stages_trained(settings, self.stages, epoch)
        if settings.unfreeze == "gradual":
            unfreeze(self.groups, trained)
        self._wrap(trained)
        train_mode(self.model, settings)
        rank, world = distributed.rank_and_size()
        seen, loss_sum, tally = 0, 0.0, self.objective.tally()
        shares = [positions[rank::world] for positions in self._batches(epoch)]
        decoded = prefetch(
            lambda mine: decode_batch(self.images, [self.train[i] for i in mine]), shares
        )
        for batch, (mine, (pixels, labels)) in enumerate(zip(shares, decoded, strict=True)):
            inputs = self._augmented(pixels, epoch, mine)
            torch.manual_seed(_seed(self.seed, epoch, batch, rank))  # dropout, mixing
            labels = labels.to(self.device, non_blocking=True)
            targets = labels
            if self.mixing:
                # A mixer seeded per batch: what a resumed or distributed run draws too.
                mixer = BatchMixer(
                    self.n_classes,
                    mixup=settings.mixup,
                    cutmix=settings.cutmix,
                    seed=_seed(self.seed, epoch, batch, rank),
                )
                # Unlabelled images mix as any (the teacher's targets replace the labels').
                inputs, targets = mixer(inputs, labels.clamp(min=0))
                targets = targets.to(self.device)
            with autocast(self.device, settings.precision):
                logits = self.network(inputs)
                if self.teacher is not None:
                    targets = self.teacher.targets(inputs)
            if self.teacher is not None:
                loss = self.teacher.loss(logits, targets)
            else:
                loss = self.objective.loss(logits, targets)
            if settings.head_l1 > 0:
                loss = loss + head_penalty(self.model.head, settings.head_l1, 0.0)
            if distributed.any_rank(not torch.isfinite(loss)):
                value = loss.item() if not torch.isfinite(loss) else "not finite"
                self.result.stopped = f"diverged: the training loss became {value} in epoch {epoch}"
                break
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if settings.clip_grad is not None:
                self.scaler.unscale_(self.optimizer)
                clip_gradients(self.model.parameters(), settings.clip_grad)
            lrs = {group["name"]: group["lr"] for group in self.optimizer.param_groups}
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.schedule.step()
            self.step += 1
            if self.average is not None:
                self.average.update(self.model, self.step)
            stop = None
            step = TrainingStep(self.step, epoch, loss.item(), lrs)
            try:
                for callback in callbacks:
                    callback.on_batch_end(step)
            except StopTraining as reason:
                stop = str(reason)
            if distributed.any_rank(stop is not None):  # one process's stop stops them all
                raise StopTraining(stop or "stopped: another process stopped the training")
            seen += len(labels)
            loss_sum += loss.item() * len(labels)
            tally.add(logits.detach().float(), labels)
        score = tally.result()[1] if seen else 0.0
        return {
            "epoch": epoch,
            "train_loss": loss_sum / max(seen, 1),
            f"train_{self.objective.score}": score,
            "lr": self.optimizer.param_groups[0]["lr"],
            "stages_trained": trained,
        }

    def evaluated(self) -> nn.Module:
        """The network scored on validation: the weight average when there is one."""
        return self.average.module if self.average is not None else self.model

    def _batches(self, epoch: int) -> list[np.ndarray]:
        """This epoch's batches as positions in ``train``: a shuffle, or a class-balanced
        draw, from a generator seeded by the epoch (so a resumed run draws the same)."""
        size = self.settings.batch_size
        rng = np.random.default_rng([self.seed, epoch])
        count = self.steps_per_epoch * size
        if self.settings.balance == "sampler":
            order = balanced_order(self.labels, count, rng)
        else:
            order = rng.permutation(len(self.train))[:count]
        return [order[b : b + size] for b in range(0, len(order), size)]

    def _augmented(self, pixels: list[np.ndarray], epoch: int, positions) -> torch.Tensor:
        """Each image augmented with randomness drawn from its own seed (epoch, position)."""
        out = []
        with torch.random.fork_rng(devices=[]):
            for image, position in zip(pixels, positions, strict=True):
                torch.manual_seed(_seed(self.seed, epoch, -1, int(position)))
                out.append(self.augment(to_tensor(image)))
        return torch.stack(out)

    def _wrap(self, trained: int) -> None:
        """Under torchrun, the model in DistributedDataParallel, rebuilt when the set of
        trained parameters changes (DDP registers its gradient hooks once)."""
        if distributed.rank_and_size()[1] > 1 and trained != self.network_stages:
            self.network = distributed.wrap(self.model)
            self.network_stages = trained

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "average": self.average.state_dict() if self.average is not None else {},
            # The best weights, unless they are the model's own (the last epoch was the best
            # and no weight average is evaluated): the state file then holds one copy.
            "best": {} if self._best_is_model() else self.best_state,
            "progress": json.dumps(
                {
                    "epoch": self.epoch,
                    "step": self.step,
                    "elapsed": self.elapsed,
                    "planned_epochs": self.settings.epochs,
                    "patience_from": self.patience_from,
                    "best_epoch": self.result.best_epoch,
                    "best_accuracy": self.result.best_accuracy,
                    "history": self.result.history,
                    "settings": _comparable(self.settings),
                }
            ),
        }

    def patience_spent(self) -> bool:
        """Whether early stopping ends the training after the epochs done: ``patience``
        epochs without a better validation score (counted anew on training longer)."""
        patience = self.settings.patience
        since = self.epoch - max(self.result.best_epoch, self.patience_from)
        return patience is not None and since >= patience

    def _best_is_model(self) -> bool:
        return self.average is None and self.result.best_epoch == self.epoch > 0

    def save(self, path: Path) -> None:
        # Made in memory, then written whole: a full disk leaves the last state as it was and
        # raises an OSError naming the file (torch's own writer raises a RuntimeError).
        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        write_atomically(path, buffer.getvalue())

    def load(self, path: Path, *, longer: bool = False) -> None:
        """Go on from the state saved at ``path`` (read with ``weights_only=True``);
        ``longer``: trained on after it had stopped (patience counts anew)."""
        try:
            saved = torch.load(path, map_location=self.device, weights_only=True)
            progress = json.loads(saved["progress"])
        except Exception as error:  # a torn or foreign file: unpickling, zip or key errors
            raise HeadstartError(
                f"cannot resume from {path}: not a training state headstart wrote, or a damaged "
                f"one ({type(error).__name__}); start a new fit"
            ) from None
        if progress["settings"] != _comparable(self.settings):
            changed = sorted(
                key
                for key, value in _comparable(self.settings).items()
                if progress["settings"].get(key) != value
            )
            raise HeadstartError(
                f"cannot resume from {path}: the settings differ from the interrupted run's "
                f"({', '.join(changed)}); only epochs may change"
            )
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        self.scaler.load_state_dict(saved["scaler"])
        if self.average is not None:
            self.average.load_state_dict(saved["average"])
        self.patience_from = progress.get("patience_from", 0)
        if progress["planned_epochs"] != self.settings.epochs:
            # Training longer than planned: the schedule is stretched over the new length.
            self.schedule.extend(self.steps_per_epoch * self.settings.epochs)
        if longer or progress["planned_epochs"] != self.settings.epochs:
            # Early stopping's patience counts anew. An interrupted run goes on as it was.
            self.patience_from = progress["epoch"]
        self.best_state = saved["best"] or _copy_state(self.model)
        self.epoch, self.step, self.elapsed = (
            progress["epoch"],
            progress["step"],
            progress["elapsed"],
        )
        self.result.best_epoch = progress["best_epoch"]
        self.result.best_accuracy = progress["best_accuracy"]
        self.result.history = progress["history"]


def _refuse_without_classes(settings: FineTuneSettings, teacher: Teacher | None) -> None:
    """A number, or several labels, is not one class: what mixes, balances or distils one
    class an image has no meaning there."""
    if teacher is not None:
        raise HeadstartError("distillation is built for one class an image")
    if settings.mixup > 0 or settings.cutmix > 0:
        raise HeadstartError("mixup and cutmix mix one class an image: this task trains without")
    if settings.balance != "none":
        raise HeadstartError(
            f"balance={settings.balance!r} balances one class an image: this task has none"
        )


def _comparable(settings: FineTuneSettings) -> dict:
    """The settings a resumed run must share with the interrupted one, as JSON values."""
    values = json.loads(json.dumps(settings.to_dict()))
    for free in ("epochs", "patience"):
        values.pop(free)
    return values


def _seed(seed: int, epoch: int, batch: int, item: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, batch + 1, item + 1]).generate_state(1)[0])


def _copy_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@torch.inference_mode()
def evaluate_pixels(
    model: nn.Module,
    examples: Sequence[Example],
    images: DecodedImages,
    inputs: InputPipeline,
    batch_size: int = 64,
    *,
    precision: str = "auto",
    objective: Objective | None = None,
) -> tuple[float, float]:
    """The mean plain loss and the score (by default: cross-entropy and accuracy) on the
    evaluation crops (no augmentation), of the outputs averaged over ``inputs.views``, as the
    model bundle predicts."""
    model.eval()
    device = next(model.parameters()).device
    batches = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    tally = (objective or Classification()).tally()
    for pixels, labels in prefetch(lambda batch: decode_batch(images, batch), batches):
        with autocast(device, precision):
            logits = inputs.logits(model, inputs.batch(pixels))
        tally.add(logits.float(), labels.to(device))
    return tally.result() if examples else (0.0, 0.0)


def training_crop(inputs: InputPipeline, settings: FineTuneSettings) -> tuple[int, int]:
    """``(height, width)`` of the training crops: the input size, or ``train_size`` on the
    shorter side with the input's aspect."""
    height, width = inputs.crop_size
    if settings.train_size is None:
        return height, width
    scale = settings.train_size / min(height, width)
    return round(height * scale), round(width * scale)


def decode_batch(images: DecodedImages, batch: Sequence[Example]) -> tuple[list, torch.Tensor]:
    """Decoded ``(H, W, C)`` pixels of a batch and its labels."""
    return [images.get(path) for path, _ in batch], torch.tensor([label for _, label in batch])


def resolve_precision(precision: str, device: torch.device) -> str:
    """``fp32``, ``bf16`` or ``fp16``: what ``precision`` means on ``device``."""
    if precision not in PRECISIONS:
        raise HeadstartError(f"precision={precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise HeadstartError(
            f"precision='fp16' needs a CUDA device (this one is {device.type}); "
            "use 'bf16' or 'fp32'"
        )
    return precision


def autocast(device: torch.device, precision: str = "auto") -> torch.autocast:
    """Mixed precision as :func:`resolve_precision` decides; full precision when ``fp32``."""
    chosen = resolve_precision(precision, device)
    dtype = torch.float16 if chosen == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=chosen != "fp32")
