"""``headstart fit``: from a folder of labelled images to a trained, evaluated model bundle.

The recipe, stage by stage (each a module of :mod:`headstart.stages` with plain inputs and
outputs)::

    data -> audit -> plan -> checks -> train -> evaluate -> report

Everything a stage decides or measures is written to the run folder as it happens; the plan is
decided once, before training, and written once.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

from .checks import CheckReport
from .config import FitConfig, load_config, save_config, settings_table
from .console import say
from .errors import HeadstartError
from .ranking import Ranking, rank
from .result import FitResult
from .runfolder import (
    CHECKS,
    CONFIG_JSON,
    CONFIG_YAML,
    DISTILLATION,
    PLAN,
    PROGRESS,
    SUMMARY,
    RunFolder,
)
from .stages import checks as checking
from .stages.audit import audit_data
from .stages.calibrate import calibrate
from .stages.data import Prepared, device_of, look_again, prepare, record_split, require_trainable
from .stages.distill import Teaching, load_teacher, weigh_student
from .stages.ensemble import ensemble
from .stages.evaluate import choose, compare_with_scratch
from .stages.plan import Decision, decide, probe_features
from .stages.report import write_results
from .stages.test_time import choose_crops
from .stages.train import train
from .text.data import is_text_data
from .torch_model import Model, save
from .training import distributed
from .training.finetune import Resume, resolve_precision
from .training.plan import Plan

__all__ = ["FitResult", "distill", "fit", "resume"]


def fit(data: str | Path, config: FitConfig | None = None, **settings) -> FitResult:
    """Train a classifier on ``data`` (class folders, train/val folders, or a CSV).

    ``settings`` override fields of :class:`~headstart.config.FitConfig`, e.g.
    ``fit("photos", strategy="full")``. Launched by ``torchrun``, every process runs this and
    the fine-tuning is shared between them (see :mod:`headstart.training.distributed`); the
    main process writes the run.
    """
    started = time.perf_counter()
    config = FitConfig.of(config, **settings)
    if is_text_data(data) and config.teacher is not None:
        raise HeadstartError("teacher=...: distillation is built for image models only")
    if is_text_data(data):
        from .text.recipe import fit_texts

        return fit_texts(data, config)
    _refuse_text_settings(config)
    resolve_precision(config.precision, device_of(config.device))
    with _scratch_unless_main() as scratch:
        if scratch is not None:
            config = replace(config, runs_dir=str(scratch), quiet=True)
        # The data, the network and its weights first: what refuses to run writes nothing.
        ranking = None
        if config.candidates:
            ranking, config = _ranked(data, config)
        ready = prepare(data, config)
        teaching = load_teacher(config, ready)
        run = _in_every_process(
            lambda: RunFolder.create(config.runs_dir, config.name, Path(str(data)).stem)
        )
        with run.running():
            if ranking is not None:
                ranking.write(run.path)
            run.write_json(CONFIG_JSON, {"data": str(Path(data).resolve()), **asdict(config)})
            save_config(config, run / CONFIG_YAML, data)
            return _fit(ready, config, run, started, teaching=teaching)


#: What a student takes from its teacher's settings: how the data is read, split and
#: augmented (what the data allows), and where runs go. The network and how it trains are
#: the student's own: the plan decides them for it.
_TAUGHT = ("in_chans", "val_fraction", "test_fraction", "seed", "batch_size", "cache_dir", "device")
_TAUGHT_RUN = ("runs_dir", "allow_leakage", "calibration")


def distill(run_dir: str | Path, student: str | None = None, **settings) -> FitResult:
    """Distil the model of the finished run ``run_dir`` (an ensemble, say) into one
    ``student`` network (an architecture; by default the teacher's own): a new run on the
    teacher's data and split whose fine-tuning learns the teacher's probabilities, as
    ``fit(data, teacher=run_dir, arch=student)``. It ends with the student beside its
    teacher: accuracy, parameters, size and latency (``distillation.json``, the report).

    ``settings`` are fit's, over the teacher's data settings: ``input_size=160`` (a student
    at a smaller size costs less), ``unlabelled="more_photos/"`` (images the teacher labels
    for it), ``epochs``, ``distill_temperature``, ``name`` ...
    """
    run = RunFolder(run_dir)
    if not (run.exists(CONFIG_YAML) and run.exists(CONFIG_JSON) and run.exists(SUMMARY)):
        raise HeadstartError(
            f"{run.path} is not a finished headstart run folder (no {CONFIG_YAML}, "
            f"{CONFIG_JSON} or {SUMMARY}): distil the run of a finished fit"
        )
    if (run.json(SUMMARY) or {}).get("modality") == "text":
        raise HeadstartError(f"{run.path} holds a text model: distillation is built for images")
    saved = load_config(run / CONFIG_YAML)
    taught = {
        name: value
        for name, value in saved.items()
        if name in _TAUGHT + _TAUGHT_RUN or settings_table()[name].group == "augmentation"
    }
    arch = student or saved.get("arch") or FitConfig().arch
    if arch == saved.get("arch"):  # the teacher's own network: its weights, at its size
        plan = run.json(PLAN) or {}
        taught["input_size"] = plan.get("input_size") or saved.get("input_size")
        taught["weights"] = saved.get("weights")
    config = FitConfig.of(**{**taught, "arch": arch, "teacher": str(run.path), **settings})
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
    with _scratch_unless_main() as scratch:
        if scratch is not None:  # read the state from a copy; write nothing of the run
            run = RunFolder(shutil.copytree(run.path, scratch / run.path.name))
            config = replace(config, quiet=True)
        else:
            run = _in_every_process(lambda: RunFolder.open(run.path))
        started = time.perf_counter()
        if scratch is None and epochs is not None:
            run.discard(SUMMARY)  # it describes the model before; a new one comes at the end
        ready = prepare(data, config)
        teaching = load_teacher(config, ready)
        with run.running():
            return _fit(ready, config, run, started, resumed=(plan, how), teaching=teaching)


def _fit(
    ready: Prepared,
    config: FitConfig,
    run: RunFolder,
    started: float,
    resumed: tuple[Plan, Resume] | None = None,
    teaching: Teaching | None = None,
) -> FitResult:
    """The stages of a fit of ``ready`` (the data stage, done) into ``run``; ``resumed``: the
    plan of a run being resumed, and how it goes on; ``teaching``: a distillation's teacher."""
    _say_what_runs(run, ready, config)
    audit = audit_data(ready, run, config)
    record_split(run, ready.dataset, resuming=resumed is not None)
    require_trainable(ready.dataset)
    plan, resume = resumed or (None, None)
    decision = _decide(ready, run, config, plan, time.perf_counter() - started, teaching)
    checks = _checks_before_training(decision, run, config, resumed is not None)
    trained = train(decision, run, config, resume=resume)
    # A student is what a distillation was asked for: kept, with the probe's comparison said.
    asked = config.strategy != "auto" or teaching is not None
    choice = (
        ensemble(decision, run, config, trained)
        if config.ensemble > 1 and decision.plan.fine_tune is not None
        else choose(trained.probe, trained.tuned, asked=asked)
    )
    if choice.why:
        say(config.quiet, f"plan: {choice.why}")
    test_time = choose_crops(choice.kept, decision.ready, config, trained.tuned is not None)
    say(config.quiet, f"plan: {test_time.why}")
    calibrated = calibrate(choice.kept, config)
    say(config.quiet, calibrated.why)
    _save_model(choice.kept.model, decision.ready, run)
    distillation = None
    if teaching is not None:
        distillation = weigh_student(choice.kept, teaching, decision.ready, run.epochs)
        run.write_json(DISTILLATION, distillation)
        say(config.quiet, f"distillation: {distillation['verdict']}")
    if config.checks and checks is not None:
        checks = checking.after_training(checks, trained.watch, trained.stopped, trained.fixed)
        checking.say_checks(config.quiet, checks)
    if config.compare_scratch:
        probe_accuracy = trained.probe.val_accuracy if trained.probe else None
        compare_with_scratch(run, decision.ready, decision.plan, probe_accuracy, config)
    seconds = time.perf_counter() - started
    write_results(
        run,
        decision,
        audit,
        checks,
        trained,
        choice,
        test_time,
        calibrated,
        seconds,
        config,
        distillation,
    )
    kept = choice.kept
    return FitResult(
        run.path,
        kept.model,
        decision.plan,
        kept.strategy,
        {split: scored.scores for split, scored in kept.scored.items()},
        seconds,
        list(decision.ready.dataset.skipped),
        trained.stopped,
        decision.ready.dataset,
        choice.why,
    )


def _refuse_text_settings(config: FitConfig) -> None:
    given = sorted(set(config.changed()) & {"encoder", "text_column", "label_column"})
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise HeadstartError(f"{flags}: setting(s) for texts, and this data holds images")


def _save_model(model: Model, ready: Prepared, run: RunFolder) -> None:
    """The model bundle, knowing its training images by content (``evaluate`` leaves them,
    and copies of them, out wherever the bundle goes)."""
    model.trained_on = frozenset(ready.images.key(s.path) for s in ready.dataset.split("train"))
    save(model, run.bundle)


def _say_what_runs(run: RunFolder, ready: Prepared, config: FitConfig) -> None:
    built = f" as {ready.architecture}" if ready.architecture != config.arch else ""
    where = f"run folder [bold]{run.path}[/]; {config.arch}{built}, {ready.source.describe()}"
    say(config.quiet, where)
    for skip in ready.dataset.skipped:
        say(config.quiet, f"[yellow]skipped[/] {skip.path}: {skip.reason}")
    for warning in ready.dataset.warnings:
        say(config.quiet, f"[yellow]warning[/]: {warning}")


def _decide(
    ready: Prepared,
    run: RunFolder,
    config: FitConfig,
    resumed: Plan | None,
    spent: float,
    teaching: Teaching | None,
) -> Decision:
    """The plan, decided now and written once (with the range test it ran), or, for a
    resumed run, the plan it began with; ``spent``: seconds the fit has run so far."""
    if resumed is None:
        decision = decide(ready, config, spent, teaching)
        run.write_json(PLAN, decision.plan.to_dict())
        if decision.lr_find is not None:
            decision.lr_find.save(run.path)
    else:
        decision = _resumed_decision(ready, config, resumed, teaching)
    for reason in decision.plan.reasons:
        say(config.quiet, f"plan: {reason}")
    return decision


def _checks_before_training(
    decision: Decision, run: RunFolder, config: FitConfig, resuming: bool
) -> CheckReport | None:
    """The sanity checks, run by the main process (a resumed run keeps its own)."""
    if resuming:
        return CheckReport.read(run / CHECKS) if run.exists(CHECKS) else None
    if not (config.checks and distributed.is_main()):
        return None
    checks = checking.before_training(decision, config)
    checks.write(run / CHECKS)
    checking.say_checks(config.quiet, checks, " before training")
    return checks


def _resumed_decision(
    ready: Prepared, config: FitConfig, plan: Plan, teaching: Teaching | None
) -> Decision:
    """The decision a resumed run trains by: its own plan, on the data it began with (at the
    input size its plan chose), with the probe fitted again (the same, from the cache)."""
    if plan.input_size is not None and plan.input_size != ready.preprocessing.input_size[-1]:
        ready = look_again(ready, config, plan.input_size)
    return Decision(plan, ready, probe_features(ready, config), teaching=teaching)


def _in_every_process(claim: Callable[[], RunFolder]) -> RunFolder:
    """``claim()``, the run folder; under torchrun a refusal in one process (the main one's
    folder in use or finished) is a refusal in all, or the others would wait for it forever."""
    try:
        run = claim()
    except HeadstartError:
        distributed.any_rank(True)
        raise
    if distributed.any_rank(False):
        run.release()
        raise HeadstartError("the main process refused the run folder (its error says why)")
    return run


def _ranked(data: str | Path, config: FitConfig) -> tuple[Ranking, FitConfig]:
    """The candidates ranked (by the main process; the others take its ranking, so that all
    build one network) and the config that fits the first."""
    ranking = distributed.agree(
        rank(data, config.candidates, config) if distributed.is_main() else None
    )
    chosen = FitConfig.of(config, **ranking.settings())  # validated: a random one may win
    replaced = [f"{k}={v}" for k, v in config.changed().items() if k in ranking.settings()]
    instead = f" in place of {', '.join(replaced)}" if replaced else ""
    say(config.quiet, f"rank: {ranking.advice()}; fitting it{instead}")
    return ranking, chosen


@contextlib.contextmanager
def _scratch_unless_main() -> Iterator[Path | None]:
    """Under torchrun, a throwaway folder for every process but the main one: each computes
    what the main one does, and only the main one keeps it. None in the main process."""
    if distributed.init_from_environment() and not distributed.is_main():
        with tempfile.TemporaryDirectory(prefix="headstart-rank-") as scratch:
            yield Path(scratch)
    else:
        yield None
