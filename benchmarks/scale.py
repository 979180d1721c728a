"""Memory and time against the number of images: ``audit`` and ``fit`` on generated folders of
1,000 to 50,000 photos.

It generates the largest folder once (small JPEGs in 10 classes: each class a colour and a
texture, every image its own geometry and noise; deterministic), and the smaller ones as hard
links to its first images. For each size, each command in a fresh process: ``headstart
audit`` on empty caches (every image decoded and put through the network: the extraction)
and ``headstart fit --strategy linear-probe`` on the warm caches (the audit again, the
probe, the checks, the report). It prints per command the seconds, the milliseconds per
image, the peak resident memory (the process's own ``ru_maxrss``, from ``wait4``), what of it
goes beyond the process at the smallest size, and the feature cache's size on disk: what
grows with the image count should be the features (the cache's own size), nothing else.
Numbers only; nothing is asserted.

Usage: python benchmarks/scale.py [--sizes 1000 10000 50000] [--work DIR] [--input-size PX]
       [--commands audit,fit] [--warm]

``--input-size`` is passed to both commands (e.g. 128 px cuts the extraction's time by about
3x; the memory measured is the same, the pixels are not kept). The full run at 224 px takes
about half an hour on 2 CPU cores, most of it the extraction of 50,000 images. ``--warm``
keeps the caches an earlier run left in ``--work``: the audit then reads every feature from
the cache, as a second audit or a fit does, and its time is that of the audit alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = 10
SIDE = 96


def generate(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` JPEGs in ``CLASSES`` class folders (skipped where already there)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, (CLASSES, 3))
    y, x = np.mgrid[:SIDE, :SIDE].astype(np.float32)
    for i in range(count):
        label = i % CLASSES
        path = folder / f"class-{label}" / f"{i:06d}.jpg"
        angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        frequency = 0.1 + 0.05 * label + rng.uniform(-0.01, 0.01)
        if path.exists():
            rng.normal(size=(SIDE, SIDE, 3))  # the same draws, so the same images follow
            continue
        wave = np.sin(frequency * (x * np.cos(angle) + y * np.sin(angle)) + phase)
        pixels = colours[label] + 60 * wave[..., None] + rng.normal(0, 20, (SIDE, SIDE, 3))
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)


def linked(source: Path, target: Path, count: int) -> Path:
    """The first ``count`` images of ``source`` (by number), hard-linked into ``target``."""
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for image in sorted(folder.iterdir())[: count // CLASSES]:
            if not (target / folder.name / image.name).exists():
                os.link(image, target / folder.name / image.name)
    return target


def measured(command: list[str], environment: dict) -> tuple[float, float, int]:
    """Seconds, peak resident memory (MB) and exit status of ``command``, in its own process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    return time.perf_counter() - started, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def size_of(folder: Path) -> float:
    """MB of the files under ``folder``."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/headstart-scale"))
    parser.add_argument("--input-size", type=int)
    parser.add_argument("--commands", default="audit,fit", help="which, comma-separated")
    parser.add_argument("--warm", action="store_true", help="keep the caches of an earlier run")
    args = parser.parse_args()
    largest = args.work / f"images-{max(args.sizes)}"
    print(f"generating {max(args.sizes)} images under {largest} ...", flush=True)
    generate(largest, max(args.sizes))
    extra = ["--input-size", str(args.input_size)] if args.input_size else []
    headstart = [sys.executable, "-m", "headstart"]
    print(
        f"{'images':>7} {'command':<6} {'seconds':>8} {'ms/image':>9} {'peak MB':>8} "
        f"{'beyond smallest':>15} {'feature cache MB':>17}  status"
    )
    baseline: dict[str, float] = {}
    for count in sorted(args.sizes):
        data = largest
        if count < max(args.sizes):
            data = linked(largest, args.work / f"images-{count}", count)
        cache, runs = args.work / f"cache-{count}", args.work / f"runs-{count}"
        for folder in (runs,) if args.warm else (cache, runs):
            subprocess.run(["rm", "-rf", str(folder)], check=True)
        environment = {**os.environ, "HEADSTART_CACHE": str(cache)}
        quietly = ["--quiet", *extra]
        probe = ["--strategy", "linear-probe", "--runs-dir", str(runs)]
        commands = {
            "audit": [*headstart, "audit", str(data), "--out", str(runs / "audit"), *quietly],
            "fit": [*headstart, "fit", str(data), *probe, *quietly],
        }
        chosen = {name: commands[name] for name in args.commands.split(",")}
        for name, command in chosen.items():
            seconds, peak, status = measured(command, environment)
            baseline.setdefault(name, peak)
            features = size_of(cache / "features") if (cache / "features").exists() else 0.0
            print(
                f"{count:>7} {name:<6} {seconds:>8.0f} {1000 * seconds / count:>9.1f} "
                f"{peak:>8.0f} {peak - baseline[name]:>15.0f} {features:>17.0f}  {status}",
                flush=True,
            )


if __name__ == "__main__":
    main()
