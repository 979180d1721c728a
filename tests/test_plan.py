"""The auto plan follows the decision table, with both axes measured, and says why."""

from __future__ import annotations

import pytest

from headstart.training.domain import DomainReport
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
        (100, 0.95, "fine-tune", 4),  # small, similar: the top half may beat the probe
        (100, 0.70, "fine-tune", None),  # small, different: every stage, small LR
        (1000, 0.99, "fine-tune", 4),  # large, similar: the top half
        (1000, 0.70, "full", None),  # large, different: the whole model
    ],
)
def test_each_cell_of_the_decision_table(per_class, probe, strategy, trainable):
    chosen = plan(per_class, probe)
    assert chosen.strategy == strategy
    if strategy != "linear-probe":
        frozen = "none" if trainable is None else 8 - trainable  # of the 8 stages
        assert chosen.fine_tune.freeze == frozen
    assert len(chosen.reasons) >= 3 and chosen.evidence["probe_cv_accuracy"] == probe


def test_similarity_is_skill_above_chance_not_raw_accuracy():
    # 60% is poor for two classes but strong for ten: skill (0.2 vs 0.56) tells them apart.
    assert plan(100, 0.60, classes=2).domain == "different"
    assert plan(100, 0.96, classes=10).domain == "similar"


def test_fine_tuning_is_planned_only_where_validation_can_show_its_gain():
    counts = {"cats": 800, "dogs": 800}
    common = dict(train_counts=counts, mirror_invariant=True, pretrained=True, stages=8)
    # 99.4% out-of-fold on 400 validation images: about 2.4 errors to fix, none to show.
    near_perfect = make_plan("auto", probe_accuracy=0.994, val_images=400, **common)
    assert near_perfect.strategy == "linear-probe" and near_perfect.fine_tune is None
    assert any("too few for validation" in reason for reason in near_perfect.reasons)
    # 90% on the same 400 images: about 40 errors, a fine-tuning can show what it fixes.
    assert make_plan("auto", probe_accuracy=0.90, val_images=400, **common).fine_tune
    # Asked for, it trains anyway.
    asked = make_plan("fine-tune", probe_accuracy=0.994, val_images=400, **common)
    assert asked.strategy == "fine-tune"


def test_mirror_images_follow_the_measurement():
    assert plan(100, 0.95, mirror=True).test_time_flip
    digits = plan(100, 0.95, mirror=False)
    assert not digits.test_time_flip and "flip" in digits.fine_tune.augment.exclude
    assert any("mirrored" in reason for reason in digits.reasons)


def test_requested_strategy_and_scratch_win_over_the_table():
    assert plan(100, 0.99, requested="full").strategy == "full"
    scratch = plan(100, None, pretrained=False)
    assert scratch.strategy == "full" and scratch.domain == "unknown"
    assert scratch.fine_tune.layer_decay == 1.0


def low_resolution_gap(detail: float = 20.0) -> DomainReport:
    return DomainReport(
        images_measured=32,
        stored_size=128,
        effective_resolution=detail,
        input_size=224,
        low_resolution=True,
        grayscale_share=0.0,
        non_photographic_share=0.0,
        channels=3,
        notes=[f"the images hold about {detail:.0f} px of detail"],
    )


def test_low_resolution_images_unlike_the_pretraining_data_are_planned_at_their_size():
    counts = {f"class{i}": 20 for i in range(8)}
    common = dict(train_counts=counts, mirror_invariant=True, pretrained=True, stages=8)
    first = make_plan("auto", probe_accuracy=0.70, gap=low_resolution_gap(), **common)
    assert first.input_size == 96  # about five times the 20 px of detail, in steps of 32
    assert any("domain: the images hold about 20 px" in r for r in first.reasons)

    at_size = make_plan(
        "auto", probe_accuracy=0.70, gap=low_resolution_gap(), resized_from=224, **common
    )
    tuned = at_size.fine_tune
    assert at_size.strategy == "fine-tune" and at_size.input_size is None
    assert tuned.freeze == "none" and tuned.epochs == 20
    assert tuned.layer_decay == 0.8 and tuned.patience == 8

    # Features that already fit (faces at 24 px: a 99% probe) are left at the weights' size.
    similar = make_plan("auto", probe_accuracy=0.99, gap=low_resolution_gap(24), **common)
    assert similar.input_size is None


@pytest.mark.slow  # the rule is tested on the plan alone
def test_a_fit_on_low_resolution_data_looks_again_at_the_size_of_its_detail(
    small_faces, tmp_path, monkeypatch
):
    import json

    import headstart
    from headstart.training import plan as planning

    monkeypatch.setattr(planning, "SIMILAR_SKILL", 1.01)  # as if the probe were poor
    result = headstart.fit(small_faces, epochs=1, runs_dir=tmp_path, checks=False, quiet=True)
    side = result.model.preprocessing.input_size[-1]
    assert side in (96, 128)  # about five times the faces' 24 px of detail
    saved = json.loads((result.run_dir / "plan.json").read_text())
    assert saved["input_size"] == side  # what --resume will rebuild
    assert any(r.startswith("first look at 224 px") for r in result.plan.reasons)
    assert result.plan.fine_tune.epochs == 1 and result.plan.fine_tune.freeze == "none"


def test_a_time_budget_becomes_a_number_of_epochs_when_the_plan_is_made():
    from headstart.stages.plan import within_budget
    from headstart.training.cost import Cost

    planned = make_plan(
        "fine-tune",
        train_counts={"a": 100, "b": 100},
        probe_accuracy=0.9,
        mirror_invariant=True,
        pretrained=True,
        stages=8,
        val_images=50,
    )
    # Epochs of 10 s (9 steps of 1 s and 1 s of validation), 5 s to score at the end.
    cost = Cost(
        steps_per_epoch=9,
        epochs=planned.fine_tune.epochs,
        step_seconds=1.0,
        validation_seconds=1.0,
        scoring_seconds=5.0,
    )
    plenty, _ = within_budget(planned, cost, seconds=600)
    assert plenty.fine_tune.epochs == planned.fine_tune.epochs
    tight, tight_cost = within_budget(planned, cost, seconds=45)
    assert tight.fine_tune.epochs == 4 and tight_cost.seconds == 45
    assert tight.evidence["budget"]["epochs_that_fit"] == 4
    # The epochs left out are one command away.
    assert any(f"--resume RUN --epochs {cost.epochs}` trains the rest" in r for r in tight.reasons)
    none, _ = within_budget(planned, cost, seconds=12)
    assert none.strategy == "linear-probe" and none.fine_tune is None
    assert any("less than one epoch" in reason for reason in none.reasons)
