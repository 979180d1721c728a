"""Optimisers, learning-rate schedules with warm-up, and the linear scaling rule.

Fine-tuning hands over parameter groups (``{"name": "head" | "stage 5" | ..., "params": [...],
"lr": float}``) whose learning rates shrink towards the stem. Everything here keeps that shape:
the optimiser keeps each group's name and rate, and the schedule moves every group by the same
factor, so layer-wise decay survives warm-up, decay and restarts.

What ``timm.optim.create_optimizer_v2`` does with a list of groups (timm 1.0, read in
``timm/optim/_optim_factory.py``): the list goes to the optimiser class unchanged, so torch keeps
each group's ``lr`` and extra keys such as ``name``; the ``lr`` argument only sets the default
for groups without one (we pass ``None`` and require every group to have its own). Its
``weight_decay`` argument likewise becomes the default of every group, biases and
normalisation weights included: ``filter_bias_and_bn`` only acts when it is given a model. So
the decay / no-decay split is done here, on the groups. Its ``"sgd"`` is *Nesterov* momentum
and ``"momentum"`` the classical kind; headstart's names say what they mean.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch.optim.lr_scheduler import OneCycleLR

from ..config import OPTIMIZERS, SCHEDULES
from ..errors import HeadstartError

__all__ = ["Schedule", "create_optimizer", "scale_lr"]

_TIMM_OPTIMIZERS = {
    "sgd": "momentum",  # timm's "momentum": SGD with classical momentum
    "nesterov": "sgd",  # timm's "sgd" is Nesterov momentum
    "adamw": "adamw",
    "adam": "adam",
    "rmsprop": "rmsprop",  # torch's RMSprop, alpha 0.9 and momentum as timm sets them
    "adagrad": "adagrad",
    "novograd": "novograd",  # timm's NvNovoGrad, plain tensor code: runs on CPU
}
_LBFGS_REFUSAL = (
    "optimizer='lbfgs' cannot fine-tune: L-BFGS needs the full-batch loss, not mini-batches of "
    "augmented images; it suits a linear head on cached features, which is what "
    "--strategy linear-probe fits (scikit-learn's lbfgs solver). Use one of "
    "sgd, nesterov, adamw, adam, rmsprop, adagrad, novograd to fine-tune"
)
# cosine decays to 1% of each group's peak, not to 0: the last steps still learn something
_COSINE_FLOOR = 0.01
_STEP_DECAY = 0.1  # "step": x0.1 after a third and after two thirds of the decay
_RESTART_FLOOR = 0.1  # extend(): a finished run restarts at a tenth of its peak (SGDR's decay)


def create_optimizer(
    groups: Sequence[dict],
    name: str = "adamw",
    *,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """An optimiser over ``groups``, each keeping its name, learning rate and other keys.

    Biases and normalisation weights (every parameter with at most one dimension) get no weight
    decay: shrinking them towards zero does not regularise the function, it only fights the
    pretrained scale and shift. Each group is split into a decayed and a non-decayed group that
    both keep the group's name and rate; a group's own ``weight_decay`` wins over the argument.
    ``momentum`` is used by sgd, nesterov and rmsprop.
    """
    _check_choice("optimizer", name, OPTIMIZERS)
    if name == "lbfgs":
        raise HeadstartError(_LBFGS_REFUSAL)
    _check_range("weight_decay", weight_decay, low=0.0)
    _check_momentum(name, momentum)
    return create_optimizer_v2(
        _split_weight_decay(groups, weight_decay),
        opt=_TIMM_OPTIMIZERS[name],
        lr=None,  # every group brings its own
        weight_decay=weight_decay,
        momentum=momentum,
    )


class Schedule:
    """The learning rate of every parameter group at every optimiser step.

    Call :meth:`step` after each ``optimizer.step()``. Every group follows the same curve scaled
    to its own peak (the ``lr`` it had when the schedule was made), so the ratios between groups
    never change.

    Warm-up: the first step runs at ``peak / warmup_steps``, the ``warmup_steps``-th at the peak
    (0 or 1: the first step runs at the peak). Then, until ``total_steps`` steps have been taken:

    - ``cosine``: half a cosine down to 1% of the peak;
    - ``step``: x0.1 after a third of the decay and again after two thirds;
    - ``linear``: straight down to 0;
    - ``inverse-sqrt``: ``peak * sqrt(warmup_steps / step)``: halves each time the step count
      quadruples (Vaswani et al. 2017); the warm-up sets its time scale, so give one;
    - ``one-cycle``: torch's ``OneCycleLR`` with each group's peak as its ``max_lr``: up from
      peak/25 over the warm-up, then down to peak/250,000, both straight lines (Smith's
      original); momentum (or Adam's beta1) goes the other way, 0.95 -> 0.85 -> 0.95, when the
      optimiser has any;
    - ``constant``: the peak.

    After ``total_steps`` steps the rate stays where it ended. The curves come from timm's
    schedulers (``cosine``, ``multistep``, ``poly`` with power 1, ``rsqrt``, ``constant``) and
    torch's ``OneCycleLR``; this class hides their differences: timm's warm-up starts at one
    absolute rate and its floor is absolute, so the groups' ratios ride on timm's own
    ``lr_scale`` (how timm does layer-wise decay), and every rate is computed afresh from the
    step count, so :meth:`state_dict` is a few numbers and resuming needs nothing else.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        name: str = "cosine",
        *,
        total_steps: int,
        warmup_steps: int = 0,
    ) -> None:
        _check_choice("schedule", name, SCHEDULES)
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise HeadstartError(f"total_steps={total_steps!r} must be a whole number, 1 or more")
        if not isinstance(warmup_steps, int) or not 0 <= warmup_steps <= total_steps:
            raise HeadstartError(
                f"warmup_steps={warmup_steps!r} must be a whole number from 0 to "
                f"total_steps={total_steps}"
            )
        self.optimizer = optimizer
        self.name = name
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.peak_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.steps_taken = 0
        # A segment is one run of the shape: the plan, then one more per extend() restart.
        self._segment = {"start": 0, "peaks": list(self.peak_lrs), "warmup": warmup_steps}
        self._rebuild()

    @property
    def lrs(self) -> list[float]:
        """The rate of each optimiser group for the next step."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self) -> None:
        """Move on by one optimiser step."""
        self.steps_taken += 1
        self._apply()

    def extend(self, total_steps: int) -> None:
        """Plan ``total_steps`` steps in all instead of ``self.total_steps``: train longer.

        ``constant`` and ``inverse-sqrt`` have no end, so they just go on. Called during the
        warm-up, the plan simply becomes longer. Otherwise the added steps are a warm restart
        (Loshchilov & Hutter's SGDR): the same shape once more, without a second warm-up (the
        optimiser's statistics are warm), from the rate the groups have now, or a tenth of
        their peak if that is higher, and down to the same fraction of that start as the plan.
        So a run extended midway goes on smoothly from where it is, and a finished run, whose
        rate has decayed to almost nothing, learns again at a tenth of its peak instead of
        creeping on at a rate too small to change anything.
        """
        planned = max(self.total_steps, self.steps_taken)
        if isinstance(total_steps, bool) or not isinstance(total_steps, int):
            raise HeadstartError(f"total_steps={total_steps!r} must be a whole number")
        if total_steps <= planned:
            raise HeadstartError(
                f"total_steps={total_steps} must be more than the {planned} steps already planned"
            )
        warming_up = self.steps_taken < self._segment["start"] + self._segment["warmup"]
        if self.name not in ("constant", "inverse-sqrt") and not warming_up:
            reference = max(range(len(self.peak_lrs)), key=lambda i: self.peak_lrs[i])
            peak = self.peak_lrs[reference]
            fraction = self.lrs[reference] / peak if peak > 0 else 1.0
            restart = max(fraction, _RESTART_FLOOR)
            self._segment = {
                "start": self.steps_taken,
                "peaks": [lr * restart for lr in self.peak_lrs],
                "warmup": 0,
            }
        self.total_steps = total_steps
        self._rebuild()

    def state_dict(self) -> dict:
        """Plain numbers (JSON-ready); with the optimiser's own state, all a resume needs."""
        return {
            "name": self.name,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "steps_taken": self.steps_taken,
            "peak_lrs": list(self.peak_lrs),
            "segment": dict(self._segment, peaks=list(self._segment["peaks"])),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue where ``state`` left off; the optimiser's rates are set for the next step."""
        if state["name"] != self.name or len(state["peak_lrs"]) != len(self.peak_lrs):
            raise HeadstartError(
                f"the saved schedule ({state['name']!r}, {len(state['peak_lrs'])} parameter "
                f"groups) does not match this one ({self.name!r}, {len(self.peak_lrs)} groups)"
            )
        self.total_steps = int(state["total_steps"])
        self.warmup_steps = int(state["warmup_steps"])
        self.steps_taken = int(state["steps_taken"])
        self.peak_lrs = [float(lr) for lr in state["peak_lrs"]]
        segment = state["segment"]
        self._segment = {
            "start": int(segment["start"]),
            "peaks": [float(lr) for lr in segment["peaks"]],
            "warmup": int(segment["warmup"]),
        }
        self._rebuild()

    def _rebuild(self) -> None:
        """Make the timm or torch scheduler for the current segment and set the rates."""
        start, peaks = self._segment["start"], self._segment["peaks"]
        length = self.total_steps - start  # optimiser steps in this segment
        if self.name == "one-cycle":
            self._scheduler = _one_cycle(self.optimizer, peaks, length, self._segment["warmup"])
        else:
            self._scheduler = _timm_schedule(
                self.optimizer, self.name, peaks, length, self._segment["warmup"]
            )
        self._apply()

    def _apply(self) -> None:
        """Set every group's rate for the step after ``steps_taken`` steps."""
        length = self.total_steps - self._segment["start"]
        local = min(self.steps_taken, self.total_steps) - self._segment["start"]
        if isinstance(self._scheduler, OneCycleLR):
            # OneCycleLR computes the rate from its step count alone; setting the count and
            # stepping once recomputes it (also right after a resume or a restart, before any
            # optimizer.step(), which is the order torch's warning is about).
            self._scheduler.last_epoch = min(local, length) - 1
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
                self._scheduler.step()
        else:
            # timm's t = 1 is the first step: its warm-up value at t = 0 is 0, a wasted step.
            self._scheduler.step_update(local + 1)


def scale_lr(lr: float, batch_size: int, reference_batch_size: int = 32) -> float:
    """The linear scaling rule (Goyal et al. 2017): ``lr`` was right for
    ``reference_batch_size``; k times the batch takes k times the rate.

    Made for SGD with warm-up; with Adam-like optimisers the square-root rule is often closer,
    so treat the result as a starting point for the range test, not a final answer.
    """
    _check_range("lr", lr, low=0.0, low_open=True)
    for parameter, value in (
        ("batch_size", batch_size),
        ("reference_batch_size", reference_batch_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HeadstartError(f"{parameter}={value!r} must be a whole number, 1 or more")
    return lr * batch_size / reference_batch_size


def _split_weight_decay(groups: Sequence[dict], weight_decay: float) -> list[dict]:
    """Each group as up to two groups with its keys: weights decayed, 1-D parameters not."""
    split = []
    for index, group in enumerate(groups):
        if "params" not in group or "lr" not in group:
            raise HeadstartError(
                f"groups[{index}] has keys {sorted(group)}; each group needs 'params' and 'lr'"
            )
        params = [group["params"]] if isinstance(group["params"], torch.Tensor) else group["params"]
        params = list(params)
        settings = {key: value for key, value in group.items() if key != "params"}
        decayed = [p for p in params if p.ndim > 1]
        not_decayed = [p for p in params if p.ndim <= 1]
        if decayed:
            decay = settings.get("weight_decay", weight_decay)
            split.append({**settings, "params": decayed, "weight_decay": decay})
        if not_decayed:
            split.append({**settings, "params": not_decayed, "weight_decay": 0.0})
    if not split:
        raise HeadstartError("groups hold no parameters: there is nothing to optimise")
    return split


def _timm_schedule(
    optimizer: torch.optim.Optimizer, name: str, peaks: list[float], length: int, warmup: int
):
    """timm's scheduler for ``name``, stepped with t = 1 for a segment's first step."""
    warmup = max(warmup, 1)  # a warm-up of 1 is none: its first step runs at the peak
    decay = length - warmup + 1  # t' = 0 is the peak, t' = decay the end, after the last step
    # timm starts every group's warm-up at one absolute rate and floors the cosine at one
    # absolute rate; a shared base and a per-group lr_scale (timm's layer-decay mechanism)
    # scale both to each group's own peak.
    base = max(peaks) or 1.0
    for group, peak in zip(optimizer.param_groups, peaks, strict=True):
        group["initial_lr"] = base
        group["lr_scale"] = peak / base
    options = {
        "cosine": {"sched": "cosine", "min_lr": _COSINE_FLOOR * base},
        "step": {
            "sched": "multistep",
            "decay_rate": _STEP_DECAY,
            # timm applies milestone m from t' = m - 1 (its documented convention)
            "decay_milestones": [math.ceil(decay / 3) + 1, math.ceil(2 * decay / 3) + 1],
        },
        "linear": {"sched": "poly", "decay_rate": 1.0, "min_lr": 0.0},  # power 1
        # timm's rsqrt ends with a cooldown; the pure inverse square root has none.
        "inverse-sqrt": {"sched": "rsqrt", "decay_epochs": decay, "decay_fn": _no_cooldown},
        "constant": {"sched": "constant"},
    }[name]
    scheduler, _ = create_scheduler_v2(
        optimizer,
        num_epochs=decay,
        warmup_epochs=warmup,
        warmup_lr=0.0,
        warmup_prefix=True,
        step_on_epochs=False,
        updates_per_epoch=1,
        **options,
    )
    return scheduler


def _no_cooldown(progress: float) -> float:
    return 1.0


def _one_cycle(
    optimizer: torch.optim.Optimizer, peaks: list[float], length: int, warmup: int
) -> OneCycleLR:
    defaults = optimizer.defaults
    has_momentum = "betas" in defaults or defaults.get("momentum", 0.0) > 0
    return OneCycleLR(
        optimizer,
        max_lr=list(peaks),
        # One more than the segment's steps: OneCycleLR's last value is its floor, and that is
        # where the rate should rest after the last step, as with the timm shapes.
        total_steps=length + 1,
        # The rise ends at index pct_start * total_steps - 1, i.e. the warmup-th step; a rise
        # of one step makes OneCycleLR divide by zero, and a warm-up of 1 means none anyway.
        pct_start=warmup / (length + 1) if warmup >= 2 else 0.0,
        anneal_strategy="linear",
        cycle_momentum=has_momentum,
    )


def _check_choice(parameter: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise HeadstartError(f"{parameter}={value!r} is not one of {', '.join(allowed)}")


def _check_range(
    parameter: str,
    value: float,
    *,
    low: float,
    high: float | None = None,
    low_open: bool = False,
) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value < high)
    if not ok:
        above = f"above {low}" if low_open else f"{low} or more"
        below = f" and below {high}" if high is not None else ""
        raise HeadstartError(f"{parameter}={value!r} must be a number {above}{below}")


def _check_momentum(optimizer: str, momentum: float) -> None:
    _check_range("momentum", momentum, low=0.0, high=1.0)
    if optimizer == "nesterov" and momentum == 0:
        raise HeadstartError("momentum=0 does not work with optimizer='nesterov'; use 0.9")
