"""A text model exported to ONNX (float, and int8) beside the PyTorch model it came from.

The run's model is exported twice into a scratch folder (``headstart.export``, the parity
check included), then the three models label the same labelled texts as ``predict`` does,
each loaded beforehand. The rounds take turns at the three, so that a busy moment of a shared
machine falls on all of them alike; printed are the median texts per second, each model's
accuracy, how many labels agree with PyTorch's, the largest difference of probabilities, the
bundle's size on disk, and what each export took.

Usage: python benchmarks/text_export.py RUN TEXTS [--rounds 3]
(``RUN``: a text run folder; ``TEXTS``: a labelled table, e.g.
../shared/data/text/trec6/test.csv.)
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import headstart


def labelled(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def size_mb(*folders: Path) -> float:
    return sum(f.stat().st_size for d in folders for f in d.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("texts", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    texts, labels = labelled(args.texts)
    models = {"pytorch": headstart.load(args.run)}
    pytorch = models["pytorch"]
    folders = {"pytorch": [args.run / "model"]}
    if not pytorch.fine_tuned:  # a probe's bundle names its encoder: count the encoder too
        folders["pytorch"].append(pytorch.encoder.location)
    with tempfile.TemporaryDirectory() as scratch:
        for name, int8 in (("onnx", False), ("onnx int8", True)):
            started = time.perf_counter()
            out = Path(scratch) / name.replace(" ", "-")
            folders[name] = [headstart.export(args.run, out=out, int8=int8, quiet=True)]
            print(f"export {name}: {time.perf_counter() - started:.0f} s")
            models[name] = headstart.load(folders[name][0])
        seconds = {name: [] for name in models}
        probabilities = {}
        for _ in range(args.rounds):
            for name, model in models.items():
                started = time.perf_counter()
                probabilities[name] = model.predict_proba(texts)
                seconds[name].append(time.perf_counter() - started)
        reference = probabilities["pytorch"]
        truth = np.array([pytorch.classes.index(label) for label in labels])
        print(f"{len(texts)} texts of {args.texts}, median of {args.rounds} rounds:")
        for name in models:
            found = probabilities[name]
            print(
                f"  {name:10s} {len(texts) / statistics.median(seconds[name]):7.1f} texts/s  "
                f"accuracy {(found.argmax(1) == truth).mean():.1%}  "
                f"same label {(found.argmax(1) == reference.argmax(1)).sum()}/{len(texts)}  "
                f"max |dp| {np.abs(found - reference).max():.2g}  "
                f"{size_mb(*folders[name]):.1f} MB"
            )


if __name__ == "__main__":
    main()
