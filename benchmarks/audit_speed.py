"""The audit's cost over feature extraction alone, and the features it leaves for ``fit``.

Writes a folder of distinct, realistic JPEG photos in class folders (random rotated crops of
scikit-image's sample photos, colour-shifted, at varied sizes, aspect ratios and JPEG quality;
one class per source photo), then, with empty caches:

1. runs ``headstart.auditing.audit`` on it, which extracts the features (both views, as ``fit``
   does) and then does everything else; its own timings split the two;
2. extracts the features again as ``fit`` would, to show they come from the cache.

The issue's bar: on 5,000 images the whole audit takes at most 1.3x the extraction alone.

Usage: python benchmarks/audit_speed.py [--images 5000] [--keep FOLDER]
(``--keep``: photos written there are reused by the next run; the caches are always emptied.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from headstart.audit import audit
from PIL import Image, ImageEnhance
from skimage import data as samples

from headstart.data.decoded import DecodedImages
from headstart.features import VIEWS, extract_features, feature_stores
from headstart.inputs import InputPipeline
from headstart.models import create_backbone

SOURCES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "stereo_motorcycle",
    "colorwheel",
    "retina",
    "camera",
)


def write_photos(root: Path, count: int, seed: int = 0) -> None:
    """``count`` distinct photos in ``root/<source>/``, about as many per class."""
    rng = np.random.default_rng(seed)
    sources = {}
    for name in SOURCES:
        pixels = getattr(samples, name)()
        pixels = pixels[0] if isinstance(pixels, tuple) else pixels
        sources[name] = Image.fromarray(pixels).convert("RGB")
    for i in range(count):
        name = SOURCES[i % len(SOURCES)]
        source = sources[name]
        # A rotated crop of 30 to 70% of the side: rotations make two crops of one photo
        # rarely contain one another, as two real photos of one subject rarely do.
        rotated = source.rotate(float(rng.uniform(0, 360)), Image.Resampling.BILINEAR)
        side = min(rotated.size) * float(rng.uniform(0.3, 0.7))
        left = float(rng.uniform(0, rotated.width - side))
        top = float(rng.uniform(0, rotated.height - side))
        crop = rotated.crop((round(left), round(top), round(left + side), round(top + side)))
        crop = ImageEnhance.Color(crop).enhance(float(rng.uniform(0.5, 1.5)))
        crop = ImageEnhance.Brightness(crop).enhance(float(rng.uniform(0.7, 1.3)))
        long_side = int(rng.integers(300, 1600))
        aspect = float(rng.uniform(0.6, 1.7))
        size = (long_side, max(64, int(long_side / aspect)))
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        photo = crop.resize(size, Image.Resampling.BILINEAR)
        photo.save(folder / f"{name}-{i:05d}.jpg", quality=int(rng.integers(60, 96)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--keep", help="write the photos and caches here and keep them")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        data, cache = folder / "photos", folder / "cache"
        if len(list(data.rglob("*.jpg"))) != args.images:  # a kept folder is reused as is
            start = time.perf_counter()
            write_photos(data, args.images)
            print(f"wrote {args.images} photos in {time.perf_counter() - start:.0f} s")
        shutil.rmtree(cache, ignore_errors=True)  # the extraction measured starts cold
        print(f"{torch.get_num_threads()} threads, {os.cpu_count()} cores")

        report = audit(data, cache_dir=cache)
        extraction = report.timings["features"]
        rest = report.seconds - extraction
        print(f"\naudit of {len(report.dataset.samples)} images: {report.seconds:.1f} s")
        print(f"  feature extraction (2 views): {extraction:7.1f} s")
        for stage, seconds in report.timings.items():
            if stage != "features":
                print(f"  {stage:28s}: {seconds:7.1f} s")
        print(f"  everything but extraction:    {rest:7.1f} s")
        print(f"ratio audit / extraction: {report.seconds / extraction:.3f} (the bar is 1.30)")
        print(
            f"found: {len(report.duplicates)} duplicate groups, {len(report.leaks)} leaks, "
            f"{len(report.label_issues or [])} suspected label errors, "
            f"{sum(map(len, report.properties.flagged.values()))} flagged images"
        )

        # What fit does next: the same identity, so nothing goes through the network again.
        backbone, preprocessing, source = create_backbone("efficientnet_lite0")
        architecture = backbone.pretrained_cfg.get("architecture", "efficientnet_lite0")
        stores = feature_stores(
            cache / "features", architecture, source, preprocessing, backbone.num_features
        )
        images = DecodedImages(
            preprocessing.resize_size, preprocessing.interpolation, cache / "pixels"
        )
        paths = [s.path for s in report.dataset.samples]
        again = extract_features(
            backbone, InputPipeline(preprocessing), paths, images, stores, views=VIEWS
        )
        print(
            f"fit's extraction afterwards: {again.seconds:.1f} s, "
            f"{again.computed} of {len(paths)} images through the network"
        )


if __name__ == "__main__":
    main()
