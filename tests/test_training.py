"""The fine-tuning loop's levers, each shown by its effect: frozen stages stay bit-identical,
learning rates follow the plan, gradual unfreezing releases one stage per epoch, a resumed run
ends where an uninterrupted one does, and two processes under torchrun train the model one
process trains."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.classifier import Classifier, layer_groups, new_head
from headstart.data.augment import AugmentSettings
from headstart.data.decoded import DecodedImages
from headstart.errors import HeadstartError
from headstart.inputs import InputPipeline
from headstart.models import Preprocessing, create_backbone
from headstart.training.callbacks import Checkpoints, OnBatch, StopTraining
from headstart.training.finetune import FineTuneSettings, Resume, fine_tune
from headstart.training.freezing import parameter_groups, trainable_stages_for

STAGES = 6  # test_efficientnet's stages (timm's group_matcher)


def stripes(root: Path, n: int = 16) -> list[tuple[Path, int]]:
    """Two classes a small network learns in a few steps: horizontal and vertical stripes."""
    rng = np.random.default_rng(0)
    examples = []
    for label, axis in enumerate((0, 1)):
        for i in range(n):
            period = int(rng.integers(4, 9))
            wave = (np.arange(72) // period) % 2 * 180 + rng.integers(0, 60)
            pixels = np.broadcast_to(wave[:, None] if axis == 0 else wave[None, :], (72, 72))
            noisy = np.clip(pixels + rng.normal(0, 20, (72, 72)), 0, 255).astype(np.uint8)
            path = root / f"{label}-{i}.png"
            Image.fromarray(np.stack([noisy] * 3, axis=-1)).save(path)
            examples.append((path, label))
    return examples


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stripes")
    examples = stripes(root)
    images = DecodedImages(72, "bilinear", root / "cache")
    return examples[::2], examples[1::2], images


def tiny_network(seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    backbone, preprocessing, _ = create_backbone("test_efficientnet", pretrained=False)
    return Classifier(backbone, new_head(backbone.num_features, [8, 8]), preprocessing)


def crops_of(side: int, preprocessing: Preprocessing) -> InputPipeline:
    """The network's inputs as ``side`` x ``side`` centre crops."""
    return InputPipeline(replace(preprocessing, input_size=(3, side, side)))


#: 64 x 64 crops of the 72-pixel decoded stripes.
INPUTS = crops_of(64, create_backbone("test_efficientnet", pretrained=False)[1])


def settings(**changes) -> FineTuneSettings:
    quick = dict(epochs=2, batch_size=8, lr=3e-3, patience=None, augment=AugmentSettings("light"))
    return FineTuneSettings(**(quick | changes))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def stage_names(model: Classifier) -> list[set[str]]:
    """The state-dict names (weights and batch-norm buffers) of each stage, stem first."""
    by_param = {id(p): n for n, p in model.backbone.named_parameters()}
    stages = []
    for params in layer_groups(model.backbone):
        modules = {by_param[id(p)].rsplit(".", 1)[0] for p in params}
        stages.append(
            {f"backbone.{k}" for k in model.backbone.state_dict() if k.rsplit(".", 1)[0] in modules}
        )
    return stages


def test_frozen_stages_and_their_statistics_stay_bit_identical(data):
    train, val, images = data
    model = tiny_network()
    before = snapshot(model)
    # Statistics adapt where stages train, so a frozen stage's batch norm is really tested.
    fine_tune(
        model, train, val, images, INPUTS, settings(freeze=STAGES - 2, frozen_norm_statistics=False)
    )
    after = snapshot(model)
    stages = stage_names(model)
    for names in stages[:-2]:
        assert all(torch.equal(before[n], after[n]) for n in names)
    for names in stages[-2:]:
        assert any(not torch.equal(before[n], after[n]) for n in names if "weight" in n)
    top_means = [n for n in stages[-1] if n.endswith("running_mean")]
    assert top_means and any(not torch.equal(before[n], after[n]) for n in top_means)


