"""Imports every module that registers data sets, so the data-set registry is complete."""
from . import coco, digits, faces, folder, segmentation, shapes, shards, text  # noqa: F401
