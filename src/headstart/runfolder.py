"""A run is a folder that holds everything it produced: the single source of truth.

This module owns the folder's layout: every file name is defined here, and both the stages
that write a run and the commands that read one (``report``, ``predict``, ``--resume``) go
through :class:`RunFolder`::

    runs/<name>/
        config.yaml, config.json    the resolved settings (config.yaml is what --resume reads)
        dataset.json, splits.csv    classes, counts, skipped files; which file went where
        audit/                      audit.json, contact sheets, duplicate and label-issue grids
        plan.json                   the strategy, its settings and why (written once)
        checks.json                 the sanity checks
        lr_find.json, lr_find.png   the learning-rate range test, when fit ran it
        metrics.jsonl               one line per stage or epoch, appended as it happens
        progress.json               how far the fine-tuning got
        fixed_batch.json            a fixed validation batch predicted at every epoch
        diagnosis.json              what the training curves show
        compare_scratch.json        transfer against training from scratch
        checkpoints/                best.safetensors, last.pt (the state --resume goes on from)
        tensorboard/                event files
        model/                      the bundle: model.safetensors and headstart.json
        predictions.npz             validation and test log-probabilities
        thumbnails.npz              the images the report shows
        summary.json                the final scores and what was kept
        report.html                 everything above, for a person
        failed.json                 why the run failed, when it did (such a folder never
                                    blocks a new run of the same name)
        .lock                       held by the process running the fit
"""

from __future__ import annotations

import contextlib
import csv
import errno
import itertools
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import HeadstartError
from .storage import append_line, write_atomically

try:  # advisory locks: a second process can tell a run folder is in use
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = [
    "ADAPTATION",
    "AUDIT_JSON",
    "CHECKS",
    "COMPARE_SCRATCH",
    "CONFIG_JSON",
    "CONFIG_YAML",
    "DATASET",
    "DIAGNOSIS",
    "DUPLICATES_GRID",
    "FAILED",
    "FIXED_BATCH",
    "LABEL_ISSUES_GRID",
    "LR_FIND",
    "LR_FIND_PLOT",
    "METRICS",
    "PLAN",
    "PREDICTIONS",
    "PROGRESS",
    "REPORT",
    "SPLITS",
    "SUMMARY",
    "THUMBNAILS",
    "RunFolder",
    "new_folder",
]

CONFIG_YAML = "config.yaml"
CONFIG_JSON = "config.json"
DATASET = "dataset.json"
SPLITS = "splits.csv"
AUDIT = "audit"
AUDIT_JSON = "audit.json"
DUPLICATES_GRID = "duplicates.png"
LABEL_ISSUES_GRID = "label-issues.png"
CONTACT_SHEETS = "contact-sheets"
PLAN = "plan.json"
CHECKS = "checks.json"
LR_FIND = "lr_find.json"
LR_FIND_PLOT = "lr_find.png"
RANKING = "ranking.json"
METRICS = "metrics.jsonl"
PROGRESS = "progress.json"
FIXED_BATCH = "fixed_batch.json"
DIAGNOSIS = "diagnosis.json"
COMPARE_SCRATCH = "compare_scratch.json"
ENSEMBLE = "ensemble.json"
DISTILLATION = "distillation.json"
ADAPTATION = "adaptation.json"
STUDY = "study.db"
SEARCH = "search.json"
CHECKPOINTS = "checkpoints"
BEST_CHECKPOINT = "best.safetensors"
TRAINING_STATE = "last.pt"
TENSORBOARD = "tensorboard"
MODEL = "model"
PREDICTIONS = "predictions.npz"
#: Every held-out text or number with its label and prediction, to read (texts, regressions).
PREDICTIONS_CSV = "predictions.csv"
THUMBNAILS = "thumbnails.npz"
SUMMARY = "summary.json"
REPORT = "report.html"
FAILED = "failed.json"
LOCK = ".lock"

#: What a run writes at the top of its folder: a folder holding nothing else may be a run that
#: was killed, and is reclaimed; one holding anything else is not headstart's to empty.
RUN_ENTRIES = frozenset(
    {
        CONFIG_YAML,
        CONFIG_JSON,
        DATASET,
        SPLITS,
        AUDIT,
        AUDIT_JSON,
        PLAN,
        CHECKS,
        LR_FIND,
        LR_FIND_PLOT,
        METRICS,
        PROGRESS,
        FIXED_BATCH,
        DIAGNOSIS,
        COMPARE_SCRATCH,
        ENSEMBLE,
        DISTILLATION,
        ADAPTATION,
        STUDY,
        # SQLite's journal beside the study, left by a tune killed mid-write.
        f"{STUDY}-journal",
        f"{STUDY}-wal",
        f"{STUDY}-shm",
        SEARCH,
        CHECKPOINTS,
        TENSORBOARD,
        MODEL,
        PREDICTIONS,
        PREDICTIONS_CSV,
        THUMBNAILS,
        SUMMARY,
        REPORT,
        FAILED,
        LOCK,
    }
)


