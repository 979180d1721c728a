"""Checks that train the real network for a few steps on a handful of images: seconds, not
minutes, and through the same code the fine-tuning runs (loader, normalisation, parameter
groups, learning rates), so a bug there shows here before an hour of training is spent.

Whether the loss falls at the planned learning rate is watched on the real training's first steps
(:mod:`.early_loss`): a fixed batch is memorised even at a learning rate 100x too high.

The network starts from a *new* head (bias at the class priors), as the recipe's checks assume;
the body is the one fine-tuning will train, with the plan's frozen stages and learning rates.
On one fixed batch, without augmentation, weight decay or label smoothing:

- *Inputs normalised*: the tensor entering the backbone lies in the range the weights'
  normalisation maps pixels onto (caught by a hook, so it is the tensor the network really
  saw): normalisation skipped or applied twice fails. The range comes from the weights' own
  configuration, so a wrong mean or standard deviation there is not caught.
- *Pipeline agrees with the cache*: the linear probe, trained on cached features, predicts the
  batch that the training loop's loader (files, labels, normalisation) delivers as well as it
  predicts the same images from the cache. Images paired with the wrong labels, or normalised
  differently, fail here. The crop is the evaluation crop: the random crops and flips of the
  augmentation are not compared (the first training batch in TensorBoard shows them).
- *Overfits one batch*: 100% training accuracy on it (R² 0.9 for a number, mAP 0.95 for several
  labels), at the planned learning rates. A network that cannot memorise ten images cannot
  learn thousands.
- *Parameters update*: every trained parameter group changed, and every frozen parameter and
  its normalisation statistics stayed bit-identical.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..classifier import Classifier
from ..data.decoded import DecodedImages
from ..inputs import InputPipeline
from ..training import finetune
from ..training.finetune import Example, FineTuneSettings
from ..training.objective import Classification, Objective, measure
from .baselines import initial_loss
from .core import Check

__all__ = ["TRIAL_STEPS", "training_trial"]

#: Most optimisation steps of the trial: it stops earlier once the batch is memorised
#: (typically 4-6 steps for a pretrained body). A number of steps, not seconds: the verdict
#: must not depend on how busy the machine is.
TRIAL_STEPS = 30
#: Memorised: the objective's memorised score (every image right, for classes), and the loss
#: below this fraction of where it began.
MEMORISED = 0.5
#: The pipeline agrees with the cache when the probe's predictions match on this share of the
#: batch, and its accuracy drops by no more than one image in ten.
AGREEMENT, ACCURACY_DROP = 0.9, 0.1


def training_trial(
    model: Classifier,
    examples: Sequence[Example],
    images: DecodedImages,
    inputs: InputPipeline,
    settings: FineTuneSettings,
    *,
    probe_head: nn.Linear | None = None,
    cached_predictions: np.ndarray | None = None,
    class_counts: np.ndarray | None = None,
    max_steps: int = TRIAL_STEPS,
    objective: Objective | None = None,
) -> list[Check]:
    """Train a copy of ``model`` on ``examples`` (one small batch) as fine-tuning with
    ``settings`` would, and check what a healthy setup shows. ``model`` itself is untouched.

    ``probe_head`` and ``cached_predictions`` (its outputs for each example, from the cached
    features) enable the pipeline check; ``class_counts`` (training images per class) the
    check of the loss at initialisation, for when no cached features measured it.
    ``objective``: what the outputs mean (a class by default; a number for a regression,
    whose examples then hold standardised targets).
    """
    objective = objective or Classification()
    network = copy.deepcopy(model)
    device = next(network.parameters()).device
    calm = replace(settings, weight_decay=0.0, label_smoothing=0.0)
    # Through the fine-tuning module, as its loop does: a bug planted there shows here.
    groups = finetune.parameter_groups(network, calm)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    before = {k: v.detach().clone() for k, v in network.state_dict().items()}

    pixels, labels = finetune.decode_batch(images, examples)
    batch = inputs.batch(pixels)
    labels = labels.to(device)
    seen: list[torch.Tensor] = []
    hook = network.backbone.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach().float().cpu()) if not seen else None
    )
    checks = []
    if probe_head is not None and cached_predictions is not None:
        paired = torch.tensor([label for _, label in examples], device=device)
        checks.append(
            _pipeline_agreement(
                network, probe_head, batch, labels, paired, cached_predictions, objective
            )
        )

    losses, scores = [], []
    finetune.train_mode(network, calm)
    for _ in range(max_steps):
        with finetune.autocast(device):
            logits = network(batch).float()
        loss = objective.loss(logits, labels)
        losses.append(loss.item())
        scores.append(measure(objective, logits.detach(), labels)[1])
        if not math.isfinite(losses[-1]) or not loss.requires_grad:
            break  # diverged, or nothing is trainable
        if scores[-1] >= objective.memorised and losses[-1] <= MEMORISED * losses[0]:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    hook.remove()
    checks.insert(0, _inputs_normalised(seen[0], network))
    if class_counts is not None:
        checks.insert(1, initial_loss(losses[0], class_counts, "the network on one batch"))
    checks += [
        _overfits(scores, len(examples), objective),
        _parameters_update(network, groups, before),
    ]
    return checks


def _inputs_normalised(batch: torch.Tensor, network: Classifier) -> Check:
    """The batch entering the backbone against the range [0, 255] pixels normalise into."""
    mean, scale = network.normalize.mean.cpu().flatten(), network.normalize.scale.cpu().flatten()
    low, high = -mean / scale, (255 - mean) / scale
    span = high - low
    channels = batch.transpose(0, 1).flatten(1)
    observed_low, observed_high = channels.min(1).values, channels.max(1).values
    inside = bool(
        ((observed_low >= low - 0.01 * span) & (observed_high <= high + 0.01 * span)).all()
    )
    varied = bool((channels.std(1) > 0.02 * span).any())
    measured = {
        "min": float(observed_low.min()),
        "max": float(observed_high.max()),
        "expected_min": float(low.min()),
        "expected_max": float(high.max()),
        "channel_means": ", ".join(f"{m:.2f}" for m in channels.mean(1).tolist()),
        "channel_stds": ", ".join(f"{s:.2f}" for s in channels.std(1).tolist()),
    }
    summary = (
        f"the batch entering the network spans [{measured['min']:.2f}, {measured['max']:.2f}] "
        f"(channel means {measured['channel_means']}; standard deviations "
        f"{measured['channel_stds']}); the weights expect values in "
        f"[{measured['expected_min']:.2f}, {measured['expected_max']:.2f}]"
    )
    if inside and varied:
        return Check("inputs-normalised", "inputs normalised", "pass", summary, measured=measured)
    advice = (
        "normalise pixels with the mean and standard deviation the pretrained weights were "
        "trained with (timm's pretrained_cfg), once: the network now sees values outside that range"
        if not inside
        else "every image of the batch is (nearly) one flat colour: check decoding and cropping"
    )
    return Check("inputs-normalised", "inputs normalised", "fail", summary, advice, measured)


@torch.inference_mode()
def _pipeline_agreement(
    network: Classifier,
    probe_head: nn.Linear,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    paired: torch.Tensor,
    cached_predictions: np.ndarray,
    objective: Objective,
) -> Check:
    """``labels`` come from the training loop's loader, ``paired`` from the dataset."""
    network.eval()
    head = copy.deepcopy(probe_head).to(labels.device).float()
    predicted = head(network.features(inputs).float())
    cached = torch.as_tensor(cached_predictions, device=labels.device).float()
    agreement = float(objective.agree(predicted, cached).float().mean())
    accuracy = measure(objective, predicted, labels)[1]
    cache_accuracy = measure(objective, cached, paired)[1]
    measured = {"agreement": agreement, "pipeline_accuracy": accuracy}
    summary = (
        f"the linear probe predicts {objective.agreeing} for {agreement:.0%} of a training "
        f"batch built by the training loop as for the same images from the feature cache; "
        f"against the loop's labels, {objective.words(accuracy)}"
    )
    if agreement >= AGREEMENT and accuracy >= cache_accuracy - ACCURACY_DROP:
        return Check(
            "pipeline-agreement",
            "pipeline agrees with the cache",
            "pass",
            summary,
            measured=measured,
        )
    advice = (
        "the training loop pairs images with the wrong labels (an off-by-one or a shuffled "
        "list in the loader)"
        if agreement >= AGREEMENT
        else "the training loop preprocesses images differently from feature extraction "
        "(resize, crop, normalisation or channel order)"
    )
    return Check(
        "pipeline-agreement", "pipeline agrees with the cache", "fail", summary, advice, measured
    )


