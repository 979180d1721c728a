"""Regression: a number an image (an age, a count, a score), by the recipe of classes.

``headstart fit table.csv --task regression`` (:mod:`.recipe`) reads a table of image paths
and numbers (:mod:`.data`), fits a ridge probe on the cached features (:mod:`.probe`),
fine-tunes the network with a Huber loss when that pays, and keeps a :class:`~.model.Regressor`
whose ``predict`` gives numbers in the target's units.
"""
