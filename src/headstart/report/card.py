"""The model card: ``model/README.md``, in the Hugging Face model-card format (YAML metadata,
then Markdown), so that the bundle says, wherever it goes, what it was trained on, how well it
does, where it is weak and what it is for.

Like the report, it is written from the run folder alone (``summary.json``, ``plan.json``,
``dataset.json``, ``config.json``, the bundle's ``headstart.json``), so it can be rewritten
after the data has moved. The numbers are those of the report; nothing is measured here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..runfolder import CONFIG_JSON, DATASET, MODEL, PLAN, SUMMARY, RunFolder
from ..storage import write_atomically
from .folder import percent

__all__ = ["CARD", "model_card", "write_card"]

CARD = "README.md"
#: Below this many validation images a point of accuracy is a handful of images: said.
FEW_VALIDATION = 200
#: Classes whose validation F1 is this far below the macro F1 are named as weak.
WEAK_CLASS_GAP = 0.05


def write_card(run_dir: str | Path, summary: dict | None = None) -> Path:
    """Write the model card of the run in ``run_dir`` into its bundle; its path.
    ``summary``: the run's summary, when it is not yet written."""
    run = RunFolder(Path(run_dir))
    target = run.bundle / CARD
    write_atomically(target, model_card(run, summary).encode())
    return target


def model_card(run: RunFolder, summary: dict | None = None) -> str:
    """The model card of ``run`` as text (``summary``: its ``summary.json``, by default read
    from the run)."""
    summary = summary if summary is not None else run.json(SUMMARY) or {}
    plan = run.json(PLAN) or {}
    dataset = run.json(DATASET) or {}
    config = run.json(CONFIG_JSON) or {}
    meta = run.json(f"{MODEL}/headstart.json") or {}
    name = run.path.resolve().name
    classes = list(meta.get("classes") or dataset.get("classes") or [])
    scores = summary.get("scores", {})
    how = "by transfer learning" if config.get("pretrained", True) else "from random weights"
    sections = [
        _metadata(name, config, scores, dataset),
        f"# {name}: an image classifier of {len(classes)} classes\n",
        f"Trained with headstart, {how}. The numbers below come from the run folder "
        "(`summary.json`, `dataset.json`, `plan.json`); its `report.html` shows the work "
        "(audit, sanity checks, curves, mistakes).\n",
        _model(meta, config, summary, plan),
        _data(dataset, classes),
        _metrics(scores),
        _calibration(summary),
        _weaknesses(summary, scores),
        _use(name, classes, dataset),
    ]
    return "\n".join(section for section in sections if section)


def _metadata(name: str, config: dict, scores: dict, dataset: dict) -> str:
    """The YAML block the Hugging Face hub reads: library, task, tags, the results."""
    results = [
        {"type": "accuracy", "value": round(split["accuracy"], 4), "name": f"{label} accuracy"}
        for key, label in (("val", "validation"), ("test", "test"))
        if (split := scores.get(key)) and split.get("accuracy") is not None
    ]
    data_name = _folder(dataset) if dataset.get("root") else Path(str(config.get("data"))).name
    lines = [
        "---",
        "library_name: headstart",
        "pipeline_tag: image-classification",
        "tags:",
        "- image-classification",
        "- transfer-learning",
        "- timm",
        "- headstart",
        "metrics:",
        "- accuracy",
    ]
    if not results:  # the hub reads a model-index only with results in it
        return "\n".join([*lines, "---", ""])
    lines += [
        "model-index:",
        f"- name: {_quoted(name)}",
        "  results:",
        "  - task:",
        "      type: image-classification",
        "      name: Image Classification",
        "    dataset:",
        "      type: imagefolder",
        f"      name: {_quoted(data_name)}",
        "    metrics:",
    ]
    for result in results:
        lines += [
            f"    - type: {result['type']}",
            f"      value: {result['value']}",
            f"      name: {result['name']}",
        ]
    return "\n".join([*lines, "---", ""])


def _model(meta: dict, config: dict, summary: dict, plan: dict) -> str:
    size = meta.get("preprocessing", {}).get("input_size", ["?", "?", "?"])
    strategy = summary.get("strategy", plan.get("strategy", "?"))
    kept = (summary.get("kept") or {}).get("why")
    stopped = summary.get("stopped") if strategy != "linear-probe" else None
    lines = [
        "## Model",
        "",
        f"- Network: `{meta.get('architecture', config.get('arch', '?'))}` (timm), from "
        f"{_weights(config, meta)}; input {size[-1]} x {size[-2]} pixels, {size[0]} channels.",
        f"- Trained as: {strategy}"
        + (f", {stopped}" if stopped else "")
        + (f" ({kept})" if kept else "")
        + ".",
        f"- Test-time augmentation: {_test_time(meta)}.",
        "",
        "Why this plan (from `plan.json`):",
        "",
        *[f"- {reason}" for reason in plan.get("reasons", [])],
        "",
    ]
    return "\n".join(lines)


def _test_time(meta: dict) -> str:
    crops = meta.get("test_time_crops") or ["centre"]
    seen = [f"{len(crops)} crops ({', '.join(crops)})"] if len(crops) > 1 else []
    if meta.get("test_time_flip"):
        seen.append("the mirror image" + (" of each" if seen else ""))
    return " and ".join(seen) + " averaged" if seen else "none"


def _weights(config: dict, meta: dict) -> str:
    """Where the network's starting weights came from, in words."""
    if not config.get("pretrained", True):
        return "random weights"
    source = meta.get("weights") or {}
    kind, location = source.get("kind"), source.get("location")
    if kind == "file" and location:
        return f"the weights file `{Path(str(location)).name}`"
    if kind and location:
        return f"pretrained weights ({kind}: `{location}`)"
    return "pretrained weights"


