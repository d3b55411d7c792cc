"""Data: data sets, splits, normalization statistics, transforms and loaders.

:func:`build_data` turns the recipe's ``data`` section into a :class:`DataBundle`: the train,
validation and test splits, what the model needs to know about the inputs (:class:`DataInfo`) and
the normalization statistics computed on the training split only (D1).
"""
from __future__ import annotations

from .bundle import DataBundle, DataInfo, SampleSource, TensorSource, build_data

__all__ = ["DataBundle", "DataInfo", "SampleSource", "TensorSource", "build_data"]