def test_learning_rates_decay_layer_by_layer_as_planned(data):
    train, val, images = data
    model = tiny_network()
    plan = settings(lr=1e-3, head_lr_scale=3.0, layer_decay=0.5, freeze=STAGES - 3)
    groups = parameter_groups(model, plan)
    assert [g["name"] for g in groups] == ["head", "stage 5", "stage 4", "stage 3"]
    assert [g["lr"] for g in groups] == pytest.approx([3e-3, 1e-3, 5e-4, 2.5e-4])

    seen = []
    fine_tune(model, train, val, images, INPUTS, plan, callbacks=[OnBatch(seen.append)])
    for step in seen:  # the schedule scales every group alike: the ratios hold at every step
        assert step.lrs["stage 4"] / step.lrs["stage 5"] == pytest.approx(0.5)
        assert step.lrs["head"] / step.lrs["stage 5"] == pytest.approx(3.0)
    peak = max(step.lrs["stage 5"] for step in seen)
    assert peak == pytest.approx(1e-3, rel=0.05)


def test_gradual_unfreezing_releases_one_stage_per_epoch(data):
    train, val, images = data
    model = tiny_network()
    stages = stage_names(model)
    before = snapshot(model)
    plan = settings(epochs=1, freeze=STAGES - 3, unfreeze="gradual")
    result = fine_tune(model, train, val, images, INPUTS, plan)
    after = snapshot(model)
    weights = [sorted(n for n in names if n.endswith("weight")) for names in stages]
    assert any(not torch.equal(before[n], after[n]) for n in weights[-1])  # the top trained
    assert all(torch.equal(before[n], after[n]) for n in weights[-2])  # the next not yet
    assert result.history[0]["stages_trained"] == 1

    longer = fine_tune(
        tiny_network(),
        train,
        val,
        images,
        INPUTS,
        settings(epochs=3, freeze=STAGES - 3, unfreeze="gradual"),
    )
    assert [r["stages_trained"] for r in longer.history] == [1, 2, 3]


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(data, tmp_path):
    train, val, images = data
    plan = settings(epochs=3, freeze=STAGES - 2, ema=0.9, mixup=0.2)
    whole = tiny_network()
    expected = fine_tune(
        whole, train, val, images, INPUTS, plan, callbacks=[Checkpoints(state=tmp_path / "w.pt")]
    )

    def ctrl_c_in_epoch_two(step):
        if step.epoch == 2:
            raise KeyboardInterrupt

    broken = tiny_network()
    state = tmp_path / "broken.pt"
    saving = Checkpoints(state=state)
    first = fine_tune(
        broken, train, val, images, INPUTS, plan, callbacks=[saving, OnBatch(ctrl_c_in_epoch_two)]
    )
    assert first.stopped == "interrupted" and len(first.history) == 1

    resumed_model = tiny_network()
    resumed = fine_tune(
        resumed_model, train, val, images, INPUTS, plan, callbacks=[saving], resume_from=state
    )
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.best_epoch == expected.best_epoch
    for name, tensor in whole.state_dict().items():
        torch.testing.assert_close(resumed_model.state_dict()[name], tensor)


def test_an_interrupted_run_stops_early_where_an_uninterrupted_one_does(data, tmp_path):
    """Early stopping counts from the best epoch, not from where the run was resumed."""
    train, val, images = data
    standing_still = settings(epochs=6, lr=1e-12, head_lr_scale=1.0, patience=2)
    whole = fine_tune(tiny_network(), train, val, images, INPUTS, standing_still)
    assert whole.stopped == "early stopping" and len(whole.history) == 3

    def ctrl_c_in_epoch_three(step):
        if step.epoch == 3:
            raise KeyboardInterrupt

    state = tmp_path / "state.pt"
    saving = Checkpoints(state=state)
    watched = [saving, OnBatch(ctrl_c_in_epoch_three)]
    fine_tune(tiny_network(), train, val, images, INPUTS, standing_still, callbacks=watched)
    resumed = fine_tune(
        tiny_network(), train, val, images, INPUTS, standing_still, resume_from=state
    )
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.stopped == "early stopping"


