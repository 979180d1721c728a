"""What a fit of a task other than one class an image will do, decided once, before anything
trains, and why (``plan.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..training.finetune import FineTuneSettings

__all__ = ["TaskPlan"]


@dataclass
class TaskPlan:
    """The plan of a regression or a multi-label fit: the strategy, the loss, whether
    predictions average the photo and its mirror, the fine-tuning (None: the probe alone),
    and the reasons and measurements behind each."""

    task: str  # "regression" | "multi-label"
    strategy: str  # "linear-probe" | "fine-tune" | "auto" (both; validation chooses)
    loss: str  # "huber" | "mse" | "binary-cross-entropy"
    test_time_flip: bool
    fine_tune: FineTuneSettings | None
    reasons: list[str] = field(default_factory=list)
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["fine_tune"] = self.fine_tune.to_dict() if self.fine_tune else None
        return values
