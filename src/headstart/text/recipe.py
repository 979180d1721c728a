"""``headstart fit`` on texts: from a table or folders of labelled texts to a model bundle.

The recipe of photos, for texts::

    data -> encode (cached) -> audit -> plan -> probe -> fine-tune -> choose -> calibrate -> save

The plan is decided once, as data, before anything trains, with its cost: a linear probe on
the frozen encoder's embeddings (seconds), and (``auto`` and ``fine-tune``) the encoder
fine-tuned with SetFit's contrastive objective on class-balanced batches of the training texts
(:mod:`headstart.text.finetune`), then a new probe on its embeddings. ``auto`` keeps whichever
validation says is better (McNemar's test over the texts one gets right and the other wrong),
and says why.
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import FitConfig, save_config, settings_table
from ..console import say
from ..data.sources import SPLITS as SPLIT_NAMES
from ..errors import HeadstartError
from ..metrics import classification_metrics
from ..report.build import build_report
from ..report.records import write_predictions
from ..result import FitResult
from ..runfolder import (
    CHECKS,
    CONFIG_JSON,
    CONFIG_YAML,
    DATASET,
    PLAN,
    PREDICTIONS_CSV,
    SUMMARY,
    RunFolder,
)
from ..stages.calibrate import calibrate
from ..stages.checks import say_checks
from ..stages.data import default_cache_dir, device_of, seed_everything, write_splits
from ..stages.evaluate import EVALUATED, Candidate, Choice, Scored, choose
from ..storage import write_atomically
from ..training.probe import fit_probe
from .audit import TextAudit, audit_texts
from .checks import text_checks
from .data import TextDataset, TextSample, labels_of, normalised, read_texts, text_key
from .embeddings import embed
from .encoder import TextEncoder
from .finetune import ContrastiveSettings, fine_tune_encoder, time_step
from .label_names import LabelNames, examples_of, label_names, wordless_name
from .model import TextModel, save_text_model
from .plan import TextPlan

__all__ = ["TEXT_SETTINGS", "audit_text_data", "fit_texts"]

#: The settings a fit of texts reads, its own (the settings table's group "text") and these
#: shared with images; any other given is refused (it would do nothing).
TEXT_SETTINGS = frozenset(
    {
        "val_fraction",
        "test_fraction",
        "seed",
        "batch_size",
        "cache_dir",
        "device",
        "quiet",
        "strategy",
        "epochs",
        "lr",
        "probe_penalty",
        "runs_dir",
        "name",
        "calibration",
        "checks",
    }
) | {name for name, setting in settings_table().items() if setting.group == "text"}
#: Below this many training texts in the smallest class, every labelled text counts: the kept
#: model is fitted again on train and validation together. Measured (benchmarks/text.py, the
#: fine-tuned encoder kept): at 6 training texts a class it gained 12.5 points on TREC and 1.0
#: on SMS spam; at 26 a class on TREC, +0.8, +0.2 and +1.2 points on three draws (SetFit, which
#: holds nothing out, was ahead by 1.2 to 2.0 points before).
REFIT_BELOW = 40


@dataclass
class Fitted:
    """A probe's candidate model, and what its fit measured on the training texts."""

    candidate: Candidate
    cv_accuracy: float  # out of fold: meaningful on a frozen encoder only
    train_accuracy: float


