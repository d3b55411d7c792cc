"""Imports every module that registers tasks, so the task registry is complete."""
from . import classification, detection, embedding, instance_segmentation, segmentation, sequence  # noqa: F401
