"""The trained model: normalisation, a pretrained backbone and a new head, as one module.

It takes uint8 ``(N, 3, H, W)`` pixels, so the preprocessing that belongs to the weights travels
with them and cannot drift between training, a bundle on disk and an exported model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .inputs import Normalize
from .models import Preprocessing

__all__ = ["Classifier", "Ensemble", "layer_groups", "new_head"]


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Linear, preprocessing: Preprocessing):
        super().__init__()
        self.normalize = Normalize(preprocessing.mean, preprocessing.std)
        self.backbone = backbone
        self.head = head

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(pixels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels))

    @property
    def num_features(self) -> int:
        return self.head.in_features


class Ensemble(nn.Module):
    """Classifiers of one architecture and preprocessing as one network. Its output is the
    log of their averaged probabilities: a "logit" whose softmax is that average, so that the
    views, the temperature, every prediction path and an export treat it as any network."""

    def __init__(self, members: Sequence[Classifier]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        log_probabilities = torch.stack([m(pixels).float().log_softmax(-1) for m in self.members])
        return torch.logsumexp(log_probabilities, 0) - math.log(len(self.members))

    @property
    def num_features(self) -> int:
        return self.members[0].num_features


def layer_groups(backbone: nn.Module) -> list[list[nn.Parameter]]:
    """The backbone's parameters by stage, from the stem (first) to the top (last).

    Rides on timm's ``group_matcher``, which every timm architecture answers, so freezing and
    layer-wise learning rates work the same for ResNets, EfficientNets and ViTs.
    """
    from timm.models import group_parameters

    named = dict(backbone.named_parameters())
    grouped = group_parameters(backbone, backbone.group_matcher(coarse=True))
    return [[named[name] for name in grouped[key]] for key in sorted(grouped)]


def new_head(width: int, class_counts: Sequence[int]) -> nn.Linear:
    """A new last layer whose bias starts at the log class priors and whose weights are small:
    the loss starts at the prior entropy (ln C for balanced classes), rather than spending the
    first steps learning the class frequencies or unlearning confident random guesses."""
    head = nn.Linear(width, len(class_counts))
    counts = np.maximum(np.asarray(class_counts, dtype=float), 1)
    with torch.no_grad():
        head.weight.mul_(0.1)
        head.bias.copy_(torch.from_numpy(np.log(counts / counts.sum())))
    return head
