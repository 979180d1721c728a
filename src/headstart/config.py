"""Every setting of a fit, in one table: its name, type, allowed values, default and help.

:class:`FitConfig` *is* the table (scikit-learn keeps its ``_parameter_constraints`` beside
``__init__``; here each field carries its constraint). Everything else is derived from it:

- :meth:`FitConfig.validate` checks every value against its constraint, then the few rules
  that join several settings;
- the command line (:func:`headstart.cli.main`) has one flag per setting, with the setting's
  help, choices and default (``weight_decay`` is ``--weight-decay``);
- a YAML file holds the same names (``weight_decay:`` or ``weight-decay:``), read by
  :func:`load_config`; every run saves its resolved settings as ``config.yaml``;
- the plan (:mod:`headstart.training.plan`) copies the fine-tuning settings the user gave into
  :class:`~headstart.training.finetune.FineTuneSettings`, whose fields have the same names.

Adding a setting is one field here, the code that uses it and a test. ``None`` as a default
means "the plan decides" (and the plan says what it decided and why).

This module imports nothing heavy: ``headstart --help`` is built from it.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import HeadstartError
from .storage import write_atomically

__all__ = [
    "BALANCING",
    "LOSSES",
    "OPTIMIZERS",
    "PENALTIES",
    "POLICIES",
    "PRECISIONS",
    "PRESETS",
    "SCHEDULES",
    "STRATEGIES",
    "TASKS",
    "TRANSFORMS",
    "UNFREEZING",
    "FitConfig",
    "Setting",
    "load_config",
    "save_config",
    "settings_table",
]

# The vocabularies: each is defined here once, and the module that implements it reads it from
# here (a test checks that each implementation knows every name).
STRATEGIES = ("auto", "linear-probe", "fine-tune", "full")
#: What each image is labelled with: a class, a number, or several labels at once.
TASKS = ("classification", "regression", "multi-label")
#: The training loss: cross-entropy for classes; for a number, Huber (the default) or squared
#: error (see headstart.training.objective).
LOSSES = ("auto", "huber", "mse")
OPTIMIZERS = ("sgd", "nesterov", "adamw", "adam", "rmsprop", "adagrad", "novograd", "lbfgs")
SCHEDULES = ("cosine", "step", "linear", "inverse-sqrt", "one-cycle", "constant")
#: Numeric precision of the forward pass: ``auto`` is bfloat16 on CUDA devices that have it,
#: float16 with loss scaling on older CUDA devices, float32 on the CPU.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: How the trained stages are released: all at once, or gradually (top first, one per epoch).
UNFREEZING = ("none", "gradual")
BALANCING = ("auto", "none", "weighted-loss", "sampler")
#: The linear probe's penalties on the head's weights; "l1" and "elasticnet" make it sparse.
PENALTIES = ("l2", "l1", "elasticnet")
PRESETS = ("none", "light", "standard", "strong")
#: Which crops of an image a prediction averages: validation decides (auto), or a named set.
TEST_TIME_CROPS = ("auto", "none", "wide", "five-crop", "six-crop")
POLICIES = ("autoaugment", "randaugment", "trivialaugment", "augmix")
#: Every random operation of the augmentation, by the name that excludes (or includes) it.
TRANSFORMS = (
    "crop",
    "flip",
    "vflip",
    "rotate",
    "shift",
    "shear",
    "scale",
    "colour",
    "blur",
    "noise",
    "resolution",
)

#: The groups of settings, in the order ``--help`` lists them; the commands that take each.
GROUPS = {
    "data": "the data and the network",
    "task": "what is predicted",
    "text": "texts (a CSV, TSV or JSON Lines table, or folders of .txt files)",
    "training": "training (defaults: the plan's)",
    "regularisation": "regularisation",
    "augmentation": "augmentation and class balance",
    "distillation": "distillation (a student of a finished run's model)",
    "run": "the run",
}
_READS_DATA = ("fit", "audit", "check", "lr-find", "augment-preview", "rank", "distill", "tune")
_TRAINS = ("fit", "check", "lr-find", "augment-preview", "distill", "tune")
COMMANDS = {
    "data": _READS_DATA,
    "task": ("fit",),
    "text": ("fit", "audit"),
    "training": _TRAINS,
    "regularisation": _TRAINS,
    "augmentation": _TRAINS,
    "distillation": ("fit", "distill"),
    "run": ("fit", "distill", "tune"),
}


@dataclass(frozen=True)
class Setting:
    """The constraint, help and place of one setting (the metadata of a FitConfig field)."""

    help: str
    group: str
    # "str" | "int" | "float" | "bool" | "names" (a list of strings) | "freeze"; by default,
    # read off the field's type annotation
    kind: str = ""
    optional: bool = False  # None is allowed: the plan (or the weights) decides
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    closed: str = "both"  # which ends of [low, high] are allowed: both | left | right | neither
    fine_tuning: bool = False  # only a fine-tuning (or full training) uses it
    metavar: str | None = None

    def check(self, name: str, value: Any) -> Any:
        """``value`` if it is allowed (a digit string for ``freeze`` becomes a number), else a
        HeadstartError that names the setting, the value and what is allowed."""
        if value is None:
            if self.optional:
                return None
            raise HeadstartError(f"{name}=None: {self.describe()} is required")
        checker = _KINDS[self.kind]
        value = checker(name, value, self)
        if self.choices is not None and self.kind != "names" and value not in self.choices:
            raise HeadstartError(_not_one_of(name, value, self.choices))
        if self.kind in ("int", "float") and not self._inside(value):
            raise HeadstartError(f"{name}={value!r} must be {self.describe()}")
        return value

    def describe(self) -> str:
        """What is allowed, in words: "a number above 0 and below 1", "one of a, b"."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        noun = {"int": "a whole number", "float": "a number", "bool": "true or false"}.get(
            self.kind, "a value"
        )
        if self.kind == "freeze":
            return "'all', 'none' or a number of bottom stages"
        bounds = []
        if self.low is not None:
            left = self.closed in ("both", "left")
            bounds.append(f"{'at least' if left else 'above'} {self.low:g}")
        if self.high is not None:
            right = self.closed in ("both", "right")
            bounds.append(f"{'at most' if right else 'below'} {self.high:g}")
        return " ".join([noun, " and ".join(bounds)]).strip()

    def _inside(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and (value < self.low or (value == self.low and not left)):
            return False
        return not (
            self.high is not None and (value > self.high or (value == self.high and not right))
        )


def setting(default: Any, help: str, *, group: str, **constraint) -> Any:
    """A FitConfig field whose metadata is its :class:`Setting`."""
    described = Setting(help, group, **constraint)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"setting": described})
    return field(default=default, metadata={"setting": described})


