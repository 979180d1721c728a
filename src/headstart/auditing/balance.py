"""Class balance: how many images each class has in each split, and what follows from it."""

from __future__ import annotations

from dataclasses import dataclass

from ..data.sources import Dataset

__all__ = ["IMBALANCED", "MIN_VALIDATION", "Balance", "class_balance"]

#: Ratio of the largest to the smallest training class from which a dataset counts as
#: imbalanced: at 3:1 a classifier that neglects the small class still looks 75% accurate.
IMBALANCED = 3.0
#: Validation images a class needs for its score to mean something: with fewer than 10, one
#: image moves the class's recall by more than 10 points.
MIN_VALIDATION = 10

# What `headstart fit` does about an imbalance today; kept next to the numbers it explains.
_WHAT_FIT_DOES = (
    "fit keeps every image and does not reweight or resample classes; where it splits the data "
    "itself the split is stratified (each class keeps its share in every split), and it "
    "reports per-class recall and balanced accuracy, so a neglected class shows"
)


@dataclass(frozen=True)
class Balance:
    counts: dict[str, dict[str, int]]  # split -> class -> images
    ratio: float  # largest over smallest training class (inf when a class has none)
    imbalanced: bool
    too_small: tuple[str, ...]  # classes with fewer than MIN_VALIDATION validation images
    advice: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "counts": self.counts,
            "imbalance_ratio": self.ratio,
            "imbalanced": self.imbalanced,
            "too_small_to_validate": list(self.too_small),
            "advice": list(self.advice),
        }


def class_balance(dataset: Dataset) -> Balance:
    counts = dataset.counts()
    train = counts["train"]
    largest, smallest = max(train.values()), min(train.values())
    ratio = largest / smallest if smallest else float("inf")
    imbalanced = ratio >= IMBALANCED
    too_small = tuple(c for c in dataset.classes if counts["val"][c] < MIN_VALIDATION)

    advice = []
    if imbalanced:
        big = max(train, key=train.__getitem__)
        small = min(train, key=train.__getitem__)
        advice.append(
            f"imbalanced {ratio:.1f}:1 in training ('{big}' {largest}, '{small}' {smallest}): "
            "judge the model by balanced accuracy and per-class recall, not accuracy; "
            f"{_WHAT_FIT_DOES}"
        )
    if too_small:
        shown = ", ".join(f"'{c}' ({counts['val'][c]})" for c in too_small[:5])
        more = f" and {len(too_small) - 5} more" if len(too_small) > 5 else ""
        advice.append(
            f"too few validation images to score {shown}{more}: below {MIN_VALIDATION}, one "
            "image moves a class's recall by more than 10 points; add images (or, where "
            "headstart splits the data, raise --val-fraction)"
        )
    return Balance(counts, ratio, imbalanced, too_small, tuple(advice))
