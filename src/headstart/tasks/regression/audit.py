"""What a regression's data audit finds: the target's spread per split, targets far from the
rest (a typo, another unit), a long tail, and copies of one image (by content) that span
splits or carry different numbers.

Copies of a training image held out for validation or test flatter the scores: ``fit`` says
how many, and scores the held-out images without them too (``clean_scores``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...data.decoded import DecodedImages
from ...runfolder import AUDIT_JSON, RunFolder
from ..copies import copies as find_copies
from .data import TargetDataset, describe

__all__ = ["OUTLYING", "TargetAudit", "audit_targets"]

#: A target this many robust standard deviations (1.4826 median absolute deviations) from
#: the median is listed as outlying.
OUTLYING = 5.0
#: A skewness beyond this: a long tail, which a logarithm of the target would shorten.
SKEWED = 2.0
_SHOWN = 20


@dataclass
class TargetAudit:
    spread: dict[str, dict]  # split -> describe()
    outlying: list[dict] = field(default_factory=list)  # path, split, target, robust z
    skewness: float = 0.0
    copies: list[dict] = field(default_factory=list)  # groups of copies: paths, splits, targets
    leaked: set[Path] = field(default_factory=set)  # held-out copies of training images

    def findings(self) -> list[str]:
        lines = []
        train = self.spread.get("train") or {}
        if train:
            lines.append(
                f"target: {train['n']} training values from {train['min']:g} to "
                f"{train['max']:g}, mean {train['mean']:.4g}, standard deviation "
                f"{train['std']:.4g}"
            )
        if self.outlying:
            shown = ", ".join(
                f"{o['target']:g} ({Path(o['path']).name})" for o in self.outlying[:5]
            )
            lines.append(
                f"{len(self.outlying)} target(s) lie more than {OUTLYING:g} robust standard "
                f"deviations from the median: {shown}; a typo or another unit? (the Huber loss "
                "keeps them from dominating the fine-tuning)"
            )
        if self.skewness > SKEWED:
            lines.append(
                f"the target has a long upper tail (skewness {self.skewness:.1f}): errors on "
                "large values will dominate; if relative errors matter, fit its logarithm"
            )
        conflicting = [c for c in self.copies if len(set(c["targets"])) > 1]
        if conflicting:
            lines.append(
                f"{len(conflicting)} image(s) appear more than once with different numbers "
                f"(e.g. {', '.join(map(str, conflicting[0]['targets']))}): noise in the "
                "targets that no model can remove"
            )
        if self.leaked:
            lines.append(
                f"{len(self.leaked)} held-out image(s) are copies of training images: their "
                "scores are flattered; the summary also scores the held-out images without them"
            )
        return lines

    def to_dict(self) -> dict:
        return {
            "findings": self.findings(),
            "spread": self.spread,
            "outlying": self.outlying[:_SHOWN],
            "skewness": self.skewness,
            "copies": self.copies[:_SHOWN],
            "leaked": sorted(map(str, self.leaked)),
        }

    def write(self, run: RunFolder) -> None:
        run.write_json(AUDIT_JSON, self.to_dict())


def audit_targets(dataset: TargetDataset, images: DecodedImages) -> TargetAudit:
    """The audit of ``dataset``; ``images`` tells copies by content."""
    samples = dataset.samples
    values = np.array([s.target for s in samples])
    median = np.median(values)
    spread = 1.4826 * np.median(np.abs(values - median))
    outlying = []
    if spread > 0:
        robust = (values - median) / spread
        for i in np.argsort(-np.abs(robust)):
            if abs(robust[i]) <= OUTLYING:
                break
            outlying.append(
                {
                    "path": str(samples[i].path),
                    "split": samples[i].split,
                    "target": float(values[i]),
                    "robust_z": float(robust[i]),
                }
            )
    centred = values - values.mean()
    skewness = float((centred**3).mean() / values.std() ** 3) if values.std() > 0 else 0.0
    copies, leaked = find_copies(dataset.samples, images, lambda s: s.target, "targets")
    return TargetAudit(
        {split: describe(dataset.targets(split)) for split in ("train", "val", "test")},
        outlying,
        skewness,
        copies,
        leaked,
    )