def fit_texts(data: str | Path, config: FitConfig):
    """Train a text classifier on ``data`` (see :func:`headstart.text.data.read_texts`)."""
    started = time.perf_counter()
    _refuse_image_settings(config)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise HeadstartError(
            "texts are fitted in one process: run `headstart fit` without torchrun"
        )
    if config.strategy == "full":
        raise HeadstartError(
            "strategy='full' trains a network from random weights: for texts, use "
            "linear-probe, fine-tune or auto"
        )
    dataset = _read(data, config)
    device = device_of(config.device)
    encoder = TextEncoder(config.encoder, device=str(device))  # refused here: nothing written
    run = RunFolder.create(config.runs_dir, config.name, Path(str(data)).stem)
    with run.running():
        run.write_json(CONFIG_JSON, {"data": str(Path(data).resolve()), **asdict(config)})
        save_config(config, run / CONFIG_YAML, data)
        _say_what_runs(run, dataset, encoder, config)
        _record_split(run, dataset)
        seed_everything(config.seed)
        embeddings = _embed(dataset, encoder, config)
        audit = _audit(dataset, embeddings, encoder, config)
        audit.write(run.path)
        for line in audit.findings():
            say(config.quiet, f"[yellow]audit[/]: {line}")
        plan = _plan(dataset, embeddings, audit, encoder, config)
        run.write_json(PLAN, plan.to_dict())
        for reason in plan.reasons:
            say(config.quiet, f"plan: {reason}")
        rows = _rows_by_split(dataset)
        # The probe on the frozen encoder always: seconds, and the measure of how far the
        # pretrained embeddings already carry the labels (a fine-tuned encoder has seen them).
        probe = _probe(encoder, embeddings, dataset, rows, config, "linear-probe")
        say(config.quiet, f"probe: validation {_accuracy(probe.candidate)}")
        tuned, tuning = None, None
        if plan.contrastive is not None:
            tuned, tuning = _fine_tuned(dataset, rows, plan, config, device)
            say(config.quiet, f"fine-tune: validation {_accuracy(tuned.candidate)}")
        choice = _choose(probe.candidate, tuned.candidate if tuned else None, config)
        if choice.why:
            say(config.quiet, f"plan: {choice.why}")
        kept = choice.kept
        if config.checks:
            trained = tuned if tuned is not None and kept is tuned.candidate else probe
            checks = text_checks(
                kept,
                trained.train_accuracy,
                probe.cv_accuracy,
                np.array(labels_of(dataset.split("train"), dataset.classes)),
                tuning,
            )
            checks.write(run / CHECKS)
            say_checks(config.quiet, checks)
        calibrated = calibrate(kept, config, items="texts")
        say(config.quiet, calibrated.why)
        refit = None
        if plan.refit and "val" in kept.scored:
            kept, refit = _refit(kept, embeddings, dataset, rows, plan, config, device)
        model = _save(run, kept, dataset, refit is not None)
        summary = {
            "modality": "text",
            "strategy": kept.strategy,
            "why_kept": choice.why,
            "evidence": choice.evidence,
            "scores": _scores(kept),
            "clean_scores": _clean_scores(kept, audit, dataset),
            "candidates": {
                f.candidate.strategy: _scores(f.candidate) for f in (probe, tuned) if f is not None
            },
            "probe_cv_accuracy": probe.cv_accuracy,
            "fine_tuning": tuning,
            "refit": refit,
            "calibration": calibrated.to_dict(),
            "audit": audit.findings(),
            "seconds": (seconds := time.perf_counter() - started),
        }
        run.write_json(SUMMARY, summary)
        build_report(run.path)
    return FitResult(
        run.path,
        model,
        plan,
        kept.strategy,
        _scores(kept),
        seconds,
        list(dataset.skipped),
        dataset=dataset,
        why_kept=choice.why,
        unit="texts",
    )


def _save(run: RunFolder, kept: Candidate, dataset: TextDataset, refit: bool) -> TextModel:
    """The kept model's bundle (knowing its training texts, validation's too once refit) and
    its predictions: ``predictions.csv`` to read, ``predictions.npz`` for the report."""
    model: TextModel = kept.model
    fitted_on = ("train", "val") if refit else ("train",)
    model.trained_on = frozenset(text_key(s.text) for s in dataset.samples if s.split in fitted_on)
    model.info = {"strategy": kept.strategy, "scores": _scores(kept)}
    save_text_model(model, run.bundle)
    _write_predictions(run, kept, dataset)
    for split, scored in kept.scored.items():
        write_predictions(
            run.path,
            split,
            [sample.where for sample in scored.samples],
            scored.labels,
            scored.log_probabilities,
            dataset.classes,
        )
    return model


