"""Knowing the texts before training on them: copies, leaks, conflicts, lengths, wrong labels.

What the audit of photos does, for texts:

- **copies** of one text (after normalisation: case, spacing, punctuation), and copies that
  carry **different labels** (one of them is wrong, or the task is ambiguous);
- **leaks**: held-out texts that are copies of training texts, and near-copies (embeddings
  almost the same: a typo, a changed number), which make validation flatter the model;
- **lengths** in the encoder's tokens, and how many texts are longer than it reads (their
  ends are cut: said, never silent);
- **class balance**;
- **likely wrong labels**: a logistic probe on the embeddings predicts every training text out
  of sample, and confident learning (cleanlab) counts and ranks the labels it contradicts,
  as for photos (:func:`headstart.auditing.labels.check_labels`), copies kept in one fold.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..auditing.labels import LabelCheck, check_labels
from ..auditing.neighbours import neighbours
from ..runfolder import AUDIT_JSON
from ..storage import write_atomically
from .data import TextDataset, TextSample, normalised

__all__ = ["NEAR_COPY", "TextAudit", "audit_texts"]

#: Cosine similarity of mean-centred embeddings above which two different texts are called
#: near-copies (on TREC questions and SMS messages, pairs above it differ by a word or a
#: number: "What is the population of Mexico ?" / "... of Japan ?" stays below).
NEAR_COPY = 0.95
_SHOWN = 20  # examples kept of each finding


@dataclass
class TextAudit:
    texts: int
    train_counts: dict[str, int]
    copies: int  # texts that repeat an earlier one (normalised)
    conflicts: list[dict]  # one text, several labels
    leaks: dict[str, int]  # held-out split -> texts that are copies of training texts
    near_copies: list[dict]  # held-out texts almost the same as a training text
    lengths: dict
    label_check: LabelCheck | None = None
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def imbalance(self) -> float:
        counts = [n for n in self.train_counts.values() if n]
        return max(counts) / min(counts) if counts else 1.0

    def findings(self) -> list[str]:
        """One line per thing worth a user's attention, most serious first."""
        lines = []
        for split, n in self.leaks.items():
            if n:
                lines.append(
                    f"{n} {split} text(s) are copies of training texts: the {split} score "
                    "flatters the model (scores without them are given too)"
                )
        if self.near_copies:
            lines.append(
                f"{len(self.near_copies)} held-out text(s) are near-copies of training texts "
                f"(embedding similarity at least {NEAR_COPY})"
            )
        if self.conflicts:
            example = self.conflicts[0]
            labels = " and ".join(f"{label!r}" for label in example["labels"])
            lines.append(
                f"{len(self.conflicts)} text(s) appear with different labels, e.g. "
                f"{_short(example['text'])!r} as {labels}"
            )
        if self.copies:
            lines.append(f"{self.copies} text(s) are copies of another (normalised)")
        if self.lengths.get("truncated"):
            lines.append(
                f"{self.lengths['truncated']} text(s) are longer than the encoder's "
                f"{self.lengths['limit']} tokens: only their first {self.lengths['limit']} "
                "tokens are read"
            )
        if self.imbalance >= 3:
            lines.append(
                f"classes are imbalanced: the largest is {self.imbalance:.1f}x the smallest"
            )
        check = self.label_check
        if check is not None and check.estimated:
            trust = "" if check.reliable else f" (unreliable: {check.why})"
            lines.append(
                f"about {check.estimated} training label(s) look wrong{trust}; the most likely: "
                + "; ".join(
                    f"{_short(issue.sample.text)!r} ({issue.sample.label} -> {issue.suggested})"
                    for issue in check.issues[:3]
                )
            )
        return lines + self.notes

    def write(self, folder: str | Path) -> Path:
        """``audit.json`` in ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        return write_atomically(folder / AUDIT_JSON, text.encode("utf-8"))

    def to_dict(self) -> dict:
        check = self.label_check
        return {
            "texts": self.texts,
            "skipped": self.skipped,
            "train_counts": self.train_counts,
            "imbalance": round(self.imbalance, 3),
            "copies": self.copies,
            "conflicts": self.conflicts[:_SHOWN],
            "conflicting_texts": len(self.conflicts),
            "leaks": self.leaks,
            "near_copies": self.near_copies[:_SHOWN],
            "near_copy_count": len(self.near_copies),
            "lengths": self.lengths,
            "label_issues": None
            if check is None
            else {
                "estimated": check.estimated,
                "reliable": check.reliable,
                "probe_accuracy": check.probe_accuracy,
                "examples": [
                    {
                        "text": issue.sample.text,
                        "where": issue.sample.where,
                        "label": issue.sample.label,
                        "suggested": issue.suggested,
                        "label_probability": round(issue.given_probability, 4),
                        "suggested_probability": round(issue.suggested_probability, 4),
                    }
                    for issue in check.issues[:_SHOWN]
                ],
            },
            "findings": self.findings(),
        }


def audit_texts(
    dataset: TextDataset,
    embeddings: np.ndarray,
    token_counts: np.ndarray,
    max_tokens: int,
    *,
    seed: int = 0,
) -> TextAudit:
    """The audit of ``dataset``'s samples, whose rows of ``embeddings`` and ``token_counts``
    are in ``dataset.samples`` order."""
    samples = dataset.samples
    keys = [normalised(s.text) or s.text for s in samples]
    groups = defaultdict(list)
    for row, key in enumerate(keys):
        groups[key].append(row)
    copies = sum(len(rows) - 1 for rows in groups.values())
    conflicts = [
        {
            "text": samples[rows[0]].text,
            "labels": dict(Counter(samples[r].label for r in rows).most_common()),
            "where": [samples[r].where for r in rows[:5]],
        }
        for rows in groups.values()
        if len({samples[r].label for r in rows}) > 1
    ]
    trained = {keys[row] for row, s in enumerate(samples) if s.split == "train"}
    leaks = {
        split: sum(1 for row, s in enumerate(samples) if s.split == split and keys[row] in trained)
        for split in ("val", "test")
        if any(s.split == split for s in samples)
    }
    train_rows = [row for row, s in enumerate(samples) if s.split == "train"]
    group_of = {key: i for i, key in enumerate(groups)}
    label_check = check_labels(
        [samples[row] for row in train_rows],
        embeddings[train_rows],
        [group_of[keys[row]] for row in train_rows],
        seed=seed,
    )
    return TextAudit(
        texts=len(samples),
        train_counts=dataset.counts()["train"],
        copies=copies,
        conflicts=conflicts,
        leaks=leaks,
        near_copies=_near_copies(samples, keys, embeddings),
        lengths=_lengths(token_counts, max_tokens),
        label_check=label_check,
        skipped=len(dataset.skipped),
    )


def _near_copies(
    samples: Sequence[TextSample], keys: list[str], embeddings: np.ndarray
) -> list[dict]:
    """Held-out texts within :data:`NEAR_COPY` of a training text, not an exact copy of it."""
    if len(samples) < 3:
        return []
    found = neighbours(embeddings, threshold=NEAR_COPY, per_image=5, k=1)
    pairs = []
    for i, j, similarity in found.pairs:
        first, second = samples[i], samples[j]
        if keys[i] == keys[j] or (first.split == "train") == (second.split == "train"):
            continue
        train, held_out = (first, second) if first.split == "train" else (second, first)
        pairs.append(
            {
                "text": held_out.text,
                "split": held_out.split,
                "training_text": train.text,
                "similarity": round(similarity, 4),
                "same_label": train.label == held_out.label,
            }
        )
    return sorted(pairs, key=lambda pair: -pair["similarity"])


def _lengths(token_counts: np.ndarray, limit: int) -> dict:
    if not len(token_counts):
        return {"limit": limit, "truncated": 0}
    return {
        "limit": limit,
        "median_tokens": int(np.median(token_counts)),
        "p95_tokens": int(np.percentile(token_counts, 95)),
        "max_tokens": int(token_counts.max()),
        "truncated": int((token_counts > limit).sum()),
    }


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
