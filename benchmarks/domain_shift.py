"""Does adapting to unlabelled target images raise accuracy on the target domain?

For each set in ``../shared/data`` (see each ``SOURCE.md``), the ``train/`` photos are split in
two halves at random: the first is the labelled source (80% to fit on, 20% to validate), the
second, with a shift applied and its labels hidden, the unlabelled target images; the set's
``test/`` photos, with the same shift, are the target domain's test. The shifts are another
sensor's look, applied to the 224 px crop the network sees: ``gray`` (colour to grey),
``blur`` (a Gaussian blur of radius 2.5 and noise of 12 levels), ``jpeg`` (JPEG at quality 8),
``dark`` (half the contrast, 60% of the brightness), and ``none``, the control: unshifted
photos, where adapting cannot help and must not hurt.

Every move of ``fit --target-images`` is scored on the labelled target test photos, on the
built-in network's features (a linear-probe fit, as ``fit`` keeps on these sets when the
fine-tuning does not pay): the unadapted head, each domain's own feature statistics, each
domain's own batch-norm statistics (AdaBN), each with its best self-training by reverse
validation, and the move that ``fit`` keeps (:func:`headstart.training.adapt.choose_move`,
with its domain classifier's accuracy). Numbers only; nothing is asserted.

Usage: python benchmarks/domain_shift.py [--only trashnet,...] [--shifts none,gray,...]
       [--data ../shared/data] [--work DIR]

Features are kept in ``--work`` (default: a temporary folder), so a second run with other
settings reads them; computing them takes about 4 minutes a shift and set on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from headstart.models import create_backbone
from headstart.stages.adapt import SHIFTED
from headstart.training.adapt import (
    Domains,
    Standardised,
    choose_move,
    domain_gap,
    reestimate_batch_norm,
)
from headstart.training.probe import fit_probe

SETS = ("trashnet", "sign_language_digits")
SHIFTS = ("none", "gray", "blur", "jpeg", "dark")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shifted(image: Image.Image, shift: str) -> Image.Image:
    """``image`` as another sensor would have taken it."""
    if shift == "none":
        return image
    if shift == "gray":
        return image.convert("L").convert("RGB")
    if shift == "blur":
        blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(2.5))).astype(np.float32)
        noise = np.random.default_rng(hash(image.size) % 1000).normal(0, 12, blurred.shape)
        return Image.fromarray((blurred + noise).clip(0, 255).astype(np.uint8))
    if shift == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=8)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if shift == "dark":
        return ImageEnhance.Brightness(ImageEnhance.Contrast(image).enhance(0.5)).enhance(0.6)
    raise ValueError(f"unknown shift {shift!r}; expected one of {', '.join(SHIFTS)}")


class Photos:
    """A set's photos as the network sees them (resized, centre-cropped, shifted)."""

    def __init__(self, root: Path):
        self.network, preprocessing, _ = create_backbone("tf_efficientnet_lite0")
        self.mean = torch.tensor(preprocessing.mean).view(3, 1, 1)
        self.std = torch.tensor(preprocessing.std).view(3, 1, 1)
        self.side = preprocessing.input_size[-1]
        self.crop_pct = preprocessing.crop_pct
        self.pretrained = {k: v.clone() for k, v in self.network.state_dict().items()}
        self.classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        train = self._listed(root / "train")
        order = np.random.default_rng(0).permutation(len(train))
        self.source = [train[i] for i in order[: len(train) // 2]]
        self.target = [train[i] for i in order[len(train) // 2 :]]
        self.test = self._listed(root / "test")

    def _listed(self, folder: Path) -> list[tuple[Path, int]]:
        return [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((folder / name).iterdir())
        ]

    def _tensor(self, path: Path, shift: str) -> torch.Tensor:
        image = Image.open(path).convert("RGB")
        scale = self.side / min(image.size) / self.crop_pct
        size = (
            max(self.side, round(image.width * scale)),
            max(self.side, round(image.height * scale)),
        )
        image = image.resize(size, Image.BICUBIC)
        left, top = (image.width - self.side) // 2, (image.height - self.side) // 2
        image = shifted(image.crop((left, top, left + self.side, top + self.side)), shift)
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
        return (pixels - self.mean) / self.std

    def batches(self, photos: list, shift: str, size: int = 64) -> Iterator[torch.Tensor]:
        for start in range(0, len(photos), size):
            yield torch.stack(
                [self._tensor(path, shift) for path, _ in photos[start : start + size]]
            )

    def features(self, photos: list, shift: str) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([self.network(batch) for batch in self.batches(photos, shift)]).numpy()

    def pretrained_statistics(self) -> None:
        self.network.load_state_dict(self.pretrained)
        self.network.eval()

    def own_statistics(self, photos: list, shift: str) -> None:
        self.pretrained_statistics()
        reestimate_batch_norm(self.network, self.batches(photos, shift))


def cached(file: Path, compute) -> dict[str, np.ndarray]:
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(file, **compute())
    return dict(np.load(file))


def source_features(photos: Photos) -> dict[str, np.ndarray]:
    photos.pretrained_statistics()
    plain = photos.features(photos.source, "none")
    photos.own_statistics(photos.source, "none")
    return {"fs": plain, "fs_a": photos.features(photos.source, "none")}


def target_features(photos: Photos, shift: str) -> dict[str, np.ndarray]:
    photos.pretrained_statistics()
    found = {"ft": photos.features(photos.target, shift), "fe": photos.features(photos.test, shift)}
    photos.own_statistics(photos.target, shift)
    found |= {
        "ft_a": photos.features(photos.target, shift),
        "fe_a": photos.features(photos.test, shift),
    }
    return found


def representations(source: dict, target: dict, fit: np.ndarray, val: np.ndarray):
    """What ``fit`` tries, in its order, and each one's standardised test features."""
    for name, train, pool, test, own in (
        ("unadapted", source["fs"], target["ft"], target["fe"], False),
        ("feature statistics", source["fs"], target["ft"], target["fe"], True),
        ("batch-norm statistics", source["fs_a"], target["ft_a"], target["fe_a"], False),
    ):
        standardise = Standardised.of(train[fit])
        deployed = Standardised.of(pool) if own else standardise
        domains = Domains(
            name, standardise(train[fit]), standardise(train[val]), deployed(pool), deployed
        )
        yield domains, deployed(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated set names")
    parser.add_argument("--shifts", default=",".join(SHIFTS))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        for name in args.only.split(",") if args.only else SETS:
            run_set(args.data / name, args.shifts.split(","), work / name)


def run_set(root: Path, shifts: list[str], work: Path) -> None:
    photos = Photos(root)
    labels = np.array([label for _, label in photos.source])
    test_labels = np.array([label for _, label in photos.test])
    order = np.random.default_rng(1).permutation(len(labels))
    fit, val = order[: int(0.8 * len(order))], order[int(0.8 * len(order)) :]
    source = cached(work / "source.npz", partial(source_features, photos))
    C = fit_probe(source["fs"][fit], labels[fit], len(photos.classes)).C
    print(
        f"\n{root.name}: {len(fit)} labelled source photos (+{len(val)} validation), "
        f"{len(photos.target)} unlabelled target photos, {len(photos.test)} target test photos; "
        f"probe C = {C:g}"
    )
    print(
        "shift | domain classifier | unadapted | feature statistics | batch-norm statistics "
        "| fit keeps | its test accuracy"
    )
    for shift in shifts:
        target = cached(work / f"{shift}.npz", partial(target_features, photos, shift))
        print(row(shift, source, target, fit, val, labels, test_labels, C), flush=True)


def row(
    shift: str,
    source: dict,
    target: dict,
    fit: np.ndarray,
    val: np.ndarray,
    labels: np.ndarray,
    test_labels: np.ndarray,
    C: float,
) -> str:
    """One shift's line: every move's accuracy on the target test photos, and fit's choice."""
    gap = domain_gap(source["fs"][fit], target["ft"])
    tests, domains = {}, []
    for representation, test in representations(source, target, fit, val):
        tests[representation.name] = test
        domains.append(representation)
    n_classes = int(labels.max()) + 1
    kept, tried = choose_move(domains, labels[fit], labels[val], n_classes, C=C)
    accuracy = {
        move.name: float((move.head.predict(tests[move.domains.name]) == test_labels).mean())
        for move in tried
    }
    best_of = {}  # each representation's best move by reverse validation
    for move in tried:
        best = best_of.get(move.domains.name)
        if best is None or move.carried.mean() > best.carried.mean():
            best_of[move.domains.name] = move
    cells = []
    for name, best in best_of.items():
        cell = f"{accuracy[name]:.1%}"
        if best.rounds:
            cell += f"; self-trained {accuracy[best.name]:.1%}"
        cells.append(cell)
    keeps = "unadapted" if gap < SHIFTED or kept is None else kept.name
    gain = accuracy[keeps] - accuracy["unadapted"]
    return (
        f"{shift} | {gap:.1%} | {' | '.join(cells)} | {keeps} | {accuracy[keeps]:.1%} ({gain:+.1%})"
    )


if __name__ == "__main__":
    main()