def _fine(default: Any, help: str, **constraint) -> Any:
    """A setting of the fine-tuning: the plan copies it into FineTuneSettings."""
    return setting(default, help, fine_tuning=True, **constraint)


@dataclass
class FitConfig:
    """Every setting of a fit; the resolved values are saved as ``config.yaml`` in the run."""

    # The data and the network.
    arch: str = setting(
        "efficientnet_lite0", "any timm architecture (see `headstart models`)", group="data"
    )
    weights: str | None = setting(
        None,
        "weights file (.safetensors, or a state dict read with weights_only); default: the "
        "built-in weights, else the Hugging Face hub",
        group="data",
        optional=True,
        metavar="FILE",
    )
    pretrained: bool = setting(
        True, "False: random initialisation, to train from scratch on purpose", group="data"
    )
    in_chans: int | None = setting(
        None,
        "input channels (default: 3, or what the files hold)",
        group="data",
        optional=True,
        low=1,
    )
    input_size: int | None = setting(
        None,
        "input side in pixels (default: the weights' own)",
        group="data",
        optional=True,
        low=32,
    )
    val_fraction: float = setting(
        0.2,
        "share of each class held out for validation (which chooses and checks the model)",
        group="data",
        low=0,
        high=1,
        closed="neither",
    )
    test_fraction: float = setting(
        0.0, "share of each class held out for test", group="data", low=0, high=1, closed="left"
    )
    seed: int = setting(0, "the split's seed, and training's", group="data")
    batch_size: int = setting(32, "images per batch", group="data", low=1)
    cache_dir: str | None = setting(
        None,
        "pixel and feature cache (default: $HEADSTART_CACHE or ~/.cache/headstart)",
        group="data",
        optional=True,
        metavar="DIR",
    )
    device: str = setting("auto", "auto (CUDA when available), cpu, cuda or cuda:N", group="data")
    quiet: bool = setting(False, "no progress bars or plan messages", group="data")

    # What is predicted.
    task: str = setting(
        "classification",
        "classification (a class an image), regression (a number an image: a CSV with a path "
        "column and a column of numbers) or multi-label (several labels an image: a CSV with "
        "a path column and a column of labels, or a 0/1 column per label)",
        group="task",
        choices=TASKS,
    )
    label_separator: str | None = setting(
        None,
        "what joins a multi-label table's labels in one cell (default: found among | ; , "
        "and a space)",
        group="task",
        optional=True,
    )
    loss: str = _fine(
        "auto",
        "training loss: auto (cross-entropy for classes, huber for numbers), huber or mse",
        group="task",
        choices=LOSSES,
    )

    # Texts.
    encoder: str = setting(
        "all-MiniLM-L6-v2",
        "sentence encoder: the built-in one, a local folder or a Hugging Face name",
        group="text",
    )
    text_column: str | None = setting(
        None, "the table's text column (default: found by name)", group="text", optional=True
    )
    label_column: str | None = setting(
        None,
        "the table's label column, or a regression's column of numbers (default: found by name)",
        group="text",
        optional=True,
    )
    label_names: bool = setting(
        True,
        "False: the class names never join the fine-tuning as sentences (by default they do, "
        "unless they mislead the encoder: see the plan)",
        group="text",
    )

    # What trains, and how.
    strategy: str = setting(
        "auto",
        "auto decides from the data (see the plan in the run folder)",
        group="training",
        choices=STRATEGIES,
    )
    freeze: str | int | None = _fine(
        None,
        "'all' (head only), 'none', or how many bottom stages stay frozen",
        group="training",
        kind="freeze",
        optional=True,
    )
    unfreeze: str = _fine(
        "none",
        "gradual: the top stage first, one more each epoch",
        group="training",
        choices=UNFREEZING,
    )
    epochs: int | None = _fine(
        None, "fine-tuning epochs (default: the plan's)", group="training", optional=True, low=1
    )
    lr: float | None = _fine(
        None,
        "fine-tuning learning rate of the top stage (default: the plan's, or the range test's)",
        group="training",
        optional=True,
        low=0,
        high=1,
        closed="neither",
    )
    layer_decay: float | None = _fine(
        None,
        "each stage's learning rate over the one above (default: the plan's)",
        group="training",
        optional=True,
        low=0,
        high=1,
    )
    optimizer: str = _fine(
        "adamw",
        "the optimiser (lbfgs: the linear probe's own solver)",
        group="training",
        choices=OPTIMIZERS,
    )
    momentum: float = _fine(
        0.9,
        "momentum of sgd, nesterov and rmsprop",
        group="training",
        low=0,
        high=1,
        closed="left",
    )
    schedule: str = _fine("cosine", "learning-rate schedule", group="training", choices=SCHEDULES)
    warmup: float = _fine(
        0.1,
        "share of the steps for a linear warm-up from zero",
        group="training",
        low=0,
        high=1,
        closed="left",
    )
    train_size: int | None = _fine(
        None,
        "side of the training crops in pixels; predictions use the full input size "
        "(default: the plan's)",
        group="training",
        optional=True,
        low=32,
    )
    precision: str = _fine(
        "auto",
        "auto: bf16 (or fp16) on CUDA, fp32 on the CPU",
        group="training",
        choices=PRECISIONS,
    )

    # Regularisation.
    weight_decay: float | None = _fine(
        None,
        "decoupled weight decay (default: the plan's 0.02); never on biases and norm layers",
        group="regularisation",
        optional=True,
        low=0,
    )
    head_l1: float = _fine(
        0.0,
        "L1 on the head's weights (with weight decay: elastic net)",
        group="regularisation",
        low=0,
    )
    probe_penalty: str = setting(
        "l2", "the linear probe's penalty", group="regularisation", choices=PENALTIES
    )
    label_smoothing: float | None = _fine(
        None,
        "label smoothing (default: the plan's 0.1)",
        group="regularisation",
        optional=True,
        low=0,
        high=1,
        closed="left",
    )
    dropout: float | None = setting(
        None,
        "dropout before the head (default: the architecture's)",
        group="regularisation",
        optional=True,
        low=0,
        high=1,
        closed="left",
        fine_tuning=True,
    )
    drop_path: float | None = setting(
        None,
        "stochastic depth rate (default: the architecture's)",
        group="regularisation",
        optional=True,
        low=0,
        high=1,
        closed="left",
        fine_tuning=True,
    )
    mixup: float = _fine(0.0, "Mixup alpha, e.g. 0.2 (0: off)", group="regularisation", low=0)
    cutmix: float = _fine(0.0, "CutMix alpha, e.g. 1.0 (0: off)", group="regularisation", low=0)
    cutout: float = setting(
        0.0,
        "probability of erasing a random patch of each image",
        group="regularisation",
        low=0,
        high=1,
        closed="left",
        fine_tuning=True,
    )
    ema: float | None = _fine(
        None,
        "evaluate and keep a moving average of the weights with this decay, e.g. 0.999",
        group="regularisation",
        optional=True,
        low=0,
        high=1,
        closed="left",
    )
    clip_grad: float | None = _fine(
        None,
        "clip the gradient norm to this value (default: no clipping)",
        group="regularisation",
        optional=True,
        low=0,
        closed="neither",
    )
    patience: int | None = _fine(
        None,
        "early stopping after this many epochs without gain (default: the plan's)",
        group="regularisation",
        optional=True,
        low=1,
    )
    early_stopping: bool = setting(
        True,
        "False: every planned epoch runs (the best is still kept)",
        group="regularisation",
        fine_tuning=True,
    )

    # Augmentation and balance.
    augment: str = setting(
        "light", "augmentation preset", group="augmentation", choices=PRESETS, fine_tuning=True
    )
    policy: str | None = setting(
        None,
        "a learned augmentation policy on top",
        group="augmentation",
        optional=True,
        choices=(None, *POLICIES),
        fine_tuning=True,
    )
    no_augment: list[str] = setting(
        [],
        "never apply this transform (it would change a label); repeat for several",
        group="augmentation",
        kind="names",
        choices=TRANSFORMS,
        metavar="TRANSFORM",
        fine_tuning=True,
    )
    vflip: bool = setting(
        False,
        "vertical flips too (aerial, microscopy: images without an up)",
        group="augmentation",
        fine_tuning=True,
    )
    balance: str = setting(
        "auto",
        "class imbalance: auto (by the ratio), none, weighted-loss or sampler",
        group="augmentation",
        choices=BALANCING,
    )

    # The run.
    runs_dir: str = setting("runs", "where run folders are made", group="run", metavar="DIR")
    name: str | None = setting(
        None, "run folder name (default: <data>-<n>)", group="run", optional=True
    )
    time_budget: float | None = setting(
        None,
        "minutes the whole fit may take: the plan fits its fine-tuning epochs into what is left",
        group="run",
        optional=True,
        low=0,
        closed="neither",
    )
    allow_leakage: bool = setting(
        False,
        "train even when copies of an image span train and validation/test (the held-out "
        "score is then flattered)",
        group="run",
    )
    checks: bool = setting(
        True,
        "False: skip the sanity checks before training (see `headstart check`)",
        group="run",
    )
    calibration: bool = setting(
        True,
        "False: the model's probabilities are the network's own, without the temperature "
        "fitted on validation",
        group="run",
    )
    candidates: list[str] = setting(
        [],
        "rank these backbones first ([random:]ARCH[@SIZE], as `headstart rank`) and fit the "
        "first by LogME in place of --arch; repeat for several",
        group="run",
        kind="names",
        metavar="CANDIDATE",
    )
    ensemble: int = _fine(
        1,
        "fine-tune this many times from different seeds and average their probabilities "
        "(costs that many fine-tunings, and that many networks a prediction)",
        group="training",
        low=1,
    )
    teacher: str | None = _fine(
        None,
        "a finished run folder (of the same data and split) whose model the fine-tuning learns "
        "from: knowledge distillation, its probabilities on every augmented batch in place of "
        "the labels (`headstart distill RUN` sets it)",
        group="distillation",
        optional=True,
        metavar="RUN",
    )
    distill_temperature: float | None = _fine(
        None,
        "the temperature of a distillation's targets (default 1: the teacher network's own "
        "probabilities on the student's crop; higher: softer)",
        group="distillation",
        optional=True,
        low=0,
        closed="neither",
    )
    unlabelled: str | None = _fine(
        None,
        "a folder of images without labels that a distillation's teacher labels for the "
        "student: more images to learn from (copies of validation or test images are left out)",
        group="distillation",
        optional=True,
        metavar="DIR",
    )
    target_images: str | None = setting(
        None,
        "a folder of unlabelled images from the domain the model will be used in (another "
        "camera, another scanner): the plan measures the shift, and the kept model is moved "
        "towards them where reverse validation says it helps",
        group="run",
        optional=True,
        metavar="DIR",
    )
    tta: str = setting(
        "auto",
        "test-time crops a prediction averages: auto (measured on validation after a "
        "fine-tuning, kept where they help beyond noise), none (the centre crop), wide, "
        "five-crop or six-crop",
        group="run",
        choices=TEST_TIME_CROPS,
    )
    compare_scratch: bool = setting(
        False,
        "also train the same network from random weights with the same budget, and report "
        "what transfer bought",
        group="run",
    )

    @classmethod
    def of(cls, config: FitConfig | None = None, /, **settings: Any) -> FitConfig:
        """``config`` (or the defaults) with ``settings`` over it, validated: the one way the
        public functions turn their arguments into a configuration."""
        table = settings_table()
        for name in settings:
            if name not in table:
                raise HeadstartError(_unknown_setting(name, table))
        return replace(config or cls(), **settings).validate()

    def validate(self) -> FitConfig:
        """Check every value against its constraint, then the rules that join settings;
        refuse the first problem with a message that names the setting. Returns ``self``,
        with ``freeze`` digits as a number."""
        for name, described in settings_table().items():
            setattr(self, name, described.check(name, getattr(self, name)))
        for rule in _RULES:
            problem = rule(self)
            if problem:
                raise HeadstartError(problem)
        return self

    def changed(self) -> dict[str, Any]:
        """The settings that differ from their defaults."""
        default = FitConfig()
        return {
            name: getattr(self, name)
            for name in settings_table()
            if getattr(self, name) != getattr(default, name)
        }


