"""Optimisers, schedules and the scaling rule, shown on tiny networks: no images needed."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from headstart.config import OPTIMIZERS, SCHEDULES, FitConfig
from headstart.errors import HeadstartError
from headstart.training.optim import Schedule, create_optimizer, scale_lr

TRAINABLE = [name for name in OPTIMIZERS if name != "lbfgs"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Networks this small run 100x faster on one thread than on two of a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 1))


def layerwise_groups(model: nn.Sequential, head_lr: float = 1e-2) -> list[dict]:
    """What fine-tuning passes: the head at ten times the body's rate."""
    return [
        {"name": "head", "params": list(model[3].parameters()), "lr": head_lr},
        {"name": "body", "params": list(model[:3].parameters()), "lr": head_lr / 10},
    ]


def rates_by_name(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return {group["name"]: group["lr"] for group in optimizer.param_groups}


def run(schedule: Schedule, steps: int) -> list[dict[str, float]]:
    """The rates of each step, in order: steps[0] is the first step's."""
    seen = []
    for _ in range(steps):
        seen.append(rates_by_name(schedule.optimizer))
        schedule.optimizer.step()
        schedule.step()
    return seen


# Rates at which each optimiser makes quick progress on the toy regression below.
LEARNING_RATES = {
    "sgd": 0.05,
    "nesterov": 0.05,
    "adamw": 0.03,
    "adam": 0.03,
    "rmsprop": 0.003,
    "adagrad": 0.1,
    "novograd": 0.03,
}


@pytest.mark.parametrize("name", TRAINABLE)
def test_every_optimizer_trains_a_small_regression(name):
    torch.manual_seed(1)
    inputs = torch.randn(128, 8)
    targets = inputs @ torch.randn(8, 1) + 0.1 * torch.randn(128, 1)
    model = network()
    optimizer = create_optimizer(
        layerwise_groups(model, LEARNING_RATES[name]), name, weight_decay=1e-4
    )
    schedule = Schedule(optimizer, "cosine", total_steps=60, warmup_steps=5)

    def loss() -> torch.Tensor:
        return nn.functional.mse_loss(model(inputs), targets)

    start = loss().item()
    for _ in range(60):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
        schedule.step()
    assert loss().item() < 0.2 * start


@pytest.mark.parametrize(("name", "nesterov"), [("sgd", False), ("nesterov", True)])
def test_sgd_momentum_is_set_on_the_torch_optimizer(name, nesterov):
    optimizer = create_optimizer(layerwise_groups(network()), name, momentum=0.8)
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(group["momentum"] == 0.8 for group in optimizer.param_groups)
    assert all(group["nesterov"] is nesterov for group in optimizer.param_groups)


def test_weights_decay_while_biases_and_norm_weights_do_not():
    model = network()
    optimizer = create_optimizer(layerwise_groups(model), "adamw", weight_decay=0.5)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    # a zero loss: any change now is weight decay alone
    for _ in range(5):
        optimizer.zero_grad()
        (0 * sum(p.sum() for p in model.parameters())).backward()
        optimizer.step()
    for name, param in model.named_parameters():
        if param.ndim > 1:
            assert param.abs().sum() < before[name].abs().sum(), name
        else:
            assert torch.equal(param, before[name]), name
    # each group kept its name and rate through the split
    assert {(g["name"], g["lr"]) for g in optimizer.param_groups} == {
        ("head", 1e-2),
        ("body", 1e-3),
    }


@pytest.mark.parametrize("optimizer_name", ["adamw", "adagrad"])  # with momentum, without
@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_keeps_the_groups_ratio(name, optimizer_name):
    optimizer = create_optimizer(layerwise_groups(network()), optimizer_name)
    schedule = Schedule(optimizer, name, total_steps=40, warmup_steps=5)
    seen = run(schedule, 40)
    schedule.extend(60)
    seen += run(schedule, 20)
    for rates in seen:
        if rates["head"] > 0:
            assert rates["head"] / rates["body"] == pytest.approx(10)


@pytest.mark.parametrize("name", SCHEDULES)
def test_warmup_starts_near_zero_and_reaches_the_peak_at_warmup_steps(name):
    optimizer = create_optimizer(layerwise_groups(network()), "sgd")
    seen = run(Schedule(optimizer, name, total_steps=100, warmup_steps=10), 12)
    heads = [rates["head"] for rates in seen]
    assert heads[0] <= 0.1 * 1e-2
    assert heads[:10] == sorted(heads[:10])  # rising
    assert heads[9] == pytest.approx(1e-2)  # the 10th step runs at the peak
    assert max(heads) == pytest.approx(1e-2)


def final_rate(name: str) -> float:
    optimizer = create_optimizer(layerwise_groups(network()), "adamw")
    schedule = Schedule(optimizer, name, total_steps=50, warmup_steps=5)
    run(schedule, 50)
    return rates_by_name(optimizer)["head"]


def test_cosine_ends_at_one_percent_and_linear_at_zero():
    assert final_rate("cosine") == pytest.approx(1e-4)
    assert final_rate("linear") == 0
    assert final_rate("constant") == pytest.approx(1e-2)


def test_step_drops_tenfold_after_a_third_and_two_thirds():
    optimizer = create_optimizer(layerwise_groups(network()), "adamw")
    schedule = Schedule(optimizer, "step", total_steps=30)
    heads = [rates["head"] for rates in run(schedule, 30)]
    assert heads == pytest.approx([1e-2] * 10 + [1e-3] * 10 + [1e-4] * 10)


def test_inverse_sqrt_halves_when_the_step_count_quadruples():
    optimizer = create_optimizer(layerwise_groups(network()), "adamw")
    seen = run(Schedule(optimizer, "inverse-sqrt", total_steps=200, warmup_steps=10), 160)
    head_at_step = {step: rates["head"] for step, rates in enumerate(seen, start=1)}
    assert head_at_step[40] == pytest.approx(head_at_step[10] / 2)
    assert head_at_step[160] == pytest.approx(head_at_step[40] / 2)


def test_one_cycle_rises_then_falls_with_momentum_the_other_way():
    optimizer = create_optimizer(layerwise_groups(network()), "sgd", momentum=0.9)
    schedule = Schedule(optimizer, "one-cycle", total_steps=50, warmup_steps=15)
    heads, momenta = [], []
    for _ in range(50):
        heads.append(optimizer.param_groups[0]["lr"])
        momenta.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        schedule.step()
    peak = heads.index(max(heads))
    assert peak == 14
    assert heads[: peak + 1] == sorted(heads[: peak + 1])
    assert heads[peak:] == sorted(heads[peak:], reverse=True)
    assert heads[-1] < 0.05 * heads[peak]
    assert momenta.index(min(momenta)) == peak


@pytest.mark.parametrize("name", SCHEDULES)
def test_resuming_from_the_state_dict_continues_the_same_rates(name):
    def fresh() -> Schedule:
        optimizer = create_optimizer(layerwise_groups(network()), "adamw")
        return Schedule(optimizer, name, total_steps=30, warmup_steps=4)

    uninterrupted = fresh()
    expected = run(uninterrupted, 30)[15:]

    interrupted = fresh()
    run(interrupted, 15)
    saved = json.loads(json.dumps(interrupted.state_dict()))  # as a run folder stores it
    resumed = fresh()  # what --resume builds, then loads both states into
    resumed.optimizer.load_state_dict(interrupted.optimizer.state_dict())
    resumed.load_state_dict(saved)
    assert run(resumed, 15) == expected


def test_training_longer_restarts_a_finished_cosine_at_a_tenth_of_its_peak():
    optimizer = create_optimizer(layerwise_groups(network()), "adamw")
    schedule = Schedule(optimizer, "cosine", total_steps=20, warmup_steps=2)
    run(schedule, 20)
    schedule.extend(40)
    heads = [rates["head"] for rates in run(schedule, 20)]
    assert heads[0] == pytest.approx(1e-3)  # no second warm-up
    assert heads == sorted(heads, reverse=True)
    assert rates_by_name(optimizer)["head"] == pytest.approx(1e-5)  # 1% of the restart


def test_scale_lr_follows_the_batch_size():
    assert scale_lr(1e-3, batch_size=64) == pytest.approx(2e-3)
    assert scale_lr(1e-3, batch_size=16, reference_batch_size=32) == pytest.approx(5e-4)
    with pytest.raises(HeadstartError, match="batch_size=0"):
        scale_lr(1e-3, batch_size=0)


def test_lbfgs_is_refused_for_fine_tuning_with_the_reason():
    with pytest.raises(HeadstartError, match=r"optimizer='lbfgs'.*linear-probe"):
        create_optimizer(layerwise_groups(network()), "lbfgs")
    with pytest.raises(HeadstartError, match="optimizer='lbfgs'"):
        FitConfig.of(optimizer="lbfgs", strategy="fine-tune")
    FitConfig.of(optimizer="lbfgs", strategy="linear-probe")  # what the probe already does


def test_bad_names_and_values_are_refused_naming_the_parameter():
    groups = layerwise_groups(network())
    with pytest.raises(HeadstartError, match="optimizer='adamx' is not one of sgd, nesterov"):
        create_optimizer(groups, "adamx")
    with pytest.raises(HeadstartError, match=r"weight_decay=-0\.1"):
        create_optimizer(groups, "adamw", weight_decay=-0.1)
    with pytest.raises(HeadstartError, match=r"momentum=0 .*nesterov"):
        create_optimizer(groups, "nesterov", momentum=0)
    with pytest.raises(HeadstartError, match=r"groups\[0\].*'lr'"):
        create_optimizer([{"params": groups[0]["params"]}], "adamw")
    optimizer = create_optimizer(groups, "adamw")
    with pytest.raises(HeadstartError, match="schedule='cyclic' is not one of cosine"):
        Schedule(optimizer, "cyclic", total_steps=10)
    with pytest.raises(HeadstartError, match="warmup_steps=11"):
        Schedule(optimizer, "cosine", total_steps=10, warmup_steps=11)
    with pytest.raises(HeadstartError, match="schedule='inverse-sqrt' needs a warm-up"):
        FitConfig.of(schedule="inverse-sqrt", warmup=0.0)
    with pytest.raises(HeadstartError, match="lr=0"):
        FitConfig.of(strategy="full", lr=0)
