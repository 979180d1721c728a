"""Fine-tuning a sentence encoder on few labelled texts: SetFit's objective, every pair a batch.

Tunstall et al. 2022 ("Efficient few-shot learning without prompts"): the encoder is trained
so that the cosine similarity of two texts' embeddings is 1 when they share a class and 0 when
they do not (sentence-transformers' CosineSimilarityLoss). A few hundred steps pull each class
together in the embedding space, and a logistic head on the new embeddings then separates
them with far fewer examples than the pretrained space needs.

SetFit feeds that loss pairs: a step of 16 pairs encodes 32 texts and learns 16 similarities.
Here a step encodes a class-balanced batch of 32 texts and learns all 496 similarities among
them, the same-class and the cross-class ones weighted equally (as SetFit's oversampling of
the rarer kind does): the same objective, 31 times the pairs for the same forward pass.
Measured (benchmarks/text.py, TREC, 32 texts a class, three draws, every text trained on):
240 such steps (3.7 minutes here, before the passes below) came within 0.2 points of SetFit's
1,920 pair steps, 27 minutes (91.3% against 91.5% mean test accuracy).

A batch is encoded in passes of texts of similar length (:func:`length_groups`): a pass pads
its texts to its longest, and one long message would otherwise make 31 short ones cost as much
as it does. The loss and its gradient are those of the whole batch (dropout aside: its masks
are drawn pass by pass). On a GPU, where a pass costs its launches more than its tokens, a batch
is one pass, as before.

The batches are drawn from the seed alone, the passes from the texts' lengths: the same texts
and seed give the same batches, and the same encoder, on any machine load.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..console import progress_bar
from .encoder import TextEncoder

__all__ = [
    "ContrastiveSettings",
    "class_balanced_batches",
    "fine_tune_encoder",
    "length_groups",
    "time_step",
]

#: What one forward and backward pass costs beyond its tokens, in tokens' worth of work, on a
#: CPU. Measured (all-MiniLM-L6-v2, 2 cores): 8 texts of 16 tokens take 0.18 s, 32 of them
#: 0.47 s (0.75 ms a token, and 110 tokens' worth a pass); at 64 tokens and more a pass costs
#: 0.9 to 1.1 ms a token, with no overhead left to see.
PASS_OVERHEAD_TOKENS = 80


@dataclass(frozen=True)
class ContrastiveSettings:
    """How the encoder is fine-tuned: ``epochs`` draws of each training text on average,
    within ``max_steps`` and ``token_budget`` (the bounds on a large set's cost, and on a set of
    long texts'), and ``min_steps`` at least."""

    epochs: int = 40
    batch_size: int = 32  # texts a step, as many of each class as fit
    min_steps: int = 20  # room for the warmup and the decay on a handful of texts
    max_steps: int = 500
    # Tokens the batches read in all. A step costs 1.1 to 1.5 ms a token here (all-MiniLM-L6-v2,
    # 2 CPU cores): 550,000 tokens is 10 to 14 minutes. 500 steps on every SMS message (class-
    # balanced batches: 34 tokens a text) fit; 400 news items of 56 tokens get 300 steps, not
    # 400 (13 minutes).
    token_budget: int = 550_000
    lr: float = 5e-5
    warmup: float = 0.1  # share of the steps with a linearly rising learning rate

    def to_dict(self) -> dict:
        return asdict(self)

    def steps(self, lengths: np.ndarray, labels: Sequence[int], seed: int) -> int:
        """Steps for training texts of ``lengths`` tokens (as the encoder reads them)."""
        return self.limit(lengths, labels, seed)[0]

    def limit(self, lengths: np.ndarray, labels: Sequence[int], seed: int) -> tuple[int, str]:
        """:meth:`steps`, and the setting that set them: "epochs", "max_steps",
        "token_budget" (the batches ``seed`` draws, counted until they would read more) or
        "min_steps" (whatever the budget)."""
        wanted = math.ceil(self.epochs * len(lengths) / self.batch_size)
        steps, bound = (
            (wanted, "epochs") if wanted <= self.max_steps else (self.max_steps, "max_steps")
        )
        lengths = np.asarray(lengths)
        batches = class_balanced_batches(labels, self, seed, steps)
        read = np.cumsum([lengths[batch].sum() for batch in batches])
        affordable = int(np.searchsorted(read, self.token_budget, side="right"))
        if affordable < steps:
            steps, bound = affordable, "token_budget"
        if steps < self.min_steps:
            return self.min_steps, "min_steps"
        return steps, bound


def class_balanced_batches(
    labels: Sequence[int], settings: ContrastiveSettings, seed: int, steps: int
) -> Iterator[np.ndarray]:
    """Each of ``steps`` steps' batch in turn, as rows of ``labels``:
    ``batch_size // classes`` texts of each class (all of a smaller class), or, with more than
    ``batch_size // 2`` classes, 2 texts of each of ``batch_size // 2`` classes drawn at
    random; the places left, drawn from the chosen classes' other texts. No text twice in a
    batch."""
    labels = np.asarray(labels)
    members = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    rng = np.random.default_rng(seed)
    picked = min(len(members), max(2, settings.batch_size // 2))
    each = max(2, settings.batch_size // picked)
    for _ in range(steps):
        classes = np.sort(rng.choice(len(members), picked, replace=False))
        shuffled = [rng.permutation(members[c]) for c in classes]
        batch = np.concatenate([rows[:each] for rows in shuffled])
        spare = np.concatenate([rows[each:] for rows in shuffled])
        places = min(len(spare), settings.batch_size - len(batch))
        yield np.concatenate([batch, rng.choice(spare, places, replace=False)])


def length_groups(lengths: Sequence[int], overhead: int = PASS_OVERHEAD_TOKENS) -> list[np.ndarray]:
    """The rows of a batch (``lengths``: each text's tokens) split into passes, shortest texts
    first: the split of the sorted texts that pads the fewest tokens, ``overhead`` tokens
    counted for each pass (dynamic programming over where to cut). Texts of one length stay in
    one pass; 32 SMS messages of 10 to 256 tokens go in about four."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    ordered = np.asarray(lengths)[order]
    cost = np.zeros(len(ordered) + 1)
    start_of = np.zeros(len(ordered) + 1, dtype=int)
    for end in range(1, len(ordered) + 1):
        # a pass of rows start..end-1 pads each to the longest, ordered[end - 1]
        starts = np.arange(end)
        totals = cost[:end] + (end - starts) * ordered[end - 1] + overhead
        start_of[end] = int(np.argmin(totals))
        cost[end] = totals[start_of[end]]
    passes, end = [], len(ordered)
    while end:
        passes.append(order[start_of[end] : end])
        end = start_of[end]
    return passes[::-1]


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
    """Train ``encoder`` in place on the class-balanced batches of ``texts``; what was done
    (steps, the loss at the start and the end, seconds). ``on_step(step, loss)`` after each."""
    labels, lengths = np.asarray(labels), encoder.read_lengths(texts)
    total = settings.steps(lengths, labels, seed)
    batches = class_balanced_batches(labels, settings, seed, total)
    model = encoder.model
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    optimiser = torch.optim.AdamW(
        model.parameters(),
        lr=settings.lr,
        weight_decay=0.01,
        # One kernel over every weight: 0.035 s a step here against 0.18 s for a loop over
        # the 100 tensors, a sixth of a step on short texts. Elsewhere, PyTorch's default.
        fused=True if device.type in ("cpu", "cuda") else None,
    )
    warmup = max(1, int(settings.warmup * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))),
    )
    losses, texts_seen, started = [], 0, time.perf_counter()
    model.train()
    try:
        with progress_bar("fine-tuning the encoder", total, quiet=quiet) as advance:
            for step, batch in enumerate(batches, start=1):
                loss = _batch_loss(model, texts, batch, labels, lengths[batch], device)
                texts_seen += len(batch)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimiser.step()
                schedule.step()
                losses.append(loss.item())
                advance(1)
                if on_step is not None:
                    on_step(step, losses[-1])
    finally:
        model.eval()
    window = max(1, min(20, len(losses) // 5))
    return {
        "steps": len(losses),
        "texts_a_step": texts_seen // max(1, len(losses)),
        "loss_start": float(np.mean(losses[:window])) if losses else None,
        "loss_end": float(np.mean(losses[-window:])) if losses else None,
        "seconds": time.perf_counter() - started,
        **settings.to_dict(),
    }


def time_step(
    encoder: TextEncoder,
    texts: Sequence[str],
    labels: Sequence[int],
    settings: ContrastiveSettings,
    seed: int = 0,
) -> float:
    """Seconds one fine-tuning step costs here: the forward and backward passes of a first
    batch (the optimiser's update, a few percent of a step, is left out so that the weights
    stay as they were), timed the second time (the first warms up)."""
    (batch,) = class_balanced_batches(labels, settings, seed, steps=1)
    model = encoder.model
    device = next(model.parameters()).device
    labels, lengths = np.asarray(labels), encoder.read_lengths([texts[i] for i in batch])
    model.train()
    try:
        for _ in range(2):
            started = time.perf_counter()
            _batch_loss(model, texts, batch, labels, lengths, device).backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    return seconds


def _batch_loss(
    model,
    texts: Sequence[str],
    batch: np.ndarray,
    labels: np.ndarray,
    lengths: np.ndarray,
    device,
) -> torch.Tensor:
    """Mean squared error between every pair's cosine similarity in ``batch`` (rows of
    ``texts``, whose tokens are ``lengths``) and its target (1 within a class, 0 across), the
    within-class and cross-class pairs each half of the loss."""
    passes = length_groups(lengths) if device.type == "cpu" else [np.arange(len(batch))]
    parts = [_embeddings(model, [texts[batch[i]] for i in rows], device) for rows in passes]
    in_batch_order = torch.as_tensor(np.argsort(np.concatenate(passes)), device=device)
    embeddings = torch.cat(parts)[in_batch_order]
    embeddings = torch.nn.functional.normalize(embeddings, dim=1)
    similarity = embeddings @ embeddings.T
    labels = torch.as_tensor(labels[batch], device=device)
    same = labels[:, None] == labels[None, :]
    within = same & ~torch.eye(len(labels), dtype=torch.bool, device=device)
    halves = [
        ((similarity[mask] - target) ** 2).mean()
        for mask, target in ((within, 1.0), (~same, 0.0))
        if mask.any()
    ]
    return torch.stack(halves).mean()


def _embeddings(model, texts: list[str], device) -> torch.Tensor:
    features = model.preprocess(texts)
    features = {k: v.to(device) for k, v in features.items() if isinstance(v, torch.Tensor)}
    return model(features)["sentence_embedding"]
