"""Does ``headstart rank`` order backbones as fine-tuning them does?

For each set in ``../shared/data`` (see each ``SOURCE.md``): ``headstart.rank`` on the
``train/`` class folders with the default candidates (the built-in network at its own input
size, at 3/4 and 1/2 of it, and randomly initialised), then a fit of every candidate, scored on
the set's ``test/`` photos: the default fit (``headstart fit --arch A --input-size N``, the
plan's own choices) for a pretrained one, and every layer trained for the plan's largest
fine-tune, 10 epochs (``--no-pretrained --strategy full --epochs 10``), for the random
initialisation. No time budget: the fits do not depend on the machine's load.

It prints per candidate its place, LogME (± its standard error over half-samples), the
cross-validated probe, the fine-tuned test accuracy (± its standard error) and the fit's time;
then, over the
pretrained candidates (the ones the ranking orders; a random initialisation is the floor for
frozen features, not a prediction of training from scratch), Kendall's tau of the ranking's
order, of LogME's alone and of the probes' alone against the fine-tuned order, and how many
pairs of candidates each puts the other way round, with how many of those the test set
cannot tell apart (fine-tuned accuracies within two standard errors of their difference).
Numbers only; nothing is asserted.

Usage: python benchmarks/rank.py [--only trashnet,...] [--data ../shared/data] [--most-images N]
       [--pretrained-only] [--keep FOLDER]

Every candidate is fitted: about half an hour a set on 2 CPU cores for the pretrained ones,
and hours for the random initialisation (every layer, 10 epochs). ``--pretrained-only`` fits
the pretrained candidates alone (the random one is still ranked and printed). ``--keep``
writes the fits to ``FOLDER/SET/CANDIDATE/`` and scores a finished fit found there instead of
fitting it again: a fit is deterministic (same data, settings and seed, the same model), for
the same code; a folder kept across changes to the fit is the caller's to clear.
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from scipy.stats import kendalltau

import headstart
from headstart.ranking import Scored

SETS = ("brain_tumor_mri", "trashnet", "sign_language_digits")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class Fitted(NamedTuple):
    """A ranked candidate and its fit's test accuracy."""

    place: int  # in the ranking
    scored: Scored
    accuracy: float
    images: int  # tested on

    @property
    def error(self) -> float:
        """The test accuracy's standard error (a binomial proportion)."""
        return math.sqrt(self.accuracy * (1 - self.accuracy) / self.images)


def fine_tuned(data: Path, scored: Scored, runs: Path) -> tuple[float, int, float | None]:
    """Test accuracy, test images and the fit's seconds (None: a finished fit was kept) of
    one ranked candidate."""
    candidate = scored.candidate
    kept = sorted(runs.glob("*/summary.json"))
    seconds = None
    if kept:
        run_dir = kept[-1].parent
    else:
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
        run_dir = result.run_dir
    report, _ = headstart.evaluate(run_dir, data / "test", quiet=True)
    return report["accuracy"], report["n"], seconds


def pairs_reversed(order: Sequence[float], fits: Sequence[Fitted]) -> tuple[int, int]:
    """Pairs that ``order`` (higher first) puts the other way round from the fits' test
    accuracies, and how many of them are within two standard errors of their difference."""
    reversed_, within_noise = 0, 0
    for i, j in itertools.combinations(range(len(order)), 2):
        a, b = fits[i], fits[j]
        if (order[i] - order[j]) * (a.accuracy - b.accuracy) < 0:
            reversed_ += 1
            within_noise += abs(a.accuracy - b.accuracy) <= 2 * math.hypot(a.error, b.error)
    return reversed_, within_noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated set names")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--most-images", type=int, default=2000)
    parser.add_argument("--pretrained-only", action="store_true", help="fit no random init")
    parser.add_argument("--keep", type=Path, help="write fits here, and score those found here")
    args = parser.parse_args()
    sets = args.only.split(",") if args.only else SETS
    work = args.keep or Path(tempfile.mkdtemp(prefix="rank-"))
    for name in sets:
        data = args.data / name
        ranking = headstart.rank(data / "train", most_images=args.most_images, quiet=True)
        print(f"\n{name}: ranked on {ranking.images} images in {ranking.seconds:.0f} s")
        print(f"  advice: {ranking.advice()}")
        for a, b in ranking.tied_pairs:
            print(f"  tie: {a.candidate} and {b.candidate}, LogME within {a.tie_margin(b):.4f}")
        for scored in ranking.scored:  # before any fit: a stopped run keeps the ranking
            print(f"  ranked {scored.to_dict()}", flush=True)
        header = (
            f"{'place':<6} {'candidate':<34} {'LogME':>15} {'probe':>6} "
            f"{'fine-tuned':>13} {'fit s':>6}"
        )
        print("  " + header)
        fits = []
        for place, scored in enumerate(ranking.scored, 1):
            if not scored.candidate.pretrained and args.pretrained_only:
                continue
            runs = work / name / str(scored.candidate)
            accuracy, images, seconds = fine_tuned(data, scored, runs)
            fit = Fitted(place, scored, accuracy, images)
            fits.append(fit)
            label = f"{scored.candidate.arch}@{scored.input_size}" + (
                "" if scored.candidate.pretrained else " (random)"
            )
            logme = f"{scored.logme:.4f} ± {scored.logme_error:.4f}"
            tested = f"{accuracy:.1%} ± {fit.error:.1%}"
            took = "kept" if seconds is None else f"{seconds:.0f}"
            shown = str(place) if scored.candidate.pretrained else "floor"
            print(
                f"  {shown:<6} {label:<34} {logme:>15} {scored.probe_accuracy:>6.1%} "
                f"{tested:>13} {took:>6}",
                flush=True,
            )
        print_agreement([f for f in fits if f.scored.candidate.pretrained])
        for fit in fits:
            if not fit.scored.candidate.pretrained:
                best = max((f.accuracy for f in fits if f.scored.candidate.pretrained), default=0)
                print(
                    f"  the floor, trained from scratch: {fit.accuracy:.1%} against the best "
                    f"fine-tuned {best:.1%} (not predicted by its frozen features' scores)"
                )


def print_agreement(fits: Sequence[Fitted]) -> None:
    """Kendall's tau against the fine-tuned order of the ranking's order, LogME's and the
    probes', with the pairs each reverses."""
    measures = {
        "the ranking": [-f.place for f in fits],
        "LogME alone": [f.scored.logme for f in fits],
        "the probe alone": [f.scored.probe_accuracy for f in fits],
    }
    accuracies = [f.accuracy for f in fits]
    print(f"  against the fine-tuned order of the {len(fits)} pretrained candidates:")
    for measure, order in measures.items():
        tau = kendalltau(order, accuracies).statistic
        reversed_, within_noise = pairs_reversed(order, fits)
        print(
            f"    {measure}: Kendall's tau {tau:.2f}; pairs reversed {reversed_} of "
            f"{math.comb(len(fits), 2)}, {within_noise} of them within the test's noise"
        )


if __name__ == "__main__":
    main()
