"""Backbones: pretrained weights from a file, the built-in package or the hub, with the
preprocessing those weights expect, and errors that say what to do."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data
from timm.data import create_transform

import headstart.models
from headstart.errors import HeadstartError
from headstart.models import Preprocessing, create_backbone, list_models, save_weights
from headstart.models.weights import builtin_state_dict


def eval_transform(preprocessing: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """timm's eval transform (resize, centre crop, normalise), built from the dataclass."""
    return create_transform(
        preprocessing.input_size,
        interpolation=preprocessing.interpolation,
        crop_pct=preprocessing.crop_pct,
        mean=preprocessing.mean,
        std=preprocessing.std,
    )


def test_builtin_weights_are_imagenet_trained():
    backbone, preprocessing, source = create_backbone("efficientnet_lite0")
    assert source.kind == "builtin"
    assert "built in" in source.describe()
    # Put back the 1000-class ImageNet classifier shipped in the same file.
    imagenet = builtin_state_dict("efficientnet_lite0")
    backbone.reset_classifier(1000)
    backbone.get_classifier().load_state_dict(
        {"weight": imagenet["classifier.weight"], "bias": imagenet["classifier.bias"]}
    )

    transform = eval_transform(preprocessing)
    photos = torch.stack(
        [transform(Image.fromarray(data.chelsea())), transform(Image.fromarray(data.coffee()))]
    )
    with torch.no_grad():
        cat, coffee = backbone(photos).argmax(dim=1).tolist()
    assert cat in range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert coffee in (967, 968)  # espresso, cup


def test_builtin_preprocessing_is_that_of_the_tensorflow_original():
    _, preprocessing, _ = create_backbone("efficientnet_lite0")
    assert preprocessing == Preprocessing(
        input_size=(3, 224, 224),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        interpolation="bicubic",
        crop_pct=0.875,
    )
    assert preprocessing.resize_size == 256
    as_json = json.loads(json.dumps(preprocessing.to_dict()))
    assert Preprocessing.from_dict(as_json) == preprocessing


def test_backbone_returns_pooled_features_in_eval_mode():
    model, preprocessing, source = create_backbone("resnet18", pretrained=False)
    assert source.kind == "random"
    assert not model.training
    images = torch.randn(2, preprocessing.input_size[0], 64, 64)
    with torch.no_grad():
        assert model(images).shape == (2, model.num_features)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_round_trip(tmp_path: Path, suffix: str):
    # A model fine-tuned elsewhere, classifier and all, saved two common ways.
    original = timm.create_model("resnet18", num_classes=5).eval()
    path = tmp_path / f"fine-tuned{suffix}"
    if suffix == ".safetensors":
        save_file(original.state_dict(), path)
    else:
        torch.save({"state_dict": original.state_dict(), "epoch": 7}, path)

    backbone, _, source = create_backbone("resnet18", weights=path)

    assert (source.kind, source.location) == ("file", str(path))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = original.forward_head(original.forward_features(images), pre_logits=True)
        assert torch.equal(backbone(images), expected)


def test_saved_weights_keep_their_preprocessing(tmp_path: Path):
    builtin, preprocessing, _ = create_backbone("efficientnet_lite0")
    path = save_weights(builtin, tmp_path / "lite0.safetensors")

    network = builtin.pretrained_cfg["architecture"]  # tf_efficientnet_lite0, see above
    reloaded, reloaded_preprocessing, _ = create_backbone(network, weights=path)

    # Not timm's ImageNet mean/std for the architecture: what these weights were trained with.
    assert reloaded_preprocessing == preprocessing
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(reloaded(images), builtin(images))


def test_unknown_architecture_suggests_close_names():
    with pytest.raises(HeadstartError, match=r"unknown architecture 'resnet_18'.*resnet18"):
        create_backbone("resnet_18")


def test_missing_weights_file_is_named(tmp_path: Path):
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(HeadstartError, match=re.escape(f"not found: {missing}")):
        create_backbone("resnet18", weights=missing)


