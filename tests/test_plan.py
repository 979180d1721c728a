"""The auto plan follows the decision table, with both axes measured, and says why."""

from __future__ import annotations

import pytest

from headstart.training.plan import make_plan


def plan(
    per_class: int,
    probe: float | None,
    *,
    classes: int = 2,
    mirror: bool = True,
    requested: str = "auto",
    pretrained: bool = True,
):
    counts = {f"class{i}": per_class for i in range(classes)}
    return make_plan(
        requested,
        train_counts=counts,
        probe_accuracy=probe,
        mirror_invariant=mirror,
        pretrained=pretrained,
        stages=8,
    )


@pytest.mark.parametrize(
    ("per_class", "probe", "strategy", "trainable"),
    [
        (100, 0.99, "linear-probe", None),  # small, similar, probe already excellent
        (100, 0.95, "fine-tune", 3),  # small, similar: a short fine-tune may beat the probe
        (100, 0.70, "fine-tune", None),  # small, different: every stage, small LR
        (1000, 0.99, "fine-tune", 4),  # large, similar: the top half
        (1000, 0.70, "full", None),  # large, different: the whole model
    ],
)
def test_each_cell_of_the_decision_table(per_class, probe, strategy, trainable):
    chosen = plan(per_class, probe)
    assert chosen.strategy == strategy
    if strategy != "linear-probe":
        assert chosen.fine_tune.trainable_stages == trainable
    assert len(chosen.reasons) >= 3 and chosen.evidence["probe_cv_accuracy"] == probe


def test_similarity_is_skill_above_chance_not_raw_accuracy():
    # 60% is poor for two classes but strong for ten: skill (0.2 vs 0.56) tells them apart.
    assert plan(100, 0.60, classes=2).domain == "different"
    assert plan(100, 0.96, classes=10).domain == "similar"


def test_short_fine_tune_is_capped_in_time():
    assert plan(100, 0.95).fine_tune.max_seconds is not None
    assert plan(1000, 0.99).fine_tune.max_seconds is None


def test_mirror_images_follow_the_measurement():
    assert plan(100, 0.95, mirror=True).test_time_flip
    digits = plan(100, 0.95, mirror=False)
    assert not digits.test_time_flip and not digits.fine_tune.flip
    assert any("mirrored" in reason for reason in digits.reasons)


def test_requested_strategy_and_scratch_win_over_the_table():
    assert plan(100, 0.99, requested="full").strategy == "full"
    scratch = plan(100, None, pretrained=False)
    assert scratch.strategy == "full" and scratch.domain == "unknown"
    assert scratch.fine_tune.layer_decay == 1.0
