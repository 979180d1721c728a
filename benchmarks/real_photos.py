"""The default fit on real photo sets at real size, beside each forced strategy.

For each set in ``../shared/data`` (brain MRI scans, trash photos, hand signs of digits; each a
``train/`` and a ``test/`` folder of class folders, see its ``SOURCE.md``): ``headstart fit``
on the ``train/`` class folders, as a user with one folder of labelled photos runs it (the fit
makes its own validation split), with default settings and an empty cache; then each strategy
forced (``linear-probe``, ``fine-tune``, ``full``) on the warm cache. Every model is scored on
the set's ``test/`` photos with ``headstart.evaluate``, twice: on all of them, and on those
that are not copies of a training photo (the sets' own splits hold some: the brain MRI
release puts 157 exact copies in test; the audit finds them). It prints, per run, both
accuracies, the wall time of the fit, what the plan chose (strategy, epochs, training size)
and the time it predicted, and ends with a Markdown table for the README. It prints numbers;
it does not assert.

Usage: python benchmarks/real_photos.py [--only trashnet,...] [--strategies auto,...]
       [--data ../shared/data] [--per-class N] [--keep FOLDER]

``--per-class`` subsamples each set's training classes (a quick look; not the bar). The full
run takes hours on 2 CPU cores: the forced fine-tunes dominate.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import headstart

SETS = ("brain_tumor_mri", "trashnet", "sign_language_digits")
STRATEGIES = ("auto", "linear-probe", "fine-tune", "full")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def subsample(source: Path, target: Path, per_class: int) -> Path:
    """The first ``per_class`` training images of each class (sorted by name) and the whole
    test split, copied to ``target``."""
    for split in ("train", "test"):
        for folder in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            files = sorted(f for f in folder.iterdir() if f.is_file())
            chosen = files[:per_class] if split == "train" else files
            (target / split / folder.name).mkdir(parents=True, exist_ok=True)
            for file in chosen:
                shutil.copy(file, target / split / folder.name / file.name)
    return target


def clean_test(data: Path, work: Path) -> tuple[Path, int]:
    """A CSV of the test photos that are not copies of a training photo (found by the audit of
    the whole set), and how many were left out."""
    report = headstart.audit(data, quiet=True)
    copies = {
        s.path
        for group in report.duplicates
        if "train" in group.splits
        for s in group.samples
        if s.split == "test"
    }
    target = work / f"{data.name}-test-without-copies.csv"
    with open(target, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label", "split"])
        for sample in report.dataset.split("test"):
            if sample.path not in copies:
                writer.writerow([sample.path, sample.label, "test"])
    return target, len(copies)


def run(data: Path, clean: Path | None, runs: Path, strategy: str) -> dict:
    started = time.perf_counter()
    result = headstart.fit(data / "train", strategy=strategy, runs_dir=runs, quiet=True)
    seconds = time.perf_counter() - started
    settings = result.plan.fine_tune
    planned = json.loads((result.run_dir / "plan.json").read_text())
    everything, _ = headstart.evaluate(result.run_dir, data / "test", quiet=True)
    without_copies = everything  # until the audit has found the copies (see main)
    if clean is not None:
        without_copies, _ = headstart.evaluate(result.run_dir, clean, split="test", quiet=True)
    return {
        "strategy": strategy,
        "kept": result.strategy,
        "test": everything["accuracy"],
        "test_images": everything["n"],
        "clean": without_copies["accuracy"],
        "clean_images": without_copies["n"],
        "val": result.scores["val"]["accuracy"],
        "seconds": seconds,
        "epochs": settings.epochs if settings else 0,
        "trained": len([r for r in _metrics(result.run_dir) if "epoch" in r]),
        "train_size": getattr(settings, "train_size", None) if settings else None,
        "eta": planned.get("evidence", {}).get("cost", {}).get("eta_seconds"),
        "run": str(result.run_dir),
    }


def _metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--only", default=",".join(SETS), help="comma-separated sets")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--per-class", type=int, help="subsample each training class")
    parser.add_argument("--keep", type=Path, help="write runs (and subsamples) here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="real-photos-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        data = args.data / name
        if not data.exists():
            print(f"{name}: not found under {args.data}; skipped")
            continue
        if args.per_class:
            data = subsample(data, work / f"{name}-{args.per_class}", args.per_class)
        cache = work / f"cache-{name}"
        shutil.rmtree(cache, ignore_errors=True)  # the default fit starts with empty caches
        os.environ["HEADSTART_CACHE"] = str(cache)
        print(f"\n{name}: {data}")
        head = f"  {'strategy':<13} {'kept':<13} {'test':>6} {'clean':>6} {'seconds':>8} {'eta':>6}"
        print(f"{head}  plan")
        clean = None
        for strategy in [s.strip() for s in args.strategies.split(",") if s.strip()]:
            if clean is None and strategy != "auto":
                clean, copies = clean_test(data, work)
                print(f"  ({copies} test photos are copies of training photos)")
            row = {"set": name, **run(data, clean, work / "runs", strategy)}
            if clean is None:  # the default fit ran first, on empty caches: now the audit
                clean, copies = clean_test(data, work)
                print(f"  ({copies} test photos are copies of training photos)")
                without, _ = headstart.evaluate(row["run"], clean, split="test", quiet=True)
                row["clean"], row["clean_images"] = without["accuracy"], without["n"]
            rows.append(row)
            eta = f"{row['eta']:.0f}" if row["eta"] else "-"
            size = f", trained at {row['train_size']} px" if row["train_size"] else ""
            print(
                f"  {strategy:<13} {row['kept']:<13} {row['test']:>6.1%} {row['clean']:>6.1%} "
                f"{row['seconds']:>8.0f} {eta:>6}  {row['trained']} of {row['epochs']} "
                f"epochs{size}; {row['run']}",
                flush=True,
            )
    print("\n| set | strategy | kept | test accuracy | without copies of training photos |", end="")
    print(" fit time |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        minutes, seconds = divmod(round(row["seconds"]), 60)
        print(
            f"| {row['set']} | {row['strategy']} | {row['kept']} | {row['test']:.1%} "
            f"({row['test_images']}) | {row['clean']:.1%} ({row['clean_images']}) | "
            f"{minutes} min {seconds:02d} s |"
        )
    print(f"\nruns under {work}")


if __name__ == "__main__":
    main()