def settings_table() -> dict[str, Setting]:
    """Every setting by name, in FitConfig's order."""
    if not _TABLE:
        for item in fields(FitConfig):
            described = item.metadata["setting"]
            if not described.kind:
                described = replace(described, kind=_kind_of(str(item.type)))
            _TABLE[item.name] = described
    return dict(_TABLE)


_TABLE: dict[str, Setting] = {}


def _kind_of(annotation: str) -> str:
    """The kind of value a field's annotation ("float | None", "list[str]") asks for."""
    for kind in ("bool", "list", "int", "float"):
        if kind in annotation:
            return "names" if kind == "list" else kind
    return "str"


def default_of(name: str) -> Any:
    """The default of setting ``name``."""
    for item in fields(FitConfig):
        if item.name == name:
            return item.default_factory() if item.default is MISSING else item.default
    raise KeyError(name)


# --- The rules that join several settings ---------------------------------------------------


def _probe_needs_pretrained(config: FitConfig) -> str | None:
    if config.strategy == "linear-probe" and not config.pretrained:
        return (
            "strategy='linear-probe' needs pretrained weights: a probe on random features "
            "learns nothing; use 'full' with --no-pretrained"
        )
    return None


def _scratch_comparison_needs_pretrained(config: FitConfig) -> str | None:
    if config.compare_scratch and not config.pretrained:
        return (
            "compare_scratch=True compares pretrained weights with random ones: it needs "
            "pretrained=True"
        )
    return None