def test_a_run_whose_training_had_ended_goes_on_without_another_epoch(data, tmp_path):
    """Killed after it stopped early and before the run finished: resumed, it stops there."""
    train, val, images = data
    standing_still = settings(epochs=6, lr=1e-12, head_lr_scale=1.0, patience=2)
    state = tmp_path / "state.pt"
    whole = tiny_network()
    ended = fine_tune(
        whole, train, val, images, INPUTS, standing_still, callbacks=[Checkpoints(state=state)]
    )
    assert ended.stopped == "early stopping" and len(ended.history) == 3
    again = tiny_network()
    resumed = fine_tune(
        again, train, val, images, INPUTS, standing_still, resume_from=Resume(state, ended.stopped)
    )
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.stopped == "early stopping" and resumed.best_epoch == ended.best_epoch
    for name, tensor in whole.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], tensor, rtol=0, atol=0)
    # Asked to train on, it does, its patience counted anew from where it had stopped.
    longer = fine_tune(
        tiny_network(),
        train,
        val,
        images,
        INPUTS,
        standing_still,
        resume_from=Resume(state, longer=True),
    )
    assert [r["epoch"] for r in longer.history] == [1, 2, 3, 4, 5]


def test_a_run_trained_longer_and_interrupted_keeps_its_patience(data, tmp_path):
    train, val, images = data
    standing_still = settings(epochs=3, lr=1e-12, head_lr_scale=1.0, patience=3)
    first = tmp_path / "first.pt"
    fine_tune(
        tiny_network(),
        train,
        val,
        images,
        INPUTS,
        standing_still,
        callbacks=[Checkpoints(state=first)],
    )
    longer = replace(standing_still, epochs=8)
    whole = fine_tune(tiny_network(), train, val, images, INPUTS, longer, resume_from=first)
    assert [r["epoch"] for r in whole.history] == [1, 2, 3, 4, 5, 6]  # patience from epoch 3

    def ctrl_c_in_epoch_five(step):
        if step.epoch == 5:
            raise KeyboardInterrupt

    state = tmp_path / "longer.pt"
    shutil.copy(first, state)
    watched = [Checkpoints(state=state), OnBatch(ctrl_c_in_epoch_five)]
    fine_tune(
        tiny_network(), train, val, images, INPUTS, longer, callbacks=watched, resume_from=state
    )
    resumed = fine_tune(tiny_network(), train, val, images, INPUTS, longer, resume_from=state)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert resumed.stopped == "early stopping"


def test_a_damaged_training_state_is_refused_in_one_line(data, tmp_path):
    train, val, images = data
    state = tmp_path / "last.pt"
    state.write_bytes(b"PK\x03\x04 not a checkpoint at all")
    with pytest.raises(HeadstartError, match=r"cannot resume from .*last\.pt: not a training"):
        fine_tune(tiny_network(), train, val, images, INPUTS, settings(), resume_from=state)


def test_a_finished_run_can_train_longer_but_not_with_other_settings(data, tmp_path):
    train, val, images = data
    state = tmp_path / "state.pt"
    saving = [Checkpoints(state=state)]
    fine_tune(tiny_network(), train, val, images, INPUTS, settings(epochs=2), callbacks=saving)
    longer = fine_tune(
        tiny_network(), train, val, images, INPUTS, settings(epochs=3), resume_from=state
    )
    assert [r["epoch"] for r in longer.history] == [1, 2, 3]
    with pytest.raises(HeadstartError, match="weight_decay"):
        fine_tune(
            tiny_network(),
            train,
            val,
            images,
            INPUTS,
            settings(epochs=4, weight_decay=0.5),
            resume_from=state,
        )


def test_a_callback_can_stop_training_and_the_best_model_is_kept(data):
    train, val, images = data

    def stop(step):
        if step.step == 3:
            raise StopTraining("stopped: enough")

    result = fine_tune(
        tiny_network(), train, val, images, INPUTS, settings(epochs=3), callbacks=[OnBatch(stop)]
    )
    assert result.stopped == "stopped: enough"


