"""Imports every module that registers tasks, so the task registry is complete."""
from . import classification, detection, instance_segmentation, segmentation, sequence  # noqa: F401
