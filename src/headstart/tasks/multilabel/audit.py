"""What a multi-label data audit finds: how many images carry each label in each split (a
label with few validation images gets a threshold and scores no one can trust), how many
labels an image has, which labels come together (co-occurrence), and copies of one image (by
content) that span splits or carry different labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...data.decoded import DecodedImages
from ...runfolder import AUDIT_JSON, RunFolder
from ..copies import copies as find_copies
from .data import LabelSets
from .thresholds import FEWEST

__all__ = ["LabelAudit", "audit_label_sets"]

_SHOWN = 20
#: A label this many times rarer than the commonest one is imbalanced enough to say.
IMBALANCE = 10


@dataclass
class LabelAudit:
    labels: list[str]
    counts: dict[str, dict[str, int]]  # split -> label -> images (and "images")
    cardinality: float  # labels an image, on average (training images)
    unlabelled: int  # training images with none of the labels
    cooccurrence: list[list[int]]  # training images with both labels i and j (diagonal: i)
    copies: list[dict] = field(default_factory=list)
    leaked: set[Path] = field(default_factory=set)

    def findings(self) -> list[str]:
        train, val = self.counts["train"], self.counts["val"]
        lines = [
            f"{train['images']} training images with {self.cardinality:.2f} labels each on "
            f"average; {self.unlabelled} with none"
        ]
        present = {label: train[label] for label in self.labels}
        if max(present.values()) >= IMBALANCE * max(min(present.values()), 1):
            rarest = min(present, key=present.get)
            commonest = max(present, key=present.get)
            lines.append(
                f"labels are imbalanced: {rarest!r} on {present[rarest]} training images, "
                f"{commonest!r} on {present[commonest]}"
            )
        few = [label for label in self.labels if val[label] < FEWEST]
        if few:
            lines.append(
                f"{len(few)} label(s) have fewer than {FEWEST} validation images ("
                f"{', '.join(few[:5])}): their thresholds stay at 0.5 and their validation "
                "scores say little"
            )
        pairs = self._together()
        if pairs:
            shown = "; ".join(f"{a} and {b}: {n}" for a, b, n in pairs[:3])
            lines.append(f"labels that come together most: {shown} training images")
        conflicting = [c for c in self.copies if len({tuple(t) for t in c["labels"]}) > 1]
        if conflicting:
            lines.append(
                f"{len(conflicting)} image(s) appear more than once with different labels: "
                "noise in the labels that no model can remove"
            )
        if self.leaked:
            lines.append(
                f"{len(self.leaked)} held-out image(s) are copies of training images: their "
                "scores are flattered"
            )
        return lines

    def _together(self) -> list[tuple[str, str, int]]:
        pairs = [
            (self.labels[i], self.labels[j], self.cooccurrence[i][j])
            for i in range(len(self.labels))
            for j in range(i + 1, len(self.labels))
            if self.cooccurrence[i][j]
        ]
        return sorted(pairs, key=lambda pair: -pair[2])

    def to_dict(self) -> dict:
        return {
            "findings": self.findings(),
            "labels": self.labels,
            "counts": self.counts,
            "cardinality": self.cardinality,
            "unlabelled": self.unlabelled,
            "cooccurrence": self.cooccurrence,
            "copies": self.copies[:_SHOWN],
            "leaked": sorted(map(str, self.leaked)),
        }

    def write(self, run: RunFolder) -> None:
        run.write_json(AUDIT_JSON, self.to_dict())


def audit_label_sets(dataset: LabelSets, images: DecodedImages) -> LabelAudit:
    """The audit of ``dataset``; ``images`` tells copies by content."""
    train = dataset.targets("train")
    together = (train.T @ train).astype(int).tolist()
    copies, leaked = find_copies(dataset.samples, images, lambda s: list(s.labels), "labels")
    return LabelAudit(
        list(dataset.labels),
        dataset.counts(),
        float(train.sum(1).mean()) if len(train) else 0.0,
        int((train.sum(1) == 0).sum()),
        together,
        copies,
        leaked,
    )
