"""Imports every module that registers architectures, so the model registry is complete."""
from . import blocknet, convnets, rcnn, segmentation, sequence, simple, timm_models, transformers  # noqa: F401
