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

__all__ = ["DEFAULT_TEMPERATURE", "Teacher", "distillation_loss"]

#: The temperature when none is given: the probabilities as the teacher predicts them (the
#: value Beyer et al. 2022 found as good as any for function matching).
DEFAULT_TEMPERATURE = 1.0


class Teacher:
    """A trained network, frozen, whose softened probabilities a fine-tuning learns.

    ``input_size`` is the ``(height, width)`` the teacher was trained at: a student that
    trains at another size shows it the same crops resized to it.
    """

    def __init__(self, network: nn.Module, input_size: tuple[int, int]):
        self.network = network.eval().requires_grad_(False)
        self.input_size = tuple(input_size)

    def to(self, device: torch.device) -> Teacher:
        self.network.to(device, memory_format=torch.channels_last)
        return self

    @torch.no_grad()  # not inference mode: the targets enter the student's autograd graph
    def targets(self, inputs: torch.Tensor, temperature: float) -> torch.Tensor:
        """The teacher's probabilities on ``inputs`` (the student's crops, pixel values as
        the network takes them) at ``temperature``."""
        if tuple(inputs.shape[-2:]) != self.input_size:
            inputs = F.interpolate(
                inputs.float(), size=self.input_size, mode="bilinear", antialias=True
            )
        return (self.network(inputs).float() / temperature).softmax(1)


def distillation_loss(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Cross-entropy of the student's softened prediction against the teacher's softened
    probabilities (its KL divergence plus the teacher's entropy, a constant), times T²: the
    softening divides the gradients by T², and this keeps their scale as T changes."""
    return F.cross_entropy(logits.float() / temperature, targets) * temperature**2
