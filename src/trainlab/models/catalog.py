"""Imports every module that registers architectures, so the model registry is complete."""
from . import simple  # noqa: F401
