"""Imports every module that registers data sets, so the data-set registry is complete."""
from . import digits, folder, text  # noqa: F401
