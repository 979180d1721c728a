"""A trained model in PyTorch, as ``fit`` makes it and a bundle's safetensors weights hold it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ._version import __version__
from .bundle import META, PYTORCH_FORMAT, TRAINED_ON, WEIGHTS, Description, bundle_format
from .classifier import Classifier, Ensemble
from .errors import HeadstartError
from .inputs import InputPipeline
from .models import Preprocessing, create_backbone
from .prediction import Predictor
from .storage import write_atomically, write_tensors

__all__ = ["Model", "load_network_bundle", "save"]


class Model(Predictor):
    """A trained classifier whose network runs in PyTorch (``model.network``: a
    :class:`~headstart.classifier.Classifier`, or an :class:`~headstart.classifier.Ensemble`
    of them): ``predict`` labels, ``predict_proba`` class probabilities."""

    def __init__(
        self,
        network: Classifier | Ensemble,
        classes: Sequence[str],
        preprocessing: Preprocessing,
        *,
        architecture: str,
        test_time_flip: bool = False,
        test_time_crops: Sequence[str] = ("centre",),
        info: dict | None = None,
        trained_on: Iterable[str] = (),
        temperature: float = 1.0,
    ):
        super().__init__(
            classes,
            InputPipeline(preprocessing, test_time_flip, tuple(test_time_crops)),
            architecture=architecture,
            info=info,
            trained_on=trained_on,
            temperature=temperature,
        )
        self.network = network.eval()

    @property
    def overlap_decoding(self) -> bool:  # on a CPU, decoding and the network take turns
        return next(self.network.parameters()).device.type != "cpu"

    @torch.inference_mode()
    def logits(self, batch: np.ndarray) -> np.ndarray:
        pixels = torch.from_numpy(batch)  # channels-last memory, as the network takes it
        return self.inputs.logits(self.network, pixels).cpu().numpy()


def save(model: Model, directory: str | Path, **described) -> Path:
    """``model`` as a bundle in ``directory``: its weights, what it needs to predict, and the
    content hashes of the images it was trained on (when known); ``described``: more keys of
    its description (a regression's ``task`` and ``target``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.network.state_dict().items()}
    members = len(model.network.members) if isinstance(model.network, Ensemble) else 1
    write_tensors(state, directory / WEIGHTS)
    meta = {
        "format": bundle_format(
            PYTORCH_FORMAT,
            model.test_time_crops,
            members,
            described.get("task", "classification"),
        ),
        "headstart_version": __version__,
        "torch_version": torch.__version__,
        "architecture": model.architecture,
        "classes": list(model.classes),
        "preprocessing": model.preprocessing.to_dict(),
        "test_time_flip": model.test_time_flip,
        "test_time_crops": list(model.test_time_crops),
        "temperature": model.temperature,
        "num_features": int(model.network.num_features),
        **({"ensemble": members} if members > 1 else {}),
        **model.info,
        **described,
    }
    write_atomically(directory / META, json.dumps(meta, indent=2).encode())
    if model.trained_on:
        lines = "".join(f"{key}\n" for key in sorted(model.trained_on))
        write_atomically(directory / TRAINED_ON, lines.encode())
    return directory


def load_network_bundle(description: Description) -> Model:
    """The PyTorch model of a bundle's checked description: its network rebuilt from the
    architecture's name and given the bundle's safetensors weights."""
    meta, where = description.meta, description.directory / META
    try:
        members = [_network(description) for _ in range(description.members)]
    except (KeyError, TypeError, ValueError) as error:
        raise HeadstartError(f"{where}: not a valid bundle description ({error})") from None
    network = members[0] if len(members) == 1 else Ensemble(members)
    weights = description.directory / WEIGHTS
    network.load_state_dict(_weights(weights, network, len(meta["classes"])))
    return Model(
        network,
        meta["classes"],
        description.preprocessing,
        architecture=meta["architecture"],
        test_time_flip=meta["test_time_flip"],
        test_time_crops=description.test_time_crops,
        info=description.info,
        trained_on=description.trained_on,
        temperature=description.temperature,
    )


def _network(description: Description) -> Classifier:
    """A network of the architecture a bundle describes, its weights not yet loaded."""
    meta = description.meta
    backbone, _, _ = create_backbone(
        meta["architecture"], pretrained=False, in_chans=description.preprocessing.input_size[0]
    )
    head = torch.nn.Linear(meta["num_features"], len(meta["classes"]))
    return Classifier(backbone, head, description.preprocessing)


def _weights(file: Path, network: torch.nn.Module, classes: int) -> dict[str, torch.Tensor]:
    """The bundle's weights, checked against the network its description builds."""
    try:
        weights = load_file(file)
    except Exception as error:  # safetensors raises its own error type for any bad file
        raise HeadstartError(f"{file}: not a readable safetensors file ({error})") from None
    expected = network.state_dict()
    absent = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = sorted(k for k in set(expected) & set(weights) if weights[k].shape != expected[k].shape)
    if absent or unexpected or wrong:
        head = "members.0.head.weight" if isinstance(network, Ensemble) else "head.weight"
        outputs = weights.get(head, expected[head]).shape[0]
        what = (
            f"its head has {outputs} outputs for {classes} classes"
            if outputs != classes
            else f"{len(absent)} missing, {len(unexpected)} unexpected and {len(wrong)} "
            f"misshapen tensors, e.g. {(absent + unexpected + wrong)[0]}"
        )
        raise HeadstartError(f"{file}: the weights do not match the bundle's description ({what})")
    return weights