def audit_text_data(data: str | Path, config: FitConfig) -> TextAudit:
    """The audit ``fit`` runs first, alone: nothing trained, nothing written (the
    embeddings are cached for the fit)."""
    _refuse_image_settings(config)
    dataset = _read(data, config)
    encoder = TextEncoder(config.encoder, device=str(device_of(config.device)))
    return _audit(dataset, _embed(dataset, encoder, config), encoder, config)


def _read(data: str | Path, config: FitConfig) -> TextDataset:
    return read_texts(
        data,
        text_column=config.text_column,
        label_column=config.label_column,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
    )


def _embed(dataset: TextDataset, encoder: TextEncoder, config: FitConfig) -> np.ndarray:
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    texts = [s.text for s in dataset.samples]
    return embed(texts, encoder, cache, batch_size=config.batch_size, quiet=config.quiet)


def _audit(
    dataset: TextDataset, embeddings: np.ndarray, encoder: TextEncoder, config: FitConfig
) -> TextAudit:
    texts = [s.text for s in dataset.samples]
    return audit_texts(
        dataset, embeddings, encoder.token_counts(texts), encoder.max_tokens, seed=config.seed
    )


def _refuse_image_settings(config: FitConfig) -> None:
    ignored = sorted(set(config.changed()) - TEXT_SETTINGS)
    if ignored:
        flags = ", ".join("--" + name.replace("_", "-") for name in ignored)
        raise HeadstartError(
            f"{flags}: setting(s) for photos, which a fit of texts does not read; it reads "
            + ", ".join("--" + name.replace("_", "-") for name in sorted(TEXT_SETTINGS))
        )


def _say_what_runs(
    run: RunFolder, dataset: TextDataset, encoder: TextEncoder, config: FitConfig
) -> None:
    counts = dataset.counts()
    sizes = ", ".join(
        f"{sum(counts[s].values())} {s}" for s in SPLIT_NAMES if sum(counts[s].values())
    )
    columns = (
        f" (text column {dataset.columns['text']!r}, label column {dataset.columns['label']!r})"
        if dataset.columns
        else ""
    )
    say(
        config.quiet,
        f"run folder [bold]{run.path}[/]; {len(dataset.samples)} texts in "
        f"{len(dataset.classes)} classes{columns}: {sizes}; encoder {encoder.name} "
        f"({encoder.source}, {encoder.dimension} features, reads {encoder.max_tokens} tokens)",
    )
    for skip in dataset.skipped[:10]:
        say(config.quiet, f"[yellow]skipped[/] {skip.path}: {skip.reason}")
    if len(dataset.skipped) > 10:
        say(config.quiet, f"[yellow]skipped[/] {len(dataset.skipped) - 10} more ({DATASET})")
    for warning in dataset.warnings:
        say(config.quiet, f"[yellow]warning[/]: {warning}")


def _record_split(run: RunFolder, dataset: TextDataset) -> None:
    """``dataset.json``, and ``splits.csv``: where each text came from, its label and split."""
    run.write_json(DATASET, dataset.to_dict())
    write_splits(run, ((s.where, s.label, s.split) for s in dataset.samples))


