"""Imports every module that registers tasks, so the task registry is complete."""
from . import classification  # noqa: F401
