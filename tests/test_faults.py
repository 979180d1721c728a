"""Faults, injected: a full disk, a process killed mid-write or mid-extraction. Each ends in a
clear one-line error or a rerun that gives what an uninterrupted run gives; never a torn file
served as whole, never a folder that blocks the next run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.cli import main
from headstart.storage import write_atomically, write_png


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB file system (tmpfs): room for a run's records, not for its model."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], capture_output=True)


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def test_a_full_disk_during_fit_is_one_line_and_blocks_nothing(capsys, small_faces, small_disk):
    fit = ["fit", str(small_faces), "--runs-dir", str(small_disk), "--name", "run", "--quiet"]
    assert main(fit) == 2
    said = one_line(capsys.readouterr().err)
    assert "No space left on device" in said and "model.safetensors" in said
    assert not list(small_disk.rglob("*.partial"))  # nothing half-written
    assert (small_disk / "run" / "failed.json").exists()
    # With room again, the same command runs in the same folder.
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    assert main(fit) == 0
    assert (small_disk / "run" / "model" / "model.safetensors").exists()


def fill(disk: Path) -> None:
    with contextlib.suppress(OSError), open(disk / "filler", "wb") as filler:
        while True:
            filler.write(bytes(1 << 16))
            filler.flush()


@pytest.mark.slow  # predicts 200 photos in a fresh process
def test_a_full_disk_under_predict_csv_is_one_line(fitted, faces, small_disk):
    fill(small_disk)
    with open(small_disk / "predictions.csv", "w") as output:
        command = [sys.executable, "-m", "headstart", "predict", str(fitted.run_dir), str(faces)]
        done = subprocess.run(
            [*command, "--csv", "--quiet"],
            stdout=output,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert done.returncode == 2
    assert "No space left on device: the standard output" in one_line(done.stderr)


def test_a_write_that_fails_leaves_the_old_file_and_no_partial(tmp_path, monkeypatch):
    target = write_atomically(tmp_path / "state.json", b"old")

    def failing_replace(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match=r"state\.json"):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("kind", ["Pillow image", "Matplotlib figure"])
def test_a_picture_is_written_whole_or_not_at_all(tmp_path, monkeypatch, kind):
    if kind == "Pillow image":
        picture = Image.new("RGB", (8, 8), "red")
    else:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        picture = Figure(figsize=(1, 1))
    target = write_png(picture, tmp_path / "plot.png")
    assert Image.open(target).format == "PNG"

    def failing_replace(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match=r"plot\.png"):
        write_png(picture, target)
    assert list(tmp_path.iterdir()) == [target] and Image.open(target).format == "PNG"


@pytest.mark.slow  # three fits in fresh processes: about two minutes
def test_a_fit_killed_during_extraction_reruns_to_the_same_model(small_faces, tmp_path):
    def fit(name: str, cache: Path, kill_after_pixels: int | None = None) -> Path:
        command = [sys.executable, "-m", "headstart", "fit", str(small_faces), "--quiet"]
        command += ["--runs-dir", str(tmp_path / "runs"), "--name", name]
        env = {**os.environ, "HEADSTART_CACHE": str(cache)}
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        if kill_after_pixels is not None:
            while len(list(cache.rglob("*.npy"))) < kill_after_pixels:
                assert process.poll() is None, "the fit ended before it could be killed"
                time.sleep(0.05)
            process.send_signal(signal.SIGKILL)
            process.wait()
            return tmp_path / "runs" / name
        assert process.wait(timeout=600) == 0
        return tmp_path / "runs" / name

    fit("killed", tmp_path / "cache", kill_after_pixels=10)
    rerun = fit("killed", tmp_path / "cache")  # the killed run's folder is claimed again
    uninterrupted = fit("whole", tmp_path / "fresh-cache")
    ours, theirs = (np.load(run / "predictions.npz") for run in (rerun, uninterrupted))
    for key in theirs.files:
        assert np.array_equal(ours[key], theirs[key]), key


#: Run in a fresh process: the command line, with every write into the run folder counted
#: (whole files, pictures and the report among them, and each line appended to a log) and the
#: process killed (SIGKILL, as by the kernel or a power cut) at the chosen one, half of its
#: bytes written, as a crash in mid-write leaves them.
KILLED_AT_A_WRITE = """
import atexit, os, signal, sys, threading
from pathlib import Path

import headstart.storage as storage

runs, kill_at, counted = Path(sys.argv[1]).resolve(), int(sys.argv[2]), Path(sys.argv[3])
writes = []
whole, whole_line = storage.write_atomically, storage.append_line

def write_atomically(path, data):
    if runs in Path(path).resolve().parents:
        writes.append(str(path))
        if len(writes) == kill_at:
            partial = Path(f"{path}.{os.getpid()}-{threading.get_ident()}.partial")
            partial.write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    return whole(path, data)

def append_line(path, line):
    if runs in Path(path).resolve().parents:
        writes.append(str(path))
        if len(writes) == kill_at:
            with open(path, "a") as file:
                file.write(line[: len(line) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    return whole_line(path, line)

storage.write_atomically = write_atomically
storage.append_line = append_line
atexit.register(lambda: counted.write_text("\\n".join(writes)))
from headstart.cli import main
sys.exit(main(sys.argv[4:]))
"""


@pytest.mark.slow  # two short fits for every write the run makes: several minutes
def test_a_fit_killed_at_any_write_of_its_run_goes_on_to_the_same_model(small_faces, tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_AT_A_WRITE)
    runs, counted = tmp_path / "runs", tmp_path / "writes.txt"
    environment = {**os.environ, "HEADSTART_CACHE": str(tmp_path / "cache")}

    def headstart(*args: str, kill_at: int = 0) -> int:
        command = [sys.executable, str(script), str(runs), str(kill_at), str(counted), *args]
        return subprocess.run(command, env=environment, stdout=subprocess.DEVNULL).returncode

    def fit(name: str, kill_at: int = 0) -> int:
        settings = ["--strategy", "fine-tune", "--epochs", "3", "--batch-size", "8"]
        return headstart(
            "fit",
            str(small_faces),
            "--runs-dir",
            str(runs),
            "--name",
            name,
            "--quiet",
            *settings,
            kill_at=kill_at,
        )

    assert fit("whole") == 0
    writes = counted.read_text().splitlines()
    whole = runs / "whole"
    for kill_at in range(1, len(writes) + 1):
        name, write = f"killed-at-{kill_at}", writes[kill_at - 1]
        assert fit(name, kill_at) == -signal.SIGKILL, write
        run = runs / name
        if (run / "summary.json").exists():
            went_on = False  # killed after the last of the results: all of them are there
        elif (run / "checkpoints/last.pt").exists():
            assert headstart("fit", "--resume", str(run), "--quiet") == 0, write
            went_on = True
        else:
            assert fit(name) == 0, write  # the same command, the same folder
            went_on = True
        for file in ("model/model.safetensors", "model/headstart.json"):
            assert (run / file).read_bytes() == (whole / file).read_bytes(), (write, file)
        assert (run / "model/README.md").exists(), write  # (its plan's timings differ)
        ours, theirs = (np.load(r / "predictions.npz") for r in (run, whole))
        for key in theirs.files:
            assert np.array_equal(ours[key], theirs[key]), (write, key)
        if went_on:
            assert not list(run.rglob("*.partial")), write
