"""Is fit's own learning rate (the range test's suggestion) no worse than the plan's default?

For each dataset, with ``strategy="fine-tune"``, the same split and the same seed, two fits:

1. ``default``: the plan's default learning rate, the range test switched off;
2. ``range test``: no ``lr`` given, and the range test made to run whatever its cost (``fit``
   runs it only where it costs at most ``LR_FIND_SHARE`` of the fine-tuning; patched here), so
   the plan takes its suggestion (within 10x of the default) or keeps the default when the
   curve shows no descent beyond its noise.

It prints, for each: the learning rate trained at, the fine-tuned model's test and validation
accuracy (its own, also where ``fit`` keeps the linear probe for scoring higher on validation:
then the probe's too), the fine-tuning's time (the sum of its epochs) and the whole fit's; for
the range test also its suggestion, the rule that decided, its time and what every rule would
have said. Numbers only, nothing asserted: read them against the noise of one split and one
seed (``--seeds 0 1 2`` for more).

The datasets: the real photo sets in ``--data-root`` (``/work/shared/data``; each holds
``train/<class>/`` and ``test/<class>/`` and a SOURCE.md), fine-tuned on their train split
(validation carved from it) and scored on their test split; and the demo sets ``faces`` (LFW)
and ``digits`` (scikit-learn), split 60/20/20 here. Train and test of brain_tumor_mri share
157 byte-identical images (SOURCE.md), and trashnet one: ``fit`` is told to allow the leak,
and their test accuracy is flattered by it, for both fits alike.

The full run (hours on 2 CPU cores):

    python benchmarks/lr_find_benefit.py

A smoke run (minutes): a sample of each class, fewer epochs, one set:

    python benchmarks/lr_find_benefit.py --sets trashnet --per-class 20 --test-per-class 20 \\
        --epochs 1
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import headstart
from headstart import recipe
from headstart.demo import demo_dataset
from headstart.stages import plan as plan_stage

PHOTO_SETS = ("brain_tumor_mri", "trashnet", "sign_language_digits")
DEMO_SETS = ("faces", "digits")


@dataclass(frozen=True)
class Arm:
    """One way of choosing the learning rate, and the share of the fine-tuning up to which
    ``fit`` runs the range test under it (0: never; infinity: always)."""

    name: str
    lr_find_share: float


ARMS = (Arm("default", 0.0), Arm("range test", math.inf))


def sample(source: Path, target: Path, per_class: int | None, seed: int) -> None:
    """Copy ``per_class`` images of each class folder of ``source`` (all with None), drawn at
    random with ``seed``, into ``target``."""
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        images = sorted(p for p in folder.iterdir() if p.is_file())
        if per_class is not None and per_class < len(images):
            images = sorted(random.Random(seed).sample(images, per_class))
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for image in images:
            shutil.copy(image, target / folder.name / image.name)


def photo_set(root: Path, name: str, work: Path, args: argparse.Namespace) -> Path:
    """The set itself, or a sample of it (train and test sampled per class) under ``work``."""
    source = root / name
    if args.per_class is None and args.test_per_class is None:
        return source
    target = work / f"{name}-{args.per_class or 'all'}-{args.test_per_class or 'all'}"
    sample(source / "train", target / "train", args.per_class, seed=0)
    sample(source / "test", target / "test", args.test_per_class, seed=0)
    return target


def demo_set(name: str, work: Path, per_class: int | None) -> Path:
    """A demo set as class folders (split here), sampled when ``per_class`` is given."""
    full = demo_dataset("lfw" if name == "faces" else "digits", work / f"{name}-all")
    if per_class is None:
        return full
    target = work / f"{name}-{per_class}"
    sample(full, target, per_class, seed=0)
    return target


def one_fit(
    data: Path, arm: Arm, seed: int, runs: Path, args: argparse.Namespace, **settings
) -> dict:
    """``fit`` with the learning rate chosen as ``arm`` says; what the benchmark prints."""
    tuned: dict[str, dict] = {}
    fits_choice = recipe.choose

    def choose(probe, fine_tuned, **how):  # fit's choice, unchanged; fine-tuned scores kept
        tuned.update({split: s.scores for split, s in fine_tuned.scored.items()})
        return fits_choice(probe, fine_tuned, **how)

    if args.epochs:
        settings["epochs"] = args.epochs
    with (
        mock.patch.object(plan_stage, "LR_FIND_SHARE", arm.lr_find_share),
        mock.patch.object(plan_stage, "LR_FIND_STEPS", args.steps),
        mock.patch.object(recipe, "choose", choose),
    ):
        result = headstart.fit(
            data,
            strategy="fine-tune",
            seed=seed,
            runs_dir=runs,
            allow_leakage=True,
            checks=False,  # the same for both fits: their time would only blur the comparison
            quiet=True,
            **settings,
        )
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    found = result.run_dir / "lr_find.json"
    return {
        "lr": result.plan.fine_tune.lr,
        "tuned": tuned,
        "kept": result.strategy,
        "kept_test": result.scores.get("test", {}).get("accuracy", math.nan),
        "fine_tune_s": sum(json.loads(line).get("seconds", 0.0) for line in lines),
        "fit_s": result.seconds,
        "found": json.loads(found.read_text()) if found.exists() else None,
    }


def report(arm: Arm, row: dict) -> None:
    """Two lines or more: the fine-tuned model's scores and times; the range test's verdict."""
    test, val = (row["tuned"].get(split, {}).get("accuracy", math.nan) for split in ("test", "val"))
    kept = f"; fit kept the {row['kept']}: test {row['kept_test']:.1%}"
    print(
        f"  {arm.name:10s} lr {row['lr']:.2g}: test {test:.1%}, val {val:.1%}, "
        f"fine-tune {row['fine_tune_s']:.0f} s, fit {row['fit_s']:.0f} s"
        f"{kept if row['kept'] != 'fine-tune' else ''}",
        flush=True,
    )
    found = row["found"]
    if found is None:
        return
    said = (
        f"suggested {found['suggestion']:.2g}"
        if found["suggestion"] is not None
        else "no suggestion (the plan's default kept)"
    )
    share = found["seconds"] / max(row["fine_tune_s"], 1e-9)
    print(
        f"    {said} by: {found['rule']}; {len(found['lrs'])} steps, {found['stopped']}, "
        f"{found['seconds']:.0f} s (= {share:.0%} of the fine-tuning)",
        flush=True,
    )
    for rule, lr in found["alternatives"].items():
        print(f"    - {rule}: {lr:.2g}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", choices=PHOTO_SETS + DEMO_SETS, default=PHOTO_SETS)
    parser.add_argument("--data-root", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--per-class", type=int, help="training images per class (default all)")
    parser.add_argument("--test-per-class", type=int, help="test images per class (default all)")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs (default: the plan's)")
    parser.add_argument("--steps", type=int, default=plan_stage.LR_FIND_STEPS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--runs-dir", type=Path, help="keep the runs here (lr_find.png...)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lr-find-benefit-"))
    runs = args.runs_dir or work / "runs"
    try:
        for name in args.sets:
            data = (
                demo_set(name, work, args.per_class)
                if name in DEMO_SETS
                else photo_set(args.data_root, name, work, args)
            )
            split_here = {"test_fraction": 0.2} if name in DEMO_SETS else {}
            for seed in args.seeds:
                print(f"{name} ({data}), seed {seed}:", flush=True)
                for arm in ARMS:
                    report(arm, one_fit(data, arm, seed, runs, args, **split_here))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
