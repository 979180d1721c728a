"""The ensemble stage (``fit --ensemble N``): more fine-tunings of the same plan from other
seeds, and the model that averages their probabilities.

The members differ where it is cheap to make them differ and costs nothing in what each
can learn: the order of the training images, the augmentation drawn for each, dropout. They
start from the same pretrained weights and the same probe head, train with the same settings
(the plan is decided once), and keep each its best validation epoch. The ensemble is one
network (:class:`~headstart.classifier.Ensemble`), so the bundle, ``predict``, ``evaluate``,
the test-time crops, calibration and ``export`` treat it as any model; predicting costs N
networks.

Measured before it was built (``/work/bench/squeeze0``): averaging the fine-tuned model with
the linear probe it started from moved test accuracy by +0.2, -1.8 and +0.2 points on the
three real photo sets (brain scans 95.2% -> 95.4%, trash 90.9% -> 89.1%, hand signs 98.1% ->
98.3%): noise at best, a loss at worst; a member well behind the others only dilutes them.
Members are therefore fine-tunings alone.

Each member keeps its resumable state under ``checkpoints/member-K/``; a run killed while
training a member goes on with that member (``fit --resume``), the finished ones read back.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import torch
from safetensors.torch import load_file

from ..classifier import Ensemble
from ..config import FitConfig
from ..console import say
from ..runfolder import CHECKPOINTS, ENSEMBLE, TRAINING_STATE, RunFolder
from ..storage import write_atomically, write_tensors
from ..torch_model import Model
from ..training.callbacks import Checkpoints, Progress
from ..training.finetune import Resume
from .evaluate import Candidate, Choice, choose, paired, score_pixels
from .plan import Decision
from .train import EpochLine, Trained, fine_tune_planned, starting_model

__all__ = ["Ensembled", "ensemble", "train_ensemble"]


@dataclass(frozen=True)
class Ensembled:
    """The ensemble kept, why, and each member's validation score and history."""

    kept: Candidate
    why: str
    members: list[dict]

    def to_dict(self) -> dict:
        return {"why": self.why, "members": self.members}


def ensemble(decision: Decision, run: RunFolder, config: FitConfig, trained: Trained) -> Choice:
    """What a fit asked for an ensemble keeps: the ensemble of its fine-tuning and the new
    siblings, weighed against the linear probe as :func:`~.evaluate.choose` weighs one
    fine-tuning; the members recorded in ``ensemble.json``. An interrupted fine-tuning gets
    no siblings (``fit --resume`` goes on with it, then trains them)."""
    asked = config.strategy != "auto"
    if trained.stopped == "interrupted" or trained.tuned is None:
        choice = choose(trained.probe, trained.tuned, asked=asked)
        why = "no ensemble: the fine-tuning was interrupted; `headstart fit --resume RUN` goes on"
        return Choice(choice.kept, f"{choice.why}; {why}" if choice.why else why, choice.evidence)
    ensembled = train_ensemble(decision, run, config, trained.tuned)
    run.write_json(ENSEMBLE, ensembled.to_dict())
    choice = choose(trained.probe, ensembled.kept, asked=asked)
    said = f"{ensembled.why}; {choice.why}" if choice.why else ensembled.why
    return Choice(choice.kept, said, choice.evidence)


def train_ensemble(
    decision: Decision, run: RunFolder, config: FitConfig, first: Candidate
) -> Ensembled:
    """``config.ensemble - 1`` more fine-tunings like ``first`` (the fit's own), from seeds
    after the fit's, and the ensemble of all of them, scored."""
    members, records = [first], [_record(first, config.seed, None)]
    for k in range(2, config.ensemble + 1):
        seed = config.seed + k - 1
        member, history = _member(decision, run, config, k, seed)
        members.append(member)
        records.append(_record(member, seed, history))
        say(
            config.quiet,
            f"ensemble: member {k} of {config.ensemble} (seed {seed}): "
            f"{member.val_accuracy:.1%} on validation",
        )
    kept = _combined(members, decision)
    val = kept.scored.get("val")
    best = max(members, key=lambda m: m.val_accuracy)
    why = (
        f"ensemble of {len(members)} fine-tunings (seeds {config.seed} to "
        f"{config.seed + len(members) - 1}), their probabilities averaged: "
        + (
            f"{kept.val_accuracy:.1%} on {len(val.labels)} validation images against "
            f"{best.val_accuracy:.1%} for its best member and {first.val_accuracy:.1%} for the "
            f"first ({_against(kept, first)}); "
            if val is not None
            else ""
        )
        + f"predictions cost {len(members)} networks"
    )
    return Ensembled(kept, why, records)


def _member(
    decision: Decision, run: RunFolder, config: FitConfig, k: int, seed: int
) -> tuple[Candidate, list[dict] | None]:
    """Member ``k``: read back when finished, else trained (resumed from its state)."""
    ready, plan = decision.ready, decision.plan
    torch.manual_seed(seed)  # a new head, where there is no probe's, is the seed's own
    model = copy.deepcopy(starting_model(decision, config))  # the probe's backbone stays
    model.info["strategy"] = plan.strategy
    folder = run.path / CHECKPOINTS / f"member-{k}"
    final, state = folder / "model.safetensors", folder / TRAINING_STATE
    record = folder / "history.json"
    if final.exists():
        model.network.load_state_dict(load_file(final))
        history = json.loads(record.read_text()) if record.exists() else None
    else:
        folder.mkdir(parents=True, exist_ok=True)
        callbacks = [
            Checkpoints(state=state),
            EpochLine(config.quiet, f"member {k}: "),
            Progress(f"member {k}", quiet=config.quiet),
        ]
        resume = Resume(state) if state.exists() else None
        result = fine_tune_planned(model, decision, config, callbacks, resume, seed=seed)
        if result.stopped == "interrupted":  # its state is kept: --resume goes on with it
            raise KeyboardInterrupt
        history = result.history
        write_atomically(record, json.dumps(history).encode())
        weights = model.network.state_dict()
        write_tensors({key: v.detach().cpu().contiguous() for key, v in weights.items()}, final)
    return Candidate(model, plan.strategy, score_pixels(model, ready)), history


def _combined(members: list[Candidate], decision: Decision) -> Candidate:
    first = members[0].model
    network = Ensemble([m.model.network for m in members])  # none of them trains again
    model = Model(
        network,
        first.classes,
        first.preprocessing,
        architecture=first.architecture,
        test_time_flip=first.test_time_flip,
        info={**first.info, "strategy": f"ensemble of {len(members)} fine-tunings"},
    )
    return Candidate(model, "ensemble", score_pixels(model, decision.ready))


def _against(kept: Candidate, first: Candidate) -> str:
    """The ensemble against its first member, image by image."""
    found = paired(kept.scored["val"].right, first.scored["val"].right)
    return f"{found['fixed']} fixed, {found['broken']} broken, McNemar z = {found['z']:+.1f}"


def _record(member: Candidate, seed: int, history: list[dict] | None) -> dict:
    return {
        "seed": seed,
        "scores": {split: scored.scores for split, scored in member.scored.items()},
        "history": history,
    }
