"""A trained model on disk, and using it: ``headstart.load(bundle).predict(images)``.

A bundle is a folder holding ``headstart.json`` (architecture, classes, preprocessing, how
predictions are made, versions) and the network, in one of the runtimes it can be run by:

- PyTorch: ``model.safetensors``, every weight and no pickle (what ``fit`` writes);
- ONNX Runtime or TorchScript: ``model.onnx`` or ``model.pt`` (what ``headstart export``
  writes); an ONNX bundle predicts without PyTorch installed (a text model's, with the
  encoder's ``tokenizer.json`` beside it).

It is all ``predict`` and ``evaluate`` need; nothing comes from the run that made it. This
module reads and checks descriptions, without PyTorch; :func:`headstart.load` imports the
runtime a bundle asks for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .config import TASKS  # what a bundle's network predicts; before regression: a class
from .errors import HeadstartError
from .preprocessing import CROPS, Preprocessing
from .runfolder import MODEL

__all__ = [
    "BUNDLE_FORMAT",
    "META",
    "RUNTIMES",
    "TEXT_EXPORT_FORMAT",
    "TRAINED_ON",
    "WEIGHTS",
    "Description",
    "bundle_folder",
    "bundle_format",
    "describe",
]

#: The newest bundle format this version reads. 2: a temperature applied to the logits; 3: a
#: network exported to another runtime (older versions cannot run those, and say so); 4:
#: test-time crops averaged, or an ensemble of networks (older versions would predict from
#: the centre crop alone, or fail to read the weights); 5: a task other than classification,
#: a regression's number, or several labels (older versions would read the outputs as classes);
#: 6: a text model exported to ONNX (older versions would look for its encoder).
BUNDLE_FORMAT = 6
PYTORCH_FORMAT, EXPORTED_FORMAT, SQUEEZED_FORMAT, TASK_FORMAT, TEXT_EXPORT_FORMAT = 2, 3, 4, 5, 6


def bundle_format(
    runtime_format: int,
    test_time_crops: tuple[str, ...],
    members: int = 1,
    task: str = "classification",
) -> int:
    """The format a bundle is written in: its runtime's, or newer where it averages crops or
    networks, or predicts something other than a class."""
    if task != "classification":
        return TASK_FORMAT
    return SQUEEZED_FORMAT if test_time_crops != CROPS[:1] or members > 1 else runtime_format


WEIGHTS = "model.safetensors"
META = "headstart.json"
#: The content hashes of the images the model was trained on, one a line: wherever the bundle
#: goes, ``evaluate`` can tell those images (or copies of them) from new ones.
TRAINED_ON = "trained_on.txt"
#: The runtimes a bundle's network can be run by, and the file each keeps it in.
RUNTIMES = {"pytorch": WEIGHTS, "onnx": "model.onnx", "torchscript": "model.pt"}

#: The description's keys that the bundle itself reads; any other key is information about
#: the model (its strategy, its scores, ...), kept in ``model.info``.
_OWN_KEYS = {
    "format",
    "headstart_version",
    "torch_version",
    "runtime",
    "architecture",
    "classes",
    "preprocessing",
    "test_time_flip",
    "test_time_crops",
    "ensemble",
    "temperature",
    "num_features",
    "modality",
    "encoder",
    "task",
    "target",
    "thresholds",
}
_OPTIONAL_KEYS = {
    "format",
    "headstart_version",
    "torch_version",
    "runtime",
    "temperature",
    "test_time_crops",
    "ensemble",
    "task",
}
#: What a bundle of each modality must describe (besides the optional keys).
_NEEDED = {
    "image": _OWN_KEYS - _OPTIONAL_KEYS - {"modality", "encoder", "target", "thresholds"},
    "text": {"classes", "encoder", "num_features"},
}


@dataclass(frozen=True)
class Description:
    """A bundle's ``headstart.json``, checked: what any runtime needs to rebuild the model."""

    directory: Path
    meta: dict

    @property
    def runtime(self) -> str:
        return self.meta.get("runtime", "pytorch")

    @property
    def modality(self) -> str:
        return self.meta.get("modality", "image")  # bundles from before texts: images

    @property
    def task(self) -> str:
        return self.meta.get("task", "classification")

    @property
    def network_file(self) -> Path:
        return self.directory / RUNTIMES[self.runtime]

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def test_time_flip(self) -> bool:
        return self.meta["test_time_flip"]

    @property
    def members(self) -> int:
        """How many networks the bundle averages (an ensemble's members; 1 for one network)."""
        members = self.meta.get("ensemble", 1)
        if not (isinstance(members, int) and members >= 1):
            raise HeadstartError(
                f"{self.directory / META}: not a valid bundle description (ensemble "
                f"{members!r}; expected a number of networks)"
            )
        return members

    @property
    def test_time_crops(self) -> tuple[str, ...]:
        """The crops a prediction averages; bundles from before test-time crops: the centre."""
        crops = self.meta.get("test_time_crops", CROPS[:1])
        if not (isinstance(crops, list | tuple) and crops and set(crops) <= set(CROPS)):
            raise HeadstartError(
                f"{self.directory / META}: not a valid bundle description (test_time_crops "
                f"{crops!r}; expected a list of some of {list(CROPS)})"
            )
        return tuple(crops)

    @cached_property
    def preprocessing(self) -> Preprocessing:
        try:
            return Preprocessing.from_dict(self.meta["preprocessing"])
        except (AttributeError, TypeError, ValueError, HeadstartError) as error:
            raise HeadstartError(
                f"{self.directory / META}: not a valid bundle description ({error})"
            ) from None

    @property
    def temperature(self) -> float:
        return float(self.meta.get("temperature", 1.0))  # older bundles: none fitted

    @property
    def info(self) -> dict:
        return {k: v for k, v in self.meta.items() if k not in _OWN_KEYS}

    @property
    def trained_on(self) -> list[str]:
        file = self.directory / TRAINED_ON
        try:
            return file.read_text().split() if file.exists() else []
        except (OSError, UnicodeDecodeError):
            return []  # unreadable: evaluate falls back on the run's split, if it has one


