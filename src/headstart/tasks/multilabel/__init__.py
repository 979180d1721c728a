"""Several labels an image (a street photo: car, person), by the recipe of classes.

``headstart fit table.csv --task multi-label`` reads a table of image paths and label sets
(:mod:`.data`), fits a logistic probe per label on the cached features (:mod:`.probe`),
fine-tunes the network with binary cross-entropy when that pays, chooses each label's
threshold on validation (:mod:`.thresholds`), and keeps a :class:`~.model.MultiLabelModel`
whose ``predict`` gives each image's labels.
"""
