"""Regularisers for fine-tuning: what each does to a batch, a loss, a model or its gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from headstart.errors import HeadstartError
from headstart.training.regularise import BatchMixer, WeightAverage, clip_gradients, head_penalty


def distinct_images(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random uint8 images, each its own class: a soft target then names the images mixed."""
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (n, 3, 16, 20), dtype=torch.uint8, generator=generator)
    return pixels, torch.arange(n)


def test_mixup_blends_two_images_and_their_labels_by_the_same_weights():
    pixels, labels = distinct_images()
    mixed, targets = BatchMixer(n_classes=6, mixup=0.4, seed=0)(pixels, labels)

    assert mixed.dtype == torch.float32 and mixed.shape == pixels.shape
    assert mixed.min() >= 0 and mixed.max() <= 255
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    assert ((targets > 0).sum(1) == 2).all()
    # Each image is the target-weighted sum of the originals: a convex mix of exactly two.
    recipe = torch.einsum("ik,kchw->ichw", targets, pixels.float())
    torch.testing.assert_close(mixed, recipe)


def test_cutmix_pastes_a_rectangle_whose_area_is_the_target_weight():
    pixels = torch.arange(6, dtype=torch.uint8).mul(40).view(6, 1, 1, 1).expand(6, 3, 32, 40)
    labels = torch.arange(6)  # image k is filled with the value 40 * k, and is class k
    mixer = BatchMixer(n_classes=6, mixup=0.0, cutmix=1.0, seed=3)
    mixed, targets = mixer(pixels, labels)
    for image, target in zip(mixed, targets, strict=True):
        main, pasted = target.argsort(descending=True)[:2]  # the two images with weight
        inside = image[0] == 40 * pasted
        assert ((image[0] == 40 * main) | inside).all()  # every pixel from one of the two
        rows, cols = inside.nonzero(as_tuple=True)
        if len(rows):  # the pasted pixels fill their bounding box: a rectangle
            box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
            assert box == len(rows)
        assert target[pasted].item() == pytest.approx(inside.float().mean().item())
    assert targets.topk(2).values[:, 1].gt(0).any()  # something was pasted at all


def test_the_same_seed_gives_the_same_mix_and_leaves_the_global_random_state_alone():
    pixels, labels = distinct_images()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = BatchMixer(6, mixup=0.2, cutmix=1.0, seed=7)
    second = BatchMixer(6, mixup=0.2, cutmix=1.0, seed=7)
    for _ in range(4):  # a few batches, so both kinds of mixing come up
        a, b = first(pixels, labels), second(pixels, labels)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), before)
    other = BatchMixer(6, mixup=0.2, cutmix=1.0, seed=8)(pixels, labels)
    assert not torch.equal(
        other[1], BatchMixer(6, mixup=0.2, cutmix=1.0, seed=7)(pixels, labels)[1]
    )


def test_mixed_targets_train_with_label_smoothing():
    pixels, labels = distinct_images()
    _, targets = BatchMixer(6, seed=0)(pixels, labels)
    logits = torch.zeros(6, 6, requires_grad=True)
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)(logits, targets)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(6))  # uniform logits: ln C whatever the targets
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"n_classes": 1}, "Mixup with one class"),
        ({"n_classes": 3, "mixup": -0.1}, "mixup=-0.1"),
        ({"n_classes": 3, "cutmix": -1.0}, "cutmix=-1.0"),
        ({"n_classes": 3, "mixup": 0.0}, "nothing to mix"),
        ({"n_classes": 3, "switch_prob": 1.5}, "switch_prob=1.5"),
    ],
)
def test_bad_mixer_settings_are_refused_by_name(arguments, named):
    with pytest.raises(HeadstartError, match=named):
        BatchMixer(**arguments)


def test_head_penalty_is_zero_for_zero_weights_grows_with_them_and_ignores_the_bias():
    head = nn.Linear(4, 3)
    nn.init.zeros_(head.weight)
    nn.init.constant_(head.bias, 5.0)
    assert head_penalty(head, l1=0.1, l2=0.1).item() == 0.0

    penalties = []
    for size in (0.5, 1.0, 2.0):
        nn.init.constant_(head.weight, -size)
        penalties.append(head_penalty(head, l1=0.1, l2=0.1).item())
    assert penalties[0] < penalties[1] < penalties[2]
    # the special cases: L1 alone is the sum of |w|, L2 alone the sum of w squared (12 weights)
    assert head_penalty(head, l1=1.0, l2=0.0).item() == pytest.approx(12 * 2.0)
    assert head_penalty(head, l1=0.0, l2=1.0).item() == pytest.approx(12 * 4.0)

    head_penalty(head, l1=0.1, l2=0.1).backward()
    assert head.weight.grad.abs().sum() > 0 and head.bias.grad is None
    with pytest.raises(HeadstartError, match="l1=-1"):
        head_penalty(head, l1=-1, l2=0)


def train_steps(model: nn.Module, average: WeightAverage, steps: int) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    inputs, goal = torch.ones(8, 4), torch.full((8, 2), 10.0)
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(inputs), goal).backward()
        optimizer.step()
        average.update(model, step)


def test_averaged_weights_lag_behind_the_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2))
    start = model[1].bias.detach().clone()  # the output shift, pulled towards 10
    average = WeightAverage(model, decay=0.9, warmup=False)
    train_steps(model, average, steps=20)

    now, averaged = model[1].bias.detach(), average.module[1].bias
    assert (now - start).abs().min() > 0.1  # the model moved
    assert ((averaged - start) * (now - start) > 0).all()  # the average moved the same way
    assert ((averaged - now).abs() > 1e-3).all()  # but is not there yet
    assert not averaged.requires_grad and not average.module.training


def test_with_decay_zero_the_average_is_the_model():
    model = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.0)
    train_steps(model, average, steps=3)
    for key, value in model.state_dict().items():
        assert torch.equal(average.state_dict()[key], value), key


def test_the_decay_warms_up_so_short_runs_leave_the_initial_weights():
    average = WeightAverage(nn.Linear(2, 2), decay=0.999)
    decays = [average.decay_at(step) for step in (1, 10, 100, 10_000)]
    assert decays[0] == 0.0  # the first update copies
    assert decays[1] < 0.9 < decays[2] < decays[3] == 0.999


def test_averaged_weights_survive_a_resume_and_load_into_a_fresh_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.5, warmup=False)
    train_steps(model, average, steps=5)

    resumed = WeightAverage(nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2)), decay=0.5)
    resumed.load_state_dict(average.state_dict())
    fresh = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2))
    fresh.load_state_dict(average.state_dict())
    for key, value in average.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value)
        assert torch.equal(fresh.state_dict()[key], value)
    with pytest.raises(HeadstartError, match="decay=1"):
        WeightAverage(model, decay=1)


def test_clip_gradients_bounds_the_norm_and_reports_it_before_clipping():
    weights = [nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(4))]
    weights[0].grad = torch.full((3,), 3.0)
    weights[1].grad = torch.full((4,), 4.0)
    norm = math.sqrt(3 * 9 + 4 * 16)

    assert clip_gradients(weights, max_norm=1.0) == pytest.approx(norm)
    clipped = torch.cat([w.grad for w in weights]).norm().item()
    assert clipped == pytest.approx(1.0, rel=1e-4)
    assert clip_gradients(weights, max_norm=math.inf) == pytest.approx(clipped)  # measure only
    assert torch.cat([w.grad for w in weights]).norm().item() == pytest.approx(clipped)
    with pytest.raises(HeadstartError, match="max_norm=0"):
        clip_gradients(weights, max_norm=0)
