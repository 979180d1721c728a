"""A pretrained timm backbone, and the preprocessing its weights expect.

:func:`create_backbone` is the one front door: an architecture name in, a feature extractor
(classifier removed) and its :class:`Preprocessing` out. Preprocessing is read from the model's
``pretrained_cfg``, which describes the weights actually loaded, so the two cannot drift apart.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import resolve_model_data_config
from timm.models import adapt_input_conv

from ..errors import HeadstartError
from ..preprocessing import Preprocessing
from .weights import (
    WeightsSource,
    builtin_network,
    builtin_pretrained_cfg,
    builtin_source,
    builtin_state_dict,
    builtin_weights,
    hub_unavailable_message,
    hub_weights_cached,
    read_weights_file,
)

__all__ = ["ModelInfo", "Preprocessing", "create_backbone", "list_models", "preprocessing_of"]


@dataclass(frozen=True)
class ModelInfo:
    """An architecture, and where its pretrained weights can be had on this machine."""

    name: str
    weights: str | None  # "built-in", "hub cache", or None (download needed, or none exist)


def preprocessing_of(model: torch.nn.Module) -> Preprocessing:
    """What ``model``'s ``pretrained_cfg`` asks for, resolved by timm."""
    config = resolve_model_data_config(model)
    in_chans = _input_channels(model)
    if in_chans is not None and in_chans != len(config["mean"]):
        # timm describes 3-channel inputs whatever in_chans the model was built with.
        # Its adapt_input_conv folds the RGB kernels into the new channels, so each new
        # channel is normalised with the average of the RGB statistics.
        config = {
            **config,
            "input_size": (in_chans, *config["input_size"][1:]),
            "mean": (sum(config["mean"]) / len(config["mean"]),) * in_chans,
            "std": (sum(config["std"]) / len(config["std"]),) * in_chans,
        }
    return Preprocessing.from_dict(config)


def create_backbone(
    arch: str,
    *,
    weights: str | Path | None = None,
    pretrained: bool = True,
    in_chans: int = 3,
    input_size: int | None = None,
    **regularisation: float,
) -> tuple[torch.nn.Module, Preprocessing, WeightsSource]:
    """A timm model with its classifier removed, its preprocessing, and where its weights came from.

    ``model(x)`` returns pooled features, ``model.num_features`` wide; the model is in eval
    mode. Weights come from, in order:

    1. ``weights``, a file: ``.safetensors``, or anything ``torch.load(weights_only=True)``
       reads (a checkpoint with a ``"state_dict"`` or ``"model"`` entry is fine). Classifier
       tensors are dropped; any other missing or unexpected tensor is an error.
    2. the built-in offline weights, if ``arch`` has some (see :func:`builtin_weights`);
    3. the Hugging Face hub through timm (its local cache when offline);

    and ``pretrained=False`` without a file gives a random initialisation, on purpose.

    ``in_chans`` other than 3 (a grayscale-only or a 4-channel dataset) builds the first layer
    for that many channels; pretrained RGB kernels are adapted by timm's ``adapt_input_conv``
    (summed for one channel; for more, the RGB kernels repeated and scaled by ``3 / in_chans``,
    so that a stack of repeated RGB channels gives the RGB network's activations).

    ``input_size`` (a square side in pixels) replaces the size the weights were trained at:
    the resize before the centre crop follows it (``crop_pct`` is kept), so features and
    training both see it. Networks with a fixed input size (ViT and its relatives) are built
    for it and their position embeddings resampled, as timm does for its own weights.

    ``regularisation`` goes to ``timm.create_model`` as it is: ``drop_rate`` (dropout before
    the head) and ``drop_path_rate`` (stochastic depth). Both act in training mode only, so
    features computed in eval mode (and their cache) do not depend on them.

    Raises:
        HeadstartError: unknown architecture, unreadable or mismatched weights file, hub
            weights that cannot be had (the message says what is available offline), or an
            ``in_chans`` / ``input_size`` that is not allowed or that the network cannot take.
    """
    _check_arch(arch)
    _check_in_chans(arch, in_chans, pretrained=pretrained or weights is not None)
    if input_size is not None and (
        isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 32
    ):
        raise HeadstartError(
            f"input_size={input_size!r} is not allowed: expected None (the weights' own size) "
            "or a side in pixels, at least 32"
        )
    sized = {} if input_size is None else {"input_size": (3, input_size, input_size)}
    if weights is not None:
        state, saved = read_weights_file(weights)
        # The file is not timm's weights for this arch: say so in its pretrained_cfg, and use
        # the preprocessing saved with it, if any, over timm's default for the architecture.
        overlay = {"file": str(weights), "hf_hub_id": None, "url": None, "tag": None}
        if saved is not None:
            overlay |= _as_pretrained_cfg(Preprocessing.from_dict(saved))
        model = _create(
            arch, in_chans, input_size, pretrained_cfg_overlay=overlay | sized, **regularisation
        )
        _load_backbone_state(model, state, origin=f"weights file {weights}", in_chans=in_chans)
        source = WeightsSource("file", str(weights))
    elif not pretrained:
        model = _create(arch, in_chans, input_size, pretrained_cfg_overlay=sized, **regularisation)
        source = WeightsSource("random", "")
    elif (overlay := builtin_pretrained_cfg(arch)) is not None:
        network = builtin_network(arch)
        model = _create(
            network, in_chans, input_size, pretrained_cfg_overlay=overlay | sized, **regularisation
        )
        source = builtin_source(arch)
        _load_backbone_state(
            model, builtin_state_dict(arch), origin=source.describe(), in_chans=in_chans
        )
    else:
        model, source = _create_from_hub(arch, in_chans, input_size, sized, regularisation)
    model.eval()
    return model, preprocessing_of(model), source


