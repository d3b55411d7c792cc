"""Models: the architecture registry, layers, initialization and the input stage.

:func:`build_model` returns a :class:`~trainlab.models.wrapper.TrainlabModel`: the input stage
(normalization with the training split's statistics, D1) followed by the registered network.
"""
from __future__ import annotations

from .wrapper import Normalize, TrainlabModel, build_model

__all__ = ["Normalize", "TrainlabModel", "build_model"]
