"""headstart.fit end to end on real images, and the model bundle it leaves behind."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file as load_arrays
from safetensors.numpy import save_file
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import headstart
from headstart.classifier import Classifier, layer_groups
from headstart.data import discover
from headstart.data.decoded import DecodedImages
from headstart.features import VIEWS, FeatureStore, extract_features
from headstart.inputs import InputPipeline
from headstart.models import create_backbone
from headstart.training.callbacks import Checkpoints, OnBatch, TrainingStep
from headstart.training.finetune import FineTuneSettings, fine_tune


def test_default_fit_on_faces_is_accurate_and_explains_itself(fitted):
    assert fitted.plan.strategy == "linear-probe"
    assert fitted.plan.size == "small" and fitted.plan.domain == "similar"
    assert fitted.scores["val"]["accuracy"] >= 0.95
    assert fitted.scores["val"]["n"] == 40
    assert set(fitted.scores["val"]["per_class"]) == {"face", "not-face"}
    assert any("linear probe" in reason for reason in fitted.plan.reasons)


def test_run_folder_holds_everything(fitted):
    run = fitted.run_dir
    for name in (
        "config.json",
        "dataset.json",
        "plan.json",
        "metrics.jsonl",
        "summary.json",
        "model/model.safetensors",
        "model/headstart.json",
        "audit/audit.json",
        "audit/contact-sheets/face.png",
    ):
        assert (run / name).is_file(), name
    meta = json.loads((run / "model/headstart.json").read_text())
    assert meta["classes"] == ["face", "not-face"]
    # The built-in weights are TensorFlow's: their exact network is timm's tf_ variant.
    assert meta["architecture"] == "tf_efficientnet_lite0"
    assert meta["preprocessing"]["input_size"] == [3, 224, 224]
    assert meta["headstart_version"] == headstart.__version__
    plan = json.loads((run / "plan.json").read_text())
    assert plan["strategy"] == "linear-probe" and plan["reasons"]
    config = json.loads((run / "config.json").read_text())
    assert config["strategy"] == "auto" and config["seed"] == 0


def test_predictions_identical_after_save_and_load(fitted, faces):
    files = sorted((faces / "face").glob("*.png"))[:5] + sorted((faces / "not-face").glob("*"))[:5]
    loaded = headstart.load(fitted.run_dir / "model")
    assert loaded.classes == fitted.model.classes
    assert np.array_equal(loaded.predict_proba(files), fitted.model.predict_proba(files))
    labels = [p.label for p in loaded.predict(files)]
    assert labels == ["face"] * 5 + ["not-face"] * 5


def test_predict_accepts_files_arrays_and_pil_images(fitted, faces):
    from PIL import Image

    path = sorted((faces / "face").glob("*.png"))[0]
    image = Image.open(path)
    as_file, as_pil, as_array = (
        fitted.model.predict_proba(x) for x in (path, image, np.asarray(image.convert("RGB")))
    )
    assert np.allclose(as_file, as_pil) and np.allclose(as_file, as_array)
    top = fitted.model.predict(path, top_k=5)[0]
    assert len(top.top) == 2 and top.top[0][1] >= top.top[1][1]
    assert abs(sum(p for _, p in top.top) - 1) < 1e-6


def test_test_time_flip_averages_an_image_and_its_mirror(fitted, faces, tmp_path):
    from PIL import Image

    image = sorted((faces / "face").glob("*.png"))[0]
    mirror = tmp_path / "mirror.png"
    Image.open(image).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirror)
    trained = fitted.model
    plain, flipping = (
        headstart.Model(
            trained.network,
            trained.classes,
            trained.preprocessing,
            architecture=trained.architecture,
            test_time_flip=flip,
        )
        for flip in (False, True)
    )
    averaged = np.log(plain.predict_proba([image, mirror])).mean(0)  # logits, up to a constant
    expected = np.exp(averaged) / np.exp(averaged).sum()
    assert np.allclose(flipping.predict_proba(image)[0], expected, atol=1e-6)
    # The command line's way, files decoded in threads and batched, gives the same numbers.
    (path, prediction), *_ = flipping.predict_files([image], top_k=2, quiet=True)[0]
    probabilities = dict(prediction.top)
    assert path == image
    assert np.allclose([probabilities[c] for c in trained.classes], expected, atol=1e-6)


def test_an_image_in_memory_is_read_as_its_file_would_be(fitted, faces, tmp_path):
    # Transparency onto white and EXIF rotation: the same decisions for PIL images as files.
    from PIL import Image

    face = Image.open(sorted((faces / "face").glob("*.png"))[0]).convert("RGB")
    transparent = face.convert("RGBA")
    transparent.putalpha(Image.linear_gradient("L").resize(face.size))
    sideways = face.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned; viewers rotate it back
    transparent.save(tmp_path / "transparent.png")
    sideways.save(tmp_path / "sideways.jpg", exif=exif, quality=95)
    for name in ("transparent.png", "sideways.jpg"):
        from_file = fitted.model.predict_proba(tmp_path / name)
        from_memory = fitted.model.predict_proba(Image.open(tmp_path / name))
        assert np.allclose(from_file, from_memory, atol=1e-6), name


@pytest.fixture(scope="module")
def lite0() -> tuple[torch.nn.Module, InputPipeline, dict]:
    """The built-in network, its input pipeline, and the identity of its feature stores."""
    backbone, preprocessing, source = create_backbone("efficientnet_lite0")
    identity = {"arch": "efficientnet_lite0", "weights": source.location, "dimension": 1280}
    return backbone, InputPipeline(preprocessing), identity


def decoded(pipeline: InputPipeline, folder: Path) -> DecodedImages:
    """A decoded-pixel cache in ``folder`` for the network ``pipeline`` feeds."""
    preprocessing = pipeline.preprocessing
    return DecodedImages(preprocessing.resize_size, preprocessing.interpolation, folder)


def test_features_are_computed_once_and_cached(lite0, small_faces, tmp_path):
    backbone, pipeline, identity = lite0
    paths = sorted(small_faces.rglob("*.png"))[:8]
    images = decoded(pipeline, tmp_path / "pixels")

    def run():
        store = {"plain": FeatureStore(tmp_path / "features", identity)}
        return extract_features(backbone, pipeline, paths, images, store)

    first, second = run(), run()
    assert first.computed == 8 and second.computed == 0
    assert np.array_equal(first.of(paths), second.of(paths))
    # A copy of a file under another name is the same content: still a cache hit.
    twin = tmp_path / "renamed.png"
    shutil.copy(paths[0], twin)
    store = {"plain": FeatureStore(tmp_path / "features", identity)}
    third = extract_features(backbone, pipeline, [twin], images, store)
    assert third.computed == 0
    assert np.array_equal(third.of([twin])[0], first.of(paths)[0])


@pytest.mark.parametrize("damage", ["truncated", "wrong shape", "one vector not finite"])
def test_damaged_cache_entries_are_recomputed_never_served(lite0, small_faces, tmp_path, damage):
    backbone, pipeline, identity = lite0
    paths = sorted(small_faces.rglob("*.png"))[:4]

    def run():
        images = decoded(pipeline, tmp_path / "pixels")
        store = {"plain": FeatureStore(tmp_path / "features", identity)}
        return extract_features(backbone, pipeline, paths, images, store)

    first = run()
    (shard,) = (tmp_path / "features").rglob("*.safetensors")
    pixels = sorted((tmp_path / "pixels").rglob("*.npy"))
    if damage == "truncated":  # as a kill or a full disk mid-write would leave them
        shard.write_bytes(shard.read_bytes()[:100])
        for entry in pixels:
            entry.write_bytes(entry.read_bytes()[:200])
    elif damage == "wrong shape":  # well-formed files holding the wrong arrays
        keys = safe_open(shard, framework="numpy").metadata()
        save_file({"features": np.zeros((4, 5), np.float32)}, shard, metadata=keys)
        for entry in pixels:
            np.save(entry, np.zeros((10, 10, 3), np.uint8))
    else:  # one image's vector alone is unusable: only that image is computed again
        keys = safe_open(shard, framework="numpy").metadata()
        vectors = load_arrays(shard)["features"]
        vectors[2, 7] = np.nan
        save_file({"features": vectors}, shard, metadata=keys)
    again = run()
    assert again.computed == (1 if damage == "one vector not finite" else 4)
    assert np.allclose(again.of(paths), first.of(paths), atol=1e-5)
    size = pipeline.preprocessing.resize_size
    assert all(min(np.load(entry).shape[:2]) == size for entry in pixels)


def test_features_are_read_from_the_cache_when_asked_for_and_damage_is_noticed(
    lite0, small_faces, tmp_path
):
    # With a cache, neither the store nor the extracted features keep the vectors (50,000
    # images' would be 256 MB a view): each stage reads the rows it asks for, checked again
    # as they are read, and a vector lost since is computed again, never served.
    backbone, pipeline, identity = lite0
    paths = sorted(small_faces.rglob("*.png"))[:4]
    images = decoded(pipeline, tmp_path / "pixels")
    store = {"plain": FeatureStore(tmp_path / "features", identity)}
    first = extract_features(backbone, pipeline, paths, images, store)
    expected = first.of(paths)
    again = extract_features(backbone, pipeline, paths, images, store)
    assert again.computed == 0
    (shard,) = (tmp_path / "features").rglob("*.safetensors")
    shard.write_bytes(b"damaged while the store was open")
    assert np.allclose(again.of(paths), expected, atol=1e-5)
    assert np.array_equal(again.of(paths[2:]), again.of(paths)[2:])
    buffer = np.zeros((2, 1280), np.float32)
    again.read_into(paths[1:3], "plain", buffer)
    assert np.array_equal(buffer, again.of(paths)[1:3])
    assert len(list((tmp_path / "features").rglob("*.safetensors"))) == 2  # computed again


def test_features_without_a_cache_are_held_in_memory(lite0, small_faces, tmp_path):
    backbone, pipeline, _ = lite0
    paths = sorted(small_faces.rglob("*.png"))[:4]
    held = extract_features(backbone, pipeline, paths, decoded(pipeline, tmp_path / "px"))
    # All the paths, in order: the array itself, not a copy; some of them: their rows.
    assert held.of(held.paths) is held.of(held.paths)
    assert np.array_equal(held.of(paths[2:]), held.of(paths)[2:])


def test_a_view_already_cached_is_not_computed_again(lite0, small_faces, tmp_path):
    # `headstart rank` caches the plain view of a sample; the fit after it computes the
    # mirrored view of those images, not both.
    backbone, pipeline, identity = lite0
    paths = sorted(small_faces.rglob("*.png"))[:6]
    images = decoded(pipeline, tmp_path / "pixels")
    stores = {v: FeatureStore(tmp_path / "features", {**identity, "view": v}) for v in VIEWS}
    plain = extract_features(backbone, pipeline, paths[:4], images, stores)
    both = extract_features(backbone, pipeline, paths, images, stores, views=VIEWS)
    assert both.computed == 6 and np.array_equal(both.of(paths[:4]), plain.of(paths[:4]))
    shards = {v: list(stores[v].directory.glob("*.safetensors")) for v in VIEWS}
    assert len(shards["plain"]) == 2 and len(shards["hflip"]) == 1  # plain: 4, then the 2 new
    written = safe_open(shards["hflip"][0], framework="numpy").metadata()["keys"]
    assert len(json.loads(written)) == 6


def test_unreadable_files_are_skipped_and_listed(small_faces, tmp_path):
    data = tmp_path / "faces"
    shutil.copytree(small_faces, data)
    (data / "face" / "notes.jpg").write_text("not an image")
    good = sorted((data / "face").glob("*.png"))[0].read_bytes()
    (data / "face" / "cut.png").write_bytes(good[: len(good) // 2])
    result = headstart.fit(data, runs_dir=tmp_path / "runs", quiet=True)
    reasons = {skip.path.name: skip.reason for skip in result.skipped}
    assert set(reasons) == {"notes.jpg", "cut.png"}
    listed = json.loads((result.run_dir / "dataset.json").read_text())["skipped"]
    assert {Path(s["path"]).name for s in listed} == {"notes.jpg", "cut.png"}


def test_fit_audits_first_and_refuses_to_train_on_a_leak(faces, tmp_path):
    data = tmp_path / "leaky"
    for label in ("face", "not-face"):
        images = sorted((faces / label).glob("*.png"))
        for split, chosen in (("train", images[:24]), ("val", images[24:30])):
            (data / split / label).mkdir(parents=True)
            for image in chosen:
                shutil.copy(image, data / split / label / image.name)
        shutil.copy(images[0], data / "val" / label / "copy-of-a-training-image.png")

    with pytest.raises(headstart.HeadstartError, match="--allow-leakage") as refused:
        headstart.fit(data, runs_dir=tmp_path / "runs", quiet=True)
    assert str(refused.value).startswith("2 group(s) of duplicate images span train and")
    (refused_run,) = (tmp_path / "runs").iterdir()
    assert not (refused_run / "model").exists()  # nothing trained...
    audit = json.loads((refused_run / "audit" / "audit.json").read_text())
    assert audit["duplicates"]["leaks"] == 2  # ...but the evidence is there to look at

    result = headstart.fit(data, runs_dir=tmp_path / "runs", quiet=True, allow_leakage=True)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["audit"]["leaks"] == 2 and summary["audit"]["unusable"] == 0


def test_copies_that_headstart_itself_split_apart_are_put_on_one_side(small_faces, tmp_path):
    data = tmp_path / "faces"
    shutil.copytree(small_faces, data)
    for label in ("face", "not-face"):  # six copies of one image each: some land in val
        original = sorted((data / label).glob("*.png"))[0]
        for n in range(6):
            shutil.copy(original, data / label / f"copy-{n}-{original.name}")
    drawn = {s.path.name: s.split for s in discover(data).samples}
    assert {"train", "val"} <= {split for name, split in drawn.items() if "copy-" in name}

    result = headstart.fit(data, runs_dir=tmp_path / "runs", quiet=True)  # no refusal
    with open(result.run_dir / "splits.csv", newline="") as file:
        split_of = {Path(row["path"]).name: row["split"] for row in csv.DictReader(file)}
    for label in ("face", "not-face"):
        original = sorted((small_faces / label).glob("*.png"))[0].name
        copies = [name for name in split_of if name.endswith(original)]
        assert len(copies) == 7 and {split_of[name] for name in copies} == {"train"}
    audit = json.loads((result.run_dir / "audit" / "audit.json").read_text())
    assert audit["duplicates"]["leaks"] == 0
    assert any("moved into train" in note for note in audit["notes"])


@pytest.mark.slow  # test_training keeps frozen stages bit-identical
def test_fine_tune_trains_the_top_and_leaves_the_stem_alone(small_faces, tmp_path):
    result = headstart.fit(
        small_faces, strategy="fine-tune", epochs=2, runs_dir=tmp_path, quiet=True
    )
    epochs = [r for r in map(json.loads, (result.run_dir / "metrics.jsonl").open()) if "epoch" in r]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(np.isfinite(r["train_loss"]) and 0 <= r["val_accuracy"] <= 1 for r in epochs)
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("accuracy/val")) == len(events.Scalars("loss/val")) == 2
    assert result.strategy == "fine-tune"  # asked for by name: kept even when not ahead
    pretrained, _, _ = create_backbone("efficientnet_lite0")
    tuned = result.model.network.backbone
    stem, top = layer_groups(tuned)[0], layer_groups(tuned)[-1]
    assert all(torch.equal(a, b) for a, b in zip(stem, layer_groups(pretrained)[0], strict=True))
    assert not all(
        torch.equal(a, b) for a, b in zip(top, layer_groups(pretrained)[-1], strict=True)
    )


def test_ctrl_c_during_training_keeps_the_best_model(small_faces, tmp_path):
    backbone, preprocessing, _ = create_backbone("efficientnet_lite0")
    model = Classifier(backbone, torch.nn.Linear(backbone.num_features, 2), preprocessing)
    images = DecodedImages(preprocessing.resize_size, preprocessing.interpolation)
    examples = [(p, int(p.parent.name != "face")) for p in sorted(small_faces.rglob("*.png"))]

    def press_ctrl_c_in_epoch_two(step: TrainingStep) -> None:
        if step.step == 2:
            raise KeyboardInterrupt

    top_stage = len(layer_groups(backbone)) - 1  # every stage frozen but the top one
    settings = FineTuneSettings(epochs=5, batch_size=24, freeze=top_stage)
    checkpoint = tmp_path / "best.safetensors"
    result = fine_tune(
        model,
        examples[::2],
        examples[1::2],
        images,
        InputPipeline(preprocessing),
        settings,
        callbacks=[Checkpoints(best=checkpoint), OnBatch(press_ctrl_c_in_epoch_two)],
    )
    assert result.stopped == "interrupted"
    assert result.best_epoch == 1 and len(result.history) == 1
    saved = load_file(checkpoint)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_bad_settings_are_refused_by_name(faces):
    with pytest.raises(headstart.HeadstartError, match="strategy='best'"):
        headstart.fit(faces, strategy="best")
    with pytest.raises(headstart.HeadstartError, match="unknown setting 'epoch'"):
        headstart.fit(faces, epoch=3)
    with pytest.raises(headstart.HeadstartError, match="val_fraction=0"):
        headstart.fit(faces, val_fraction=0)


def test_training_that_diverges_stops_and_keeps_the_model_it_had(small_faces, tmp_path):
    backbone, preprocessing, _ = create_backbone("efficientnet_lite0")
    model = Classifier(backbone, torch.nn.Linear(backbone.num_features, 2), preprocessing)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = DecodedImages(preprocessing.resize_size, preprocessing.interpolation)
    examples = [(p, int(p.parent.name != "face")) for p in sorted(small_faces.rglob("*.png"))]
    settings = FineTuneSettings(epochs=3, batch_size=16, lr=1e30, warmup=0.0)
    checkpoint = tmp_path / "best.safetensors"
    result = fine_tune(
        model,
        examples[::2],
        examples[1::2],
        images,
        InputPipeline(preprocessing),
        settings,
        callbacks=[Checkpoints(best=checkpoint)],
    )
    assert result.stopped.startswith("diverged")
    kept = load_file(checkpoint) if result.best_epoch else before  # the best epoch, or none
    assert all(torch.equal(kept[k], v) for k, v in model.state_dict().items())
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_from_scratch_skips_unreadable_files_too(small_faces, tmp_path):
    data = tmp_path / "faces"
    shutil.copytree(small_faces, data)
    good = sorted((data / "face").glob("*.png"))[0].read_bytes()
    (data / "face" / "cut.png").write_bytes(good[: len(good) // 2])
    result = headstart.fit(
        data,
        pretrained=False,
        strategy="full",
        epochs=1,
        input_size=64,  # the skipped file is the subject, not the resolution
        tta="none",
        runs_dir=tmp_path / "runs",
        quiet=True,
    )
    assert [skip.path.name for skip in result.skipped] == ["cut.png"]
    assert result.plan.strategy == "full"
    assert (result.run_dir / "model" / "model.safetensors").exists()


def test_the_same_fit_twice_predicts_the_same_bytes(small_faces, tmp_path, capsys):
    """No decision depends on the clock or the machine's load: same data, flags and seed, the
    same model, to the last digit of its predictions."""
    from headstart.cli import main

    outputs = []
    for name in ("first", "second"):
        fit = ["fit", str(small_faces), "--strategy", "fine-tune", "--epochs", "1"]
        assert main([*fit, "--runs-dir", str(tmp_path), "--name", name, "--quiet"]) == 0
        capsys.readouterr()
        assert main(["predict", str(tmp_path / name), str(small_faces), "--csv"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].count("\n") > len(
        list(small_faces.rglob("*.png"))
    )
