"""How far the audit's list of wrong labels can be trusted: planted flips on features of every
quality, from a probe that is always right to one that guesses.

Each dataset's features are extracted once, as ``fit`` extracts them: LFW faces and patches,
scikit-learn's digits, the low-resolution photos of :mod:`datasets` at two settings (5 classes,
300 crops each), and pictures of random noise, whose labels mean nothing. The features are then
made weaker on purpose (Gaussian noise of 1 or 2 standard deviations added to the standardised
features) to fill in the range of probe accuracies. On each, 0%, 3% or 10% of the labels are
flipped at random to another class, and :func:`headstart.auditing.labels.check_labels` runs as
the audit runs it.

Printed per case: the probe's cross-validated accuracy and balanced accuracy, cleanlab's
estimate against the number of flips planted, the share of the list that is planted flips
(its precision), and the audit's verdict. Then, with correct labels, one large class and small
ones (what a probe that mostly answers the largest class does), and a summary: the share of
images listed though every label is right, by probe accuracy, and the precision of the lists
called reliable and unreliable. It prints numbers; it does not assert.

Usage: python benchmarks/label_errors.py [--keep FOLDER]   (about 15 minutes on 2 CPU cores
the first time, most of it feature extraction; 3 minutes again on a kept folder's features)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from datasets import digits_subset, lfw, low_resolution_photos
from headstart.auditing.labels import LabelCheck, check_labels
from headstart.config import FitConfig
from headstart.data.sources import Sample
from headstart.stages.data import prepare

#: Shares of the labels flipped on purpose.
FLIP_RATES = (0.0, 0.03, 0.10)
#: Standard deviations of the noise added to the standardised features.
WEAKENED = (0.0, 1.0, 2.0)
#: Seeds of the flips (one for correct labels: nothing random is left).
SEEDS = (0, 1)


@dataclass
class Case:
    data: str
    weakened: float
    flip_rate: float
    flipped: int
    check: LabelCheck
    precision: float | None  # the share of the list that is planted flips; None: empty list


def noise_pictures(root: Path, classes: int = 5, per_class: int = 100) -> Path:
    """Random RGB noise in class folders: no picture says anything about its class."""
    folder = root / f"noise-{classes}x{per_class}"
    if (folder / ".complete").exists():
        return folder
    rng = np.random.default_rng(0)
    for c in range(classes):
        (folder / f"class-{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"class-{c}" / f"{i:04d}.png")
    (folder / ".complete").touch()
    return folder


def datasets(root: Path) -> dict[str, Path]:
    photos = {"classes": 5, "train_per_class": 150, "val_per_class": 150}
    return {
        "lfw": lfw(root),
        "digits": digits_subset(root, per_class=1000),
        "low-res photos": low_resolution_photos(root, **photos),
        "sharper photos": low_resolution_photos(root, detail=32, jitter=0.5, **photos),
        "noise": noise_pictures(root),
    }


def features_of(folder: Path) -> tuple[list[Sample], np.ndarray]:
    """The samples of ``folder`` and their plain-view features, standardised."""
    ready = prepare(folder, FitConfig(quiet=True))
    samples = list(ready.dataset.samples)
    features = ready.features.of([s.path for s in samples]).astype(np.float64)
    return samples, (features - features.mean(0)) / (features.std(0) + 1e-6)


def flip(samples: list[Sample], rate: float, seed: int) -> tuple[list[Sample], set[int]]:
    """``samples`` with a share ``rate`` of labels changed at random to another class."""
    rng = np.random.default_rng(seed)
    classes = sorted({s.label for s in samples})
    chosen = rng.choice(len(samples), round(rate * len(samples)), replace=False)
    flipped = list(samples)
    for i in chosen:
        others = [c for c in classes if c != samples[i].label]
        flipped[i] = replace(samples[i], label=others[rng.integers(len(others))])
    return flipped, {int(i) for i in chosen}


def run_case(name, samples, features, weakened, rate, seed) -> Case:
    if weakened:
        noise = np.random.default_rng(99).normal(0, weakened, features.shape)
        features = features + noise
    given, wrong = flip(samples, rate, seed)
    check = check_labels(given, features, seed=seed)
    index = {s.path: i for i, s in enumerate(given)}
    listed = [index[issue.sample.path] for issue in check.issues]
    precision = float(np.mean([i in wrong for i in listed])) if listed else None
    return Case(name, weakened, rate, len(wrong), check, precision)


def show(case: Case) -> None:
    check = case.check
    precision = "   -" if case.precision is None else f"{case.precision:4.0%}"
    verdict = "reliable" if check.reliable else "UNRELIABLE"
    print(
        f"{case.data:15s} {case.weakened:3.0f} {case.flip_rate:4.0%} "
        f"{check.probe_accuracy:6.1%} {check.probe_balanced_accuracy:6.1%} "
        f"{check.estimated:5d} {case.flipped:5d} {precision:>6s}  {verdict}"
    )


def imbalanced(name: str, samples: list[Sample], features: np.ndarray, small: int) -> None:
    """Correct labels, the first class whole and every other cut to ``small`` images."""
    classes = sorted({s.label for s in samples})
    keep = [
        i
        for c in classes
        for n, i in enumerate(i for i, s in enumerate(samples) if s.label == c)
        if c == classes[0] or n < small
    ]
    check = check_labels([samples[i] for i in keep], features[keep])
    listed = sorted({issue.sample.label for issue in check.issues})
    print(
        f"{name:15s} {len(keep):5d} images ({small} in each small class): accuracy "
        f"{check.probe_accuracy:.1%}, balanced {check.probe_balanced_accuracy:.1%}, "
        f"{check.estimated} listed (all correct labels; classes {', '.join(listed) or '-'}): "
        f"{'reliable' if check.reliable else 'UNRELIABLE'}"
    )


def summarise(cases: list[Case]) -> None:
    print("\ncorrect labels: the share of images listed anyway, by probe accuracy")
    for case in sorted(cases, key=lambda c: -c.check.probe_accuracy):
        if case.flip_rate == 0:
            check = case.check
            print(
                f"  {check.probe_accuracy:6.1%}: {check.estimated / check.images:5.1%} "
                f"({case.data}, weakened {case.weakened:.0f})"
            )
    for rate in FLIP_RATES[1:]:
        print(f"\n{rate:.0%} of labels flipped: the share of the list that is planted flips")
        for reliable in (True, False):
            found = [
                c
                for c in cases
                if c.flip_rate == rate and c.check.reliable == reliable and c.precision is not None
            ]
            if found:
                precisions = [c.precision for c in found]
                accuracies = [c.check.probe_accuracy for c in found]
                print(
                    f"  {'reliable' if reliable else 'unreliable'}: {min(precisions):.0%} to "
                    f"{max(precisions):.0%} (probe {min(accuracies):.1%} to "
                    f"{max(accuracies):.1%}, {len(found)} cases)"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="write (or reuse) the data and caches here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="label-errors-bench-"))
    os.environ.setdefault("HEADSTART_CACHE", str(work / "cache"))

    cases = []
    print("data        weakened flips  probe balanced  est. flips  prec.  verdict")
    found = {name: features_of(folder) for name, folder in datasets(work / "data").items()}
    for name, (samples, features) in found.items():
        for weakened in WEAKENED:
            if name == "noise" and weakened:
                continue  # nothing left to weaken
            for rate in FLIP_RATES:
                for seed in SEEDS if rate else SEEDS[:1]:
                    cases.append(run_case(name, samples, features, weakened, rate, seed))
                    show(cases[-1])

    print("\none large class, small others, correct labels")
    for name in ("low-res photos", "sharper photos", "noise"):
        samples, features = found[name]
        for small in (10, 20):
            imbalanced(name, samples, features, small)
    summarise(cases)


if __name__ == "__main__":
    main()
