"""``headstart tune DATA --trials N``: search the fine-tuning settings that matter, as the
course's procedure for choosing hyperparameters without hundreds of GPUs does it, with
Optuna (Akiba et al. 2019).

In order, each step's result recorded in ``search.json`` and shown in the report:

1. the audit (a leak or unusable files refused before any trial) and the sanity checks: the
   loss at initialisation against the class prior's entropy, a small batch memorised, the
   dumb baselines; a search over a broken pipeline finds nothing, so a failure stops it;
2. the learning-rate range test (at most 100 steps): the rate at which the loss falls
   fastest centres the search's learning rates (``--lr`` centres them instead);
3. a coarse round: short trials (2 epochs) over wide ranges, the poor ones pruned from
   their epoch curves (behind the median of the others at the same epoch);
4. reading the curves: when the best coarse trial's validation accuracy still rose in its
   last epoch, the finer round trains the plan's epochs; when it had levelled off, as many
   as the coarse trials, and the budget goes to settings rather than epochs;
5. a finer round around the best coarse trial;
6. the best trial, fitted as a normal run in the same folder (plan, checks, crops,
   calibration, report), so that it is used as any model.

Settings the user gives are the base every trial draws over; those the search draws (the
learning rate, layer decay, weight decay, label smoothing, trained stages, augmentation,
Mixup, CutMix) are left as given when given (``--lr`` centres the learning rates). Trials
share the data stage: the decoded pixels and the cached features, on disk (several processes
share them too). The study lives in Optuna's storage: a SQLite file in the run folder by
default, or any database URL Optuna accepts (``--storage``), so that several processes or
machines tune one study together (``--study NAME`` on each): each round's trials are shared
out, a round's best is read once all its trials are in, and one process fits the best.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .classifier import layer_groups
from .config import FitConfig, save_config
from .console import say
from .errors import HeadstartError, first_line
from .recipe import run_stages
from .result import FitResult
from .runfolder import CHECKS, CONFIG_JSON, CONFIG_YAML, SEARCH, STUDY, RunFolder
from .stages import checks as checking
from .stages.audit import audit_data
from .stages.data import prepare, require_trainable
from .stages.plan import Decision, plan_fine_tuning, probe_features, range_test
from .stages.train import fine_tune_planned, starting_model
from .training.callbacks import Callback, Progress, StopTraining, Training, TrainingStep
from .training.search import SearchSpace

__all__ = ["COARSE_EPOCHS", "TuneResult", "tune"]

#: Epochs of a coarse trial: the course's 1-5, short enough for many trials.
COARSE_EPOCHS = 2
#: The share of the trials the coarse round takes; the finer round the rest.
COARSE_SHARE = 2 / 3
#: Steps of the learning-rate range test: the loss must fall within about this many.
RANGE_TEST_STEPS = 100
#: Trials run before the pruner compares (each pruned against the median of the others),
#: and the epochs every trial trains before it may be pruned.
PRUNER_STARTUP, PRUNER_WARMUP = 3, 1
#: Seconds between a running trial's heartbeats in the study, and without one after which
#: a trial is taken for dead (its process killed) and marked failed, so that no process
#: waits for it forever.
HEARTBEAT, GRACE = 10, 60
SAMPLERS = ("tpe", "random")


@dataclass(frozen=True)
class TuneResult:
    """Where the search was written, what it found, and the best trial's fit: in this run
    folder, or in ``fitted_in`` where another process of a shared study fitted it (``fitted``
    is then None)."""

    run_dir: Path
    best: dict[str, Any]  # the best trial's fit settings
    best_accuracy: float
    trials: int
    fitted: FitResult | None
    fitted_in: Path


def tune(
    data: str | Path,
    trials: int = 12,
    *,
    storage: str | None = None,
    study: str | None = None,
    sampler: str = "tpe",
    config: FitConfig | None = None,
    **settings,
) -> TuneResult:
    """Search the fine-tuning settings of a fit of ``data`` over ``trials`` trials (see the
    module's steps), then fit the best. ``settings`` are fit's, the base every trial draws
    over (``time_budget``: minutes for the search; the best's fit comes after). ``storage``:
    an Optuna database URL (default: ``study.db`` in the run folder); ``study``: the study's
    name there (several processes that give the same ones share its trials; ``trials=0``
    fits the best of a study another run searched); ``sampler``: ``tpe`` (Bayesian) or
    ``random`` (the baseline)."""
    optuna = _optuna()
    if sampler not in SAMPLERS:
        raise HeadstartError(f"sampler={sampler!r}; expected one of {', '.join(SAMPLERS)}")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 0:
        raise HeadstartError(f"trials={trials!r} must be a whole number, at least 0")
    if trials == 0 and not (storage and study):
        raise HeadstartError(
            "--trials 0 fits the best of a study searched before: give its --storage and --study"
        )
    config = FitConfig.of(config, **settings)
    # What the user gave is not searched, even where given at its default (--augment light).
    given = tuple(sorted({*settings, *config.changed()}))
    if config.strategy == "linear-probe" or config.ensemble > 1 or config.teacher:
        raise HeadstartError(
            "tune searches one fine-tuning: leave out linear-probe, --ensemble and --teacher"
        )
    started = time.perf_counter()
    # A storage given is opened first: a bad URL is refused before anything is written.
    shared = _storage(optuna, storage) if storage else None
    ready = prepare(data, config)
    run = RunFolder.create(config.runs_dir, config.name, f"{Path(str(data)).stem}-tuned")
    with run.running():
        audit_data(ready, run, config)  # a leak is refused before the first trial
        require_trainable(ready.dataset)
        probe = probe_features(ready, config)
        base = Decision(plan_fine_tuning(ready, probe, config), ready, probe)
        checked = _checked(base, config, run)
        # Made once the checks pass: a folder holding a study is kept for the study's sake.
        store = shared or _storage(optuna, f"sqlite:///{(run / STUDY).resolve()}")
        name = study or run.path.name
        search = _Search(optuna, base, config, given, store, name, sampler, shared_url=storage)
        record = search.run(trials, run, started) | {"checks": checked}
        run.write_json(SEARCH, record)
        best, fitted_in = record["best"], Path(record["fitted_in"])
        if fitted_in != run.path:
            say(config.quiet, f"tune: the best trial is fitted in {fitted_in}, by another process")
            return TuneResult(
                run.path, best["settings"], best["accuracy"], record["trials"], None, fitted_in
            )
        # The search's budget is spent: the best's fit trains all its epochs.
        chosen = FitConfig.of(config, strategy="fine-tune", time_budget=None, **best["settings"])
        run.write_json(CONFIG_JSON, {"data": str(Path(data).resolve()), **asdict(chosen)})
        save_config(chosen, run / CONFIG_YAML, data)
        fitted = run_stages(ready, chosen, run, started)
    return TuneResult(
        run.path, best["settings"], best["accuracy"], record["trials"], fitted, run.path
    )


def _checked(base: Decision, config: FitConfig, run: RunFolder) -> dict:
    """The sanity checks before the first trial: a search over a broken pipeline finds
    nothing, so a failure stops it."""
    checks = checking.before_training(base, config)
    checks.write(run / CHECKS)
    if not checks.passed:
        failed = "; ".join(f"{c.title}: {c.summary}" for c in checks.failed)
        raise HeadstartError(f"the search stops before its first trial: {failed}")
    return {"passed": checks.passed, "headline": checks.headline()}


class _Search:
    """The rounds of one search, over one study per round in ``storage`` (at ``shared_url``
    where other processes may share it).

    What the processes of a shared study must agree on (the rounds' spaces and quotas, who
    fits the best) is proposed by each and decided by the first to ask (:meth:`_agreed`);
    each round's trials are shared out until the round holds its quota, and a round is read
    only once all of them are in."""

    def __init__(
        self,
        optuna,
        base: Decision,
        config: FitConfig,
        given: tuple[str, ...],
        storage,
        name: str,
        sampler: str,
        shared_url: str | None,
    ):
        self.optuna, self.base, self.config, self.storage = optuna, base, config, storage
        self.given = tuple(name for name in given if name != "lr")  # --lr: the centre
        self.name, self.sampler_name = name, sampler
        self.shared = shared_url is not None
        self.shown_storage = shared_url or f"sqlite:///{STUDY} (in the run folder)"

    def run(self, trials: int, run: RunFolder, started: float) -> dict:
        record: dict[str, Any] = {"study": self.name, "storage": self.shown_storage}
        rounds = self._agreed("rounds", self._proposal(trials, record, run) if trials else None)
        self._require_same_givens(SearchSpace.from_dict(rounds["space"]))
        deadline = self._deadline(started)
        coarse_space = SearchSpace.from_dict(rounds["space"])
        coarse = self._round("coarse", coarse_space, rounds["coarse"], deadline, trials > 0)
        if coarse["best"] is None:
            within = " within the time budget" if _past(deadline) else ""
            raise HeadstartError(f"no coarse trial finished{within}: nothing to search around")
        rising, reading = _reading(coarse["best"]["history"])
        fine_epochs = rounds["epochs"] if rising else coarse_space.epochs
        a_trial = f"{fine_epochs} epoch{'s' if fine_epochs != 1 else ''} a trial"
        record["reading"] = f"{reading}: the finer round trains {a_trial}"
        say(self.config.quiet, f"tune: {record['reading']}")
        fine_space = coarse_space.around(coarse["best"]["params"], fine_epochs)
        fine = self._round("fine", fine_space, rounds["fine"], deadline, trials > 0)
        record["rounds"] = [coarse, fine]
        record["trials"] = coarse["trials"] + fine["trials"]
        best, where = (fine["best"], "fine") if fine["best"] else (coarse["best"], "coarse")
        settings = dict(best["settings"])
        if where == "coarse" and not fine["trials"] and rising:
            # No finer trial ran (the budget, or no trials left for it): the curves asked
            # for more epochs than a coarse trial's, and the fit trains them.
            settings["epochs"] = fine_epochs
        record["best"] = {
            "round": where,
            "number": best["number"],
            "accuracy": best["value"],
            "settings": settings,
        }
        say(
            self.config.quiet,
            f"tune: best trial {best['number']} of the {where} round, {best['value']:.1%} on "
            f"validation: {settings}",
        )
        claimed = self._agreed("fit", {"run": str(run.path)})["run"]
        record["fitted_in"] = str(run.path) if trials == 0 else claimed
        return record

    def _proposal(self, trials: int, record: dict, run: RunFolder) -> dict:
        """This process's rounds: the coarse space around its learning-rate centre, the
        trials of each round, and the epochs the finer round trains when the curves rise."""
        lr = self._learning_rate(record, run)
        stages = len(layer_groups(self.base.ready.backbone))
        epochs = self.base.plan.fine_tune.epochs
        coarse = max(1, round(trials * COARSE_SHARE))
        space = SearchSpace.wide(lr, stages, min(COARSE_EPOCHS, epochs), self.given)
        return {
            "space": space.to_dict(),
            "coarse": coarse,
            "fine": trials - coarse,
            "epochs": epochs,
        }

    def _require_same_givens(self, agreed: SearchSpace) -> None:
        mine = SearchSpace.not_drawn(self.given)
        if sorted(agreed.fixed) != sorted(mine):
            raise HeadstartError(
                f"study {self.name} leaves {', '.join(agreed.fixed) or 'nothing'} as given; "
                f"this process gives {', '.join(mine) or 'none of them'}: start every process "
                "of a study with the same settings"
            )

    def _agreed(self, topic: str, proposal: dict | None) -> dict:
        """The proposal of the first process to ask about ``topic``, in every process of the
        study: the storage hands out the trial numbers of a study of claims one at a time,
        and trial 0's proposal stands. ``None`` proposes nothing: one must stand already."""
        optuna, states = self.optuna, self.optuna.trial.TrialState
        claims = optuna.create_study(
            study_name=f"{self.name}-{topic}", storage=self.storage, load_if_exists=True
        )
        if proposal is not None:
            with warnings.catch_warnings():  # a claim is told at once: it needs no heartbeat
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                claim = claims.ask()
            if claim.number == 0:
                claim.set_user_attr("proposal", proposal)
            claims.tell(claim, 0.0)
        for _ in range(GRACE):
            first = [t for t in claims.get_trials(deepcopy=False) if t.number == 0]
            if first and "proposal" in first[0].user_attrs:
                return first[0].user_attrs["proposal"]
            if not first and proposal is None:
                raise HeadstartError(f"study {self.name} holds no search: nothing to fit")
            if first and first[0].state != states.RUNNING:
                break  # the first asked, and died before it proposed
            time.sleep(1)
        raise HeadstartError(
            f"study {self.name}: the first process to ask about its {topic} never said "
            "(killed?): start the search again under another --study name"
        )

    def _learning_rate(self, record: dict, run: RunFolder) -> float:
        """The centre of the search's learning rates: the one given (--lr), or the range
        test's suggestion, or, when it suggests none, the plan's."""
        if self.config.lr is not None:
            centre = self.config.lr
            record["lr_find"] = {"suggestion": None, "rule": "given (--lr)", "centre": centre}
            return centre
        settings = self.base.plan.fine_tune
        found = range_test(
            self.base.ready, self.base.probe, settings, RANGE_TEST_STEPS, self.config
        )
        found.save(run.path)  # the report's range-test section
        lr = found.suggestion or settings.lr
        record["lr_find"] = {"suggestion": found.suggestion, "rule": found.rule, "centre": lr}
        how = (
            f"the range test's suggestion: {found.rule}"
            if found.suggestion
            else f"the plan's; the range test suggested none: {found.rule}"
        )
        say(self.config.quiet, f"tune: learning rates around {lr:.3g} ({how})")
        return lr

    def _round(
        self, kind: str, space: SearchSpace, quota: int, deadline: float | None, runs: bool
    ) -> dict:
        """One round's study: trials run here (when ``runs``) while the round holds fewer
        than ``quota`` finished or running ones; then, once none runs anywhere, its record.
        A trial whose process died is failed (its heartbeat stopped), and run again."""
        optuna = self.optuna
        states = optuna.trial.TrialState
        study = optuna.create_study(
            study_name=f"{self.name}-{kind}",
            storage=self.storage,
            direction="maximize",
            sampler=self._sampler(quota),
            pruner=optuna.pruners.MedianPruner(
                n_startup_trials=PRUNER_STARTUP, n_warmup_steps=PRUNER_WARMUP
            ),
            load_if_exists=True,
        )
        say(self.config.quiet, f"tune: {kind} round, {quota} trials: {space.describe()}")
        objective = self._objective(space, kind, deadline, quota)
        stopped = (_Surplus, _OutOfTime, MemoryError, *_out_of_memory())
        while True:
            with warnings.catch_warnings():  # "experimental" since Optuna 2.9, as heartbeats
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            finished = sum(t.state in (states.COMPLETE, states.PRUNED) for t in trials)
            running = sum(t.state == states.RUNNING for t in trials)
            if finished >= quota or (running == 0 and (_past(deadline) or not runs)):
                break
            if _failed(trials) >= max(quota, 1):
                raise HeadstartError(f"{_failed(trials)} trials of the {kind} round failed")
            if runs and not _past(deadline) and finished + running < quota:
                study.optimize(objective, n_trials=1, catch=stopped)
            else:
                time.sleep(POLL)
        return _round_record(study, kind, space, optuna, self.config.seed)

    def _objective(self, space: SearchSpace, kind: str, deadline: float | None, quota: int):
        base, config, optuna = self.base, self.config, self.optuna
        counted = (
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.RUNNING,
        )

        def objective(trial) -> float:
            # Two processes may start the round's last trial at once: the later one is
            # surplus, and stops before it draws anything.
            ahead = trial.study.get_trials(deepcopy=False, states=counted)
            if sum(t.number < trial.number for t in ahead) >= quota:
                trial.set_user_attr("surplus", True)
                raise _Surplus
            settings = space.suggest(trial)
            trial_config = FitConfig.of(config, strategy="fine-tune", quiet=True, **settings)
            plan = plan_fine_tuning(base.ready, base.probe, trial_config)
            model = copy.deepcopy(starting_model(base, config))
            callbacks = [
                _TrialWatch(trial, deadline),
                Progress(f"{kind} trial {trial.number}", quiet=config.quiet),
            ]
            try:
                result = fine_tune_planned(
                    model, replace(base, plan=plan), trial_config, callbacks, None
                )
            except (MemoryError, *_out_of_memory()):
                trial.set_user_attr("settings", settings)
                say(config.quiet, f"tune: {kind} trial {trial.number} failed, out of memory")
                raise
            trial.set_user_attr("settings", settings)
            trial.set_user_attr("history", result.history)
            trial.set_user_attr("stopped", result.stopped)
            if result.stopped == _OUT_OF_TIME:
                raise _OutOfTime
            if result.stopped == _PRUNED:
                raise optuna.TrialPruned(result.stopped)
            if result.stopped == "interrupted":
                raise KeyboardInterrupt
            # A trial that diverged before its first epoch was scored learned nothing.
            value = max(result.best_accuracy, 0.0)
            say(config.quiet, f"tune: {kind} trial {trial.number}: {value:.1%} ({result.stopped})")
            return value

        return objective

    def _sampler(self, trials: int):
        samplers = self.optuna.samplers
        # One seed in one process: the same search every time. A study shared with other
        # processes draws fresh randomness in each, or all would try the same settings.
        seed = None if self.shared else self.config.seed
        if self.sampler_name == "random":
            return samplers.RandomSampler(seed=seed)
        return samplers.TPESampler(seed=seed, n_startup_trials=max(2, trials // 3))

    def _deadline(self, started: float) -> float | None:
        if self.config.time_budget is None:
            return None
        return started + self.config.time_budget * 60


#: Seconds between two looks at a round other processes are still running trials of.
POLL = 2.0
_PRUNED = "pruned: behind the median of the other trials at this epoch"
_OUT_OF_TIME = "stopped: the search's time budget ran out"


class _Surplus(Exception):
    """A trial started when the round already held its quota (recorded as failed)."""


class _OutOfTime(Exception):
    """A trial the time budget stopped (recorded as failed: it does not count as a trial)."""


class _TrialWatch(Callback):
    """Reports each epoch's validation accuracy to the trial, and stops a trial the pruner
    finds behind (never after its last epoch: a finished trial counts) or the time budget
    runs out on."""

    def __init__(self, trial, deadline: float | None):
        self.trial, self.deadline = trial, deadline

    def on_batch_end(self, step: TrainingStep) -> None:
        if _past(self.deadline):
            raise StopTraining(_OUT_OF_TIME)

    def on_epoch_end(self, record: dict, training: Training) -> None:
        self.trial.report(record["val_accuracy"], record["epoch"])
        if record["epoch"] < training.settings.epochs and self.trial.should_prune():
            raise StopTraining(_PRUNED)


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


def _out_of_memory() -> tuple[type[BaseException], ...]:
    """A trial whose settings need more memory than there is fails alone: the next trial
    draws others."""
    import torch

    return (torch.OutOfMemoryError,) if hasattr(torch, "OutOfMemoryError") else ()


def _failed(trials: list) -> int:
    """Trials that failed on their own: not the surplus ones, nor those the budget stopped."""
    return sum(
        t.state.name == "FAIL"
        and not t.user_attrs.get("surplus")
        and t.user_attrs.get("stopped") != _OUT_OF_TIME
        for t in trials
    )


def _storage(optuna, url: str):
    """The study storage at ``url``, with heartbeats (a trial whose process was killed is
    failed, not waited for). Two processes creating one SQLite file's tables at once may
    collide (a table or its version row made by the other in between): the loser tries
    again, and finds them made."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    # SQLite locks the whole file to write: wait for the other process's write, not fail.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT, grace_period=GRACE
                )
        except (IntegrityError, OperationalError) as error:
            if attempt == 4:
                raise HeadstartError(_cannot_open(url, error)) from None
            time.sleep(1 + attempt)
        except Exception as error:  # a bad URL, a missing database driver
            raise HeadstartError(_cannot_open(url, error)) from None
    raise AssertionError("unreachable")


def _cannot_open(url: str, error: Exception) -> str:
    return f"cannot open the study storage {url}: {first_line(error)}"


def _round_record(study, kind: str, space: SearchSpace, optuna, seed: int) -> dict:
    states = optuna.trial.TrialState
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    complete = [t for t in trials if t.state == states.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    return {
        "round": kind,
        "space": space.to_dict(),
        "described": space.describe(),
        "trials": sum(t.state in (states.COMPLETE, states.PRUNED) for t in trials),
        "pruned": sum(t.state == states.PRUNED for t in trials),
        "out_of_time": sum(t.user_attrs.get("stopped") == _OUT_OF_TIME for t in trials),
        "failed": _failed(trials),
        "importance": _importance(study, complete, space, optuna, seed),
        "importance_trials": len(complete),
        "history": [_trial_record(t) for t in sorted(trials, key=lambda t: t.number)],
        "best": None
        if best is None
        else {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "settings": best.user_attrs["settings"],
            "history": best.user_attrs.get("history") or [],
        },
    }


def _importance(study, complete: list, space: SearchSpace, optuna, seed: int) -> dict:
    """Each drawn setting's share of the variance of the validation accuracy (fANOVA)."""
    if len(complete) < 2 or space.drawn_count() < 2:
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    try:
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError):  # every trial drew the same values
        return {}
    return {name: float(value) for name, value in found.items()}


def _trial_record(trial) -> dict:
    """A trial as the report shows it: a pruned one by the best epoch it reached."""
    history = trial.user_attrs.get("history") or []
    reached = max((epoch["val_accuracy"] for epoch in history), default=None)
    stopped = trial.user_attrs.get("stopped")
    return {
        "number": trial.number,
        "state": "out of time" if stopped == _OUT_OF_TIME else trial.state.name.lower(),
        "value": trial.value if trial.value is not None else reached,
        "settings": trial.user_attrs.get("settings"),
        "epochs": len(history),
    }


def _reading(history: list[dict]) -> tuple[bool, str]:
    """Whether the best coarse trial was still rising when it stopped, in words."""
    if len(history) < 2:
        return True, "the best coarse trial trained one epoch: nothing says it had levelled off"
    last, before = history[-1]["val_accuracy"], history[-2]["val_accuracy"]
    if last > before:
        return True, (
            f"the best coarse trial's validation accuracy still rose in its last epoch "
            f"({before:.1%} -> {last:.1%})"
        )
    return False, (
        f"the best coarse trial's validation accuracy had levelled off ({before:.1%} -> {last:.1%})"
    )


def _optuna():
    try:
        import optuna
    except ImportError:
        raise HeadstartError(
            "tune needs Optuna: pip install 'headstart[tune]' (or pip install optuna)"
        ) from None
    # Optuna logs each trial that fails (a surplus one, one the budget stopped) with its
    # traceback: the search says what happens in its own words instead.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna
