"""Imports every module that registers architectures, so the model registry is complete."""
from . import (  # noqa: F401
    blocknet, convnets, deformable_detr, detr, heads, rcnn, segmentation, sequence, simple, ssd, timm_models,
    transformers, yolo,
)