def _plan(
    dataset: TextDataset,
    embeddings: np.ndarray,
    audit: TextAudit,
    encoder: TextEncoder,
    config: FitConfig,
) -> TextPlan:
    train = dataset.split("train")
    reasons = [
        f"{len(train)} training texts; the encoder's embeddings are cached, so the linear "
        "probe costs seconds"
    ]
    if audit.lengths.get("truncated"):
        reasons.append(
            f"{audit.lengths['truncated']} text(s) are longer than {encoder.max_tokens} "
            "tokens: the encoder reads their beginning only"
        )
    smallest = min(n for n in dataset.counts()["train"].values())
    held = sum(dataset.counts()["val"].values())
    refit = smallest < REFIT_BELOW and held > 0
    if refit:
        reasons.append(
            f"few texts a class (the smallest has {smallest} for training): once validation "
            f"has chosen, the kept model is fitted again with the {held} validation texts "
            "too; its validation scores are then those of the model before, its test scores "
            "its own"
        )
    strategy = config.strategy
    if strategy == "linear-probe":
        reasons.append("strategy linear-probe, as asked: the encoder stays as it is")
        return TextPlan(strategy, encoder.name, None, refit=refit, reasons=reasons)
    settings = ContrastiveSettings(
        epochs=config.epochs or ContrastiveSettings.epochs,
        lr=config.lr or ContrastiveSettings.lr,
        # Two texts of two classes at least: a batch holds a pair of each kind.
        batch_size=max(4, min(config.batch_size, ContrastiveSettings.batch_size)),
    )
    names, said = _class_names(dataset, embeddings, encoder, config, refit)
    reasons.append(said)
    texts, labels = _fine_tuning_texts(train, names, dataset.classes)
    lengths = encoder.read_lengths(texts)
    steps, bound = settings.limit(lengths, labels, config.seed)
    refit_steps, refit_bound = 0, None
    if refit:
        together, together_labels = _fine_tuning_texts(
            train + dataset.split("val"), names, dataset.classes
        )
        refit_steps, refit_bound = settings.limit(
            encoder.read_lengths(together), together_labels, config.seed
        )
    step_seconds = time_step(encoder, texts, labels, settings, config.seed)
    seconds = (steps + refit_steps) * step_seconds
    budget = f"the fine-tuning reads {settings.token_budget:,} tokens at most"
    capped = {
        "max_steps": " (the most it takes)",
        "token_budget": f" ({steps * min(settings.batch_size, len(texts)) / len(texts):.0f} "
        f"draws of each text, not {settings.epochs}: the texts average "
        f"{np.mean(lengths[: len(train)]):.0f} tokens, and {budget})",
    }.get(bound, "")
    again = (
        f", and {refit_steps} more for the refit if the fine-tuned encoder is kept"
        + (f" ({budget})" if refit_bound == "token_budget" and bound != "token_budget" else "")
        if refit_steps
        else ""
    )
    reasons.append(
        f"the encoder fine-tuned with SetFit's contrastive objective (texts of a class pulled "
        f"together, of two classes apart), every pair of class-balanced batches of "
        f"{settings.batch_size} training texts: {steps} steps{capped}{again}, "
        f"{step_seconds:.2f} s each measured here: {_minutes(seconds)} at most"
    )
    if strategy == "auto":
        reasons.append(
            "both the probe and the fine-tuned encoder are scored on validation; the "
            "fine-tuning is kept unless it is behind beyond noise"
        )
    return TextPlan(strategy, encoder.name, settings, steps, seconds, refit, reasons, names)


def _class_names(
    dataset: TextDataset,
    embeddings: np.ndarray,
    encoder: TextEncoder,
    config: FitConfig,
    refit: bool,
) -> tuple[LabelNames | None, str]:
    """The class names, measured on the texts the fit learns from (validation's too when it
    refits: no model is fitted on them), and what the plan says of them."""
    if not config.label_names:
        return None, "the class names are not used as examples, as asked (--no-label-names)"
    learned = [
        row
        for row, sample in enumerate(dataset.samples)
        if sample.split == "train" or (refit and sample.split == "val")
    ]
    names = label_names(
        dataset.classes,
        encoder,
        embeddings[learned],
        labels_of([dataset.samples[row] for row in learned], dataset.classes),
        seed=config.seed,
    )
    if names is None:
        wordless = wordless_name(dataset.classes)
        return None, f"the class names are not used as examples: {wordless!r} has no letter"
    return names, names.reason()


