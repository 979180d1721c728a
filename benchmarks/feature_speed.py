"""Feature extraction speed against the backbone's raw forward throughput.

Writes a folder of realistic JPEG photos (varied sizes, aspect ratios and quality, made from
scikit-image's sample photos), then measures, at the default input size and batch size:

1. the backbone's forward pass alone, on tensors already decoded, cropped and normalised;
2. ``extract_features`` from the files, with empty pixel and feature caches (decode, resize,
   crop, normalise and forward, as ``headstart fit`` does on a first run);
3. the same again, served from the caches.

Usage: python benchmarks/feature_speed.py [--images 256] [--arch efficientnet_lite0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data as samples

from headstart.data.decoded import DecodedImages
from headstart.features import FeatureStore, extract_features
from headstart.inputs import InputPipeline, Normalize, center_crop
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    backbone, preprocessing, source = create_backbone(args.arch)
    backbone = backbone.eval().to(memory_format=torch.channels_last)
    _, height, width = preprocessing.input_size
    print(
        f"{args.arch} ({source.describe()}), input {height}x{width}, "
        f"batch {args.batch_size}, {torch.get_num_threads()} threads, {args.images} images"
    )

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_photos(folder, args.images)
        megapixels = np.mean([np.prod(Image.open(p).size) for p in paths]) / 1e6
        print(f"photos: mean {megapixels:.2f} megapixels, JPEG quality 60-95")

        # 1. Raw forward throughput on pre-decoded tensors.
        decoder = DecodedImages(preprocessing.resize_size, preprocessing.interpolation)
        crops = torch.stack([center_crop(decoder.get(p), height, width) for p in paths])
        inputs = Normalize(preprocessing.mean, preprocessing.std)(crops)
        with torch.inference_mode():
            backbone(inputs[: args.batch_size])  # warm-up
            start = time.perf_counter()
            for i in range(0, len(inputs), args.batch_size):
                backbone(inputs[i : i + args.batch_size])
            forward = len(inputs) / (time.perf_counter() - start)

        # 2. Extraction from files, empty caches.
        images = DecodedImages(
            preprocessing.resize_size, preprocessing.interpolation, folder / "cache" / "pixels"
        )
        identity = {"arch": args.arch, "weights": source.location}
        stores = {"plain": FeatureStore(folder / "cache" / "features", identity)}
        cold = extract_features(
            backbone,
            InputPipeline(preprocessing),
            paths,
            images,
            stores,
            batch_size=args.batch_size,
        )
        extraction = len(cold.paths) / cold.seconds

        # 3. Again, with both caches warm (a fresh store object reads the shards from disk).
        stores = {"plain": FeatureStore(folder / "cache" / "features", identity)}
        warm = extract_features(
            backbone,
            InputPipeline(preprocessing),
            paths,
            images,
            stores,
            batch_size=args.batch_size,
        )

    print(f"forward pass on decoded tensors: {forward:7.1f} images/s")
    print(
        f"feature extraction from files:   {extraction:7.1f} images/s "
        f"(ratio {extraction / forward:.2f}; the bar is 0.80)"
    )
    print(
        f"again, from the feature cache:   {len(warm.paths) / warm.seconds:7.1f} images/s "
        f"({warm.computed} recomputed)"
    )


if __name__ == "__main__":
    main()