def _weights_need_pretrained(config: FitConfig) -> str | None:
    if config.weights and not config.pretrained:
        return "weights=... and pretrained=False contradict each other"
    return None


def _gradual_needs_something_to_unfreeze(config: FitConfig) -> str | None:
    if config.freeze == "all" and config.unfreeze == "gradual":
        return (
            "freeze='all' with unfreeze='gradual': nothing would ever be unfrozen; freeze "
            "fewer stages (a number, or 'none')"
        )
    return None


def _lbfgs_only_probes(config: FitConfig) -> str | None:
    if config.optimizer == "lbfgs" and config.strategy != "linear-probe":
        return (
            "optimizer='lbfgs' cannot fine-tune: L-BFGS needs the full-batch loss, not "
            "mini-batches of augmented images; it suits a linear head on cached features, which "
            "is what --strategy linear-probe fits (scikit-learn's lbfgs solver). Use one of "
            f"{', '.join(o for o in OPTIMIZERS if o != 'lbfgs')} to fine-tune "
            f"(strategy={config.strategy!r})"
        )
    return None


def _nesterov_needs_momentum(config: FitConfig) -> str | None:
    if config.optimizer == "nesterov" and config.momentum == 0:
        return "momentum=0 does not work with optimizer='nesterov'; use 0.9"
    return None


