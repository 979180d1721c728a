"""``headstart evaluate`` for a text model: its scores on labelled texts it did not train on.

As for photos, a model is never scored on its own training texts without being told: on the
data it was fitted on, the run's own held-out split is scored (its split is drawn again from
the run's settings, the same rows); on other data, texts the model trained on (the same
text, by SHA-256) are left out, said and counted.
"""

from __future__ import annotations

from pathlib import Path

from ..config import load_config
from ..console import say
from ..errors import HeadstartError
from ..metrics import classification_metrics
from ..runfolder import CONFIG_YAML, SUMMARY, RunFolder
from .data import TextDataset, TextSample, labels_of, read_texts, text_key
from .predictor import TextPredictor

__all__ = ["evaluate_texts", "read_run_texts"]


def evaluate_texts(
    model: TextPredictor,
    run: RunFolder | None,
    data: str | Path,
    *,
    split: str | None = None,
    quiet: bool = False,
) -> tuple[dict, list]:
    own = run is not None and run.data is not None and run.data == Path(data).resolve()
    left_out = 0
    if own:
        dataset = read_run_texts(run, data)
        present = {s.split for s in dataset.samples}
        if (run.json(SUMMARY) or {}).get("refit"):
            # Fitted again with its validation texts: they are training texts now.
            present.discard("val")
            if split == "val":
                raise HeadstartError(
                    f"{run.path} was fitted again on its validation texts (few texts a class): "
                    "they are training texts now; its validation scores (before) are in "
                    "summary.json"
                )
        if split is None:
            split = next((name for name in ("test", "val") if name in present), None)
            if split is None:
                raise HeadstartError(
                    f"{run.path} trained on every text of {data} it does not hold out for "
                    "testing: evaluate it on other labelled texts, or pass --split train"
                )
        if split == "all":
            say(quiet, f"evaluate: split 'all' of {data} includes the texts the run trained on")
        samples = _of_split(dataset.samples, split)
    else:
        dataset = read_texts(data, val_fraction=0.0, training=False)
        if split is None:
            split = "test" if dataset.split("test") else "all"
        samples = _of_split(dataset.samples, split)
        unknown = sorted({s.label for s in samples} - set(model.classes))
        if unknown:
            raise HeadstartError(
                f"{data}: label(s) {', '.join(map(repr, unknown))} are not among the model's "
                f"classes ({', '.join(model.classes)})"
            )
        kept = [s for s in samples if text_key(s.text) not in model.trained_on]
        left_out = len(samples) - len(kept)
        if left_out:
            say(
                quiet,
                f"evaluate: left out {left_out} text(s) of {data} that the model was trained "
                f"on; scoring the other {len(kept)}",
            )
        samples = kept
    if not samples:
        why = f" (all {left_out} are texts the model trained on)" if left_out else ""
        raise HeadstartError(f"{data}: no texts to score in split {split!r}{why}")
    probabilities = model.predict_proba([s.text for s in samples], quiet=quiet)
    scores = classification_metrics(
        labels_of(samples, model.classes), probabilities.argmax(1), model.classes
    )
    return {**scores, "split": split, "left_out": left_out, "unit": "texts"}, list(dataset.skipped)


def read_run_texts(run: RunFolder, data: str | Path) -> TextDataset:
    """The texts at ``data`` read and split as ``run`` read and split them when it was fitted
    (its split is drawn again from its settings: the same rows)."""
    settings = load_config(run / CONFIG_YAML)
    return read_texts(
        data,
        text_column=settings.get("text_column"),
        label_column=settings.get("label_column"),
        val_fraction=settings.get("val_fraction", 0.2),
        test_fraction=settings.get("test_fraction", 0.0),
        seed=settings.get("seed", 0),
    )


def _of_split(samples: tuple[TextSample, ...], split: str) -> list[TextSample]:
    return [s for s in samples if split in ("all", s.split)]
