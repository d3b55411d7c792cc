"""Optimization: optimizers, learning-rate schedules, weight EMA."""
from __future__ import annotations

from .optimizers import build_optimizer, param_groups
from .schedules import LRSchedule, build_schedule

__all__ = ["build_optimizer", "param_groups", "LRSchedule", "build_schedule"]
