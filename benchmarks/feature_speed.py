"""Feature extraction speed against the backbone's raw forward throughput.

Writes a folder of realistic JPEG photos (varied sizes, aspect ratios and quality, made from
scikit-image's sample photos; or takes ``--data``), then measures, at the default input size
and batch size, for the views asked (``fit`` extracts both, the mirror image too):

1. the backbone's forward passes alone, on tensors already decoded, cropped and normalised:
   in whole batches, and as extraction runs them (a few images at a time on a CPU, where
   small batches run fastest: :data:`headstart.inputs.CPU_BATCH`);
2. ``extract_features`` from the files, with empty pixel and feature caches (decode, resize,
   crop, normalise and forward, as ``headstart fit`` does on a first run);
3. the same again, served from the caches.

The rounds take turns at 1 and 2, so that a busy moment of a shared machine falls on all of
them alike; medians are printed. The issue's bar: extraction at no less than 0.8x the forward.

Usage: python benchmarks/feature_speed.py [--images 256] [--views plain,hflip] [--rounds 3]
[--data FOLDER] [--arch efficientnet_lite0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data as samples

from headstart.data.images import IMAGE_EXTENSIONS
from headstart.features import FeatureStore, extract_features
from headstart.inputs import InputPipeline, forward, view
from headstart.models import create_backbone


def write_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    sources = [
        samples.chelsea(),
        samples.coffee(),
        samples.astronaut(),
        samples.rocket(),
        samples.immunohistochemistry(),
    ]
    paths = []
    for i in range(count):
        source = Image.fromarray(sources[i % len(sources)])
        long_side = int(rng.integers(400, 2000))
        aspect = float(rng.uniform(0.6, 1.7))
        size = (long_side, max(64, int(long_side / aspect)))
        photo = source.resize(size, Image.Resampling.BILINEAR)
        path = folder / f"photo-{i:04d}.jpg"
        photo.save(path, quality=int(rng.integers(60, 96)))
        paths.append(path)
    return paths


def forward_passes(
    backbone: torch.nn.Module, batches: list[torch.Tensor], views: Sequence[str], *, whole: bool
) -> None:
    """The backbone on every batch and view: ``whole`` batches at once, or as extraction runs
    them (:func:`headstart.inputs.forward`: a few images at a time on a CPU)."""
    with torch.inference_mode():
        for batch in batches:
            for name in views:
                (backbone if whole else partial(forward, backbone))(view(batch, name))


def images_per_second(count: int, run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def photos(data: Path | None, count: int, folder: Path) -> list[Path]:
    """``count`` image files spread over ``data``, or new photos written into ``folder``."""
    if data is None:
        return write_photos(folder, count)
    found = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    return found[:: max(1, len(found) // count)][:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--data", type=Path, help="a folder of images (default: photos written)")
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--views", default="plain", help="plain, or plain,hflip as fit extracts")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    views = tuple(args.views.split(","))

    backbone, preprocessing, source = create_backbone(args.arch)
    backbone = backbone.eval().to(memory_format=torch.channels_last)
    inputs = InputPipeline(preprocessing)
    _, height, width = preprocessing.input_size
    print(
        f"{args.arch} ({source.describe()}), input {height}x{width}, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, views {', '.join(views)}, {args.rounds} rounds"
    )

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = photos(args.data, args.images, folder)
        megapixels = np.mean([np.prod(Image.open(p).size) for p in paths]) / 1e6
        print(f"{len(paths)} images from {args.data or 'photos written'}: {megapixels:.2f} MP")

        # Pre-decoded tensors, for the raw forward throughput.
        decoder = inputs.decoder()
        normalised = inputs.normalizer()(inputs.batch([decoder.get(p) for p in paths]))
        batches = list(normalised.split(args.batch_size))
        forward_passes(backbone, batches[:1], views, whole=True)  # warm-up

        # Rounds take turns: the forward passes alone, then extraction with empty caches.
        speeds: dict[str, list[float]] = {"whole": [], "as run": [], "extraction": []}
        identity = {
            "arch": args.arch,
            "weights": source.location,
            "dimension": backbone.num_features,
        }

        def extract(cache: Path):
            """``extract_features`` as ``fit`` runs it, with the caches in ``cache`` (fresh
            store objects: they read what is there from disk)."""
            stores = {v: FeatureStore(cache / "features", {**identity, "view": v}) for v in views}
            decoder = inputs.decoder(cache / "pixels")
            return extract_features(
                backbone, inputs, paths, decoder, stores, views=views, batch_size=args.batch_size
            )

        for round_ in range(args.rounds):
            for whole, name in ((True, "whole"), (False, "as run")):
                run = partial(forward_passes, backbone, batches, views, whole=whole)
                speeds[name].append(images_per_second(len(paths), run))
            cache = folder / f"cache-{round_}"
            extracted = extract(cache)
            speeds["extraction"].append(len(extracted.paths) / extracted.seconds)

        warm = extract(cache)  # again, with both caches warm

    median = {name: statistics.median(measured) for name, measured in speeds.items()}
    extraction = median["extraction"]
    print("medians, images/s:")
    rows = {
        f"forward passes, batches of {args.batch_size}": median["whole"],
        "forward passes as extraction runs them": median["as run"],
        "feature extraction from files": extraction,
    }
    for name, speed in rows.items():
        print(f"  {name:40} {speed:7.1f}")
    print(
        f"  ratio {extraction / median['as run']:.2f} to the forward passes as run, "
        f"{extraction / median['whole']:.2f} to batches of {args.batch_size} (the bar is 0.80)"
    )
    print(
        f"  {'again, from the feature cache':40} {len(warm.paths) / warm.seconds:7.1f} "
        f"({warm.computed} recomputed)"
    )


if __name__ == "__main__":
    main()
