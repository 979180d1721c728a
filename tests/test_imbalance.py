"""Class imbalance: weights that make every class count the same, balanced batches, the choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from headstart.errors import HeadstartError
from headstart.training.imbalance import balanced_order, choose_balancing, class_weights


def test_a_weighted_loss_treats_every_class_equally():
    counts = [90, 10]
    labels = torch.tensor([0] * 90 + [1] * 10)
    # A model that always says "the big class": right about it, wrong about the small one...
    logits = torch.tensor([2.0, 0.0]).expand(100, 2)
    per_class = [
        nn.functional.cross_entropy(logits[labels == c], labels[labels == c]).item() for c in (0, 1)
    ]
    plain = nn.CrossEntropyLoss()(logits, labels).item()
    weighted = nn.CrossEntropyLoss(weight=class_weights(counts))(logits, labels).item()
    # ...looks good to the plain loss, which is dominated by the big class; the weighted loss is
    # the mean of the per-class losses, as if the classes were balanced.
    assert plain == pytest.approx(0.9 * per_class[0] + 0.1 * per_class[1])
    assert weighted == pytest.approx(np.mean(per_class))


def test_class_weights_average_one_over_the_samples_and_skip_empty_classes():
    counts = np.array([200, 50, 10, 0])
    weights = class_weights(counts).numpy()
    assert (weights[:3] * counts[:3]).sum() / counts.sum() == pytest.approx(1.0)
    assert weights[0] < weights[1] < weights[2] and weights[3] == 0
    assert class_weights([7, 7, 7]).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(HeadstartError, match="counts"):
        class_weights([5, -1])


def test_balanced_order_draws_the_classes_equally_on_a_1_to_20_set():
    labels = np.array([0] * 400 + [1] * 20)
    order = balanced_order(labels, 3200, np.random.default_rng(0))
    drawn = labels[order]
    # Each of 100 batches of 32 holds about 16 of each class (binomial spread: 2.8).
    per_batch = drawn.reshape(100, 32).sum(1)
    assert abs(per_batch.mean() - 16) < 1.0
    assert per_batch.min() >= 16 - 4 * 2.83 and per_batch.max() <= 16 + 4 * 2.83
    # Within the small class, all 20 images come up; nothing is drawn from outside the set.
    assert set(order[drawn == 1]) == set(range(400, 420))
    assert order.min() >= 0 and order.max() < len(labels)


def test_balanced_order_is_deterministic_given_the_generator():
    labels = [0, 0, 0, 1, 2, 2]
    first = balanced_order(labels, 50, np.random.default_rng(4))
    again = balanced_order(labels, 50, np.random.default_rng(4))
    other = balanced_order(labels, 50, np.random.default_rng(5))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    with pytest.raises(HeadstartError, match="n=-1"):
        balanced_order(labels, -1, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([100, 100], "none"),
        ([300, 100, 150], "none"),  # 3x: still none
        ([310, 100], "weighted-loss"),
        ([1000, 100], "weighted-loss"),  # 10x: still weighting
        ([1010, 100], "sampler"),
        ([400, 20, 0], "sampler"),  # an empty class is not the smallest
    ],
)
def test_auto_balancing_follows_the_imbalance_ratio(counts, expected):
    choice, reason = choose_balancing(counts)
    assert choice == expected
    assert "x the images of the smallest" in reason


def test_a_requested_balancing_is_kept_and_a_bad_one_refused():
    assert choose_balancing([100, 100], "sampler")[0] == "sampler"
    assert choose_balancing([1000, 10], "none") == (
        "none",
        "requested (the largest class has 100.0x the images of the smallest)",
    )
    with pytest.raises(HeadstartError, match=r"balancing='oversample'.*'weighted-loss'"):
        choose_balancing([10, 10], "oversample")
