"""The linear probe's head: what fine-tuning starts from."""

from __future__ import annotations

import numpy as np
import torch

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
