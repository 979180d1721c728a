"""``headstart fit``: from a folder of labelled images to a trained, evaluated model bundle.

The recipe, stage by stage (each a module of :mod:`headstart.stages` with plain inputs and
outputs)::

    data -> audit -> plan -> checks -> train -> evaluate -> report

Everything a stage decides or measures is written to the run folder as it happens; the plan is
decided once, before training, and written once.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

from .checks import CheckReport
from .config import FitConfig, save_config, settings_table
from .console import say
from .data.sources import image_files
from .errors import HeadstartError
from .ranking import Ranking, rank
from .result import FitResult
from .runfolder import (
    CHECKS,
    CONFIG_JSON,
    CONFIG_YAML,
    PLAN,
    RunFolder,
)
from .stages import checks as checking
from .stages.adapt import adapt, measure_target
from .stages.audit import audit_data
from .stages.calibrate import calibrate
from .stages.data import Prepared, device_of, look_again, prepare, record_split, require_trainable
from .stages.distill import Teaching, absolute_paths, load_teacher, weigh_student
from .stages.ensemble import ensemble
from .stages.evaluate import Choice, choose, compare_with_scratch
from .stages.plan import Decision, decide, probe_features
from .stages.report import write_results
from .stages.test_time import choose_crops
from .stages.train import Trained, train
from .text.data import is_text_data
from .torch_model import Model, save
from .training import distributed
from .training.finetune import Resume, resolve_precision
from .training.plan import Plan

__all__ = ["FitResult", "fit", "in_every_process", "run_stages", "scratch_unless_main"]


def fit(data: str | Path, config: FitConfig | None = None, **settings) -> FitResult:
    """Train a classifier on ``data`` (class folders, train/val folders, or a CSV), or with
    ``task="regression"`` a model that predicts a number (a CSV of paths and numbers), or
    with ``task="multi-label"`` one that says which of several labels an image has.

    ``settings`` override fields of :class:`~headstart.config.FitConfig`, e.g.
    ``fit("photos", strategy="full")``. Launched by ``torchrun``, every process runs this and
    the fine-tuning is shared between them (see :mod:`headstart.training.distributed`); the
    main process writes the run.
    """
    started = time.perf_counter()
    config = absolute_paths(FitConfig.of(config, **settings))
    if config.target_images is not None:
        image_files([config.target_images])  # refused now, before a run folder is made
    if is_text_data(data) and config.teacher is not None:
        raise HeadstartError("teacher=...: distillation is built for image models only")
    if is_text_data(data) and config.target_images is not None:
        raise HeadstartError("target_images=...: adaptation is built for image models only")
    if config.task != "classification":
        from .tasks.recipe import fit_task, task_named

        return fit_task(data, config, task_named(config.task))
    if is_text_data(data):
        from .text.recipe import fit_texts

        return fit_texts(data, config)
    _refuse_text_settings(config)
    resolve_precision(config.precision, device_of(config.device))
    with scratch_unless_main() as scratch:
        if scratch is not None:
            config = replace(config, runs_dir=str(scratch), quiet=True)
        # The data, the network and its weights first: what refuses to run writes nothing.
        ranking = None
        if config.candidates:
            ranking, config = _ranked(data, config)
        ready = prepare(data, config)
        teaching = load_teacher(config, ready)
        run = in_every_process(
            lambda: RunFolder.create(config.runs_dir, config.name, Path(str(data)).stem)
        )
        with run.running():
            if ranking is not None:
                ranking.write(run.path)
            run.write_json(CONFIG_JSON, {"data": str(Path(data).resolve()), **asdict(config)})
            save_config(config, run / CONFIG_YAML, data)
            return run_stages(ready, config, run, started, teaching=teaching)


def run_stages(
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
    choice = _keep(decision, run, config, trained)
    test_time = choose_crops(choice.kept, decision.ready, config, trained.tuned is not None)
    say(config.quiet, f"plan: {test_time.why}")
    calibrated = calibrate(choice.kept, config)
    say(config.quiet, calibrated.why)
    if decision.target is not None:
        C = decision.probe.C if decision.probe is not None else 1.0
        adapted = adapt(choice.kept, decision.ready, decision.target, C, run, config).model
        choice = replace(choice, kept=replace(choice.kept, model=adapted))
    _save_model(choice.kept.model, decision.ready, run)
    distillation = weigh_student(choice.kept, teaching, run, config) if teaching else None
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
    return _result(run, decision, trained, choice, seconds)


def _keep(decision: Decision, run: RunFolder, config: FitConfig, trained: Trained) -> Choice:
    """The model the fit keeps: the ensemble's, or the probe or the fine-tuning; a student is
    what a distillation was asked for (kept, with the probe's comparison said)."""
    asked = config.strategy != "auto" or decision.teaching is not None
    choice = (
        ensemble(decision, run, config, trained)
        if config.ensemble > 1 and decision.plan.fine_tune is not None
        else choose(trained.probe, trained.tuned, asked=asked)
    )
    if choice.why:
        say(config.quiet, f"plan: {choice.why}")
    return choice


def _result(
    run: RunFolder, decision: Decision, trained: Trained, choice: Choice, seconds: float
) -> FitResult:
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
    text_only = {name for name, s in settings_table().items() if s.group == "text"}
    given = sorted(set(config.changed()) & text_only)
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
    probe = probe_features(ready, config)
    return Decision(plan, ready, probe, teaching=teaching, target=measure_target(ready, config))


def in_every_process(claim: Callable[[], RunFolder]) -> RunFolder:
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
def scratch_unless_main() -> Iterator[Path | None]:
    """Under torchrun, a throwaway folder for every process but the main one: each computes
    what the main one does, and only the main one keeps it. None in the main process."""
    if distributed.init_from_environment() and not distributed.is_main():
        with tempfile.TemporaryDirectory(prefix="headstart-rank-") as scratch:
            yield Path(scratch)
    else:
        yield None