def list_models(pattern: str | None = None) -> list[ModelInfo]:
    """timm architectures matching ``pattern`` (``fnmatch`` style), with local weight status.

    Cheap: no model is built and the network is never touched; the hub status only looks
    for timm's default weights of each architecture in the local Hugging Face cache.
    """
    builtin = builtin_weights()
    infos = []
    for name in timm.list_models(pattern or "*", pretrained=False):
        if name in builtin:
            status = "built-in"
        elif hub_weights_cached(name):
            status = "hub cache"
        else:
            status = None
        infos.append(ModelInfo(name, status))
    return infos


def _check_arch(arch: str) -> None:
    if not timm.is_model(arch):
        names = timm.list_models()
        # A family name ("vit_small") is best answered by its members; a typo by difflib.
        close = [name for name in names if name.startswith(arch)][:3]
        close = close or difflib.get_close_matches(arch, names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `headstart models`"
        raise HeadstartError(f"unknown architecture {arch!r}{hint}")
    try:
        timm.models.get_pretrained_cfg(arch)
    except RuntimeError:
        base = timm.models.get_arch_name(arch)
        tags = timm.list_pretrained(f"{base}.*")
        raise HeadstartError(
            f"unknown pretrained tag in {arch!r}; {base} has {', '.join(tags) or 'none'}"
        ) from None


def _check_in_chans(arch: str, in_chans: int, *, pretrained: bool) -> None:
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise HeadstartError(
            f"in_chans={in_chans!r} is not allowed: expected a positive int, the channels of "
            "the images (3 for RGB)"
        )
    if in_chans != 3 and pretrained and not _first_convs(timm.models.get_pretrained_cfg(arch)):
        raise HeadstartError(
            f"in_chans={in_chans} is not possible with pretrained {arch}: its pretrained_cfg "
            "names no first layer (first_conv) to adapt to other than 3 channels; use "
            "in_chans=3 or train from scratch (--no-pretrained)"
        )


def _first_convs(cfg: Any) -> tuple[str, ...]:
    """The input layers a timm ``pretrained_cfg`` names (a few networks have several)."""
    first = cfg.get("first_conv") if isinstance(cfg, Mapping) else getattr(cfg, "first_conv", None)
    if not first:
        return ()
    return (first,) if isinstance(first, str) else tuple(first)


def _create(arch: str, in_chans: int, input_size: int | None, **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model`` without a classifier; built for ``input_size`` when the network
    has a fixed input size (its ``pretrained_cfg`` says ``fixed_input_size``)."""
    cfg = timm.models.get_pretrained_cfg(arch)
    if input_size is not None and cfg is not None and cfg.fixed_input_size:
        kwargs["img_size"] = input_size
    try:
        return timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
    except TypeError as error:
        if "img_size" not in kwargs or "img_size" not in str(error):
            raise
        raise HeadstartError(_fixed_size_message(arch, cfg, input_size)) from None


def _fixed_size_message(arch: str, cfg: Any, input_size: int | None) -> str:
    return (
        f"input_size={input_size} is not possible with {arch}: it is built for a fixed input "
        f"of {cfg.input_size[-1]} pixels and timm cannot build it for another size; leave "
        "input_size unset or choose another architecture"
    )


def _create_from_hub(
    arch: str,
    in_chans: int,
    input_size: int | None,
    sized: dict[str, Any],
    regularisation: dict[str, float],
) -> tuple[torch.nn.Module, WeightsSource]:
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None or not cfg.has_weights:
        # timm itself would only warn and carry on with random weights.
        raise HeadstartError(
            f"timm has no pretrained weights for {arch}; use --weights FILE or --no-pretrained"
        )
    location = cfg.hf_hub_id or cfg.url or cfg.file
    # timm itself adapts the first layer to in_chans and, for networks built for another
    # img_size, resamples the position embeddings while it loads its weights.
    size = {"img_size": input_size} if input_size is not None and cfg.fixed_input_size else {}
    try:
        model = timm.create_model(
            arch,
            pretrained=True,
            num_classes=0,
            in_chans=in_chans,
            pretrained_cfg_overlay=sized,
            **size,
            **regularisation,
        )
    # Offline cache misses (LocalEntryNotFoundError), HTTP errors and failed connections are
    # all OSErrors in huggingface_hub and urllib.
    except OSError as error:
        raise HeadstartError(hub_unavailable_message(arch, location, error)) from None
    except TypeError as error:
        if not size or "img_size" not in str(error):
            raise
        raise HeadstartError(_fixed_size_message(arch, cfg, input_size)) from None
    return model, WeightsSource("hub", location)


def _load_backbone_state(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, origin: str, in_chans: int
) -> None:
    """Load ``state`` into a classifier-less ``model``, strictly but for the classifier."""
    cfg = model.pretrained_cfg
    heads = cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    state = {
        name: tensor
        for name, tensor in state.items()
        if not any(name == head or name.startswith(f"{head}.") for head in heads)
    }
    for first_conv in _first_convs(cfg):
        weight_name = f"{first_conv}.weight"
        if weight_name in state and in_chans != 3:
            state[weight_name] = adapt_input_conv(in_chans, state[weight_name])
    expected = model.state_dict()
    resized = cfg.get("fixed_input_size") and any(
        name in state and state[name].shape != t.shape for name, t in expected.items()
    )
    if resized:  # built for another input size than the weights were trained at
        state = _resample(model, state)
    # BatchNorm's step counter does not change what the model computes; files from other
    # frameworks often lack it.
    missing = [
        name for name in expected if name not in state and not name.endswith("num_batches_tracked")
    ]
    unexpected = [name for name in state if name not in expected]
    wrong_shape = [
        f"{name} {tuple(state[name].shape)} vs {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({_few(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_few(unexpected)})")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} of the wrong shape ({_few(wrong_shape)})")
    if problems:
        arch = cfg.get("architecture", type(model).__name__)
        raise HeadstartError(f"{origin} does not fit {arch}: tensors {'; '.join(problems)}")
    model.load_state_dict(state, strict=False)


def _resample(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` passed through the ``checkpoint_filter_fn`` of ``model``'s timm module, as
    timm does when it loads its own weights: for a network built for another input size
    (ViT, Swin, ...), position embeddings are resampled to the new grid. Without such a
    filter, ``state`` is returned as it was, and the shapes that differ are reported."""
    module = sys.modules.get(type(model).__module__)
    checkpoint_filter = getattr(module, "checkpoint_filter_fn", None)
    if checkpoint_filter is None:
        return state
    try:
        return checkpoint_filter(dict(state), model)
    except Exception:  # a filter for another layout: the shape check says what differs
        return state


def _as_pretrained_cfg(preprocessing: Preprocessing) -> dict[str, Any]:
    return {
        "input_size": preprocessing.input_size,
        "mean": preprocessing.mean,
        "std": preprocessing.std,
        "interpolation": preprocessing.interpolation,
        "crop_pct": preprocessing.crop_pct,
    }


def _input_channels(model: torch.nn.Module) -> int | None:
    first_conv = getattr(model, "pretrained_cfg", {}).get("first_conv")
    if not isinstance(first_conv, str):
        return None
    try:
        return model.get_submodule(first_conv).in_channels
    except AttributeError:
        return None


def _few(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")
