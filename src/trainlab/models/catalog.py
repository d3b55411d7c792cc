"""Imports every module that registers architectures, so the model registry is complete."""
from . import blocknet, convnets, rcnn, segmentation, sequence, simple, ssd, timm_models, transformers, yolo  # noqa: F401