def _inverse_sqrt_needs_warmup(config: FitConfig) -> str | None:
    if config.schedule == "inverse-sqrt" and config.warmup == 0:
        return (
            "schedule='inverse-sqrt' needs a warm-up (warmup > 0, e.g. 0.1): the rate is "
            "peak * sqrt(warmup / step), so without one it halves by the fourth step"
        )
    return None


def _probe_does_not_mix(config: FitConfig) -> str | None:
    if (config.mixup or config.cutmix) and config.strategy == "linear-probe":
        return (
            "mixup/cutmix with strategy='linear-probe': the probe is fitted on cached features "
            "of unmixed images; mix with fine-tune or full"
        )
    return None


def _vflip_is_included_or_excluded(config: FitConfig) -> str | None:
    if config.vflip and "vflip" in config.no_augment:
        return "vflip=True and 'vflip' in no_augment: pick one"
    return None


def _some_images_train(config: FitConfig) -> str | None:
    if config.val_fraction + config.test_fraction >= 1:
        return (
            f"val_fraction + test_fraction = {config.val_fraction} + {config.test_fraction} "
            "leaves no images for training; their sum must be below 1"
        )
    return None


def _candidates_are_specs(config: FitConfig) -> str | None:
    for candidate in config.candidates:
        if not CANDIDATE.fullmatch(candidate):
            return (
                f"candidates: {candidate!r}: expected [random:]ARCH[@SIZE], e.g. "
                "tf_efficientnet_lite0@160 or random:tf_efficientnet_lite0"
            )
    if config.candidates and config.weights:
        return (
            "candidates=[...] with weights=...: a weights file fits one architecture; rank "
            "the candidates without it"
        )
    return None