def bundle_folder(path: str | Path) -> Path:
    """The model bundle at ``path``: a run folder's ``model/`` folder, or ``path`` itself."""
    for folder in (Path(path) / MODEL, Path(path)):
        if (folder / META).exists():
            return folder
    raise HeadstartError(f"{path}: not a headstart model bundle (no {META} inside)")


def describe(bundle: str | Path) -> Description:
    """The checked description of the bundle at ``bundle`` (a run folder or a bundle)."""
    directory = bundle_folder(bundle)
    where = directory / META
    try:
        meta = json.loads(where.read_text())
    except ValueError as error:  # bad JSON, or bytes that are not text
        raise HeadstartError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise HeadstartError(f"{where}: not a bundle description (not a JSON object)")
    if not isinstance(meta.get("format", 0), int):
        raise HeadstartError(f"{where}: 'format' must be a number")
    if meta.get("format", 0) > BUNDLE_FORMAT:
        raise HeadstartError(
            f"{bundle}: written by a newer headstart "
            f"({meta.get('headstart_version')}); upgrade to read it"
        )
    runtime = meta.get("runtime", "pytorch")
    if runtime not in RUNTIMES:
        raise HeadstartError(f"{where}: runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    modality = meta.get("modality", "image")
    if modality not in _NEEDED:
        raise HeadstartError(f"{where}: modality {modality!r} is not one of {', '.join(_NEEDED)}")
    if meta.get("task", "classification") not in TASKS:
        raise HeadstartError(f"{where}: task {meta['task']!r} is not one of {', '.join(TASKS)}")
    needed = _NEEDED[modality] - ({"num_features"} if runtime != "pytorch" else set())
    needed |= {"regression": {"target"}, "multi-label": {"thresholds"}}.get(meta.get("task"), set())
    missing = sorted(needed - set(meta))
    if missing:
        raise HeadstartError(f"{where}: incomplete, no {', '.join(missing)}")
    classes = meta["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise HeadstartError(f"{where}: 'classes' must be a list of class names")
    temperature = meta.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise HeadstartError(f"{where}: 'temperature' must be a number")
    if not 0 < temperature < float("inf"):
        raise HeadstartError(f"{where}: temperature={temperature}; expected > 0")
    description = Description(directory, meta)
    if modality == "text":
        encoder = meta["encoder"]
        if not isinstance(encoder, dict) or not isinstance(encoder.get("name"), str):
            raise HeadstartError(f"{where}: 'encoder' must be an object with a 'name'")
    else:
        description.preprocessing  # noqa: B018 -- checked now, not at the first prediction
    if not description.network_file.exists():
        what = "weights" if runtime == "pytorch" else f"{runtime} network"
        raise HeadstartError(f"{description.network_file}: missing (the bundle has no {what})")
    return description