def _rows_by_split(dataset: TextDataset) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {}
    for row, sample in enumerate(dataset.samples):
        rows.setdefault(sample.split, []).append(row)
    return rows


def _probe(
    encoder: TextEncoder,
    embeddings: np.ndarray,
    dataset: TextDataset,
    rows: dict[str, list[int]],
    config: FitConfig,
    strategy: str,
    *,
    fine_tuned: bool = False,
    examples: tuple[np.ndarray, list[int]] | None = None,
) -> Fitted:
    """A logistic head on ``embeddings``' training rows (and the embeddings and labels of
    ``examples``, texts that are not the data's), scored on every split."""
    train = rows["train"]
    labels = labels_of([dataset.samples[r] for r in train], dataset.classes)
    features, fit_rows = embeddings, train
    if examples is not None:
        features, fit_rows = np.concatenate([embeddings[train], examples[0]]), None
        labels = labels + list(examples[1])
    probe = fit_probe(
        features,
        np.array(labels),
        len(dataset.classes),
        rows=fit_rows,
        seed=config.seed,
        penalty=config.probe_penalty,
    )
    model = TextModel(encoder, probe.head, dataset.classes, fine_tuned=fine_tuned)
    scored = {}
    for split in EVALUATED:
        if rows.get(split):
            scored[split] = _scored(model, embeddings[rows[split]], dataset, rows[split])
    fitted = _scored(model, embeddings[train], dataset, train).scores["accuracy"]
    return Fitted(Candidate(model, strategy, scored), probe.cv_accuracy, fitted)


def _scored(
    model: TextModel, embeddings: np.ndarray, dataset: TextDataset, rows: list[int]
) -> Scored:
    samples = [dataset.samples[r] for r in rows]
    logits = torch.from_numpy(model.logits(embeddings)).double()
    log_probabilities = logits.log_softmax(1).numpy()
    labels = np.array(labels_of(samples, dataset.classes))
    scores = classification_metrics(labels, log_probabilities.argmax(1), dataset.classes)
    return Scored(samples, labels, log_probabilities, scores)


def _fine_tuned(
    dataset: TextDataset,
    rows: dict[str, list[int]],
    plan: TextPlan,
    config: FitConfig,
    device: torch.device,
) -> tuple[Fitted, dict]:
    """The encoder fine-tuned on the texts at ``rows["train"]`` and the plan's class-name
    sentences (a fresh copy: the probe keeps the original), a new probe on its embeddings."""
    encoder = TextEncoder(config.encoder, device=str(device))
    texts, labels = _fine_tuning_texts(
        [dataset.samples[row] for row in rows["train"]], plan.label_names, dataset.classes
    )
    tuning = fine_tune_encoder(
        encoder,
        texts,
        labels,
        plan.contrastive,
        seed=config.seed,
        quiet=config.quiet,
    )
    say(
        config.quiet,
        f"fine-tune: {tuning['steps']} steps in {_minutes(tuning['seconds'])}, contrastive "
        f"loss {tuning['loss_start']:.3f} -> {tuning['loss_end']:.3f}",
    )
    embeddings = encoder.encode([s.text for s in dataset.samples], batch_size=config.batch_size)
    name_texts, name_labels = examples_of(plan.label_names)
    examples = (encoder.encode(name_texts), name_labels) if name_texts else None
    fitted = _probe(
        encoder, embeddings, dataset, rows, config, "fine-tune", fine_tuned=True, examples=examples
    )
    return fitted, tuning


def _fine_tuning_texts(
    samples: list[TextSample], names: LabelNames | None, classes: tuple[str, ...]
) -> tuple[list[str], list[int]]:
    """The texts the encoder is fine-tuned on and their labels: ``samples``', then the class
    names' sentences (when they are used)."""
    name_texts, name_labels = examples_of(names)
    return [s.text for s in samples] + name_texts, labels_of(samples, classes) + name_labels