def _distillation_needs_a_teacher(config: FitConfig) -> str | None:
    if config.teacher is None:
        given = [n for n in ("distill_temperature", "unlabelled") if getattr(config, n) is not None]
        if given:
            return f"{', '.join(given)} set without a teacher: they are settings of a distillation"
        return None
    if config.ensemble > 1:
        return (
            f"teacher=... with ensemble={config.ensemble}: a distillation trains one network "
            "(distil an ensemble: fit it with --ensemble, then `headstart distill RUN`)"
        )
    if config.strategy == "linear-probe":
        return (
            "teacher=... with strategy='linear-probe': a student learns from its teacher by "
            "fine-tuning; use auto, fine-tune or full"
        )
    on_labels = [
        f"{name}={getattr(config, name)!r}"
        for name, unset in (("balance", ("auto", "none")), ("label_smoothing", (None,)))
        if getattr(config, name) not in unset
    ]
    if on_labels:
        return (
            f"teacher=... with {', '.join(on_labels)}: a student learns its teacher's "
            "probabilities, not the labels these act on; leave them out"
        )
    return None


def _adaptation_needs_one_pretrained_network(config: FitConfig) -> str | None:
    if config.target_images is not None and not config.pretrained:
        return (
            "target_images=... with pretrained=False: adaptation measures the shift on the "
            "pretrained features"
        )
    if config.target_images is not None and config.ensemble > 1:
        return (
            f"target_images=... with ensemble={config.ensemble}: adaptation moves one "
            "network's head; fit one network"
        )
    return None


def _numbers_have_their_losses(config: FitConfig) -> str | None:
    if config.loss != "auto" and config.task != "regression":
        return (
            f"loss={config.loss!r} is a loss for numbers: give task='regression' (classes "
            "train with cross-entropy)"
        )
    return None


def _separators_join_several_labels(config: FitConfig) -> str | None:
    if config.label_separator is not None and config.task != "multi-label":
        return "label_separator=... joins several labels in a cell: give task='multi-label'"
    if config.label_separator is not None and not config.label_separator:
        return "label_separator='': give the character that joins the labels, e.g. '|'"
    return None


def _device_is_named(config: FitConfig) -> str | None:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", config.device):
        return f"device={config.device!r}; expected auto, cpu, cuda or cuda:N"
    return None


_RULES = (
    _device_is_named,
    _probe_needs_pretrained,
    _scratch_comparison_needs_pretrained,
    _weights_need_pretrained,
    _gradual_needs_something_to_unfreeze,
    _lbfgs_only_probes,
    _nesterov_needs_momentum,
    _inverse_sqrt_needs_warmup,
    _probe_does_not_mix,
    _vflip_is_included_or_excluded,
    _some_images_train,
    _candidates_are_specs,
    _distillation_needs_a_teacher,
    _adaptation_needs_one_pretrained_network,
    _numbers_have_their_losses,
    _separators_join_several_labels,
)

