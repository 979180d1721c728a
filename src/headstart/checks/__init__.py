"""Sanity checks: the recipe's defences against training that fails silently.

Run by ``fit`` before the real training and alone by ``headstart check``. Each check says
pass or fail, the numbers it measured and, on failure, what to do:

- :mod:`.baselines`: on the cached features, in seconds: the loss at initialisation, the
  majority-class and linear baselines, the input-independent (zeroed-input) baseline;
- :mod:`.trial`: a few steps of the real training on one batch: inputs normalised, the
  training pipeline agrees with the feature cache, the loss falls, one batch is memorised,
  the trained parameters move and the frozen ones do not;
- :mod:`.early_loss`: the training loss of the real run's first steps falls, at the planned
  learning rate; a run whose loss explodes is stopped;
- :mod:`.fixed_batch`: a fixed batch of validation images predicted at every epoch.
"""

from .baselines import feature_baselines, initial_loss, majority_baseline, prior_entropy
from .core import Check, CheckReport
from .early_loss import EarlyLoss
from .fixed_batch import FixedBatch, spread_over_classes
from .suite import sanity_checks
from .trial import training_trial

__all__ = [
    "Check",
    "CheckReport",
    "EarlyLoss",
    "FixedBatch",
    "feature_baselines",
    "initial_loss",
    "majority_baseline",
    "prior_entropy",
    "sanity_checks",
    "spread_over_classes",
    "training_trial",
]
