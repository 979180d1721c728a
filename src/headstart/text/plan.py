"""What a fit of texts will do, decided once, before anything trains, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .finetune import ContrastiveSettings
from .label_names import LabelNames

__all__ = ["TextPlan"]


@dataclass
class TextPlan:
    """What the fit of texts will do, decided before anything trains, and why."""

    strategy: str  # "linear-probe" | "fine-tune" | "auto" (both, validation chooses)
    encoder: str
    contrastive: ContrastiveSettings | None
    steps: int = 0  # the fine-tuning's, before any refit
    estimated_seconds: float = 0.0  # the fine-tuning's and the refit's
    refit: bool = False  # fit the kept strategy again on train and validation together
    reasons: list[str] = field(default_factory=list)
    # The class names, measured: they join the fine-tuning's training texts when `used`.
    label_names: LabelNames | None = None

    def to_dict(self) -> dict:
        values = asdict(self)
        values["label_names"] = self.label_names.to_dict() if self.label_names else None
        values["modality"] = "text"
        return values
