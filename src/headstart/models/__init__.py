"""Backbones: a pretrained timm model as a feature extractor, with the preprocessing its weights
expect and a record of where those weights came from."""

from .backbone import ModelInfo, Preprocessing, create_backbone, list_models, preprocessing_of
from .weights import WeightsSource, builtin_weights, save_weights

__all__ = [
    "ModelInfo",
    "Preprocessing",
    "WeightsSource",
    "builtin_weights",
    "create_backbone",
    "list_models",
    "preprocessing_of",
    "save_weights",
]
