"""Prediction and evaluation speed against the network's raw forward throughput.

A model bundle (the default backbone with a new head, one class per folder of the data)
labels photos as ``headstart predict`` and ``headstart evaluate`` do, without and with
test-time flip. Each is measured against the network's forward passes alone on the same
images, already decoded, cropped and normalised, with the same views (two passes per image
with the flip) and the same batch size:

1. forward: the network (channels-last, inference mode) on the prepared batches, whole and
   as predictions run it (a few images at a time on a CPU, where small batches run fastest);
2. predict: ``Model.predict_files`` on the files, the bundle loaded beforehand;
3. evaluate: ``headstart.evaluate`` on the files, which also loads the bundle and lists them.

The rounds take turns at the three, so that a busy moment of a shared machine falls on all of
them alike; the medians over the rounds are printed. The issue's bar: predict and evaluate at
no less than 0.8x the forward throughput.

Usage: python benchmarks/predict_speed.py [--data FOLDER] [--images 256] [--rounds 3]
(``--data``: class folders of photos, e.g. trashnet's ``test/``; by default, photos written
as ``feature_speed.py`` writes them: JPEGs of 1.6 megapixels on average.)
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

import headstart
from feature_speed import write_photos
from headstart.classifier import Classifier, new_head
from headstart.data.images import IMAGE_EXTENSIONS
from headstart.inputs import InputPipeline, forward, view
from headstart.loading import load
from headstart.models import create_backbone
from headstart.torch_model import Model, save

NAMES = {
    "whole": "forward passes, batches of {batch}",
    "as run": "forward passes as predictions run them",
    "predict": "predict from files",
    "evaluate": "evaluate from files",
}


def labelled_files(data: Path | None, count: int, folder: Path) -> list[tuple[Path, str]]:
    """``count`` (file, label) pairs spread over ``data``'s class folders, or new photos."""
    if data is None:
        half = count // 2
        return [(p, "a") for p in write_photos(folder / "a", half, seed=0)] + [
            (p, "b") for p in write_photos(folder / "b", count - half, seed=1)
        ]
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    step = max(1, len(files) // count)
    return [(p, p.parent.name) for p in files[::step][:count]]


def images_per_second(count: int, run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


@torch.inference_mode()
def forward_passes(model: Model, batches: list[torch.Tensor], *, whole: bool) -> None:
    """The network (normalisation aside) on every batch and view of the model: ``whole``
    batches at once, or as predictions run it (a few images at a time on a CPU)."""
    network = torch.nn.Sequential(model.network.backbone, model.network.head)
    for batch in batches:
        for name in model.inputs.views:
            (network if whole else partial(forward, network))(view(batch, name))


def one_round(
    model: Model,
    bundle: Path,
    batches: list[torch.Tensor],
    paths: list[Path],
    listing: Path,
    args: argparse.Namespace,
) -> dict[str, float]:
    """Images per second of the forward passes alone, of predict and of evaluate."""
    runs = {
        "whole": lambda: forward_passes(model, batches, whole=True),
        "as run": lambda: forward_passes(model, batches, whole=False),
        "predict": lambda: model.predict_files(paths, batch_size=args.batch_size, quiet=True),
        "evaluate": lambda: headstart.evaluate(bundle, listing, split="all", quiet=True),
    }
    return {name: images_per_second(len(paths), run) for name, run in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="class folders (default: photos written here)")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.data is None:
            (folder / "a").mkdir()
            (folder / "b").mkdir()
        files = labelled_files(args.data, args.images, folder)
        paths = [path for path, _ in files]
        listing = folder / "files.csv"  # what evaluate reads: exactly these files
        with open(listing, "w", newline="") as handle:
            csv.writer(handle).writerows([("path", "label"), *files])
        classes = sorted({label for _, label in files})

        backbone, preprocessing, source = create_backbone(args.arch)
        head = new_head(backbone.num_features, [1] * len(classes))
        network = Classifier(backbone, head, preprocessing)
        bundles = {
            flip: save(
                Model(network, classes, preprocessing, architecture=args.arch, test_time_flip=flip),
                folder / f"model-flip-{flip}",
            )
            for flip in (False, True)
        }
        print(
            f"{args.arch} ({source.describe()}), batch {args.batch_size}, "
            f"{torch.get_num_threads()} threads, {len(paths)} images from "
            f"{args.data or 'photos of 1.6 megapixels on average'}, {args.rounds} rounds"
        )

        # The forward passes alone: every image decoded, cropped and normalised beforehand.
        inputs = InputPipeline(preprocessing)
        decoder = inputs.decoder()
        normalised = inputs.normalizer()(inputs.batch([decoder.get(path) for path in paths]))
        batches = list(normalised.split(args.batch_size))

        warm_up = folder / "warm-up.csv"  # imports and first calls, paid once by any command
        with open(warm_up, "w", newline="") as handle:
            one_per_class = {label: (path, label) for path, label in files}.values()
            csv.writer(handle).writerows([("path", "label"), *one_per_class])
        headstart.evaluate(bundles[False], warm_up, split="all", quiet=True)
        models = {flip: load(bundle) for flip, bundle in bundles.items()}
        forward_passes(models[False], batches, whole=True)  # warm-up
        measured: dict[tuple[bool, str], list[float]] = {}
        for _ in range(args.rounds):
            for flip, model in models.items():
                speeds = one_round(model, bundles[flip], batches, paths, listing, args)
                for name, speed in speeds.items():
                    measured.setdefault((flip, name), []).append(speed)

    for flip in (False, True):
        median = {name: statistics.median(measured[flip, name]) for name in NAMES}
        print(f"test-time flip {'on' if flip else 'off'}, medians, images/s:")
        for name, label in NAMES.items():
            print(f"  {label.format(batch=args.batch_size):40} {median[name]:7.1f}")
        for name in ("predict", "evaluate"):
            print(
                f"  {name}: ratio {median[name] / median['as run']:.2f} to the forward passes "
                f"as run, {median[name] / median['whole']:.2f} to batches of {args.batch_size} "
                "(the bar is 0.80)"
            )


if __name__ == "__main__":
    main()
