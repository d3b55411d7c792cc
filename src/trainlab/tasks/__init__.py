"""Tasks: the seam between the generic engine and what differs per problem.

A task says how a batch is fed to the model, what the loss is, which metrics are accumulated and
how outputs become predictions. The trainer knows nothing else about the problem.
"""
from __future__ import annotations

from .base import Task, build_task

__all__ = ["Task", "build_task"]
