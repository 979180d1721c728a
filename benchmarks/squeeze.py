"""Squeezing out the juice on real photo sets: the default fit, test-time crops, and an
ensemble of fine-tunings, side by side, scored on each set's held-out ``test/`` photos.

For each set in ``../shared/data`` (see ``real_photos.py``): ``headstart fit`` of the
``train/`` class folders with default settings (``--tta auto``: the crops validation
chose), then the same model predicting with each named set of test-time crops (the network
is the same; only what a prediction averages changes), then ``fit --ensemble N`` (N
fine-tunings from different seeds, their probabilities averaged), then ``headstart distill``
of that ensemble into one network of the same architecture (and, with ``--student-sizes``,
at smaller input sizes). Each row prints the test accuracy, the test negative
log-likelihood (of the calibrated probabilities), the fit's wall time and the milliseconds
a test photo takes to predict; a student's note is its verdict beside its teacher. Tuning
(``headstart tune``) is not built yet; its row says so.

Usage: python benchmarks/squeeze.py [--only trashnet,...] [--members 3] [--data DIR]
       [--keep FOLDER] [--reuse RUN ...] [--reuse-ensemble RUN ...] [--student-sizes 160 ...]

``--reuse`` / ``--reuse-ensemble``: score an existing run folder's model (one per set, in
``--only`` order) in place of the default fit / of the ensemble's fit. It prints numbers;
it does not assert.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import headstart
from headstart.preprocessing import CROP_SETS

SETS = ("brain_tumor_mri", "trashnet", "sign_language_digits")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_photos(data: Path) -> tuple[list[Path], list[str]]:
    files = sorted(p for p in (data / "test").glob("*/*") if p.is_file())
    return files, [p.parent.name for p in files]


def score(model, files: list[Path], labels: list[str]) -> dict:
    """Accuracy and NLL of ``model`` on the test photos, and its milliseconds a photo."""
    started = time.perf_counter()
    predictions, skipped = model.predict_files(files, top_k=len(model.classes), quiet=True)
    seconds = time.perf_counter() - started
    truth = dict(zip(files, labels, strict=True))
    right, losses = 0, []
    for path, prediction in predictions:
        probabilities = dict(prediction.top)
        right += prediction.label == truth[path]
        losses.append(-np.log(max(probabilities[truth[path]], 1e-12)))
    n = len(predictions)
    return {
        "accuracy": right / n,
        "nll": float(np.mean(losses)),
        "ms": 1000 * seconds / max(n, 1),
        "n": n,
        "skipped": len(skipped),
    }


def fitted(data: Path, runs: Path, **settings) -> tuple[Path, float]:
    started = time.perf_counter()
    result = headstart.fit(data / "train", runs_dir=runs, quiet=True, **settings)
    return result.run_dir, time.perf_counter() - started


def row(name: str, what: str, scored: dict | None, seconds: float | None, note: str = "") -> str:
    if scored is None:
        return f"| {name} | {what} | - | - | - | - | {note} |"
    fit = f"{seconds / 60:.1f} min" if seconds is not None else "-"
    return (
        f"| {name} | {what} | {scored['accuracy']:.1%} | {scored['nll']:.3f} | {fit} | "
        f"{scored['ms']:.0f} | {note} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SETS))
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--keep", type=Path)
    parser.add_argument("--reuse", type=Path, nargs="*", default=[])
    parser.add_argument("--reuse-ensemble", type=Path, nargs="*", default=[])
    parser.add_argument("--student-sizes", type=int, nargs="*", default=[])
    parser.add_argument("--trials", type=int, default=8, help="tune's trials; 0: no tuned row")
    parser.add_argument("--tune-minutes", type=float, help="tune's search budget")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="headstart-squeeze-"))
    lines = [
        "| set | model | test accuracy | test NLL | fit | ms a photo | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, name in enumerate(args.only.split(",")):
        data = args.data / name
        files, labels = test_photos(data)
        if i < len(args.reuse):
            run, seconds = args.reuse[i], None
        else:
            run, seconds = fitted(data, work / "runs")
        model = headstart.load(run)
        chosen = json.loads((Path(run) / "summary.json").read_text()).get("test_time") or {}
        lines.append(
            row(name, "default fit", score(model, files, labels), seconds, chosen.get("why", ""))
        )
        for crops_name, crops in CROP_SETS.items():
            variant = copy.copy(model)
            variant.inputs = model.inputs.with_crops(crops)
            lines.append(row(name, f"crops: {crops_name}", score(variant, files, labels), None))
            print(lines[-1], flush=True)
        if args.members > 1:
            if i < len(args.reuse_ensemble):
                teacher, seconds = args.reuse_ensemble[i], None
            else:
                teacher, seconds = fitted(data, work / "runs", ensemble=args.members)
            summary = json.loads((Path(teacher) / "summary.json").read_text())
            lines.append(
                row(
                    name,
                    f"ensemble of {args.members}",
                    score(headstart.load(teacher), files, labels),
                    seconds,
                    (summary.get("kept") or {}).get("why") or "",
                )
            )
            print(lines[-1], flush=True)
            for size in [None, *args.student_sizes]:
                lines.append(distilled(name, teacher, work / "runs", size, files, labels))
                print(lines[-1], flush=True)
        if args.trials:
            minutes = args.tune_minutes
            lines.append(tuned(name, data, work / "runs", args.trials, minutes, files, labels))
            print(lines[-1], flush=True)
    print("\n".join(lines))
    print(f"\nruns under {work}")


def distilled(
    name: str, teacher: Path, runs: Path, size: int | None, files: list[Path], labels: list[str]
) -> str:
    """``headstart distill`` of ``teacher`` into one network (at input ``size``), scored."""
    started = time.perf_counter()
    sized = {"input_size": size} if size else {}
    student = headstart.distill(teacher, runs_dir=runs, quiet=True, **sized)
    seconds = time.perf_counter() - started
    weighed = json.loads((student.run_dir / "distillation.json").read_text())
    at = f" at {size} px" if size else ""
    return row(
        name,
        f"distilled into one network{at}",
        score(headstart.load(student.run_dir), files, labels),
        seconds,
        weighed["verdict"],
    )


def tuned(
    name: str,
    data: Path,
    runs: Path,
    trials: int,
    minutes: float | None,
    files: list[Path],
    labels: list[str],
) -> str:
    """``headstart tune`` of the training photos, its best trial fitted, scored."""
    started = time.perf_counter()
    budget = {"time_budget": minutes} if minutes else {}
    found = headstart.tune(data / "train", trials, runs_dir=runs, quiet=True, **budget)
    seconds = time.perf_counter() - started
    settings = ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in found.best.items()
    )
    return row(
        name,
        f"tuned ({found.trials} trials)",
        score(headstart.load(found.run_dir), files, labels),
        seconds,
        f"best trial {found.best_accuracy:.1%} on validation: {settings}",
    )


if __name__ == "__main__":
    main()