def test_freeze_depth_beyond_the_model_is_refused():
    assert trainable_stages_for("all", 6) == 0
    assert trainable_stages_for("none", 6) is None
    assert trainable_stages_for(4, 6) == 2
    with pytest.raises(HeadstartError, match="freeze=7: this model has only 6 stages"):
        trainable_stages_for(7, 6)


DISTRIBUTED = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from test_training import data_for_processes, tiny_network, settings, INPUTS, STAGES
    from headstart.training import distributed
    from headstart.training.finetune import fine_tune

    distributed.init_from_environment()
    train, val, images = data_for_processes(Path({root!r}))
    model = tiny_network()
    fine_tune(model, train, val, images, INPUTS, settings(epochs=2, freeze=STAGES - 3))
    if distributed.is_main():
        torch.save(model.state_dict(), {out!r})
    """
)


def data_for_processes(root: Path):
    examples = stripes(root)
    return examples[::2], examples[1::2], DecodedImages(72, "bilinear", None)


def test_two_processes_under_torchrun_train_the_single_process_model(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    train, val, images = data_for_processes(root)
    single = tiny_network()
    fine_tune(single, train, val, images, INPUTS, settings(epochs=2, freeze=STAGES - 3))

    script = tmp_path / "train.py"
    out = tmp_path / "ddp.pt"
    tests = str(Path(__file__).parent)
    script.write_text(DISTRIBUTED.format(tests=tests, root=str(root), out=str(out)))
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)
    # Within float noise: the shards' gradients are summed in another order than the whole
    # batch's, and Adam divides by the gradients' own small scale.
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(ddp[name], tensor, rtol=1e-3, atol=1e-4)


def test_a_balanced_sampler_draws_every_class_alike(tmp_path, monkeypatch):
    from headstart.training import finetune

    examples = stripes(tmp_path, n=40)
    rare = [e for e in examples if e[1] == 0][:8] + [e for e in examples if e[1] == 1]  # 1:5
    images = DecodedImages(72, "bilinear", None)
    seen: list[int] = []
    decode = finetune.decode_batch

    def counting(images, batch):
        pixels, labels = decode(images, batch)
        seen.extend(labels.tolist())
        return pixels, labels

    monkeypatch.setattr(finetune, "decode_batch", counting)
    plan = settings(epochs=2, balance="sampler", freeze="all")
    fine_tune(tiny_network(), rare, [], images, INPUTS, plan)
    assert len(seen) == 2 * (len(rare) // 8) * 8
    assert 0.35 < np.mean(np.array(seen) == 0) < 0.65  # 1 in 6 without the sampler


def test_early_stopping_keeps_the_best_epoch(data):
    train, val, images = data
    frozen_in_place = settings(epochs=5, lr=1e-12, head_lr_scale=1.0, patience=2)
    result = fine_tune(tiny_network(), train, val, images, INPUTS, frozen_in_place)
    assert result.stopped == "early stopping"
    assert result.best_epoch == 1 and len(result.history) == 3


def test_dropout_and_drop_path_act_in_training_only():
    backbone, _, _ = create_backbone(
        "test_efficientnet", pretrained=False, drop_rate=0.5, drop_path_rate=0.3
    )
    pixels = torch.rand(2, 3, 64, 64)
    backbone.train()
    assert not torch.equal(backbone(pixels), backbone(pixels))
    backbone.eval()
    assert torch.equal(backbone(pixels), backbone(pixels))


def test_bfloat16_trains_on_the_cpu_and_float16_is_refused_there(data):
    train, val, images = data
    result = fine_tune(tiny_network(), train, val, images, INPUTS, settings(precision="bf16"))
    assert all(np.isfinite(r["train_loss"]) for r in result.history)
    with pytest.raises(HeadstartError, match="precision='fp16' needs a CUDA device"):
        fine_tune(tiny_network(), train, val, images, INPUTS, settings(precision="fp16"))
