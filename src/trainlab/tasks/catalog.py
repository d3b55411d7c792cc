"""Imports every module that registers tasks, so the task registry is complete."""
from . import (  # noqa: F401
    classification, detection, embedding, instance_segmentation, multitask, segmentation, sequence,
)
