"""The linear probe's head: what fine-tuning starts from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headstart.errors import HeadstartError
from headstart.training.probe import fit_probe


def test_a_nearly_constant_feature_does_not_get_an_enormous_weight():
    # Real backbones have such features: pooled channels that barely fire on this data. Once
    # fine-tuning moves them slightly (augmentation, batch statistics), a huge weight on one
    # turns into hundreds of nats of loss.
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 60)
    features = (rng.normal(size=(120, 32)) + labels[:, None] * 0.8).astype(np.float32)
    features[:, 0] = 1.0 + 1e-4 * rng.normal(size=120) + 1e-4 * labels  # barely moves
    probe = fit_probe(features, labels, 2, seed=0)
    assert probe.cv_accuracy > 0.9

    nudged = features.copy()
    nudged[:, 0] += 0.01  # a hundred times its spread in the training data, still tiny
    with torch.no_grad():
        before = probe.head(torch.from_numpy(features))
        after = probe.head(torch.from_numpy(nudged))
    assert (after - before).abs().max() < 1.0


def few_informative_features(n: int = 240, width: int = 40, informative: int = 4, seed: int = 0):
    """Three classes told apart by the first ``informative`` features; the rest is noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    features = rng.normal(size=(n, width)).astype(np.float32)
    centres = rng.normal(scale=1.5, size=(3, informative))
    features[:, :informative] += centres[labels]
    return features, labels


def test_an_l1_probe_reads_the_informative_features_and_zeroes_the_noise():
    features, labels = few_informative_features()
    sparse = fit_probe(features, labels, 3, penalty="l1")
    dense = fit_probe(features, labels, 3)

    assert (sparse.penalty, dense.penalty) == ("l1", "l2")
    noise_weights = sparse.head.weight[:, 4:]
    assert (noise_weights == 0).float().mean() > 0.8  # most noise features unread
    assert (sparse.head.weight[:, :4] != 0).any(dim=0).all()  # every informative one read
    assert (dense.head.weight == 0).float().mean() < 0.05  # L2 keeps every weight
    assert sparse.cv_accuracy >= dense.cv_accuracy - 0.05  # at little cost


def test_an_elastic_net_probe_is_sparse_and_records_its_mix():
    features, labels = few_informative_features()
    probe = fit_probe(features, labels, 3, penalty="elasticnet", l1_ratio=0.7)
    assert (probe.penalty, probe.l1_ratio) == ("elasticnet", 0.7)
    assert (probe.head.weight[:, 4:] == 0).float().mean() > 0.5
    assert probe.cv_accuracy > 0.8


def test_a_balanced_probe_finds_more_of_a_small_class():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 300 + [1] * 30)
    features = (rng.normal(size=(330, 8)) + labels[:, None] * 1.0).astype(np.float32)
    held_out_labels = np.array([0] * 300 + [1] * 300)
    held_out = (rng.normal(size=(600, 8)) + held_out_labels[:, None] * 1.0).astype(np.float32)

    def small_class_recall(probe) -> float:
        with torch.no_grad():
            predicted = probe.head(torch.from_numpy(held_out)).argmax(1).numpy()
        return float((predicted[held_out_labels == 1] == 1).mean())

    plain = fit_probe(features, labels, 2)
    balanced = fit_probe(features, labels, 2, balanced=True)
    assert balanced.balanced and not plain.balanced
    assert small_class_recall(balanced) > small_class_recall(plain) + 0.2


def test_bad_penalties_are_refused_by_name():
    features, labels = few_informative_features(n=30)
    with pytest.raises(HeadstartError, match=r"penalty='lasso'.*'elasticnet'"):
        fit_probe(features, labels, 3, penalty="lasso")
    with pytest.raises(HeadstartError, match=r"l1_ratio=1\.5"):
        fit_probe(features, labels, 3, penalty="elasticnet", l1_ratio=1.5)


def test_rows_fit_the_same_head_as_their_copy():
    # The fit's probe takes the training rows of the whole feature arrays, not a copy of them
    # (205 MB a view at 40,000 images): the same head, bit for bit.
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2], 40)
    features = (rng.normal(size=(150, 24)) + np.resize(labels, 150)[:, None]).astype(np.float32)
    mirrored = features + rng.normal(scale=0.1, size=features.shape).astype(np.float32)
    rows = rng.permutation(150)[:120]
    taken = fit_probe(features, labels, 3, mirrored=mirrored, rows=rows)
    copied = fit_probe(features[rows], labels, 3, mirrored=mirrored[rows])
    assert torch.equal(taken.head.weight, copied.head.weight) and taken.C == copied.C


@pytest.mark.parametrize("balanced", [False, True])
def test_each_fold_fits_its_rows_by_weight_to_the_optimum_of_a_fit_on_a_copy(balanced):
    # The folds' models weigh the held-out rows at zero instead of copying the training rows
    # (164 MB at 40,000 images): the same out-of-fold scores as models fitted on the copies,
    # balanced class weights counted on each fold's training rows alone.
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(4)
    labels = np.repeat([0, 1, 2], [100, 50, 30])
    features = (rng.normal(size=(180, 16)) + 0.7 * labels[:, None]).astype(np.float32)
    probe = fit_probe(features, labels, 3, max_folds=5, balanced=balanced)
    spread = features.std(0)
    scaled = (features - features.mean(0)) / np.maximum(spread, np.median(spread))
    logits = np.zeros((180, 3))
    splits = StratifiedKFold(5, shuffle=True, random_state=0).split(scaled, labels)
    for train, held_out in splits:
        weights = "balanced" if balanced else None
        model = LogisticRegression(C=probe.C, max_iter=1000, tol=1e-8, class_weight=weights)
        logits[held_out] = model.fit(scaled[train], labels[train]).decision_function(
            scaled[held_out]
        )
    picked = np.exp(logits - logits.max(1, keepdims=True))
    picked = picked[np.arange(180), labels] / picked.sum(1)
    assert probe.cv_log_loss[probe.C] == pytest.approx(-np.log(picked).mean(), abs=5e-4)


def test_the_in_place_probe_standardises_its_buffer_and_fits_the_same_head():
    from headstart.training.probe import fit_probe_in_place

    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1], 50)
    features = (rng.normal(size=(100, 12)) + labels[:, None]).astype(np.float32)
    mirrored = features + rng.normal(scale=0.1, size=features.shape).astype(np.float32)
    stacked = np.concatenate([features, mirrored])
    in_place = fit_probe_in_place(stacked, labels, 2, mirrored=True)
    copied = fit_probe(features, labels, 2, mirrored=mirrored)
    assert torch.equal(in_place.head.weight, copied.head.weight)
    assert abs(stacked[:100].mean(0)).max() < 1e-5  # the buffer was the probe's to use
