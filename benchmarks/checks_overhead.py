"""What the sanity checks add to the wall time of a default ``fit``.

The issue's bar: at most 15% of a default fit on a few thousand images. Two datasets, because
the checks cost depends on the plan: a few thousand distinct photos (the audit benchmark's
generator; the plan keeps the linear probe, so only the checks on cached features run) and
the 1,797 scikit-learn digits (the plan fine-tunes, so the training trial runs too).

For each: one fit to fill the caches (its time, extraction included, is printed as the cold
fit), then a default fit with the checks and one without (``checks=False``), on warm caches:
the harder comparison, since extraction no longer dilutes the checks. Leaks are allowed: the
generator's crops of dark sky photos make a few near-identical pairs that the audit flags.

Usage: python benchmarks/checks_overhead.py [--photos 3000] [--keep FOLDER] [--only photos|digits]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import headstart
from audit_speed import write_photos
from headstart.demo import demo_dataset


def timed_fit(data: Path, runs: Path, **settings) -> tuple[float, headstart.FitResult]:
    started = time.perf_counter()
    result = headstart.fit(data, runs_dir=runs, quiet=True, allow_leakage=True, **settings)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=3000)
    parser.add_argument("--keep", type=Path, help="reuse (or write) the photos here")
    parser.add_argument("--only", choices=("photos", "digits"), help="one of the two datasets")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="checks-bench-"))
    os.environ["HEADSTART_CACHE"] = str(work / "cache")
    datasets = {}
    if args.only != "digits":
        photos = args.keep or work / "photos"
        if not (photos / ".complete").exists():
            write_photos(photos, args.photos)
            (photos / ".complete").touch()
        datasets[f"{args.photos} photos"] = photos
    if args.only != "photos":
        datasets["1,797 digits"] = demo_dataset("digits", work)
    print(
        f"{'data':<14} {'plan':<13} {'cold fit':>9} {'with':>8} {'without':>8} "
        f"{'checks':>7} {'overhead':>9}"
    )
    for name, data in datasets.items():
        cold, _ = timed_fit(data, work / "runs", checks=False)
        with_checks, result = timed_fit(data, work / "runs")
        without, _ = timed_fit(data, work / "runs", checks=False)
        checks = json.loads((result.run_dir / "checks.json").read_text())
        overhead = (with_checks - without) / without
        print(
            f"{name:<14} {result.strategy:<13} {cold:>8.0f}s {with_checks:>7.0f}s "
            f"{without:>7.0f}s {checks['seconds']:>6.1f}s {overhead:>8.1%}"
        )
        print(f"  checks: {', '.join(c['name'] + '=' + c['status'] for c in checks['checks'])}")


if __name__ == "__main__":
    main()
