"""The learning-rate range test (Smith 2015, "Cyclical learning rates"; fastai's ``lr_find``).

A few hundred steps of the real fine-tuning (same model, parameter groups, AdamW, augmentation
and loss as :func:`~headstart.training.finetune.fine_tune`) with the learning rate raised
exponentially from tiny to huge, one batch per step. The loss first does nothing, then falls,
then explodes; a good learning rate sits where it falls fastest, well before the explosion.
The model is left exactly as it came: weights, normalisation statistics, frozen flags, train
or eval mode, and the global random state the augmentation draws from.

The suggestion (:func:`suggest_lr`) lies halfway down the longest valley of the smoothed loss,
the stretch over which it keeps falling; there is none when the loss falls no further along it
than the batch-to-batch noise would on a flat curve. The rule it replaced, the minimum's rate
divided by 10 when no steepest point came before the minimum, read noise as a signal: on a
curve that only wobbles and then explodes, the lowest smoothed loss is often the first point
(the average of one batch), and ``fit`` trained at 2e-5, ten times below the plan's default.

``fit`` runs it (50 steps) when no ``--lr`` is given and the test costs at most a tenth of the
planned fine-tuning, and takes the suggestion within 10x of the plan's default, or keeps the
default when there is none. Below that size it would dominate, on measurements
(``benchmarks/lr_find_benefit.py``, ``strategy="fine-tune"``, 2 shared CPU cores): a curve
needs some 50 steps to resolve, each as dear as a fine-tuning step, while a few hundred images
fine-tune in 30 to 70 steps, so the test cost 3x to 13x the fine-tuning itself; and there it
bought no accuracy: on the LFW faces, 1.2e-4 suggested (by the rules before the valley) against
the plan's 2e-4, 100% validation and test either way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..classifier import Classifier
from ..data.augment import build_augmentation
from ..data.decoded import DecodedImages, prefetch
from ..errors import HeadstartError
from ..inputs import InputPipeline, to_tensor
from ..runfolder import LR_FIND, LR_FIND_PLOT
from ..storage import write_atomically, write_png
from .finetune import Example, FineTuneSettings, autocast, decode_batch, training_crop
from .freezing import parameter_groups, train_mode
from .optim import create_optimizer

__all__ = ["LRFindResult", "lr_range_test", "plot_lr_find", "suggest_lr"]

#: The rules judge the loss smoothed this much (an exponential moving average): less and
#: batch-to-batch noise cuts the valley into pieces; more and the curve lags the LR.
SMOOTHING = 0.9
#: The sweep stops once the smoothed loss exceeds this multiple of its minimum: past it, the
#: training has diverged and further steps only cost time.
DIVERGE_FACTOR = 4.0
#: A valley counts as a descent only when the smoothed loss falls along it by more than this
#: many standard deviations of one batch's loss. Flat curves of pure noise (simulated: 50
#: steps, 2000 each of Gaussian and of skewed noise) passed it 1 and 3 times in 2000 (with 20
#: steps 7 and 36 times: shorter sweeps are less sure); the real descents measured (trashnet,
#: the LFW faces fine-tuned, and their head alone) fell by 3.5, 3.8 and 13 of them.
NOISE_MARGIN = 2.5
#: ... and by at least this share of the loss where the valley starts: a smaller fall is no
#: descent to choose a rate by even without noise (rounding alone makes a flat curve wobble).
MIN_FALL = 0.01
#: Rules, as they are written in results and reports.
HALFWAY_DOWN = "halfway down the longest valley of the smoothed loss"
VALLEY_MIDDLE = "the middle of the longest valley of the smoothed loss (fastai's valley)"
STEEPEST = "steepest descent of the smoothed loss (before its minimum)"
MIN_OVER_10 = "the learning rate of the lowest smoothed loss, divided by 10"
NOTHING_TRAINS = "nothing trains"
DIVERGED = "diverged"


@dataclass
class LRFindResult:
    """What the range test measured and what it suggests.

    ``lrs`` are the top stage's learning rates (the number ``--lr`` sets); each parameter
    group runs at its own multiple of it, listed for the suggestion in ``group_lrs``.
    """

    lrs: list[float]
    losses: list[float]  # training loss of each step's batch (label-smoothed cross-entropy)
    smoothed: list[float]  # bias-corrected exponential moving average of ``losses``
    suggestion: float | None  # None when nothing trains or the loss falls no more than noise
    rule: str  # which rule gave the suggestion, or why there is none
    group_lrs: dict[str, float] = field(default_factory=dict)  # group -> LR at the suggestion
    group_scales: dict[str, float] = field(default_factory=dict)  # group -> multiple of the LR
    alternatives: dict[str, float] = field(default_factory=dict)  # each rule's LR, for comparison
    valley: list[float] | None = None  # the LRs where the longest valley starts and ends
    descent: float | None = None  # how far the smoothed loss falls along it
    noise: float | None = None  # the standard deviation of one batch's loss around the curve
    stopped: str = "range covered"  # "range covered" | "diverged" | "nothing trains" | ...
    start: float = 1e-7
    end: float = 1.0
    batch_size: int = 32
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, folder: str | Path) -> tuple[Path, Path]:
        """Write ``lr_find.json`` and ``lr_find.png`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / LR_FIND
        # NaN and infinity are not JSON: a diverged step's loss is written as null.
        clean = {
            key: [v if np.isfinite(v) else None for v in value]
            if key in ("losses", "smoothed")
            else value
            for key, value in self.to_dict().items()
        }
        write_atomically(data, (json.dumps(clean, indent=2) + "\n").encode())
        return data, plot_lr_find(self, folder / LR_FIND_PLOT)

    def climbs_at(self, lr: float) -> bool:
        """Whether the loss already climbs at ``lr``: the smoothed loss there stands above its
        lowest point at smaller rates by more than the batches' noise would lift it, or the
        sweep stopped short of ``lr`` because the loss diverged. False where the sweep cannot
        tell (no noise measured, ``lr`` beyond a sweep that covered its range)."""
        finite = [(r, s) for r, s in zip(self.lrs, self.smoothed, strict=True) if np.isfinite(s)]
        if not finite or self.noise is None or not np.isfinite(self.noise):
            return False
        if lr > finite[-1][0]:
            return self.stopped == DIVERGED
        curve = np.asarray([s for r, s in finite])
        at = int(np.searchsorted([r for r, s in finite], lr, side="right")) - 1
        first = _warmup(len(finite))
        if at <= first:
            return False
        return bool(curve[at] - curve[first:at].min() > NOISE_MARGIN * self.noise)

    def describe(self) -> str:
        """One line for a person: the suggestion and the rule, or why there is none."""
        if self.suggestion is None:
            return f"no suggestion: {self.rule}"
        return f"suggested learning rate {self.suggestion:.2g} ({self.rule})"


def lr_range_test(
    model: Classifier,
    train: Sequence[Example],
    images: DecodedImages,
    inputs: InputPipeline,
    settings: FineTuneSettings,
    *,
    start: float = 1e-7,
    end: float = 1.0,
    steps: int = 100,
    seed: int = 0,
    on_step: Callable[[int], None] = lambda n: None,
) -> LRFindResult:
    """Sweep the top stage's learning rate from ``start`` to ``end`` over at most ``steps``
    batches, as :func:`fine_tune` would train with ``settings`` (its ``lr`` is ignored), and
    suggest one. ``model`` is returned to its exact state afterwards, even on Ctrl-C."""
    if not 0 < start < end:
        raise HeadstartError(f"start={start!r}, end={end!r}: need 0 < start < end (e.g. 1e-7, 1)")
    if not isinstance(steps, int) or steps < 10:
        raise HeadstartError(f"steps={steps!r}: a range test needs at least 10 steps (try 100)")
    if not train:
        raise HeadstartError("no training images to run the learning-rate range test on")
    began = time.perf_counter()
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    frozen = {name: p.requires_grad for name, p in model.named_parameters()}
    modes = {name: m.training for name, m in model.named_modules()}
    device = next(model.parameters()).device
    rng_devices = [device] if device.type == "cuda" else []

    # Each group's learning rate is a fixed multiple of the top stage's: build the groups at
    # lr=1 to read the multiples off, then scale them all by the swept LR at each step.
    groups = parameter_groups(model, replace(settings, lr=1.0))
    scales = {group["name"]: group["lr"] for group in groups}
    lrs = np.geomspace(start, end, steps)
    losses: list[float] = []
    stopped = "range covered"
    try:
        if not any(p.requires_grad for group in groups for p in group["params"]):
            stopped = NOTHING_TRAINS
        else:
            with torch.random.fork_rng(devices=rng_devices):
                torch.manual_seed(seed)
                stopped = _sweep(
                    model,
                    groups,
                    lrs,
                    train,
                    images,
                    inputs,
                    settings,
                    seed,
                    losses,
                    on_step,
                )
            moved = any(
                not torch.equal(p.detach(), saved[name]) for name, p in model.named_parameters()
            )
            if not moved:
                stopped = NOTHING_TRAINS
    finally:
        model.load_state_dict(saved)
        for name, p in model.named_parameters():
            p.requires_grad_(frozen[name])
        for name, module in model.named_modules():
            module.train(modes[name])

    result = suggest_lr(lrs[: len(losses)], losses, stopped=stopped)
    suggestion = result.suggestion
    return replace(
        result,
        group_lrs={n: s * suggestion for n, s in scales.items()} if suggestion else {},
        group_scales=scales,
        start=start,
        end=end,
        batch_size=settings.batch_size,
        seconds=time.perf_counter() - began,
    )


def _sweep(
    model: Classifier,
    groups: list[dict],
    lrs: np.ndarray,
    train: Sequence[Example],
    images: DecodedImages,
    inputs: InputPipeline,
    settings: FineTuneSettings,
    seed: int,
    losses: list[float],
    on_step: Callable[[int], None],
) -> str:
    """The training steps; appends each batch's loss to ``losses``; returns why it stopped."""
    optimizer = create_optimizer(
        groups, settings.optimizer, weight_decay=settings.weight_decay, momentum=settings.momentum
    )
    # The groups were built at lr=1: each optimiser group's rate is its multiple of the swept
    # one (the optimiser splits groups into decayed and undecayed halves of the same rate).
    scales = [group["lr"] for group in optimizer.param_groups]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    channels = model.normalize.mean.shape[1]
    augment = build_augmentation(
        *training_crop(inputs, settings), settings.augment, channels=channels
    )
    device = next(model.parameters()).device
    model.to(memory_format=torch.channels_last)
    train_mode(model, settings)

    # Batches as fine_tune draws them: shuffled epochs, as many as the steps need.
    generator = np.random.default_rng(seed)
    size = min(settings.batch_size, len(train))
    per_epoch = max(1, len(train) // size)
    batches: list[list[Example]] = []
    while len(batches) < len(lrs):
        order = generator.permutation(len(train))[: per_epoch * size]
        batches += [[train[i] for i in order[b : b + size]] for b in range(0, len(order), size)]

    try:
        for step, (pixels, labels) in enumerate(
            prefetch(lambda batch: decode_batch(images, batch), batches[: len(lrs)])
        ):
            for group, scale in zip(optimizer.param_groups, scales, strict=True):
                group["lr"] = scale * lrs[step]
            batch = torch.stack([augment(to_tensor(p)) for p in pixels])
            with autocast(device):
                logits = model(batch)
            loss = loss_fn(logits.float(), labels.to(device))
            value = loss.item()
            losses.append(value)
            if not np.isfinite(value):
                return DIVERGED
            smoothed = _smooth(losses)
            on_step(1)
            # Judged against the lowest loss since the first steps: an easy first batch is
            # no minimum to measure an explosion from.
            first = _warmup(len(lrs))
            if step >= first and smoothed[-1] > DIVERGE_FACTOR * min(smoothed[first:]):
                return DIVERGED
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    except KeyboardInterrupt:
        return "interrupted"
    return "range covered"


def suggest_lr(
    lrs: Sequence[float], losses: Sequence[float], *, stopped: str = "range covered"
) -> LRFindResult:
    """Judge a range test's curve: each batch's loss (``losses``) at the learning rate it was
    trained at (``lrs``, rising). The suggestion, the rule that gave it, or None and why; what
    each rule would say. ``stopped``: why the sweep ended; ``"nothing trains"`` gives None.
    """
    lrs = [float(lr) for lr in lrs]
    losses = [float(loss) for loss in losses]
    if len(lrs) != len(losses):
        raise HeadstartError(f"{len(lrs)} learning rates but {len(losses)} losses: need one each")
    smoothed = _smooth(losses)
    verdict = _judge(lrs, losses, smoothed, stopped)
    return LRFindResult(
        lrs=lrs,
        losses=losses,
        smoothed=smoothed,
        stopped=stopped,
        start=lrs[0] if lrs else LRFindResult.start,
        end=lrs[-1] if lrs else LRFindResult.end,
        **asdict(verdict),
    )


def _smooth(losses: Sequence[float]) -> list[float]:
    """The bias-corrected exponential moving average of ``losses`` (Adam's correction: the
    average starts at 0, so its early values are divided by the share of weight they hold);
    NaN from the first loss that is not finite on."""
    smoothed, average = [], 0.0
    for step, loss in enumerate(losses):
        if not np.isfinite(loss):
            return smoothed + [float("nan")] * (len(losses) - step)
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        smoothed.append(average / (1 - SMOOTHING ** (step + 1)))
    return smoothed


@dataclass(frozen=True)
class _Verdict:
    """What the rules make of a curve: the fields of :class:`LRFindResult` they decide."""

    suggestion: float | None
    rule: str
    alternatives: dict[str, float] = field(default_factory=dict)
    valley: list[float] | None = None
    descent: float | None = None
    noise: float | None = None


def _judge(
    lrs: Sequence[float], losses: Sequence[float], smoothed: Sequence[float], stopped: str
) -> _Verdict:
    """The suggested LR and the rule that gave it, or None and why; what each rule would say.

    The rule that decides: halfway down the longest valley, the stretch over which the smoothed
    loss keeps falling (fastai's ``valley``: its longest decreasing subsequence, so a bump of
    noise does not cut it short). Halfway in loss, not in steps, so flat noise before the
    descent or a flat bottom after it cannot move the point: it lies where the loss falls,
    well below the rates where it stops falling. None when the valley falls no further than
    the batches' own noise would: a curve of noise has no learning rate to give, and a rule
    forced to pick one picks noise (its lowest point, often its first).
    """
    if stopped == NOTHING_TRAINS:
        return _Verdict(
            None,
            "nothing trains: no parameter changed over the whole range (every layer frozen, "
            "or no gradient reaches them)",
        )
    finite = np.isfinite(smoothed)
    # The first steps are skipped: the moving average has seen too few batches to be trusted.
    first = _warmup(int(finite.sum()))
    # Each smoothed loss is read at its last batch's LR, as fastai reads it, though the average
    # trails the batches (by some 9): on the real curves measured (trashnet, the LFW faces and
    # their head alone) the suggestion came 1.5x to 2x above the raw losses' halfway point;
    # read at the mean LR of the batches it averages, 4x to 7x below (the average's long tail
    # over-corrects where the fall turns straight into a rise).
    log_lr = np.log10(np.asarray(lrs)[finite])[first:]
    curve = np.asarray(smoothed)[finite][first:]
    if curve.size < 5:
        return _Verdict(None, f"too few steps to judge ({curve.size} after the first {first})")
    start, end = _longest_valley(curve)
    descent = float(curve[start] - curve[end])
    halfway = start + int(np.argmax(curve[start : end + 1] <= curve[start] - descent / 2))
    alternatives = {
        HALFWAY_DOWN: float(10 ** log_lr[halfway]),
        VALLEY_MIDDLE: float(10 ** log_lr[(start + end) // 2]),
        **_classic_rules(log_lr, curve),
    }
    # The explosion's wild jumps are not the batches' noise: measured before it.
    calm = first + _before_explosion(curve, end)
    noise = _batch_noise(np.asarray(losses, dtype=float)[finite][:calm])
    measured = {
        "alternatives": alternatives,
        "valley": [float(10 ** log_lr[start]), float(10 ** log_lr[end])],
        "descent": descent,
        "noise": noise,
    }
    if not descent > max(NOISE_MARGIN * noise, MIN_FALL * abs(curve[start])):
        rule = (
            f"no descent beyond the noise: along its longest valley the smoothed loss falls "
            f"{descent:.2g}, less than {NOISE_MARGIN:g} times one batch's noise ({noise:.2g}) "
            f"or {MIN_FALL:.0%} of the loss"
        )
        return _Verdict(None, rule, **measured)
    return _Verdict(alternatives[HALFWAY_DOWN], HALFWAY_DOWN, **measured)


def _longest_valley(curve: np.ndarray) -> tuple[int, int]:
    """Where the longest run of ever lower points of ``curve`` starts and ends (not
    necessarily adjacent points: the run steps over bumps); of equally long runs, the one
    that falls furthest."""
    length = np.ones(curve.size, dtype=int)
    start = np.arange(curve.size)
    for i in range(1, curve.size):
        higher = np.flatnonzero(curve[:i] > curve[i])
        if higher.size:
            before = higher[np.argmax(length[higher])]
            length[i], start[i] = length[before] + 1, start[before]
    # lexsort sorts by its last key first: the longest, then the deepest, is last.
    end = int(np.lexsort((curve[start] - curve, length))[-1])
    return int(start[end]), end


def _before_explosion(curve: np.ndarray, end: int) -> int:
    """How many points of ``curve`` come before it explodes: up to where, past the valley's
    bottom (``end``), it climbs above every point before that bottom."""
    above = np.flatnonzero(curve[end:] > curve[: end + 1].max())
    return end + int(above[0]) if above.size else curve.size


def _classic_rules(log_lr: np.ndarray, curve: np.ndarray) -> dict[str, float]:
    """The rules headstart used before the valley, recorded for comparison: they pick noise
    on a curve without a clear descent (a first point lowest by chance gives its LR / 10)."""
    lowest = int(np.argmin(curve))
    rules = {MIN_OVER_10: float(10 ** log_lr[lowest] / 10)}
    if lowest >= 3:
        slope = np.gradient(curve, log_lr)[:lowest]
        if slope.min() < 0:
            rules[STEEPEST] = float(10 ** log_lr[int(np.argmin(slope))])
    return rules


def _batch_noise(losses: np.ndarray) -> float:
    """The standard deviation of one batch's loss around the curve's trend: from the second
    differences of the raw losses (a straight trend cancels in them; each holds the noise of
    three batches, variance 6 sigma^2), by their median (robust to a few odd batches)."""
    if losses.size < 3:
        return float("inf")
    return float(1.4826 * np.median(np.abs(np.diff(losses, 2))) / np.sqrt(6))


def _warmup(steps: int) -> int:
    """Steps at the start of the sweep during which the smoothed loss is not judged."""
    return max(2, steps // 10)


def plot_lr_find(result: LRFindResult, path: str | Path) -> Path:
    """Loss against learning rate on a log axis, with the suggestion marked; a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, none opened
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    try:
        axes.plot(result.lrs, result.losses, color="0.75", lw=1, label="loss of each batch")
        axes.plot(result.lrs, result.smoothed, color="C0", lw=2, label="smoothed loss")
        if result.valley:
            axes.axvspan(*result.valley, color="C2", alpha=0.12, label="its longest valley")
        if result.suggestion is not None:
            axes.axvline(result.suggestion, color="C3", ls="--", lw=1.5)
            at = np.interp(np.log(result.suggestion), np.log(result.lrs), result.smoothed)
            axes.plot([result.suggestion], [at], "o", color="C3")
            label = f"suggested {result.suggestion:.2g}"
            axes.annotate(label, (result.suggestion, at), xytext=(8, 8), textcoords="offset points")
        axes.set_xscale("log")
        finite = np.asarray([v for v in result.smoothed if np.isfinite(v)])
        if finite.size:  # the whole descent in view; the explosion after it cut off
            descent = finite[: int(np.argmin(finite)) + 1]
            axes.set_ylim(finite.min() * 0.9, max(descent.max(), 1.5 * finite.min()) * 1.05)
        axes.set_xlabel("learning rate of the top stage (log scale; AdamW step size)")
        axes.set_ylabel("training loss (cross-entropy, nats)")
        axes.set_title(f"Learning-rate range test\n{result.describe()}", fontsize=9, loc="left")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(loc="best", fontsize=8)
        figure.tight_layout()
        write_png(figure, path)
    finally:
        plt.close(figure)
    return Path(path)
