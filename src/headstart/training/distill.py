"""Knowledge distillation: a network trained to match another's predictions.

The student learns the teacher's probabilities, softened by a temperature, in place of the
labels (Hinton et al. 2015, "Distilling the knowledge in a neural network"): how sure the
teacher is, and which wrong classes it finds plausible, carry more per image than a label.
Teacher and student see the same augmented (and mixed) crop at every step, so the student
matches the teacher's function on the images training draws, not on fixed targets (Beyer et
al. 2022, "Knowledge distillation: a good teacher is patient and consistent", where this
"function matching" beat targets computed once). Images without labels teach as well as
labelled ones: the teacher labels them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DEFAULT_TEMPERATURE", "Teacher"]

#: The temperature when none is given: the probabilities as the teacher predicts them (the
#: value Beyer et al. 2022 found as good as any for function matching).
DEFAULT_TEMPERATURE = 1.0


class Teacher:
    """A trained network, frozen, whose probabilities at ``temperature`` a fine-tuning learns
    (the network's own: without the calibration, crops and views its bundle predicts with).

    ``input_size`` is the ``(height, width)`` the teacher was trained at: a student that
    trains at another size shows it the same crops resized to it.
    """

    def __init__(
        self,
        network: nn.Module,
        input_size: tuple[int, int],
        temperature: float = DEFAULT_TEMPERATURE,
    ):
        self.network = network.eval().requires_grad_(False)
        self.input_size = tuple(input_size)
        self.temperature = temperature
        self.device = next(network.parameters(), torch.empty(0)).device
        # The targets' top probabilities, summed: near-certain targets teach little more
        # than the labels (the teacher saw these images in its own training).
        self.top_probability_sum, self.targets_given = 0.0, 0

    @property
    def mean_top_probability(self) -> float | None:
        """How sure the teacher was, on average, on the crops it gave targets for."""
        return self.top_probability_sum / self.targets_given if self.targets_given else None

    def to(self, device: torch.device) -> Teacher:
        self.network.to(device, memory_format=torch.channels_last)
        self.device = device
        return self

    @torch.no_grad()  # not inference mode: the targets enter the student's autograd graph
    def targets(self, inputs: torch.Tensor) -> torch.Tensor:
        """The teacher's probabilities on ``inputs`` (the student's crops, pixel values as
        the network takes them)."""
        inputs = inputs.to(self.device, non_blocking=True)  # once, for the resize too
        if tuple(inputs.shape[-2:]) != self.input_size:
            inputs = F.interpolate(
                inputs.float(), size=self.input_size, mode="bilinear", antialias=True
            )
        targets = (self.network(inputs).float() / self.temperature).softmax(1)
        self.top_probability_sum += float(targets.max(1).values.sum())
        self.targets_given += len(targets)
        return targets

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """How far the student's ``logits`` are from the teacher's ``targets``: the KL
        divergence of the softened predictions, times T² (the softening divides the
        gradients by T²; this keeps their scale as T changes). Zero where the student
        matches the teacher, so that the watches on the training loss read it as any loss."""
        student = (logits.float() / self.temperature).log_softmax(1)
        divergence = F.kl_div(student, targets, reduction="batchmean")
        return divergence * self.temperature**2
