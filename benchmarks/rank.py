"""Does ``headstart rank`` order backbones as fine-tuning them does?

For each set in ``../shared/data`` (see each ``SOURCE.md``): ``headstart.rank`` on the
``train/`` class folders with the default candidates (the built-in network at its own input
size, at 3/4 and 1/2 of it, and randomly initialised), then a fit of every candidate, scored on
the set's ``test/`` photos: the default fit (``headstart fit --arch A --input-size N``, the
plan's own choices) for a pretrained one, and every layer trained for the plan's largest
fine-tune, 10 epochs (``--no-pretrained --strategy full --epochs 10``), for the random
initialisation. No time budget: the fits do not depend on the machine's load. It prints
per candidate LogME, the cross-validated probe, the fine-tuned test accuracy and the fit's
time, then Kendall's tau of LogME's order and of the probes' order against the fine-tuned
order. Numbers only; nothing is asserted.

Usage: python benchmarks/rank.py [--only trashnet,...] [--data ../shared/data] [--most-images N]
       [--pretrained-only]

Every candidate is fitted: about half an hour a set on 2 CPU cores for the pretrained ones,
and hours for the random initialisation (every layer, 10 epochs). ``--pretrained-only`` fits
the pretrained candidates alone (the random one is still ranked and printed) and computes
Kendall's tau over them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from scipy.stats import kendalltau

import headstart

SETS = ("brain_tumor_mri", "trashnet", "sign_language_digits")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def fine_tuned(data: Path, scored, runs: Path) -> tuple[float, float]:
    """Test accuracy and seconds of the fit of one ranked candidate."""
    candidate = scored.candidate
    scratch = {} if candidate.pretrained else {"strategy": "full", "epochs": 10}
    started = time.perf_counter()
    result = headstart.fit(
        data / "train",
        arch=candidate.arch,
        input_size=scored.input_size,
        pretrained=candidate.pretrained,
        runs_dir=runs,
        quiet=True,
        **scratch,
    )
    seconds = time.perf_counter() - started
    report, _ = headstart.evaluate(result.run_dir, data / "test", quiet=True)
    return report["accuracy"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated set names")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--most-images", type=int, default=2000)
    parser.add_argument("--pretrained-only", action="store_true", help="fit no random init")
    args = parser.parse_args()
    sets = args.only.split(",") if args.only else SETS
    with tempfile.TemporaryDirectory() as work:
        for name in sets:
            data = args.data / name
            ranking = headstart.rank(data / "train", most_images=args.most_images, quiet=True)
            print(f"\n{name}: ranked on {ranking.images} images in {ranking.seconds:.0f} s")
            print(f"  advice: {ranking.advice()}")
            for scored in ranking.scored:  # before any fit: a stopped run keeps the ranking
                print(f"  ranked {scored.to_dict()}", flush=True)
            header = f"{'candidate':<34} {'LogME':>7} {'probe':>7} {'fine-tuned':>10} {'fit s':>6}"
            print("  " + header)
            fitted = [
                s for s in ranking.scored if s.candidate.pretrained or not args.pretrained_only
            ]
            accuracies = []
            for scored in fitted:
                accuracy, seconds = fine_tuned(data, scored, Path(work) / name)
                accuracies.append(accuracy)
                label = f"{scored.candidate.arch}@{scored.input_size}" + (
                    "" if scored.candidate.pretrained else " (random)"
                )
                print(
                    f"  {label:<34} {scored.logme:>7.3f} {scored.probe_accuracy:>7.1%} "
                    f"{accuracy:>10.1%} {seconds:>6.0f}",
                    flush=True,
                )
            logme_tau = kendalltau([s.logme for s in fitted], accuracies).statistic
            probe_tau = kendalltau([s.probe_accuracy for s in fitted], accuracies).statistic
            print(
                f"  Kendall's tau against fine-tuned, over the {len(fitted)} fitted: LogME "
                f"{logme_tau:.2f}, probe {probe_tau:.2f}"
            )


if __name__ == "__main__":
    main()