def new_folder(root: str | Path, stem: str) -> Path:
    """A folder ``<root>/<stem>-<n>`` that does not exist yet, with the first free ``n``.

    Only the name is chosen: the caller creates it. ``stem`` is reduced to file-name-safe
    characters.
    """
    root = Path(root)
    return next(path for path in _numbered(root, stem) if not path.exists())


def _writer_is_gone(partial: Path) -> bool:
    """Whether the process that wrote ``partial`` (``<name>.<pid>-<thread>.partial``, as
    :func:`~headstart.storage.write_atomically` names it) has ended."""
    match = re.search(r"\.(\d+)-\d+\.partial$", partial.name)
    if match is None:
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def _numbered(root: Path, stem: str) -> Iterator[Path]:
    """``<root>/<stem>-1``, ``-2``, ...: ``stem`` reduced to file-name-safe characters."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "run"
    return (root / f"{stem}-{n}" for n in itertools.count(1))


class RunFolder:
    """One run's folder: where each file lives, and reading and writing them."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._json: dict[str, Any] = {}

    @classmethod
    def create(cls, root: str | Path, name: str | None, data_name: str) -> RunFolder:
        """A new run folder, held by this process until it ends (so a second fit can tell it
        is in use). Without a name: ``<root>/<data>-<n>``, the first ``n`` free.

        A folder is free when it does not exist, or when the run in it failed (see
        :meth:`running`) or was killed before it had anything to resume: its
        contents are replaced. A run that finished, that can be resumed, or that another
        process is running is never touched: a named one is refused.
        """
        if name:
            if Path(name).name != name or name in (".", ".."):
                raise HeadstartError(
                    f"--name {name!r}: a run's name is a folder name, without '/' or '..' "
                    "(--runs-dir says where runs go)"
                )
            path = Path(root) / name
            claimed = cls._claim(path)
            if isinstance(claimed, str):
                raise HeadstartError(f"run folder {path} {claimed}; choose another --name")
            return claimed
        for path in _numbered(Path(root), data_name):
            claimed = cls._claim(path)
            if not isinstance(claimed, str):
                return claimed
        raise AssertionError("unreachable: the numbering never ends")

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """An existing run folder, held by this process (``--resume``); refused when another
        process is running it."""
        run = cls(path)
        if not run._lock():
            raise HeadstartError(f"run folder {run.path} is in use by another headstart process")
        for partial in run.path.rglob("*.partial"):
            if _writer_is_gone(partial):  # killed mid-write: nobody finishes it now
                partial.unlink(missing_ok=True)
        return run

    @classmethod
    def _claim(cls, path: Path) -> RunFolder | str:
        """``path`` as a fresh run folder held by this process, or why it is not free."""
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise HeadstartError(
                f"cannot create the run folder {path}: {error.strerror or error}"
            ) from None
        if not path.is_dir():
            return "exists and is not a folder"
        strangers = sorted(
            child.name
            for child in path.iterdir()
            if child.name not in RUN_ENTRIES and not child.name.endswith(".partial")
        )
        if strangers:
            return f"holds files that are not a headstart run's (e.g. {strangers[0]})"
        run = cls(path)
        if not run._lock():
            return "is in use by another headstart process (or cannot be written here)"
        if run.exists(SUMMARY) and not run.exists(FAILED):
            run.release()
            return "already holds a finished run"
        if run.exists(STUDY):  # a search's trials: hours of work a rerun would wipe
            run.release()
            return (
                f"holds a tuning study (`headstart tune DATA --storage sqlite:///"
                f"{(path / STUDY).resolve()} --study {path.name}` goes on with it)"
            )
        if run.resumable and not run.exists(FAILED):
            run.release()
            return "holds a run that can go on (`headstart fit --resume` it)"
        try:
            for child in path.iterdir():  # a failed or abandoned run: replaced
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                elif child.name != LOCK:
                    child.unlink()
            (path / CHECKPOINTS).mkdir()
        except BaseException:
            run.release()
            raise
        return run

    def _lock(self) -> bool:
        """Hold ``.lock`` in the folder for as long as this process lives (the system lets go
        of it when the process ends, however it ends)."""
        if fcntl is None:  # no advisory locks here: nothing to tell runs apart with
            return True
        try:
            handle = open(self.path / LOCK, "a")  # noqa: SIM115 - held open on purpose
        except OSError:  # a folder this process may not write: not a run it can hold
            return False
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                handle.close()
                return False
            # A file system without locks (some network mounts): held, as without fcntl.
        self._held = handle
        return True

    def release(self) -> None:
        """Let go of the folder (the end of :meth:`running` does)."""
        held = getattr(self, "_held", None)
        if held is not None:
            held.close()
            self._held = None

    # --- Where things are -------------------------------------------------------------------

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def bundle(self) -> Path:
        return self.path / MODEL

    @property
    def audit(self) -> Path:
        return self.path / AUDIT

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def best_checkpoint(self) -> Path:
        return self.path / CHECKPOINTS / BEST_CHECKPOINT

    @property
    def training_state(self) -> Path:
        """Everything ``--resume`` needs (weights, optimiser, schedule), after every epoch."""
        return self.path / CHECKPOINTS / TRAINING_STATE

    def exists(self, name: str) -> bool:
        return (self.path / name).exists()

    @property
    def resumable(self) -> bool:
        """Whether a fine-tuning left a state to go on from (``--resume``)."""
        return self.training_state.exists()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The block that runs the fit: the folder is let go of when it ends. On any error in
        it, the run is marked failed (``failed.json``, with the reason), so that it never
        blocks a new run of its name, unless it left a fine-tuning state to resume from: then
        it stays a run that ``--resume`` goes on with. The error goes on."""
        try:
            yield
        except BaseException as error:
            if not self.resumable:
                with contextlib.suppress(OSError):  # a full disk may refuse this too
                    reason = str(error) or type(error).__name__
                    self.write_json(FAILED, {"error": type(error).__name__, "reason": reason})
            raise
        finally:
            self.release()

    # --- Writing ----------------------------------------------------------------------------

    def discard(self, name: str) -> None:
        """Remove ``name`` (relative to the run), if there."""
        (self.path / name).unlink(missing_ok=True)
        self._json.pop(name, None)

    def write_json(self, name: str, data: Any) -> Path:
        """``data`` as ``name``, written whole or not at all (a partial file, then a rename)."""
        text = json.dumps(_clean(data), indent=2, sort_keys=False) + "\n"
        target = write_atomically(self.path / name, text.encode())
        self._json.pop(name, None)
        return target

    def log_metrics(self, record: dict) -> None:
        """Append one line to ``metrics.jsonl``, flushed at once so a crash loses nothing (a
        line a crash cut short is ended first, so that it spoils only itself)."""
        append_line(self.path / METRICS, json.dumps(_clean({"time": time.time(), **record})))
        self.__dict__.pop("metrics", None)

    def rewrite_metrics(self, records: list[dict]) -> None:
        """``metrics.jsonl`` made of ``records`` (a resumed run's history is the truth)."""
        lines = [json.dumps(_clean(record)) + "\n" for record in records]
        write_atomically(self.path / METRICS, "".join(lines).encode())
        self.__dict__.pop("metrics", None)

    # --- Reading ----------------------------------------------------------------------------

    def json(self, name: str) -> Any:
        """The content of ``name`` (relative to the run), or None when it is absent."""
        if name not in self._json:
            file = self.path / name
            try:
                self._json[name] = json.loads(file.read_text()) if file.exists() else None
            except ValueError as error:
                raise ValueError(f"{name} is not valid JSON ({error})") from None
        return self._json[name]

    @cached_property
    def metrics(self) -> list[dict]:
        """The lines of ``metrics.jsonl``; a line cut short by a crash is skipped."""
        file = self.path / METRICS
        if not file.exists():
            return []
        records = []
        for line in file.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    @property
    def epochs(self) -> list[dict]:
        return [r for r in self.metrics if "epoch" in r]

    @property
    def probe(self) -> dict | None:
        return next((r for r in self.metrics if r.get("stage") == "linear-probe"), None)

    @property
    def classes(self) -> list[str]:
        dataset = self.json(DATASET) or {}
        return list(dataset.get("classes") or [])

    @property
    def scores(self) -> dict[str, dict]:
        return (self.json(SUMMARY) or {}).get("scores") or {}

    @property
    def data(self) -> Path | None:
        """The data the run was fitted on (as given, resolved)."""
        data = (self.json(CONFIG_JSON) or {}).get("data")
        return Path(data) if data else None

    @cached_property
    def splits(self) -> list[tuple[Path, str, str]]:
        """Every image of the run: ``(path, label, split)``, as ``splits.csv`` records it."""
        file = self.path / SPLITS
        if not file.exists():
            return []
        with open(file, newline="", encoding="utf-8", errors="surrogateescape") as rows:
            return [(Path(r["path"]), r["label"], r["split"]) for r in csv.DictReader(rows)]

    @classmethod
    def of_bundle(cls, bundle: str | Path) -> RunFolder | None:
        """The run that wrote the model bundle at ``bundle`` (the run folder, its ``model/``,
        or an export of it beside it, ``model-onnx/``), when the bundle still lies in it; None
        for a bundle on its own."""
        path = Path(bundle).resolve()
        in_run = path.name == MODEL or path.name.startswith(f"{MODEL}-")
        for candidate in (path, path.parent if in_run else None):
            if candidate is not None and (candidate / SPLITS).exists():
                return cls(candidate)
        return None


def _clean(value: Any) -> Any:
    """JSON-safe: paths as strings, NaN and infinity as null (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
