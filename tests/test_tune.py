"""headstart tune DATA: the sanity checks, the learning rate, a coarse round and a finer one
over an Optuna study, then the best trial fitted as a normal run whose report shows the
search; two processes share one study."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest

import headstart
import headstart.training.callbacks
from headstart.errors import HeadstartError
from headstart.training.search import SearchSpace
from test_cli import one_line_error, run


@pytest.fixture(scope="module")
def tuned(small_faces, tmp_path_factory):
    # --lr centres the search without a range test, and 1 epoch a trial: a quick search;
    # the augmentation given is not searched.
    return headstart.tune(
        small_faces,
        trials=3,
        lr=2e-4,
        epochs=1,
        augment="light",
        tta="none",
        runs_dir=tmp_path_factory.mktemp("runs"),
        quiet=True,
    )


def test_the_search_runs_its_rounds_and_fits_the_best(tuned):
    search = json.loads((tuned.run_dir / "search.json").read_text())
    assert search["checks"]["passed"]
    coarse, fine = search["rounds"]
    assert (coarse["round"], coarse["trials"], fine["round"], fine["trials"]) == (
        "coarse",
        2,
        "fine",
        1,
    )
    assert search["trials"] == tuned.trials == 3
    best = search["best"]
    assert best["settings"] == tuned.best and best["accuracy"] == tuned.best_accuracy
    # The finer round searched around the best coarse trial: its choices are the best's.
    chosen = coarse["best"]["params"]
    assert fine["space"]["mixup"] == [chosen["mixup"]]
    assert fine["space"]["lr"] == pytest.approx([chosen["lr"] / 3, chosen["lr"] * 3])
    assert coarse["space"]["lr"] == pytest.approx([2e-5, 6e-4])  # around the --lr given
    assert search["reading"].endswith("the finer round trains 1 epoch a trial")
    # What was given is not searched: every trial augments as asked.
    assert "augment" in coarse["space"]["fixed"]
    assert all("augment" not in t["settings"] for r in (coarse, fine) for t in r["history"])


def test_the_best_trial_is_a_normal_run_whose_report_shows_the_search(tuned, small_faces):
    assert tuned.fitted is not None and tuned.fitted.run_dir == tuned.run_dir
    config = json.loads((tuned.run_dir / "config.json").read_text())
    for name, value in tuned.best.items():
        assert config[name] == value, name
    model = headstart.load(tuned.run_dir)
    assert len(model.predict(sorted(small_faces.rglob("*.png"))[:2])) == 2
    report = (tuned.run_dir / "report.html").read_text()
    assert "Hyperparameter search" in report and "The coarse round" in report
    assert "validation accuracy of every trial" in report  # the history figure


def test_the_study_lives_in_the_run_folder(tuned):
    storage = f"sqlite:///{tuned.run_dir / 'study.db'}"
    names = {summary.study_name for summary in optuna.get_all_study_summaries(storage)}
    # A study a round, and two of claims: the rounds the first process proposed, and who
    # fits the best.
    kinds = ("coarse", "fine", "rounds", "fit")
    assert names == {f"{tuned.run_dir.name}-{kind}" for kind in kinds}


@pytest.mark.slow
def test_two_processes_tune_one_study_with_no_trial_lost_or_run_twice(small_faces, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    command = [sys.executable, "-m", "headstart", "tune", small_faces, "--trials", "6"]
    command += ["--storage", storage, "--study", "shared", "--lr", "2e-4", "--epochs", "2"]
    command += ["--tta", "none", "--quiet"]
    processes = [
        subprocess.Popen(
            [*map(str, command), "--runs-dir", str(tmp_path / f"runs-{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    said = []
    for process in processes:
        out, err = process.communicate(timeout=1200)
        assert process.returncode == 0, err[-3000:]
        said.append(out)
    states = optuna.trial.TrialState
    for kind, wanted in (("coarse", 4), ("fine", 2)):
        trials = optuna.load_study(study_name=f"shared-{kind}", storage=storage).trials
        # Exactly the round's trials finished (pruned ones count); a trial started when
        # the other process had taken the last one stopped before drawing anything.
        finished = [t for t in trials if t.state in (states.COMPLETE, states.PRUNED)]
        assert len(finished) == wanted
        others = [t for t in trials if t not in finished]
        assert all(t.user_attrs.get("surplus") and not t.params for t in others)
        drawn = [json.dumps(t.params, sort_keys=True) for t in finished]
        assert len(set(drawn)) == len(drawn)  # never the same settings twice
    fitted = [p for i in range(2) for p in (tmp_path / f"runs-{i}").glob("*/summary.json")]
    assert len(fitted) == 1  # one process fitted the best trial, and the other says where
    assert any(f"is fitted in {fitted[0].parent}," in out for out in said)
    searched = [p for i in range(2) for p in (tmp_path / f"runs-{i}").glob("*/search.json")]
    bests = {json.dumps(json.loads(p.read_text())["best"], sort_keys=True) for p in searched}
    assert len(searched) == 2 and len(bests) == 1  # both read the same best


def test_a_process_joining_a_study_with_other_settings_is_refused(tuned, small_faces, tmp_path):
    storage = f"sqlite:///{tuned.run_dir / 'study.db'}"
    with pytest.raises(HeadstartError, match="leaves augment as given; this process gives none"):
        headstart.tune(
            small_faces,
            trials=3,
            storage=storage,
            study=tuned.run_dir.name,
            lr=2e-4,
            epochs=2,
            tta="none",
            runs_dir=tmp_path,
            quiet=True,
        )


def test_a_search_out_of_time_before_any_trial_says_so(small_faces, tmp_path):
    with pytest.raises(HeadstartError, match="no coarse trial finished within the time budget"):
        headstart.tune(small_faces, trials=2, lr=2e-4, time_budget=0.001, runs_dir=tmp_path)


def test_a_failed_search_keeps_its_study_and_the_next_run_takes_another_folder(tmp_path):
    from headstart.runfolder import RunFolder

    first = RunFolder.create(tmp_path, None, "photos-tuned")
    (first / "study.db").write_bytes(b"trials")
    first.release()  # killed: no summary, its study kept
    second = RunFolder.create(tmp_path, None, "photos-tuned")
    assert second.path.name == "photos-tuned-2"
    assert (first / "study.db").read_bytes() == b"trials"


def test_a_trial_is_pruned_when_behind_but_never_after_its_last_epoch():
    from headstart.tuning import _PRUNED, _TrialWatch

    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    )
    for value in (0.9, 0.9):
        done = study.ask()
        for epoch in (1, 2, 3):
            done.report(value, epoch)
        study.tell(done, value)
    behind = study.ask()
    training = type("Training", (), {"settings": type("S", (), {"epochs": 3})()})()
    with pytest.raises(headstart.training.callbacks.StopTraining, match=_PRUNED):
        _TrialWatch(behind, None).on_epoch_end({"epoch": 1, "val_accuracy": 0.1}, training)
    last = study.ask()
    for epoch in (1, 2):
        last.report(0.9, epoch)
    _TrialWatch(last, None).on_epoch_end({"epoch": 3, "val_accuracy": 0.1}, training)  # counts


def test_a_search_space_draws_fit_settings_and_narrows_around_the_best():
    space = SearchSpace.wide(lr=1e-3, stages=6, epochs=2)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    settings = space.suggest(trial)
    assert 1e-4 <= settings["lr"] <= 3e-3 and settings["epochs"] == 2
    stages = trial.params["trained_stages"]
    assert settings["freeze"] == ("none" if stages == 6 else 6 - stages)
    headstart.FitConfig.of(strategy="fine-tune", **settings)  # every draw is a valid fit
    assert "augment" not in SearchSpace.wide(1e-3, 6, 2, fixed=("augment",)).suggest(study.ask())
    finer = space.around(trial.params, epochs=8)
    assert finer.epochs == 8 and finer.augment == (trial.params["augment"],)
    assert finer.lr == pytest.approx((trial.params["lr"] / 3, trial.params["lr"] * 3))
    low, high = finer.layer_decay
    assert space.layer_decay[0] <= low <= trial.params["layer_decay"] <= high
    # A fifth of the range either way: at most two fifths of it.
    assert high - low <= 0.4 * (space.layer_decay[1] - space.layer_decay[0]) + 1e-9


def test_bad_requests_are_one_line(capsys, small_faces, tmp_path):
    code, _, err = run(capsys, "tune", small_faces, "--trials", "-1", "--runs-dir", tmp_path)
    assert code == 2 and "trials=-1" in one_line_error(err)
    with pytest.raises(HeadstartError, match="tune searches one fine-tuning"):
        headstart.tune(small_faces, strategy="linear-probe", runs_dir=tmp_path)
    with pytest.raises(HeadstartError, match="sampler='grid'"):
        headstart.tune(small_faces, sampler="grid", runs_dir=tmp_path)
    code, _, err = run(
        capsys, "tune", small_faces, "--storage", "nosuchdb://x", "--runs-dir", tmp_path
    )
    assert code == 2 and "cannot open the study storage nosuchdb://x" in one_line_error(err)
    with pytest.raises(HeadstartError, match="give its --storage and --study"):
        headstart.tune(small_faces, trials=0, runs_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.slow  # one more fit after the module's search
def test_no_trials_fits_the_best_of_a_finished_study(tuned, small_faces, tmp_path):
    storage = f"sqlite:///{tuned.run_dir / 'study.db'}"
    again = headstart.tune(
        small_faces,
        trials=0,
        storage=storage,
        study=tuned.run_dir.name,
        lr=2e-4,
        epochs=1,
        augment="light",
        tta="none",
        runs_dir=tmp_path,
        quiet=True,
    )
    assert again.trials == tuned.trials and again.fitted is not None
    # The finished study's best, and no trial added to it.
    assert again.best == tuned.best and again.best_accuracy == tuned.best_accuracy
    fine = optuna.load_study(study_name=f"{tuned.run_dir.name}-fine", storage=storage)
    assert len(fine.trials) == 1
