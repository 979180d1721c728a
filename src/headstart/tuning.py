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
from .errors import HeadstartError
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
    """Where the search was written, what it found, and the best trial's fit (None where
    another process of a shared study fitted it)."""

    run_dir: Path
    best: dict[str, Any]  # the best trial's fit settings
    best_accuracy: float
    trials: int
    fitted: FitResult | None


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
    fits the best of a finished study); ``sampler``: ``tpe`` (Bayesian) or ``random`` (the
    baseline)."""
    optuna = _optuna()
    if sampler not in SAMPLERS:
        raise HeadstartError(f"sampler={sampler!r}; expected one of {', '.join(SAMPLERS)}")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 0:
        raise HeadstartError(f"trials={trials!r} must be a whole number, at least 0")
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
        store = shared or _storage(optuna, f"sqlite:///{(run / STUDY).resolve()}")
        name = study or run.path.name
        search = _Search(optuna, base, config, given, store, name, sampler, shared_url=storage)
        record = search.run(trials, run, started)
        run.write_json(SEARCH, record)
        best = record["best"]
        if not record["fits"]:
            say(config.quiet, f"tune: {_FITTED_ELSEWHERE}")
            return TuneResult(run.path, best["settings"], best["accuracy"], record["trials"], None)
        # The search's budget is spent: the best's fit trains all its epochs.
        chosen = FitConfig.of(config, strategy="fine-tune", time_budget=None, **best["settings"])
        run.write_json(CONFIG_JSON, {"data": str(Path(data).resolve()), **asdict(chosen)})
        save_config(chosen, run / CONFIG_YAML, data)
        fitted = run_stages(ready, chosen, run, started)
    return TuneResult(run.path, best["settings"], best["accuracy"], record["trials"], fitted)


class _Search:
    """The rounds of one search, over one study per round in ``storage`` (at ``shared_url``
    where other processes may share it)."""

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
        config, plan = self.config, self.base.plan
        record: dict[str, Any] = {"study": self.name, "storage": self.shown_storage}
        checks = checking.before_training(self.base, config)
        checks.write(run / CHECKS)
        record["checks"] = {"passed": checks.passed, "headline": checks.headline()}
        if not checks.passed:
            failed = "; ".join(f"{c.title}: {c.summary}" for c in checks.failed)
            raise HeadstartError(f"the search stops before its first trial: {failed}")
        lr = self._learning_rate(record, run)
        stages = len(layer_groups(self.base.ready.backbone))
        coarse_trials = max(1, round(trials * COARSE_SHARE)) if trials else 0
        epochs = plan.fine_tune.epochs
        coarse_space = SearchSpace.wide(lr, stages, min(COARSE_EPOCHS, epochs), self.given)
        deadline = self._deadline(started)
        coarse = self._round("coarse", coarse_space, coarse_trials, deadline)
        if coarse["best"] is None:
            raise HeadstartError("no coarse trial finished: nothing to search around")
        rising, reading = _reading(coarse["best"]["history"])
        fine_epochs = epochs if rising else coarse_space.epochs
        record["reading"] = f"{reading}: the finer round trains {fine_epochs} epochs a trial"
        say(config.quiet, f"tune: {record['reading']}")
        fine_space = coarse_space.around(coarse["best"]["params"], fine_epochs)
        fine = self._round("fine", fine_space, trials - coarse_trials, deadline)
        record["rounds"] = [coarse, fine]
        record["trials"] = coarse["trials"] + fine["trials"]
        best, where = (fine["best"], "fine") if fine["best"] else (coarse["best"], "coarse")
        record["best"] = {
            "round": where,
            "number": best["number"],
            "accuracy": best["value"],
            "settings": best["settings"],
        }
        say(
            config.quiet,
            f"tune: best trial {best['number']} of the {where} round, {best['value']:.1%} on "
            f"validation: {best['settings']}",
        )
        record["fits"] = trials == 0 or self._claims_the_fit()
        return record

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

    def _round(self, kind: str, proposed: SearchSpace, quota: int, deadline: float | None) -> dict:
        """One round's study: its space (the first process's, for all), its trials shared
        out until it holds ``quota`` of them, and its record once all of them are in."""
        optuna = self.optuna
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
        if "space" not in study.user_attrs:
            study.set_user_attr("space", proposed.to_dict())
        space = SearchSpace.from_dict(study.user_attrs["space"])
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        left = quota - len(study.get_trials(deepcopy=False, states=finished))
        timeout = None if deadline is None else max(deadline - time.perf_counter(), 0)
        say(self.config.quiet, f"tune: {kind} round, {quota} trials: {space.describe()}")
        if left > 0 and timeout != 0:
            study.optimize(
                self._objective(space, kind, deadline),
                n_trials=left,
                timeout=timeout,
                callbacks=[optuna.study.MaxTrialsCallback(quota, states=finished)],
            )
        _wait_for_others(study, optuna)
        return _round_record(study, kind, space, optuna, self.config.seed)

    def _objective(self, space: SearchSpace, kind: str, deadline: float | None):
        base, config, optuna = self.base, self.config, self.optuna

        def objective(trial) -> float:
            settings = space.suggest(trial)
            trial_config = FitConfig.of(config, strategy="fine-tune", quiet=True, **settings)
            plan = plan_fine_tuning(base.ready, base.probe, trial_config)
            model = copy.deepcopy(starting_model(base, config))
            callbacks = [
                _Pruning(trial, deadline),
                Progress(f"{kind} trial {trial.number}", quiet=config.quiet),
            ]
            result = fine_tune_planned(
                model, replace(base, plan=plan), trial_config, callbacks, None
            )
            trial.set_user_attr("settings", settings)
            trial.set_user_attr("history", result.history)
            trial.set_user_attr("stopped", result.stopped)
            if result.stopped in (_PRUNED, _OUT_OF_TIME):
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

    def _claims_the_fit(self) -> bool:
        """Whether this process fits the best: the first to ask the study of the fit wins
        (trial numbers are given out one at a time by the storage)."""
        claims = self.optuna.create_study(
            study_name=f"{self.name}-fit", storage=self.storage, load_if_exists=True
        )
        with warnings.catch_warnings():  # a claim is told at once: it needs no heartbeat
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            trial = claims.ask()
        claims.tell(trial, 0.0)
        return trial.number == 0

    def _deadline(self, started: float) -> float | None:
        if self.config.time_budget is None:
            return None
        return started + self.config.time_budget * 60


_PRUNED = "pruned: behind the median of the other trials at this epoch"
_OUT_OF_TIME = "stopped: the search's time budget ran out"
_FITTED_ELSEWHERE = "another process of this study fits the best trial"


class _Pruning(Callback):
    """Reports each epoch's validation accuracy to the trial, and stops a trial the pruner
    finds behind (never after its last epoch: a finished trial counts) or the time budget
    runs out on."""

    def __init__(self, trial, deadline: float | None):
        self.trial, self.deadline = trial, deadline

    def on_batch_end(self, step: TrainingStep) -> None:
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise StopTraining(_OUT_OF_TIME)

    def on_epoch_end(self, record: dict, training: Training) -> None:
        self.trial.report(record["val_accuracy"], record["epoch"])
        if record["epoch"] < training.settings.epochs and self.trial.should_prune():
            raise StopTraining(_PRUNED)


def _storage(optuna, url: str):
    """The study storage at ``url``, with heartbeats (a trial whose process was killed is
    failed, not waited for). Two processes creating one SQLite file's tables at once may
    collide (a table or its version row made by the other in between): the loser tries
    again, and finds them made."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=HEARTBEAT, grace_period=GRACE
                )
        except (IntegrityError, OperationalError) as error:
            if attempt == 4:
                raise HeadstartError(_cannot_open(url, error)) from None
            time.sleep(1 + attempt)
        except Exception as error:  # a bad URL, a missing database driver
            raise HeadstartError(_cannot_open(url, error)) from None
    raise AssertionError("unreachable")


