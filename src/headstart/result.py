"""What ``headstart.fit`` returns, for photos and texts alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .data.sources import Skipped

if TYPE_CHECKING:
    from .data.sources import Dataset
    from .tasks.plan import TaskPlan
    from .tasks.regression.data import TargetDataset
    from .text.data import TextDataset
    from .text.model import TextModel
    from .text.plan import TextPlan
    from .torch_model import Model
    from .training.plan import Plan

__all__ = ["FitResult"]


@dataclass
class FitResult:
    run_dir: Path
    model: Model | TextModel
    plan: Plan | TextPlan | TaskPlan
    strategy: str  # what was kept: the plan's strategy, or the linear probe when it scored higher
    scores: dict[str, dict]  # split -> classification_metrics(...)
    seconds: float
    skipped: list[Skipped] = field(default_factory=list)
    stopped: str = "finished"
    dataset: Dataset | TextDataset | TargetDataset | None = None
    why_kept: str | None = None  # what decided between the linear probe and the fine-tuning
    unit: str = "images"  # what the examples are: "images" or "texts"
    task: str = "classification"  # or "regression": scores are regression_metrics(...)
