"""Fine-tuning: the top of the pretrained body trained further at a small learning rate.

The head arrives already trained (a linear probe on cached features), so the body's features
are not disturbed by gradients from a random head, and the body's learning rate decays layer by
layer towards the stem: early layers hold general features and move least.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..classifier import Classifier, layer_groups
from ..data.decoded import DecodedImages, prefetch
from ..data.transforms import center_crop, to_tensor, train_augmentation
from ..errors import HeadstartError

__all__ = [
    "FineTuneResult",
    "FineTuneSettings",
    "NothingToTrain",
    "StopTraining",
    "TrainingStep",
    "autocast",
    "decode_batch",
    "evaluate_pixels",
    "fine_tune",
    "parameter_groups",
    "train_mode",
]


@dataclass
class FineTuneSettings:
    epochs: int = 8
    lr: float = 3e-4  # the top stage's learning rate; AdamW
    head_lr_scale: float = 3.0  # the (already trained) head moves a little faster
    layer_decay: float = 0.6  # each stage further down gets this factor of the one above
    trainable_stages: int | None = None  # None: every stage
    weight_decay: float = 0.02
    label_smoothing: float = 0.1
    batch_size: int = 32
    warmup_fraction: float = 0.1
    patience: int = 3  # epochs without a better validation score before stopping
    flip: bool = True
    max_seconds: float | None = None
    # Batch-norm layers keep their pretrained running statistics (eval mode) while their
    # scale and shift train, as Keras's fine-tuning guide advises; False: statistics from
    # each batch, as training from scratch needs.
    frozen_norm_statistics: bool = True


@dataclass
class FineTuneResult:
    best_epoch: int
    best_accuracy: float
    history: list[dict] = field(default_factory=list)
    # "finished" | "early stopping" | "time budget" | "interrupted" | "diverged: <why>"
    stopped: str = "finished"


@dataclass(frozen=True)
class TrainingStep:
    """One optimisation step, as live monitoring (TensorBoard) sees it."""

    step: int  # counted from 1 over the whole run
    epoch: int
    loss: float  # the batch's training loss (label-smoothed, as optimised)
    lrs: dict[str, float]  # parameter group ("head", "stage 6", ...) -> learning rate used


Example = tuple[Path, int]


class StopTraining(Exception):
    """Raised by a callback to end training now; the message says why (``stopped``)."""


class NothingToTrain(HeadstartError):
    """Every parameter the settings would train is frozen."""


def fine_tune(
    model: Classifier,
    train: Sequence[Example],
    val: Sequence[Example],
    images: DecodedImages,
    input_size: tuple[int, int],
    settings: FineTuneSettings,
    *,
    seed: int = 0,
    checkpoint: Path | None = None,
    log: Callable[[dict], None] = lambda record: None,
    on_step: Callable[[int], None] = lambda n: None,
    on_batch: Callable[[TrainingStep], None] = lambda step: None,
) -> FineTuneResult:
    """Train ``model`` in place; on return it holds the weights of the best validation epoch.

    ``log`` receives each epoch's record, ``on_batch`` each step's loss and learning rates;
    either may raise :class:`StopTraining` to end the run (the best model so far is kept).

    Ctrl-C ends training after the current step; the best model so far is kept.
    """
    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    height, width = input_size
    augment = train_augmentation(height, width, flip=settings.flip)
    groups = parameter_groups(model, settings)
    if not any(p.requires_grad for group in groups for p in group["params"]):
        raise NothingToTrain(
            "nothing to train: every parameter of the head and the trained stages is frozen "
            "(requires_grad is off)"
        )
    optimizer = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
    steps_per_epoch = max(1, len(train) // settings.batch_size)
    total = steps_per_epoch * settings.epochs
    warmup = max(1, int(settings.warmup_fraction * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _warmup_cosine(s, warmup, total)
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    model.to(memory_format=torch.channels_last)
    device = next(model.parameters()).device

    result = FineTuneResult(best_epoch=0, best_accuracy=-1.0)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    started = time.perf_counter()
    step = 0
    try:
        for epoch in range(1, settings.epochs + 1):
            epoch_start = time.perf_counter()
            order = generator.permutation(len(train))[: steps_per_epoch * settings.batch_size]
            batches = [
                [train[i] for i in order[b : b + settings.batch_size]]
                for b in range(0, len(order), settings.batch_size)
            ]
            train_mode(model, settings)
            seen, loss_sum, correct = 0, 0.0, 0
            for pixels, labels in prefetch(lambda batch: decode_batch(images, batch), batches):
                inputs = torch.stack([augment(to_tensor(p)) for p in pixels])
                labels = labels.to(device, non_blocking=True)
                with autocast(device):
                    logits = model(inputs)
                loss = loss_fn(logits.float(), labels)
                if not torch.isfinite(loss):
                    result.stopped = (
                        f"diverged: the training loss became {loss.item()} in epoch {epoch}"
                    )
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
                optimizer.step()
                schedule.step()
                step += 1
                on_batch(TrainingStep(step, epoch, loss.item(), lrs))
                seen += len(labels)
                loss_sum += loss.item() * len(labels)
                correct += int((logits.argmax(1) == labels).sum())
                on_step(1)
            if result.stopped.startswith("diverged"):
                break
            val_loss, val_accuracy = evaluate_pixels(model, val, images, input_size)
            record = {
                "epoch": epoch,
                "train_loss": loss_sum / max(seen, 1),
                "train_accuracy": correct / max(seen, 1),
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - epoch_start,
            }
            result.history.append(record)
            log(record)
            if val_accuracy > result.best_accuracy:
                result.best_epoch, result.best_accuracy = epoch, val_accuracy
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if checkpoint is not None:
                    save_file({k: v.cpu().contiguous() for k, v in best_state.items()}, checkpoint)
            elif epoch - result.best_epoch >= settings.patience:
                result.stopped = "early stopping"
                break
            elapsed = time.perf_counter() - started
            if settings.max_seconds and elapsed + elapsed / epoch > settings.max_seconds:
                result.stopped = "time budget"
                break
    except KeyboardInterrupt:
        result.stopped = "interrupted"
    except StopTraining as reason:
        result.stopped = str(reason)
    model.load_state_dict(best_state)
    model.eval()
    return result


@torch.inference_mode()
def evaluate_pixels(
    model: Classifier,
    examples: Sequence[Example],
    images: DecodedImages,
    input_size: tuple[int, int],
    batch_size: int = 64,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on centre crops (no augmentation)."""
    model.eval()
    device = next(model.parameters()).device
    height, width = input_size
    batches = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    loss_sum, correct = 0.0, 0
    for pixels, labels in prefetch(lambda batch: decode_batch(images, batch), batches):
        with autocast(device):
            logits = model(torch.stack([center_crop(p, height, width) for p in pixels])).float()
        labels = labels.to(device)
        loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(1) == labels).sum())
    n = max(len(examples), 1)
    return loss_sum / n, correct / n