def _refit(
    kept: Candidate,
    embeddings: np.ndarray,
    dataset: TextDataset,
    rows: dict[str, list[int]],
    plan: TextPlan,
    config: FitConfig,
    device: torch.device,
) -> tuple[Candidate, dict]:
    """``kept``'s strategy fitted again on the training and validation texts together, with
    ``kept``'s temperature; validation scored by ``kept`` (the refit model has seen those
    texts), test by the refit model."""
    together = {"train": rows["train"] + rows["val"], "test": rows.get("test", [])}
    say(config.quiet, f"refit: the {kept.strategy} again, on {len(together['train'])} texts")
    tuning = None
    if kept.strategy == "fine-tune":
        fitted, tuning = _fine_tuned(dataset, together, plan, config, device)
    else:
        fitted = _probe(kept.model.encoder, embeddings, dataset, together, config, kept.strategy)
    final = fitted.candidate
    final.model.temperature = kept.model.temperature
    final.scored = {"val": kept.scored["val"], **final.scored}
    why = (
        f"fitted again on {len(together['train'])} texts (train and validation): its validation "
        "scores are those of the model before"
    )
    return final, {"texts": len(together["train"]), "why": why, "fine_tuning": tuning}


def _choose(probe: Candidate | None, tuned: Candidate | None, config: FitConfig) -> Choice:
    """The probe or the fine-tuned encoder: by validation where there is one (the fine-tuning
    kept unless behind beyond noise: it chose nothing on validation), else the fine-tuning."""
    if probe is not None and tuned is not None and "val" not in tuned.scored:
        return Choice(tuned, "no validation texts to compare on: kept the fine-tuned encoder")
    return choose(
        probe,
        tuned,
        asked=config.strategy == "fine-tune",
        within_noise="fine-tune",
        items="texts",
    )


def _scores(candidate: Candidate) -> dict[str, dict]:
    return {split: scored.scores for split, scored in candidate.scored.items()}


def _clean_scores(kept: Candidate, audit: TextAudit, dataset: TextDataset) -> dict[str, dict]:
    """Held-out scores without the texts that are copies of training texts (when some are)."""
    if not any(audit.leaks.values()):
        return {}
    trained = {normalised(s.text) or s.text for s in dataset.split("train")}
    clean = {}
    for split, scored in kept.scored.items():
        keep = np.array([(normalised(s.text) or s.text) not in trained for s in scored.samples])
        if keep.any() and not keep.all():
            clean[split] = classification_metrics(
                scored.labels[keep],
                scored.log_probabilities[keep].argmax(1),
                dataset.classes,
            )
    return clean


def _write_predictions(run: RunFolder, kept: Candidate, dataset: TextDataset) -> None:
    """Every held-out text with its label and the kept model's prediction, most confident
    mistakes first within each split."""
    rows = io.StringIO(newline="")
    writer = csv.writer(rows)
    writer.writerow(["split", "where", "label", "predicted", "probability", "text"])
    for split, scored in kept.scored.items():
        probabilities = np.exp(scored.log_probabilities / kept.model.temperature)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        predicted = probabilities.argmax(1)
        wrong = predicted != scored.labels
        order = np.lexsort((-probabilities.max(1), ~wrong))
        for i in order:
            sample = scored.samples[i]
            writer.writerow(
                [
                    split,
                    sample.where,
                    sample.label,
                    dataset.classes[predicted[i]],
                    f"{probabilities[i].max():.4f}",
                    sample.text,
                ]
            )
    write_atomically(run / PREDICTIONS_CSV, rows.getvalue().encode("utf-8"))


def _accuracy(candidate: Candidate) -> str:
    val = candidate.scored.get("val")
    if val is None:
        return "(no validation texts)"
    return f"{val.scores['accuracy']:.1%} of {val.scores['n']}"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
