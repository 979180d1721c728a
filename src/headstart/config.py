"""Every setting of a fit, in one dataclass; checked up front; read from and written to YAML.

A YAML file holds the same names as :class:`FitConfig` (``weight_decay`` or ``weight-decay``),
so ``headstart fit DATA --config run.yaml`` and the matching flags are the same fit; flags
given on the command line win over the file. Every run saves its resolved settings as
``config.yaml`` (and ``config.json``), which ``--resume`` reads back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import HeadstartError

if TYPE_CHECKING:
    from .data.augment import AugmentSettings

__all__ = ["FitConfig", "load_config", "save_config"]

STRATEGIES = ("auto", "linear-probe", "fine-tune", "full")


@dataclass
class FitConfig:
    """Every setting of a fit. The resolved values are saved as ``config.yaml`` in the run.

    ``None`` means "the plan decides" (and the plan says what it decided and why).
    """

    # The data and the network.
    arch: str = "efficientnet_lite0"
    weights: str | None = None  # a weights file; otherwise built-in or hub weights
    pretrained: bool = True  # False: random initialisation, on purpose
    in_chans: int | None = None  # input channels; None: 3, or what the files hold
    input_size: int | None = None  # input side in pixels; None: the weights' own
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 0
    # What trains, and how.
    strategy: str = "auto"  # auto | linear-probe | fine-tune | full
    freeze: str | int | None = None  # "all" | "none" | bottom stages frozen; None: plan
    unfreeze: str = "none"  # "none" | "gradual" (top stage first, one more per epoch)
    epochs: int | None = None  # fine-tuning epochs; None: from the plan
    lr: float | None = None  # fine-tuning learning rate (top stage); None: from the plan
    layer_decay: float | None = None  # each stage's rate over the one above; None: plan
    batch_size: int = 32
    optimizer: str = "adamw"  # sgd | nesterov | adamw | adam | rmsprop | adagrad | novograd
    momentum: float = 0.9
    schedule: str = "cosine"  # cosine | step | linear | inverse-sqrt | one-cycle | constant
    warmup: float = 0.1  # share of the steps spent warming the learning rate up from zero
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    # Regularisation.
    weight_decay: float | None = None  # None: the plan's (0.02)
    head_l1: float = 0.0  # L1 on the head's weights (with weight decay: elastic net)
    probe_penalty: str = "l2"  # the linear probe's penalty: l2 | l1 | elasticnet
    label_smoothing: float | None = None  # None: the plan's (0.1)
    dropout: float | None = None  # before the head; None: the architecture's default
    drop_path: float | None = None  # stochastic depth; None: the architecture's default
    mixup: float = 0.0  # Mixup alpha (0.2 is typical); 0: off
    cutmix: float = 0.0  # CutMix alpha (1.0 is typical); 0: off
    cutout: float = 0.0  # probability of erasing a random patch of each image
    ema: float | None = None  # decay of a weight average that is evaluated (0.999); None: off
    clip_grad: float | None = None  # most gradient norm; None: no clipping
    patience: int | None = None  # early stopping: epochs without gain; None: the plan's (3)
    early_stopping: bool = True  # False: every planned epoch runs (the best is still kept)
    # Augmentation and balance.
    augment: str = "light"  # none | light | standard | strong
    policy: str | None = None  # autoaugment | randaugment | trivialaugment | augmix
    no_augment: list[str] = field(default_factory=list)  # transforms that change a label
    vflip: bool = False  # vertical flips too (aerial, microscopy: images without an up)
    balance: str = "auto"  # auto | none | weighted-loss | sampler
    # The run.
    runs_dir: str = "runs"
    name: str | None = None
    cache_dir: str | None = None  # None: headstart.fit.default_cache_dir()
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:N
    time_budget: float | None = None  # minutes of fine-tuning at most
    allow_leakage: bool = False  # train even when duplicates span train and val/test
    checks: bool = True  # sanity checks before training (checks.json)
    compare_scratch: bool = False  # also train from random weights, same budget; compare
    quiet: bool = False

    def augmentation(self) -> AugmentSettings:
        """The augmentation these settings ask for (the plan may exclude flips as well)."""
        from .data.augment import AugmentSettings

        return AugmentSettings(
            preset=self.augment,
            policy=self.policy,
            exclude=tuple(self.no_augment),
            include=("vflip",) if self.vflip else (),
            cutout=self.cutout,
        )

    def validate(self) -> None:
        """Refuse impossible values and combinations before anything runs."""
        from .data.augment import POLICIES, PRESETS, TRANSFORMS
        from .training.finetune import PRECISIONS
        from .training.freezing import UNFREEZING
        from .training.imbalance import BALANCING
        from .training.optim import OPTIMIZERS, SCHEDULES, validate_optimization

        _one_of("strategy", self.strategy, STRATEGIES)
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        _one_of("schedule", self.schedule, SCHEDULES)
        _one_of("unfreeze", self.unfreeze, UNFREEZING)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("balance", self.balance, BALANCING)
        _one_of("probe_penalty", self.probe_penalty, ("l2", "l1", "elasticnet"))
        _one_of("augment", self.augment, PRESETS)
        _one_of("policy", self.policy, (None, *POLICIES))
        for name in self.no_augment:
            _one_of("no_augment", name, TRANSFORMS)
        self.augmentation().validate()
        if self.strategy == "linear-probe" and not self.pretrained:
            raise HeadstartError(
                "strategy='linear-probe' needs pretrained weights: a probe on "
                "random features learns nothing; use 'full' with --no-pretrained"
            )
        if self.compare_scratch and not self.pretrained:
            raise HeadstartError(
                "compare_scratch=True compares pretrained weights with random ones: it needs "
                "pretrained=True"
            )
        if self.weights and not self.pretrained:
            raise HeadstartError("weights=... and pretrained=False contradict each other")
        if isinstance(self.freeze, str) and self.freeze not in ("all", "none"):
            if not self.freeze.isdigit():
                raise HeadstartError(
                    f"freeze={self.freeze!r}: expected 'all', 'none' or a number of bottom stages"
                )
            self.freeze = int(self.freeze)
        if self.freeze == "all" and self.unfreeze == "gradual":
            raise HeadstartError(
                "freeze='all' with unfreeze='gradual': nothing would ever be unfrozen; "
                "freeze fewer stages (a number, or 'none')"
            )
        for name in ("epochs", "batch_size", "in_chans", "input_size", "patience"):
            _whole(name, getattr(self, name))
        if self.input_size is not None and self.input_size < 32:
            raise HeadstartError(f"input_size={self.input_size}: at least 32 pixels")
        if self.lr is not None and not 0 < self.lr < 1:
            raise HeadstartError(f"lr={self.lr!r} must be between 0 and 1 (try 3e-4)")
        for name in ("layer_decay", "momentum"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise HeadstartError(f"{name}={value!r} must be between 0 and 1")
        for name in ("warmup", "dropout", "drop_path", "cutout", "label_smoothing", "ema"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise HeadstartError(f"{name}={value!r} must be at least 0 and below 1")
        for name in ("weight_decay", "head_l1", "mixup", "cutmix"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise HeadstartError(f"{name}={value!r} must not be negative")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise HeadstartError(
                f"clip_grad={self.clip_grad!r} must be positive (leave it unset for no clipping)"
            )
        validate_optimization(
            self.optimizer,
            self.schedule,
            self.strategy,
            lr=self.lr,
            weight_decay=self.weight_decay or 0.0,
            momentum=self.momentum,
            warmup_fraction=self.warmup,
        )
        if (self.mixup or self.cutmix) and self.strategy == "linear-probe":
            raise HeadstartError(
                "mixup/cutmix with strategy='linear-probe': the probe is fitted on cached "
                "features of unmixed images; mix with fine-tune or full"
            )
        if not 0 < self.val_fraction < 1:
            raise HeadstartError(
                f"val_fraction={self.val_fraction!r} must be in (0, 1): "
                "validation is how headstart chooses and checks the model"
            )
        if self.time_budget is not None and self.time_budget <= 0:
            raise HeadstartError(f"time_budget={self.time_budget!r} minutes must be positive")


def load_config(path: str | Path) -> dict[str, Any]:
    """The settings in a YAML file, as :class:`FitConfig` keyword arguments (checked names)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise HeadstartError(f"cannot read config file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise HeadstartError(f"config file {path} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HeadstartError(f"config file {path}: expected a mapping of setting: value")
    settings = {str(key).replace("-", "_"): value for key, value in data.items()}
    settings.pop("data", None)  # saved with runs; the data is an argument
    known = {f.name for f in fields(FitConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise HeadstartError(
            f"config file {path}: unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}"
        )
    types = {f.name: str(f.type) for f in fields(FitConfig)}
    return {name: _typed(path, name, value, types[name]) for name, value in settings.items()}


def _typed(path: Path, name: str, value: Any, kind: str) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string: numbers are read as the field wants."""
    if not isinstance(value, str) or "str" in kind:
        return value
    for number in (int, float):
        if number.__name__ in kind:
            try:
                return number(value)
            except ValueError:
                continue
    raise HeadstartError(f"config file {path}: {name}={value!r} is not a number")


def save_config(config: FitConfig, path: Path, data: str | Path) -> None:
    """``config`` as YAML (with the data it was fitted on), readable by :func:`load_config`."""
    values = {"data": str(Path(data).resolve()), **asdict(config)}
    values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
    path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")


def _one_of(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        shown = ", ".join(str(a) for a in allowed)
        raise HeadstartError(f"{name}={value!r} is not one of {shown}")


def _whole(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise HeadstartError(f"{name}={value!r} must be a whole number of at least 1")