def _cannot_open(url: str, error: Exception) -> str:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"cannot open the study storage {url}: {first_line}"


def _wait_for_others(study, optuna, poll: float = 2.0) -> None:
    """Until no trial of ``study`` is running in another process (a round's best is read
    only once all its trials are in); a trial whose process died is failed, not waited for."""
    running = (optuna.trial.TrialState.RUNNING,)
    while study.get_trials(deepcopy=False, states=running):
        optuna.storages.fail_stale_trials(study)
        time.sleep(poll)


def _round_record(study, kind: str, space: SearchSpace, optuna, seed: int) -> dict:
    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == states.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    importance = {}
    if len(complete) >= 2 and space.drawn_count() > 1:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        try:
            importance = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except (RuntimeError, ValueError):  # every trial drew the same values
            importance = {}
    return {
        "round": kind,
        "space": space.to_dict(),
        "described": space.describe(),
        "trials": sum(t.state in (states.COMPLETE, states.PRUNED) for t in trials),
        "pruned": sum(t.state == states.PRUNED for t in trials),
        "failed": sum(t.state == states.FAIL for t in trials),
        "importance": {k: float(v) for k, v in importance.items()},
        "history": [
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value
                if t.value is not None
                else max([r["val_accuracy"] for r in t.user_attrs.get("history") or []] or [None]),
                "settings": t.user_attrs.get("settings"),
                "epochs": len(t.user_attrs.get("history") or []),
            }
            for t in sorted(trials, key=lambda t: t.number)
        ],
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
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna
