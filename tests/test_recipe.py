"""The recipe's levers through ``headstart fit``: a YAML file equals its flags, every choice
lands in the plan, bad combinations are refused up front, and a run can go on later."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from safetensors import safe_open

import headstart
from headstart import resume
from headstart.cli import main

QUICK = dict(checks=False, quiet=True)


@pytest.mark.slow  # three fits; the README fits from fit.yaml and test_config maps every key
def test_a_yaml_config_is_the_same_fit_as_its_flags(small_faces, tmp_path, capsys):
    config = tmp_path / "fit.yaml"
    config.write_text(
        "strategy: linear-probe\nprobe-penalty: l1\nseed: 3\nbalance: none\nno_augment: [flip]\n"
    )
    flags = ["--strategy", "linear-probe", "--probe-penalty", "l1", "--seed", "3"]
    flags += ["--balance", "none", "--no-augment", "flip"]
    runs = tmp_path / "runs"
    common = ["--runs-dir", str(runs), "--no-checks", "--quiet"]
    assert main(["fit", str(small_faces), "--config", str(config), "--name", "a", *common]) == 0
    assert main(["fit", str(small_faces), *flags, "--name", "b", *common]) == 0
    saved = [yaml.safe_load((runs / name / "config.yaml").read_text()) for name in "ab"]
    assert saved[0] | {"name": "b"} == saved[1]
    assert saved[0]["probe_penalty"] == "l1" and saved[0]["no_augment"] == ["flip"]
    # A flag given on the command line wins over the file.
    assert main(["fit", str(small_faces), "--config", str(config), "--seed", "4", *common]) == 0
    latest = max(runs.glob("faces-*"), key=lambda p: p.stat().st_mtime)
    assert yaml.safe_load((latest / "config.yaml").read_text())["seed"] == 4


def test_numbers_in_a_config_file_are_read_as_numbers(tmp_path):
    from headstart.config import load_config

    config = tmp_path / "fit.yaml"
    config.write_text("lr: 1e-4\nweight-decay: 5e-5\nepochs: 3\nfreeze: 2\n")
    assert load_config(config) == {"lr": 1e-4, "weight_decay": 5e-5, "epochs": 3, "freeze": 2}
    config.write_text("lr: fast\n")
    with pytest.raises(headstart.HeadstartError, match="lr='fast' is not a number"):
        load_config(config)


def test_a_config_file_with_an_unknown_setting_is_named(small_faces, tmp_path, capsys):
    config = tmp_path / "fit.yaml"
    config.write_text("learning_rate: 0.1\n")
    assert main(["fit", str(small_faces), "--config", str(config)]) == 2
    assert "unknown setting 'learning_rate'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(optimizer="lbfgs", strategy="fine-tune"), "optimizer='lbfgs' cannot fine-tune"),
        (dict(schedule="inverse-sqrt", warmup=0.0), "inverse-sqrt' needs a warm-up"),
        (dict(clip_grad=0.0), "clip_grad=0.0 must be a number above 0"),
        (dict(mixup=0.2, strategy="linear-probe"), "mixup/cutmix with strategy='linear-probe'"),
        (dict(freeze=99, strategy="fine-tune"), "freeze=99: this model has only"),
        (dict(freeze="all", unfreeze="gradual"), "nothing would ever be unfrozen"),
        (dict(schedule="exponential"), "schedule='exponential' is not one of"),
        (dict(augment="extreme"), "augment"),
        (dict(no_augment=["sharpen"]), "sharpen"),
        (
            dict(precision="fp16", device="cpu", strategy="fine-tune"),
            "precision='fp16' needs a CUDA",
        ),
    ],
)
def test_bad_combinations_are_refused_before_training(small_faces, tmp_path, settings, message):
    with pytest.raises(headstart.HeadstartError, match=message):
        headstart.fit(small_faces, runs_dir=tmp_path, **QUICK, **settings)
    assert not list(tmp_path.rglob("checkpoints/*")), "refused before any training"


def test_every_choice_is_written_into_the_plan(small_faces, tmp_path):
    result = headstart.fit(
        small_faces,
        strategy="fine-tune",
        epochs=1,
        freeze=4,
        optimizer="nesterov",
        schedule="one-cycle",
        mixup=0.2,
        ema=0.9,
        clip_grad=1.0,
        augment="standard",
        no_augment=["colour"],
        batch_size=16,
        tta="none",  # chosen after training, and not one of the plan's choices tested here
        runs_dir=tmp_path,
        **QUICK,
    )
    plan = json.loads((result.run_dir / "plan.json").read_text())
    tuned = plan["fine_tune"]
    assert tuned["optimizer"] == "nesterov" and tuned["schedule"] == "one-cycle"
    assert tuned["mixup"] == 0.2 and tuned["ema"] == 0.9 and tuned["clip_grad"] == 1.0
    assert tuned["augment"]["preset"] == "standard" and "colour" in tuned["augment"]["exclude"]
    assert tuned["freeze"] == 4  # the bottom 4 stages frozen, the same name all the way down
    reasons = " ".join(plan["reasons"])
    assert "freeze=4 was asked for" in reasons
    assert "linear scaling rule" in reasons  # batches of 16, not 32: the default rate halves
    assert "augmentation:" in reasons


@pytest.mark.slow  # the README trains a finished run longer twice
def test_a_run_can_train_longer_and_a_finished_one_says_how(small_faces, tmp_path):
    data = tmp_path / "faces"
    shutil.copytree(small_faces, data)
    first = headstart.fit(
        data,
        strategy="fine-tune",
        epochs=1,
        freeze=6,
        early_stopping=False,
        runs_dir=tmp_path,
        **QUICK,
    )
    with pytest.raises(headstart.HeadstartError, match="pass --epochs N"):
        resume(first.run_dir)
    assert main(["fit", "--resume", str(first.run_dir), "--epochs", "2", "--quiet"]) == 0
    records = [json.loads(line) for line in (first.run_dir / "metrics.jsonl").open()]
    assert [r["epoch"] for r in records if "epoch" in r] == [1, 2]
    assert sum(r.get("stage") == "linear-probe" for r in records) == 1  # not logged again
    assert (first.run_dir / "checkpoints" / "last.pt").exists()
    with pytest.raises(headstart.HeadstartError, match="already trained 2 epochs"):
        resume(first.run_dir, epochs=2)


@pytest.mark.slow  # test_training resumes a finished loop bit-exact
def test_a_run_killed_after_its_training_ended_goes_on_to_the_same_model(small_faces, tmp_path):
    run = headstart.fit(
        small_faces, strategy="fine-tune", epochs=2, freeze=6, runs_dir=tmp_path, **QUICK
    ).run_dir
    weights = (run / "model" / "model.safetensors").read_bytes()
    # As a kill after the training and before the results leaves it: no summary, the
    # bundle still the probe's (or half written), and the folder refused to a rerun.
    (run / "summary.json").unlink()
    (run / "model" / "model.safetensors").write_bytes(b"torn")
    with pytest.raises(headstart.HeadstartError, match="can go on"):
        headstart.fit(small_faces, runs_dir=tmp_path, name=run.name, **QUICK)
    resumed = resume(run, quiet=True)
    assert (run / "model" / "model.safetensors").read_bytes() == weights
    epochs = [r["epoch"] for r in map(json.loads, (run / "metrics.jsonl").open()) if "epoch" in r]
    assert epochs == [1, 2]  # no epoch more
    assert sum("stopped" in r for r in map(json.loads, (run / "metrics.jsonl").open())) == 1
    assert (run / "summary.json").exists() and resumed.stopped == "finished"


def test_resume_through_the_command_line_takes_no_other_settings(small_faces, tmp_path, capsys):
    code = main(["fit", "--resume", str(tmp_path), "--lr", "0.1"])
    assert code == 2 and "only --epochs and --quiet may be given" in capsys.readouterr().err


def test_augment_preview_writes_the_grid_of_training_tensors(small_faces, tmp_path, capsys):
    out = tmp_path / "preview.png"
    code = main(
        [
            "augment-preview",
            str(small_faces),
            "--out",
            str(out),
            "--images",
            "8",
            "--augment",
            "strong",
            "--mixup",
            "0.4",
        ]
    )
    assert code == 0 and out.stat().st_size > 10_000
    from PIL import Image

    assert Image.open(out).size[0] > 400


# slow: test_training's torchrun test checks DDP's model against one process's at every
# commit; this one, the whole command under torchrun, runs with `pytest -m slow`.
@pytest.mark.slow
def test_the_same_fit_command_runs_on_two_processes_under_torchrun(small_faces, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "headstart", "fit", str(small_faces)]
    command += ["--strategy", "fine-tune", "--epochs", "1", "--freeze", "6", "--no-checks"]
    command += ["--runs-dir", str(tmp_path / "runs"), "--name", "ddp", "--quiet"]
    command += ["--cache-dir", str(tmp_path / "cache")]
    launched = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("strategy:") == 1  # one process speaks for the run
    run = tmp_path / "runs" / "ddp"
    assert (run / "model" / "model.safetensors").exists()
    epochs = [r for r in map(json.loads, (run / "metrics.jsonl").open()) if "epoch" in r]
    assert [r["epoch"] for r in epochs] == [1]
    # The features were extracted once, half by each process, into the shared cache.
    images = len({p.read_bytes() for p in small_faces.rglob("*.png")})  # distinct contents
    stores = list((tmp_path / "cache").rglob("identity.json"))
    assert len(stores) == 2  # the plain view and the mirrored one
    for identity in stores:
        written = {}  # process id -> the images it put through the network
        for shard in identity.parent.glob("*.safetensors"):
            with safe_open(shard, framework="numpy") as file:
                keys = json.loads(file.metadata()["keys"])
            written.setdefault(shard.stem.split("-")[1], []).extend(keys)
        every = [key for keys in written.values() for key in keys]
        assert len(every) == len(set(every)) == images
        assert sorted(map(len, written.values())) == [images // 2, images - images // 2]


def test_four_channel_stacks_train_predict_and_report(tmp_path):
    """Classes told apart only by a fourth channel (a near-infrared band, say): the first
    convolution is adapted, the probe finds the signal, the bundle predicts stacks."""
    rng = np.random.default_rng(0)
    data = tmp_path / "scans"
    for label, axis in (("rows", 0), ("columns", 1)):
        (data / label).mkdir(parents=True)
        for i in range(16):
            colour = rng.integers(0, 256, (64, 64, 3))
            wave = (np.arange(64) // int(rng.integers(4, 9))) % 2 * 200 + 20
            band = np.broadcast_to(wave[:, None] if axis == 0 else wave[None, :], (64, 64))
            np.save(data / label / f"{i}.npy", np.dstack([colour, band]).astype(np.uint8))
    # Stripes of one period are shifted copies of each other: the audit rightly calls them
    # near duplicates, which is not what this test is about.
    result = headstart.fit(
        data, runs_dir=tmp_path / "runs", val_fraction=0.25, allow_leakage=True, **QUICK
    )
    assert result.model.preprocessing.input_size[0] == 4
    assert result.scores["val"]["accuracy"] >= 0.85
    assert any("4 channels" in reason for reason in result.plan.reasons)
    predictions = headstart.load(result.run_dir).predict(sorted((data / "rows").glob("*.npy"))[:4])
    assert [p.label for p in predictions].count("rows") >= 3
    assert (result.run_dir / "report.html").stat().st_size > 10_000
