"""Fine-tuning a sentence encoder on few labelled texts: contrastive pairs, as SetFit does.

Tunstall et al. 2022 ("Efficient few-shot learning without prompts"): from ``n`` labelled
texts, ``n * (n - 1) / 2`` pairs can be made, each saying "same class" or "not"; the encoder is
trained so that the cosine similarity of a pair's embeddings is 1 for the same class and 0
otherwise (sentence-transformers' CosineSimilarityLoss). A few hundred steps pull each class
together in the embedding space, and a logistic head on the new embeddings then separates
them with far fewer examples than the pretrained space needs.

Each training text is paired, ``rounds`` times, with one text of its class and one of another
class (SetFit's ``num_iterations``), drawn from the seed alone: the same texts and seed give
the same pairs, and the same encoder, on any machine load.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..console import progress_bar
from .encoder import TextEncoder

__all__ = ["ContrastiveSettings", "contrastive_pairs", "fine_tune_encoder"]


@dataclass(frozen=True)
class ContrastiveSettings:
    """How the encoder is fine-tuned (SetFit's defaults, bounded for CPUs)."""

    rounds: int = 20  # pairs of each kind drawn per training text (SetFit: num_iterations)
    max_pairs: int = 8000  # the whole run's pairs, at most: its cost, on large data
    batch_size: int = 16
    lr: float = 2e-5
    warmup: float = 0.1  # share of the steps with a linearly rising learning rate
    epochs: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    def steps(self, pairs: int) -> int:
        return self.epochs * math.ceil(pairs / self.batch_size)


def contrastive_pairs(
    labels: Sequence[int], settings: ContrastiveSettings, seed: int
) -> np.ndarray:
    """``(n_pairs, 3)`` int rows ``(i, j, same)``: for each round and text, a partner of its
    class (``same=1``) and one of another (``same=0``), shuffled, at most ``max_pairs``."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    members = {label: np.flatnonzero(labels == label) for label in np.unique(labels)}
    pairs = []
    for _ in range(settings.rounds):
        for i, label in enumerate(labels):
            same, other = members[label], np.flatnonzero(labels != label)
            if len(same) > 1:
                partner = same[rng.integers(len(same) - 1)]
                partner = partner if partner != i else same[-1]
                pairs.append((i, partner, 1))
            if len(other):
                pairs.append((i, other[rng.integers(len(other))], 0))
    pairs = np.array(pairs, dtype=np.int64).reshape(-1, 3)
    rng.shuffle(pairs)
    return pairs[: settings.max_pairs]


def fine_tune_encoder(
    encoder: TextEncoder,
    texts: Sequence[str],
    labels: Sequence[int],
    settings: ContrastiveSettings,
    *,
    seed: int = 0,
    quiet: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> dict:
    """Train ``encoder`` in place on contrastive pairs of ``texts``; what was done (pairs,
    steps, the loss at the start and the end, seconds). ``on_step(step, loss)`` after each."""
    pairs = contrastive_pairs(labels, settings, seed)
    model = encoder.model
    torch.manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01)
    total = settings.steps(len(pairs))
    warmup = max(1, int(settings.warmup * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))),
    )
    device = next(model.parameters()).device
    losses, started, step = [], time.perf_counter(), 0
    model.train()
    try:
        with progress_bar("fine-tuning the encoder", total, quiet=quiet) as advance:
            for epoch in range(settings.epochs):
                order = np.random.default_rng(seed + epoch).permutation(len(pairs))
                for start in range(0, len(pairs), settings.batch_size):
                    batch = pairs[order[start : start + settings.batch_size]]
                    loss = _pair_loss(model, texts, batch, device)
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimiser.step()
                    schedule.step()
                    losses.append(loss.item())
                    step += 1
                    advance(1)
                    if on_step is not None:
                        on_step(step, losses[-1])
    finally:
        model.eval()
    window = max(1, min(20, len(losses) // 5))
    return {
        "pairs": len(pairs),
        "steps": step,
        "loss_start": float(np.mean(losses[:window])) if losses else None,
        "loss_end": float(np.mean(losses[-window:])) if losses else None,
        "seconds": time.perf_counter() - started,
        **settings.to_dict(),
    }


def _pair_loss(model, texts: Sequence[str], batch: np.ndarray, device) -> torch.Tensor:
    """Mean squared error between the pairs' cosine similarities and their targets."""
    both = _embeddings(
        model, [texts[i] for i in batch[:, 0]] + [texts[j] for j in batch[:, 1]], device
    )
    left, right = both[: len(batch)], both[len(batch) :]
    similarity = torch.nn.functional.cosine_similarity(left, right)
    target = torch.as_tensor(batch[:, 2], dtype=similarity.dtype, device=device)
    return torch.nn.functional.mse_loss(similarity, target)


def _embeddings(model, texts: list[str], device) -> torch.Tensor:
    features = model.preprocess(texts)
    features = {k: v.to(device) for k, v in features.items() if isinstance(v, torch.Tensor)}
    return model(features)["sentence_embedding"]