def _overfits(scores: list[float], size: int, objective: Objective) -> Check:
    best = max(scores)
    measured = {objective.score: best, "batch": size, "steps": len(scores)}
    steps = len(scores) - 1
    summary = (
        f"best training {objective.words(best)} on one batch of {size} images, in {steps} steps"
    )
    if best >= objective.memorised:
        return Check("overfit-batch", "overfits one batch", "pass", summary, measured=measured)
    return Check(
        "overfit-batch",
        "overfits one batch",
        "fail",
        summary,
        "a network that cannot memorise a handful of images will not learn the dataset: "
        "check that the trained layers receive gradients, the learning rate, and the labels",
        measured,
    )


def _parameters_update(
    network: Classifier, groups: list[dict], before: dict[str, torch.Tensor]
) -> Check:
    names = {id(p): n for n, p in network.named_parameters()}
    state = network.state_dict()
    still = [
        g["name"]
        for g in groups
        if all(torch.equal(state[names[id(p)]], before[names[id(p)]]) for p in g["params"])
    ]
    frozen = [n for n, p in network.named_parameters() if not p.requires_grad]
    for module_name, module in network.named_modules():
        if isinstance(module, _BatchNorm) and not any(p.requires_grad for p in module.parameters()):
            frozen += [f"{module_name}.{b}" for b, _ in module.named_buffers()]
    moved = [n for n in frozen if not torch.equal(state[n], before[n])]
    measured = {
        "trained_groups": len(groups),
        "unchanged_groups": ", ".join(still),
        "frozen_tensors": len(frozen),
        "moved_frozen_tensors": len(moved),
    }
    summary = (
        f"{len(groups) - len(still)} of {len(groups)} trained parameter groups changed; "
        f"{len(frozen) - len(moved)} of {len(frozen)} frozen tensors stayed bit-identical"
    )
    if not still and not moved:
        return Check("parameters-update", "parameters update", "pass", summary, measured=measured)
    problems = []
    if still:
        problems.append(
            f"{', '.join(still)} did not change: frozen by mistake (requires_grad off) or left "
            "out of the optimiser"
        )
    if moved:
        problems.append(f"frozen tensors changed ({', '.join(moved[:3])}...): frozen layers leak")
    return Check(
        "parameters-update", "parameters update", "fail", summary, "; ".join(problems), measured
    )
