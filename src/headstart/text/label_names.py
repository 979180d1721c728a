"""The class names as labelled examples, when the pretrained encoder reads meaning in them.

A class called ``positive`` already says something that 32 labelled reviews have to teach:
the pretrained encoder places "This sentence is positive." near positive reviews. SetFit
turns class names into examples this way (its templated dataset, for zero-shot runs); here
they join the labelled texts the encoder is fine-tuned on, and the head after it, as a prior
that a few examples cannot outvote by accident.

Names are not always words: numbers and codes without a letter are never used. Names that are
words may still mean nothing to the encoder (``class_a``), or mislead it; so the fit measures
them first: each labelled text gets the class whose name's sentence it is nearest (zero-shot,
on the frozen encoder's cached embeddings, seconds), and a permutation test compares that
agreement with the labels to chance pairings of the same guesses and labels. Names whose
agreement is *below* chance beyond noise are not used. Names that merely cannot be shown to
beat chance are used: at 8 texts a class no test can tell, and there the stakes are lopsided.

Measured (``benchmarks/text.py``'s sets, draws 0-2, the encoder fine-tuned on every drawn text
and a probe on it, test texts never seen; without the names -> with them, 8 sentences a class):

- Rotten Tomatoes snippets (sentiment, ``negative``/``positive``): 8 a class 56.1% -> 70.5%
  (+15.7, +12.1, +15.4 by draw), where 40 steps without the names (the steps they add) gave
  57.9%; 32 a class 73.6% -> 75.2% (+3.7, +0.6, +0.6), where 100 steps without them gave 73.6%.
- TREC questions (``abbreviation`` ... ``numeric``): 8 a class 76.0% -> 77.5% (+0.4, +7.4,
  -3.2); 32 a class 91.3% -> 91.1%.
- SMS spam (``ham``/``spam``): 32 a class 96.9% -> 96.7% (-1.1, +0.4, -0.1).
- Names that mean nothing, "This sentence is class A." and "... class B." for the movie
  reviews: 8 a class 56.1% -> 55.1% (-0.9, -0.8, -1.2); 32 a class 73.6% -> 73.0% (-0.7,
  -1.1, -0.2). What using such names costs, against what meaningful ones gain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import permutation_test

from .encoder import TextEncoder

__all__ = [
    "COPIES",
    "SIGNIFICANCE",
    "TEMPLATE",
    "LabelNames",
    "examples_of",
    "label_names",
    "wordless_name",
]

#: A class name as a sentence (SetFit's template, "This sentence is {}", with its full stop).
TEMPLATE = "This sentence is {}."
#: How many times each class's sentence joins the training texts: its weight against the
#: labelled texts. Measured at 32 a class (movie reviews): 2 copies +0.2 points, 8 copies +1.6.
COPIES = 8
#: Names whose zero-shot guesses agree with the labels less than chance, with p below this,
#: are not used.
SIGNIFICANCE = 0.05
_RESAMPLES = 2000
#: The test reads a seeded sample of this many texts at most: power to spare, and memory that
#: does not grow with the data (each resample permutes the texts it reads).
_MOST_TEXTS = 2000


@dataclass(frozen=True)
class LabelNames:
    """The class names as sentences, and the evidence that the encoder reads them."""

    sentences: tuple[str, ...]  # one a class, in class order
    zero_shot_accuracy: float  # of the nearest name's class, on the labelled texts
    chance_accuracy: float  # the mean under chance pairings of the same guesses and labels
    p_above_chance: float  # that chance pairings agree as much (small: the names carry labels)
    p_below_chance: float  # that chance pairings agree as little (small: the names mislead)
    texts: int  # how many labelled texts it was measured on

    @property
    def used(self) -> bool:
        return self.p_below_chance >= SIGNIFICANCE

    def examples(self) -> tuple[list[str], list[int]]:
        """The sentences as training texts (:data:`COPIES` of each) and their labels."""
        classes = range(len(self.sentences))
        return (
            [self.sentences[c] for c in classes for _ in range(COPIES)],
            [c for c in classes for _ in range(COPIES)],
        )

    def reason(self) -> str:
        measured = (
            f"zero-shot, the nearest class name's sentence ({self.sentences[0]!r}, ...) labels "
            f"{self.zero_shot_accuracy:.0%} of {self.texts} texts it learns from right, against "
            f"{self.chance_accuracy:.0%} by chance"
        )
        if not self.used:
            return (
                f"the class names are not used as examples: they mislead the encoder, "
                f"{measured} (permutation test, p = {self.p_below_chance:.3g})"
            )
        evidence = (
            f"p = {self.p_above_chance:.3g} that chance does as well"
            if self.p_above_chance < SIGNIFICANCE
            else f"not shown to beat chance, p = {self.p_above_chance:.2g}: at a few texts a "
            "class no test can tell"
        )
        return (
            f"the class names join the fine-tuning's training texts as {COPIES} labelled "
            f"sentences each: {measured} ({evidence})"
        )

    def to_dict(self) -> dict:
        return {
            "sentences": list(self.sentences),
            "zero_shot_accuracy": self.zero_shot_accuracy,
            "chance_accuracy": self.chance_accuracy,
            "p_above_chance": self.p_above_chance,
            "p_below_chance": self.p_below_chance,
            "texts": self.texts,
            "used": self.used,
            "copies": COPIES if self.used else 0,
        }


def label_names(
    classes: Sequence[str],
    encoder: TextEncoder,
    embeddings: np.ndarray,
    labels: Sequence[int],
    seed: int = 0,
) -> LabelNames | None:
    """How far ``classes``' names label the texts whose frozen ``embeddings`` (a row each)
    carry ``labels``; None when a name has no letter in it (a number or a code is no word)."""
    if wordless_name(classes) is not None:
        return None
    readable = [" ".join(name.replace("_", " ").replace("-", " ").split()) for name in classes]
    sentences = tuple(TEMPLATE.format(name) for name in readable)
    names = _unit(encoder.encode(list(sentences)))
    guesses = (_unit(np.asarray(embeddings, dtype=np.float32)) @ names.T).argmax(1)
    labels = np.asarray(labels)
    if len(labels) > _MOST_TEXTS:
        kept = np.random.default_rng(seed).choice(len(labels), _MOST_TEXTS, replace=False)
        guesses, labels = guesses[kept], labels[kept]
    above, below = (
        permutation_test(
            (guesses, labels),
            _agreement,
            permutation_type="pairings",
            vectorized=True,
            n_resamples=_RESAMPLES,
            alternative=alternative,
            random_state=seed,  # one draw of pairings for both
        )
        for alternative in ("greater", "less")
    )
    return LabelNames(
        sentences,
        float(_agreement(guesses, labels)),
        float(np.mean(above.null_distribution)),
        float(above.pvalue),
        float(below.pvalue),
        len(labels),
    )


def wordless_name(classes: Sequence[str]) -> str | None:
    """The first class name without a letter in it (a number or a code is no word), if any."""
    return next((name for name in classes if not any(ch.isalpha() for ch in name)), None)


def examples_of(names: LabelNames | None) -> tuple[list[str], list[int]]:
    """The sentences that join the fine-tuning's texts, and their labels: none unless the
    names are used."""
    if names is None or not names.used:
        return [], []
    return names.examples()


def _agreement(guesses: np.ndarray, labels: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(guesses == labels, axis=axis)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
