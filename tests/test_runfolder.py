"""A run folder is never lost to a new run, and never blocks one for nothing: finished and
resumable runs are kept, failed and abandoned ones are replaced, and a run in progress is held
by its process."""

from __future__ import annotations

import pytest

from headstart import HeadstartError
from headstart.runfolder import CONFIG_JSON, FAILED, SUMMARY, RunFolder


def test_an_abandoned_or_failed_run_is_replaced_by_the_next_one(tmp_path):
    killed = tmp_path / "runs" / "photos-1"  # killed during extraction: config only
    killed.mkdir(parents=True)
    (killed / CONFIG_JSON).write_text("{}")
    failed = tmp_path / "runs" / "mine"
    failed.mkdir()
    (failed / FAILED).write_text("{}")
    (failed / "audit").mkdir()

    assert RunFolder.create(tmp_path / "runs", None, "photos").path == killed
    assert not (killed / CONFIG_JSON).exists()
    assert RunFolder.create(tmp_path / "runs", "mine", "photos").path == failed
    assert not (failed / "audit").exists()


def test_a_finished_or_resumable_run_is_kept_and_an_unnamed_one_moves_on(tmp_path):
    finished = tmp_path / "photos-1"
    finished.mkdir()
    (finished / SUMMARY).write_text("{}")
    resumable = tmp_path / "photos-2" / "checkpoints"
    resumable.mkdir(parents=True)
    (resumable / "last.pt").write_bytes(b"state")

    assert RunFolder.create(tmp_path, None, "photos").path == tmp_path / "photos-3"
    with pytest.raises(HeadstartError, match="already holds a finished run"):
        RunFolder.create(tmp_path, "photos-1", "photos")
    with pytest.raises(HeadstartError, match="--resume"):
        RunFolder.create(tmp_path, "photos-2", "photos")
    assert (finished / SUMMARY).exists() and (resumable / "last.pt").exists()


def test_a_run_in_progress_is_held_by_its_process(tmp_path):
    running = RunFolder.create(tmp_path, "busy", "photos")
    with pytest.raises(HeadstartError, match="in use by another headstart process"):
        RunFolder.create(tmp_path, "busy", "photos")
    with pytest.raises(HeadstartError, match="in use"):
        RunFolder.open(running.path)
    assert RunFolder.create(tmp_path, None, "busy").path == tmp_path / "busy-1"


def test_a_line_cut_short_by_a_crash_spoils_only_itself(tmp_path):
    run = RunFolder.create(tmp_path, "run", "photos")
    run.log_metrics({"epoch": 1, "val_accuracy": 0.5})
    with open(run / "metrics.jsonl", "a") as file:
        file.write('{"epoch": 2, "val_acc')  # killed mid-write
    run.log_metrics({"epoch": 2, "val_accuracy": 0.6})
    assert [r["epoch"] for r in run.metrics] == [1, 2]


def test_a_folder_that_is_not_a_run_is_never_emptied(tmp_path):
    photos = tmp_path / "photos"  # e.g. `--runs-dir . --name photos`, the data itself
    (photos / "cat").mkdir(parents=True)
    (photos / "cat" / "1.jpg").write_bytes(b"jpeg")
    (photos / "notes.txt").write_text("mine")
    with pytest.raises(HeadstartError, match="not a headstart run's"):
        RunFolder.create(tmp_path, "photos", "photos")
    assert (photos / "cat" / "1.jpg").exists() and (photos / "notes.txt").exists()
    for name in ("../elsewhere", "a/b", ".."):
        with pytest.raises(HeadstartError, match="a folder name"):
            RunFolder.create(tmp_path / "runs", name, "photos")