#: A backbone to rank (``headstart rank --models``, ``fit --candidates``): ``[random:]ARCH[@SIZE]``.
CANDIDATE = re.compile(r"(random:)?([^@\s]*[^@\s:])(@([1-9][0-9]*))?")  # hf-hub:... has a colon
#: Training images put through each candidate when ranking, at most (see headstart.ranking).
RANK_IMAGES = 2000


# --- Types ----------------------------------------------------------------------------------


def _as_str(name: str, value: Any, described: Setting) -> str:
    if isinstance(value, Path):
        return str(value)
    if not isinstance(value, str):
        raise HeadstartError(f"{name}={value!r} must be {_text_of(described)}")
    return value


def _text_of(described: Setting) -> str:
    return described.describe() if described.choices else "text"


def _as_int(name: str, value: Any, described: Setting) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HeadstartError(f"{name}={value!r} must be {described.describe()}")
    return value


def _as_float(name: str, value: Any, described: Setting) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HeadstartError(f"{name}={value!r} must be {described.describe()}")
    return value


def _as_bool(name: str, value: Any, described: Setting) -> bool:
    if not isinstance(value, bool):
        raise HeadstartError(f"{name}={value!r} must be true or false")
    return value


def _as_names(name: str, value: Any, described: Setting) -> list[str]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise HeadstartError(f"{name}={value!r} must be a list of names ({described.describe()})")
    for item in value:
        if not isinstance(item, str):
            raise HeadstartError(f"{name}: {item!r} is not a name ({described.describe()})")
        if described.choices is not None and item not in described.choices:
            raise HeadstartError(_not_one_of(name, item, described.choices))
    return list(value)


def _as_freeze(name: str, value: Any, described: Setting) -> str | int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if value in ("all", "none") or (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0
    ):
        return value
    raise HeadstartError(f"{name}={value!r}: expected 'all', 'none' or a number of bottom stages")


_KINDS = {
    "str": _as_str,
    "int": _as_int,
    "float": _as_float,
    "bool": _as_bool,
    "names": _as_names,
    "freeze": _as_freeze,
}


def _not_one_of(name: str, value: Any, allowed: tuple) -> str:
    shown = ", ".join(str(a) for a in allowed)
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed if a], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{name}={value!r} is not one of {shown}{hint}"


def _unknown_setting(name: str, table: Mapping[str, Setting]) -> str:
    close = difflib.get_close_matches(name, list(table), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown setting {name!r}{hint} (known: {', '.join(table)})"


# --- YAML -----------------------------------------------------------------------------------


def load_config(path: str | Path) -> dict[str, Any]:
    """The settings in a YAML file, as :class:`FitConfig` keyword arguments (checked names)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise HeadstartError(f"cannot read config file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise HeadstartError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise HeadstartError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HeadstartError(f"config file {path}: expected a mapping of setting: value")
    settings = {str(key).replace("-", "_"): value for key, value in data.items()}
    settings.pop("data", None)  # saved with runs; the data is an argument
    table = settings_table()
    for name in settings:
        if name not in table:
            raise HeadstartError(f"config file {path}: {_unknown_setting(name, table)}")
    try:
        return {name: _from_yaml(name, value, table[name]) for name, value in settings.items()}
    except HeadstartError as error:
        raise HeadstartError(f"config file {path}: {error}") from None


def _from_yaml(name: str, value: Any, described: Setting) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string: numbers are read as the setting wants.
    The value is then checked as any other (a list where a number belongs is refused)."""
    if isinstance(value, str) and described.kind in ("int", "float"):
        try:
            value = int(value) if described.kind == "int" else float(value)
        except ValueError:
            raise HeadstartError(f"{name}={value!r} is not a number") from None
    if isinstance(value, int) and not isinstance(value, bool) and described.kind == "float":
        value = float(value)
    return described.check(name, value)


def save_config(config: FitConfig, path: Path, data: str | Path) -> None:
    """``config`` as YAML (with the data it was fitted on), readable by :func:`load_config`."""
    import yaml

    values = {"data": str(Path(data).resolve()), **asdict(config)}
    write_atomically(path, yaml.safe_dump(values, sort_keys=False).encode("utf-8"))