def test_weights_files_are_never_unpickled(tmp_path: Path):
    pickled = tmp_path / "whole-model.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a pickled module, not a state dict
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    for path in (pickled, garbage):
        with pytest.raises(HeadstartError, match=re.escape(f"cannot read weights file {path}")):
            create_backbone("resnet18", weights=path)


def test_weights_for_another_architecture_are_refused(tmp_path: Path):
    path = tmp_path / "resnet34.safetensors"
    save_file(timm.create_model("resnet34").state_dict(), path)
    with pytest.raises(HeadstartError, match=r"does not fit resnet18: tensors .* unexpected"):
        create_backbone("resnet18", weights=path)


def test_list_models_marks_builtin_weights():
    models = {info.name: info.weights for info in list_models("efficientnet_lite*")}
    assert models["efficientnet_lite0"] == "built-in"
    assert "efficientnet_lite1" in models


def test_architecture_without_pretrained_weights_is_not_silently_random():
    # timm itself would warn and return random weights; asking for pretrained ones is an error.
    with pytest.raises(HeadstartError, match="no pretrained weights for resnet50t"):
        create_backbone("resnet50t")


# huggingface_hub reads HF_HUB_OFFLINE and HF_HUB_CACHE when it is imported, so the hub is
# tried in a fresh interpreter, as a user's `HF_HUB_OFFLINE=1 headstart fit ...` would be.
OFFLINE_SCRIPT = """
import json, sys, torch
from safetensors.torch import load_file
from headstart.errors import HeadstartError
from headstart.models import create_backbone, list_models

model, _, source = create_backbone("resnet18")
cached = load_file(sys.argv[1])
try:
    create_backbone("resnet34")
    error = None
except HeadstartError as raised:
    error = str(raised)
print(json.dumps({
    "source": [source.kind, source.location],
    "identical": all(torch.equal(t, cached[n]) for n, t in model.state_dict().items()),
    "listed": {info.name: info.weights for info in list_models("resnet[13][48]")},
    "error": error,
}))
"""


@pytest.fixture(scope="module")
def offline_hub(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What headstart does offline with only timm's resnet18 weights in the hub cache."""
    # Lay the cache out as huggingface_hub does after downloading timm's default resnet18.
    cache = tmp_path_factory.mktemp("hub")
    repo = cache / "models--timm--resnet18.a1_in1k"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    weights = repo / "snapshots" / commit / "model.safetensors"
    save_file(timm.create_model("resnet18").state_dict(), weights)

    package_root = Path(headstart.models.__file__).parents[2]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "PYTHONPATH": os.pathsep.join(
            path for path in (str(package_root), os.environ.get("PYTHONPATH")) if path
        ),
    }
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT, str(weights)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_hub_weights_load_offline_from_the_local_cache(offline_hub: dict):
    assert offline_hub["source"] == ["hub", "timm/resnet18.a1_in1k"]
    assert offline_hub["identical"]
    assert offline_hub["listed"] == {"resnet18": "hub cache", "resnet34": None}


def test_hub_weights_missing_offline_say_what_is_available(offline_hub: dict):
    message = offline_hub["error"]
    assert "\n" not in message
    assert "timm/resnet34.a1_in1k" in message
    assert "HF_HUB_OFFLINE" in message
    for alternative in ("efficientnet_lite0", "--weights FILE", "--no-pretrained"):
        assert alternative in message


def test_builtin_weights_build_their_exact_network():
    """The built-in weights were trained in TensorFlow ("SAME" padding, BatchNorm eps 1e-3):
    asking for efficientnet_lite0 builds timm's tf_efficientnet_lite0 and computes the same."""
    asked, _, _ = create_backbone("efficientnet_lite0")
    exact, _, _ = create_backbone("tf_efficientnet_lite0")
    assert asked.pretrained_cfg["architecture"] == "tf_efficientnet_lite0"
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(asked(x), exact(x), atol=1e-6)
