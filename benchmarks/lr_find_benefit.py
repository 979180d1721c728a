"""Does the learning-rate range test earn its time inside ``fit``?

For each dataset (the LFW faces of the tests, and a subset of scikit-learn's digits), with
``strategy="fine-tune"`` and the same split and seed:

1. ``headstart.lr_find``: the range test's suggestion and its cost;
2. ``fit`` with the plan's default learning rate;
3. ``fit`` with the suggested learning rate;

and prints the fine-tuning time (the sum of the epochs' seconds), the range test's time as a
share of it, and validation and test accuracy of both fits. The bar for wiring the range test
into ``fit``: at most ~10% slower and no less accurate.

Usage: python benchmarks/lr_find_benefit.py [--digits-per-class 30] [--steps 60] [--seeds 0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import headstart
from headstart.demo import demo_dataset


def digits_subset(root: Path, per_class: int) -> Path:
    """The first ``per_class`` images of each digit, as class folders."""
    source = demo_dataset("digits", root / "all")
    subset = root / f"digits-{per_class}"
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (subset / folder.name).mkdir(parents=True, exist_ok=True)
        for image in sorted(folder.glob("*.png"))[:per_class]:
            shutil.copy(image, subset / folder.name / image.name)
    return subset


def one_fit(data: Path, runs: Path, seed: int, lr: float | None) -> dict:
    result = headstart.fit(
        data,
        strategy="fine-tune",
        lr=lr,
        seed=seed,
        test_fraction=0.2,
        runs_dir=runs,
        quiet=True,
    )
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    seconds = sum(json.loads(line).get("seconds", 0.0) for line in lines)
    return {
        "lr": result.plan.fine_tune.lr if result.plan.fine_tune else lr,
        "strategy": result.strategy,
        "fine_tune_s": seconds,
        "fit_s": result.seconds,
        "val": result.scores["val"]["accuracy"],
        "test": result.scores["test"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--digits-per-class", type=int, default=30)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lr-find-benefit-"))
    datasets = {
        "faces": demo_dataset("lfw", root / "lfw"),
        "digits": digits_subset(root, args.digits_per_class),
    }
    for name, data in datasets.items():
        for seed in args.seeds:
            found = headstart.lr_find(
                data,
                strategy="fine-tune",
                steps=args.steps,
                seed=seed,
                test_fraction=0.2,
                quiet=True,
            )
            print(
                f"{name} seed {seed}: {found.describe()} in {found.seconds:.0f} s "
                f"({len(found.lrs)} steps, {found.stopped}); {found.alternatives}",
                flush=True,
            )
            for label, lr in (("default", None), ("suggested", found.suggestion)):
                row = one_fit(data, root / "runs", seed, lr)
                share = found.seconds / max(row["fine_tune_s"], 1e-9)
                print(
                    f"  {label:9s} lr {row['lr']:.2g}: fine-tune {row['fine_tune_s']:.0f} s "
                    f"(range test = {share:.0%} of it), fit {row['fit_s']:.0f} s, "
                    f"val {row['val']:.1%}, test {row['test']:.1%}, kept {row['strategy']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
