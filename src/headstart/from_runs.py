"""Fits that begin from an earlier run: :func:`resume` goes on with it (after a crash, or to
train it longer), :func:`distill` trains a student of its model."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from .config import FitConfig, load_config, settings_table
from .errors import HeadstartError
from .recipe import fit, in_every_process, run_stages, scratch_unless_main
from .result import FitResult
from .runfolder import CONFIG_JSON, CONFIG_YAML, PLAN, PROGRESS, SUMMARY, RunFolder
from .stages.data import prepare
from .stages.distill import load_teacher, require_same_teaching
from .training.finetune import Resume
from .training.plan import Plan

__all__ = ["distill", "resume"]

#: What a student takes from its teacher's settings: how the data is read, split and
#: augmented (what the data allows), and where runs go. The network and how it trains are
#: the student's own: the plan decides them for it.
_TAUGHT = (
    "in_chans",
    "val_fraction",
    "test_fraction",
    "seed",
    "batch_size",
    "cache_dir",
    "device",
    "runs_dir",
    "allow_leakage",
    "calibration",
)
#: A student trains on mixed images unless told otherwise: on its teacher's own training
#: images the teacher is about as sure as the labels, and mixing makes its targets soft
#: (Beyer et al. 2022). Measured on the trash photos, a 2-member ensemble's student: 91.3%
#: on test with these (the teacher's mean top probability 71% on the mixed crops) against
#: 89.1% without; the ensemble 92.5%.
STUDENT_MIXING = {"mixup": 0.8, "cutmix": 1.0}


def distill(run_dir: str | Path, student: str | None = None, **settings) -> FitResult:
    """Distil the model of the finished run ``run_dir`` (an ensemble, say) into one
    ``student`` network (an architecture; by default the teacher's own): a new run on the
    teacher's data and split whose fine-tuning learns the teacher's probabilities, as
    ``fit(data, teacher=run_dir, arch=student)``. It ends with the student beside its
    teacher: accuracy, parameters, size and latency (``distillation.json``, the report).

    ``settings`` are fit's, over the teacher's data settings: ``input_size=160`` (a student
    at a smaller size costs less), ``unlabelled="more_photos/"`` (images the teacher labels
    for it), ``epochs``, ``distill_temperature``, ``name`` ... The student trains on mixed
    images (:data:`STUDENT_MIXING`) unless ``mixup``/``cutmix`` are given.
    """
    said = sorted({"arch", "teacher"} & set(settings))
    if said:
        raise HeadstartError(
            f"{', '.join(said)}: distill takes the teacher as its run and the student's "
            "architecture as `student`"
        )
    run = RunFolder(Path(run_dir).resolve())
    if not (run.exists(CONFIG_YAML) and run.exists(CONFIG_JSON) and run.exists(SUMMARY)):
        raise HeadstartError(
            f"{run_dir} is not a finished headstart run folder (no {CONFIG_YAML}, "
            f"{CONFIG_JSON} or {SUMMARY}): distil the run of a finished fit"
        )
    if (run.json(SUMMARY) or {}).get("modality") == "text":
        raise HeadstartError(f"{run_dir} holds a text model: distillation is built for images")
    task = (run.json(SUMMARY) or {}).get("task", "classification")
    if task != "classification":
        raise HeadstartError(f"{run_dir} is a {task} model: distillation is built for classifiers")
    saved = load_config(run / CONFIG_YAML)
    taught = {
        name: value
        for name, value in saved.items()
        if name in _TAUGHT or settings_table()[name].group == "augmentation"
    }
    arch = student or saved.get("arch") or FitConfig().arch
    if arch == saved.get("arch"):  # the teacher's own network: its weights, at its size
        plan = run.json(PLAN) or {}
        taught["input_size"] = plan.get("input_size") or saved.get("input_size")
        taught["weights"] = saved.get("weights")
    student_settings = {**taught, **STUDENT_MIXING, "arch": arch, "teacher": str(run.path)}
    config = FitConfig.of(**{**student_settings, **settings})
    return fit(run.json(CONFIG_JSON)["data"], config)


def resume(run_dir: str | Path, *, epochs: int | None = None, quiet: bool = False) -> FitResult:
    """Go on with the run in ``run_dir`` after a crash or Ctrl-C, from its last finished epoch,
    with the settings and the split it was started with; or, given more ``epochs`` than it has
    trained, train it longer ("leave it training"). An interrupted run resumed ends where an
    uninterrupted ``fit`` would have, within noise. Under ``torchrun``, as :func:`fit`."""
    if not (Path(run_dir) / CONFIG_YAML).exists():
        raise HeadstartError(f"{run_dir} is not a headstart run folder (no {CONFIG_YAML})")
    run = RunFolder(run_dir)
    saved = load_config(run / CONFIG_YAML)
    if saved.get("task", "classification") != "classification":
        raise HeadstartError(
            f"{run.path} is a {saved['task']} fit, which cannot be resumed: start a new "
            "`headstart fit` (the images' features are cached)"
        )
    data = run.json(CONFIG_JSON)["data"]
    plan = Plan.from_dict(run.json(PLAN)) if run.exists(PLAN) else None
    if plan is None or plan.fine_tune is None or not run.training_state.exists():
        raise HeadstartError(
            f"{run.path} has no fine-tuning to resume (it stopped before training, or its plan "
            "was the linear probe alone); start a new `headstart fit`"
        )
    progress = run.json(PROGRESS) or {}
    done, stopped = progress.get("epoch", 0), progress.get("stopped", "interrupted")
    planned = progress.get("planned", plan.fine_tune.epochs)  # more, once trained longer
    plan = replace(plan, fine_tune=replace(plan.fine_tune, epochs=planned))
    finished = stopped != "interrupted" and run.exists(SUMMARY)
    if saved.get("ensemble", 1) > 1 and (epochs is not None or finished):
        raise HeadstartError(
            f"{run.path} is an ensemble of {saved['ensemble']} fine-tunings: it cannot be "
            "trained longer (--epochs would lengthen its first member alone); fit again"
        )
    # A run killed after its training ended but before it finished (no summary) goes on
    # from there: no epoch more, the stages after training done again.
    if epochs is None and finished:
        raise HeadstartError(
            f"{run.path} ended after {done} of {planned} epochs ({stopped}); pass --epochs N "
            f"(more than {done}) to train it longer"
        )
    if epochs is not None and epochs <= done:
        raise HeadstartError(
            f"epochs={epochs}: the run has already trained {done} epochs; ask for more to go on"
        )
    if epochs is not None and epochs < planned and stopped == "interrupted":
        raise HeadstartError(
            f"epochs={epochs} is fewer than the {planned} this interrupted run planned: resume "
            f"it without --epochs, or with more than {planned} to train longer"
        )
    config = FitConfig.of(FitConfig(**saved), quiet=quiet, checks=False)
    ended = stopped if stopped != "interrupted" else None
    how = Resume(run.training_state, ended=ended if epochs is None else None)
    if epochs is not None:
        config = FitConfig.of(config, epochs=epochs)
        plan = replace(plan, fine_tune=replace(plan.fine_tune, epochs=epochs))
        how = Resume(run.training_state, longer=ended is not None)
    with scratch_unless_main() as scratch:
        if scratch is not None:  # read the state from a copy; write nothing of the run
            run = RunFolder(shutil.copytree(run.path, scratch / run.path.name))
            config = replace(config, quiet=True)
        started = time.perf_counter()
        # The data and a distillation's teacher first: what refuses to go on changes nothing.
        ready = prepare(data, config)
        teaching = load_teacher(config, ready)
        require_same_teaching(plan, teaching)
        if scratch is None:
            run = in_every_process(lambda: RunFolder.open(run.path))
            if epochs is not None:
                run.discard(SUMMARY)  # it describes the model before; a new one comes at the end
        with run.running():
            return run_stages(ready, config, run, started, resumed=(plan, how), teaching=teaching)