def _data(dataset: dict, classes: list[str]) -> str:
    counts = dataset.get("counts", {})
    splits = [split for split in ("train", "val", "test") if counts.get(split)]
    header = "| class | " + " | ".join(splits) + " |"
    rows = [
        f"| {_cell(name)} | " + " | ".join(str(counts[s].get(name, 0)) for s in splits) + " |"
        for name in classes
    ]
    totals = " | ".join(str(sum(counts[s].values())) for s in splits)
    return "\n".join(
        [
            "## Data",
            "",
            f"Images from a folder named `{_folder(dataset)}` ({dataset.get('layout', '?')}), "
            f"{len(dataset.get('skipped', []))} files skipped as unusable.",
            "",
            header,
            "|---|" + "---:|" * len(splits),
            *rows,
            f"| **all** | {totals} |",
            "",
        ]
    )


def _metrics(scores: dict) -> str:
    if not scores:
        return "## Metrics\n\nNo scores were recorded.\n"
    lines = [
        "## Metrics",
        "",
        "| split | images | accuracy | balanced accuracy | macro F1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for split, label in (("val", "validation"), ("test", "test")):
        if split in scores:
            s = scores[split]
            lines.append(
                f"| {label} | {s.get('n', '?')} | {percent(s.get('accuracy'))} | "
                f"{percent(s.get('balanced_accuracy'))} | {percent(s.get('macro_f1'))} |"
            )
    lines += [
        "",
        "Validation chose the model (and its epoch, when fine-tuned): its scores are a little "
        "optimistic; the test split, when there is one, was not used for any choice.",
        "",
    ]
    return "\n".join(lines)


def _calibration(summary: dict) -> str:
    calibration = summary.get("calibration")
    if not calibration:
        return ""
    return f"## Calibration\n\n{_sentence(calibration['why'])}\n"


def _weaknesses(summary: dict, scores: dict) -> str:
    found = []
    val = scores.get("val", {})
    if val and val.get("n", 0) < FEW_VALIDATION:
        found.append(
            f"Validation holds {val['n']} images: one image is {100 / max(val['n'], 1):.1f} "
            "points of accuracy, so small differences are noise."
        )
    per_class = val.get("per_class", {})
    macro = val.get("macro_f1")
    if macro is not None:
        weak = sorted(
            (measured["f1"], name)
            for name, measured in per_class.items()
            if measured.get("support") and measured["f1"] < macro - WEAK_CLASS_GAP
        )
        if weak:
            named = ", ".join(f"{_cell(name)} (F1 {percent(f1)})" for f1, name in weak)
            found.append(f"Weakest classes on validation: {named}.")
    audit = summary.get("audit") or {}
    if audit.get("label_issues"):
        reliable = audit.get("label_issues_reliable", True)
        found.append(
            f"The audit estimates {audit['label_issues']} training labels may be wrong"
            + ("" if reliable else " (the features are too weak for the list to be reliable)")
            + "; see `audit/` in the run folder."
        )
    if audit.get("duplicate_groups"):
        found.append(
            f"{audit['duplicate_groups']} groups of duplicate or near-duplicate images"
            + (f", {audit['leaks']} of them across splits" if audit.get("leaks") else "")
            + "."
        )
    flagged = {k: v for k, v in (audit.get("flagged") or {}).items() if v}
    if flagged:
        found.append(
            "Odd images: " + ", ".join(f"{v} {k}" for k, v in sorted(flagged.items())) + "."
        )
    fine_tuned = summary.get("strategy") != "linear-probe"  # the diagnosis reads its curves
    for finding in (summary.get("diagnosis") or {}).get("findings", []) if fine_tuned else []:
        if finding.get("verdict") not in (None, "converged"):
            found.append(f"Training diagnosis, {finding['verdict']}: {finding['summary']}.")
    failed = (summary.get("checks") or {}).get("failed") or []
    if failed:
        found.append(f"Sanity checks failed: {', '.join(failed)}.")
    if not found:
        found.append("None found by the audit, the sanity checks or the training diagnosis.")
    return "## Known weaknesses\n\n" + "\n".join(f"- {item}" for item in found) + "\n"


def _use(name: str, classes: list[str], dataset: dict) -> str:
    listed = ", ".join(_cell(c) for c in classes)
    return "\n".join(
        [
            "## Intended use",
            "",
            f"Telling apart {listed} in images like the training images (the folder "
            f"`{_folder(dataset)}`). Any image gets one of these labels: an image of "
            "something else, or from another camera, scanner or setting than the training "
            "images, gets a label too, and the scores above do not hold for it. Check the "
            "model on images from where it will be used before relying on it.",
            "",
            "```python",
            "import headstart",
            "",
            f'model = headstart.load("{name}/model")  # or the folder downloaded from the hub:',
            '# model = headstart.load(huggingface_hub.snapshot_download("user/name"))',
            'print(model.predict(["photo.jpg"], top_k=3))',
            "```",
            "",
            f"or `headstart predict {name}/model photos/ --csv`.",
            "",
        ]
    )


def _folder(dataset: dict) -> str:
    """The data folder's own name: where it lies on the training machine is nobody's business
    on the hub."""
    return _cell(Path(str(dataset.get("root") or "?")).name)


def _sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else f"{text}."


def _cell(text: Any) -> str:
    """A class name safe in a Markdown table."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _quoted(text: str) -> str:
    """A YAML scalar that stays a string whatever the name holds."""
    return json.dumps(text)