def decode_batch(images: DecodedImages, batch: Sequence[Example]) -> tuple[list, torch.Tensor]:
    """Decoded ``(H, W, 3)`` pixels of a batch and its labels."""
    return [images.get(path) for path, _ in batch], torch.tensor([label for _, label in batch])


def parameter_groups(model: Classifier, settings: FineTuneSettings) -> list[dict]:
    """Freeze the lower stages; give the rest learning rates that shrink towards the stem."""
    stages = layer_groups(model.backbone)
    trainable = len(stages) if settings.trainable_stages is None else settings.trainable_stages
    head = {"params": list(model.head.parameters()), "lr": settings.lr * settings.head_lr_scale}
    groups = [{"name": "head", **head}]  # names: for monitoring; torch keeps extra keys
    for depth, params in enumerate(reversed(stages)):  # depth 0 is the top stage
        if depth >= trainable:
            for param in params:
                param.requires_grad_(False)
            continue
        lr = settings.lr * settings.layer_decay**depth
        groups.append({"name": f"stage {len(stages) - 1 - depth}", "params": params, "lr": lr})
    return groups


def train_mode(model: nn.Module, settings: FineTuneSettings) -> None:
    """Train mode, except batch-norm layers of frozen stages, and of every stage when the
    settings keep the pretrained statistics.

    Why keep them: on images unlike the pretraining data (8x8 digits enlarged to 224 px), the
    statistics of a batch differ so much from the running ones that the network in training mode
    computes other features than the ones the linear probe was fitted on. Measured on the
    digits: the probe-initialised network scores 0.0008 nats in eval mode and 15 nats (1.6%
    accuracy) in training mode, so fine-tuning began by wrecking the head it started from.
    """
    model.train()
    for module in model.modules():
        if isinstance(module, _BatchNorm) and (
            settings.frozen_norm_statistics or not any(p.requires_grad for p in module.parameters())
        ):
            module.eval()


def autocast(device: torch.device) -> torch.autocast:
    """bfloat16 mixed precision on CUDA (no loss scaling needed); full precision on CPU,
    where bfloat16 is slower on most processors and the features are cached in float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))
