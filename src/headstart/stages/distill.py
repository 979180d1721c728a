"""The distillation stage: the teacher a fit learns from, and the student weighed against it.

``fit --teacher RUN`` (which ``headstart distill RUN --student ARCH`` sets) trains its network
on the probabilities of the model in the finished run ``RUN`` (:mod:`headstart.training.
distill`): typically an ensemble, or a large or slow network, distilled into one that is
cheaper to run. The student is a normal run: planned, checked, scored, calibrated and saved
as any fit. Before anything is written, the teacher is read and held to the same data: the
same classes, and the same split, so that its scores and the student's are on the same
validation and test images, and no image the student is scored on ever taught it. At the end
the two are weighed side by side: accuracy, parameters, size and latency.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..classifier import Ensemble
from ..config import FitConfig
from ..console import progress_bar, say
from ..data.images import UnreadableImage
from ..data.sources import image_files
from ..errors import HeadstartError
from ..runfolder import DISTILLATION, SUMMARY, RunFolder
from ..torch_model import Model
from ..training.distill import DEFAULT_TEMPERATURE, Teacher
from ..training.finetune import Example
from ..training.plan import Plan
from .data import Prepared, device_of, split_changes
from .evaluate import Candidate

__all__ = [
    "KEEPS",
    "SMALLER",
    "Teaching",
    "absolute_paths",
    "load_teacher",
    "require_same_teaching",
    "training_examples",
    "weigh_student",
]

#: A student is worth its teacher when it keeps at least this share of the teacher's accuracy
#: ...
KEEPS = 0.99
#: ... at no more than this share of its parameters or of its latency.
SMALLER = 0.5
#: Images timed one at a time for each model's latency (the median is reported).
TIMED_IMAGES = 8


@dataclass(frozen=True)
class Teaching:
    """The teacher of a distillation: its run, its model, the network the fine-tuning asks
    for targets, the unlabelled images it labels besides the training images, and its scores
    (on the split the student shares)."""

    run: Path
    model: Model
    teacher: Teacher
    unlabelled: tuple[Path, ...]
    scores: dict[str, dict]
    left_out: dict[str, int]  # unlabelled images not used, by reason

    def to_dict(self) -> dict:
        """What the plan records of it, and a resumed run must find again."""
        listed = "\n".join(str(path) for path in self.unlabelled).encode()
        return {
            "teacher": str(self.run),
            "temperature": self.teacher.temperature,
            "unlabelled": len(self.unlabelled),
            "unlabelled_sha256": hashlib.sha256(listed).hexdigest(),
        }

    def describe(self) -> str:
        extra = f" and {len(self.unlabelled)} unlabelled images" if self.unlabelled else ""
        return (
            f"the teacher {self.run.name} ({self.model.info.get('strategy', 'a fit')}, "
            f"{self.model.architecture}): its probabilities on the training images{extra}"
        )


def load_teacher(config: FitConfig, ready: Prepared) -> Teaching | None:
    """The teacher ``config.teacher`` names, checked against the data ``ready`` holds, with
    the unlabelled images it will label; None when the fit has no teacher. Refused with a
    one-line error, before anything is written, when the run is not a finished image run,
    or predicts other classes, or was split otherwise."""
    if config.teacher is None:
        return None
    run = RunFolder(config.teacher)
    if not run.path.is_dir() or not run.exists(SUMMARY) or not run.bundle.is_dir():
        raise HeadstartError(
            f"teacher {run.path}: not a finished headstart run folder (it needs "
            f"{SUMMARY} and its model bundle)"
        )
    if (run.json(SUMMARY) or {}).get("modality") == "text":
        raise HeadstartError(f"teacher {run.path}: a text model cannot teach an image network")
    task = (run.json(SUMMARY) or {}).get("task", "classification")
    if task != "classification":
        raise HeadstartError(f"teacher {run.path}: a {task} model, not one class an image to teach")
    from ..loading import load

    model = load(run.bundle)
    if not isinstance(model, Model):
        raise HeadstartError(f"teacher {run.path}: its bundle is not a PyTorch model")
    classes = list(ready.dataset.classes)
    if list(model.classes) != classes:
        raise HeadstartError(
            f"teacher {run.path} predicts {', '.join(model.classes)}; this data has "
            f"{', '.join(classes)}"
        )
    if model.preprocessing.input_size[0] != ready.preprocessing.input_size[0]:
        raise HeadstartError(
            f"teacher {run.path} takes {model.preprocessing.input_size[0]}-channel images; "
            f"the student {ready.preprocessing.input_size[0]}-channel ones"
        )
    changed = split_changes(run, ready.dataset)
    if changed:
        raise HeadstartError(
            f"teacher {run.path} was split otherwise ({len(changed)} image(s) differ, e.g. "
            f"{changed[0][0]}): a student is fitted on its teacher's data with its split, so "
            "that no image it is scored on taught its teacher (`headstart distill RUN` does "
            "that; the data may have changed since)"
        )
    unlabelled, left_out = _unlabelled(config, ready)
    network = model.network.to(device_of(config.device))
    temperature = config.distill_temperature or DEFAULT_TEMPERATURE
    teaching = Teaching(
        run.path,
        model,
        Teacher(network, model.inputs.crop_size, temperature),
        unlabelled,
        (run.json(SUMMARY) or {}).get("scores", {}),
        left_out,
    )
    say(config.quiet, f"distillation: the student learns {teaching.describe()}")
    return teaching


def absolute_paths(config: FitConfig) -> FitConfig:
    """``config`` with its teacher, unlabelled and target folders as absolute paths: a run saves
    them, and ``--resume`` finds them again from wherever it is run."""
    resolved = {
        name: str(Path(getattr(config, name)).resolve())
        for name in ("teacher", "unlabelled", "target_images")
        if getattr(config, name) is not None
    }
    return replace(config, **resolved)


def training_examples(ready: Prepared, teaching: Teaching | None) -> list[Example]:
    """The fine-tuning's training examples: the training split, then the teacher's
    unlabelled images (label -1)."""
    train = [(s.path, ready.index[s.label]) for s in ready.dataset.split("train")]
    return train + [(path, -1) for path in teaching.unlabelled] if teaching else train


def require_same_teaching(plan: Plan, teaching: Teaching | None) -> None:
    """A run that goes on (``--resume``) learns from what it began with: the same teacher,
    at the same temperature, on the same unlabelled images."""
    planned = plan.evidence.get("distillation")
    if planned is None and teaching is None:
        return
    found = teaching.to_dict() if teaching is not None else None
    if found != planned:
        raise HeadstartError(
            "cannot resume: its distillation changed since it began (the teacher, the "
            "temperature or the unlabelled images differ from what plan.json records); start "
            "a new `headstart distill`"
        )


def _unlabelled(config: FitConfig, ready: Prepared) -> tuple[tuple[Path, ...], dict[str, int]]:
    """The images of ``config.unlabelled`` that can teach: readable, and neither a copy of a
    validation or test image (the student would learn the teacher's answer on what it is
    scored on) nor of a training image (already there)."""
    if config.unlabelled is None:
        return (), {}
    paths = image_files([config.unlabelled])
    held_out = {
        ready.images.key(s.path): split
        for split in ("val", "test")
        for s in ready.dataset.split(split)
    }
    training = {ready.images.key(s.path) for s in ready.dataset.split("train")}
    kept: list[Path] = []
    left_out = {"copies of validation or test images": 0, "copies of training images": 0}
    left_out["unreadable"] = 0
    with progress_bar("unlabelled", len(paths), quiet=config.quiet) as advance:
        for path in paths:
            advance(1)
            try:
                key = ready.images.key(path)
                if key in held_out:
                    left_out["copies of validation or test images"] += 1
                elif key in training:
                    left_out["copies of training images"] += 1
                else:
                    ready.images.get(path)  # decoded now: an unreadable file is found here
                    kept.append(path)
            except UnreadableImage as error:
                left_out["unreadable"] += 1
                say(config.quiet, f"[yellow]skipped[/] {path}: {error.reason}")
    left_out = {reason: n for reason, n in left_out.items() if n}
    if left_out:
        said = ", ".join(f"{n} {reason}" for reason, n in left_out.items())
        say(config.quiet, f"unlabelled images: {len(kept)} of {len(paths)} kept ({said} left out)")
    return tuple(kept), left_out


def weigh_student(
    student: Candidate, teaching: Teaching, run: RunFolder, config: FitConfig
) -> dict:
    """The student beside its teacher, said and written (``distillation.json``): accuracy on
    the split they share, parameters, size of the weights, networks run per image and latency
    on this machine; and whether the student keeps :data:`KEEPS` of the teacher's accuracy at
    :data:`SMALLER` of its parameters or latency, or why not."""
    weighed = _weighed(student, teaching, run.epochs, bool(config.mixup or config.cutmix))
    run.write_json(DISTILLATION, weighed)
    say(config.quiet, f"distillation: {weighed['verdict']}")
    return weighed


def _weighed(student: Candidate, teaching: Teaching, history: list[dict], mixed: bool) -> dict:
    images = [sample.path for sample in student.scored["val"].samples[:TIMED_IMAGES]]
    sides = {
        "teacher": _measured(teaching.model, teaching.scores, images),
        "student": _measured(
            student.model,
            {split: scored.scores for split, scored in student.scored.items()},
            images,
        ),
    }
    teacher, pupil = sides["teacher"], sides["student"]
    split = next(s for s in ("test", "val") if s in teacher["accuracy"] and s in pupil["accuracy"])
    # A teacher right on no image leaves nothing to lose: the student keeps it all.
    right = teacher["accuracy"][split]
    kept = pupil["accuracy"][split] / right if right else 1.0
    ratios = {
        "parameters": pupil["parameters"] / teacher["parameters"],
        "latency": pupil["latency_ms"] / teacher["latency_ms"],
    }
    keeps, smaller = kept >= KEEPS, min(ratios.values()) <= SMALLER
    verdict = (
        f"the student keeps {kept:.1%} of the teacher's {split} accuracy "
        f"({pupil['accuracy'][split]:.1%} against {teacher['accuracy'][split]:.1%}) with "
        f"{ratios['parameters']:.0%} of its parameters and {ratios['latency']:.0%} of its "
        "latency"
    )
    return {
        "teacher_run": str(teaching.run),
        "split": split,
        "kept": kept,
        "ratios": ratios,
        "passed": keeps and smaller,
        "bar": {"keeps": KEEPS, "smaller": SMALLER},
        "verdict": verdict,
        "why_not": _why_not(keeps, smaller, history, teaching, mixed),
        "teacher_mean_top_probability": teaching.teacher.mean_top_probability,
        "unlabelled": len(teaching.unlabelled),
        "unlabelled_left_out": teaching.left_out,
        **sides,
    }


def _measured(model: Model, scores: dict[str, dict], images: list[Path]) -> dict:
    network = model.network
    members = len(network.members) if isinstance(network, Ensemble) else 1
    crops = max(len(model.test_time_crops), 1)
    return {
        "architecture": model.architecture,
        "strategy": model.info.get("strategy"),
        "accuracy": {split: s["accuracy"] for split, s in scores.items() if "accuracy" in s},
        "parameters": sum(p.numel() for p in network.parameters()),
        "weights_bytes": sum(t.numel() * t.element_size() for t in network.state_dict().values()),
        "input_size": list(model.inputs.crop_size),
        "networks_per_image": members * crops * len(model.inputs.views),
        "latency_ms": _latency_ms(model, images),
    }


def _latency_ms(model: Model, paths: list[Path]) -> float:
    """Median milliseconds to predict one decoded image alone (its crops and views
    included), on this machine as it is loaded now: reported, never used to decide."""
    images = [model.inputs.pixels(path) for path in paths]  # each at its model's own size
    model.log_probabilities(images[:1])  # warm-up: first calls allocate
    seconds = []
    for image in images:
        started = time.perf_counter()
        model.log_probabilities([image])
        seconds.append(time.perf_counter() - started)
    return 1000 * statistics.median(seconds)


#: Targets this sure on average carry little beyond the labels.
CERTAIN = 0.95


def _why_not(
    keeps: bool, smaller: bool, history: list[dict], teaching: Teaching, mixed: bool
) -> list[str]:
    """What may explain a student that does not clear the bar, from what the run shows."""
    reasons = []
    if not smaller:
        reasons.append(
            "the student is not smaller than its teacher by half in parameters or latency: "
            "distil into a smaller --student, or at a smaller --input-size"
        )
    if keeps:
        return reasons
    last = history[-1] if history else None
    best = max(history, key=lambda r: r["val_accuracy"]) if history else None
    if last is not None and best is last:
        reasons.append(
            f"its validation accuracy was still at its best in the last epoch ({last['epoch']}): "
            "it may gain from training longer (`headstart fit --resume RUN --epochs N`); "
            "distillation pays off over long training (Beyer et al. 2022)"
        )
    sure = teaching.teacher.mean_top_probability
    if sure is not None and sure >= CERTAIN:
        mixing = "" if mixed else "mixed images (--mixup 0.8, --cutmix 1.0, as Beyer et al.) or "
        reasons.append(
            f"the teacher's targets were near-certain (mean top probability {sure:.1%} on the "
            "crops the student saw; it trained on these images): they teach little beyond the "
            f"labels; {mixing}unlabelled images give softer ones"
        )
    if not teaching.unlabelled:
        reasons.append(
            "it learned from the training images alone: more images for the teacher to label "
            "(--unlabelled DIR) give the student more of the teacher's function to match"
        )
    reasons.append(
        "a student with less capacity than its teacher may not hold what it knows: a larger "
        "--student, or a larger --input-size"
    )
    return reasons
