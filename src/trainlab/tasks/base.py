"""The Task interface."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from ..registry import TASKS


def metric_mode(name: str, mode: str = "auto") -> str:
    """'min' or 'max': whether a smaller value of the metric ``name`` is better (auto: losses, errors)."""
    if mode != "auto":
        return mode
    return "min" if "loss" in name or "error" in name else "max"


def scalar_metrics(metrics: dict[str, Any] | None) -> dict[str, int | float]:
    """The numeric entries of a metrics dict (``eval_meter().compute()``, a summary's val/test):
    drops structures such as the confusion matrix and per-class tables, and booleans."""
    return {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class TrainMeter:
    """Running training loss and accuracy without a device sync per step."""

    def __init__(self):
        self.loss_sum: torch.Tensor | float = 0.0
        self.correct: torch.Tensor | int = 0
        self.n = 0

    def state(self) -> dict[str, float]:
        return {"loss_sum": float(self.loss_sum), "correct": float(self.correct), "n": self.n}

    def load(self, state: dict[str, float]) -> None:
        self.loss_sum, self.correct, self.n = state["loss_sum"], state["correct"], int(state["n"])


class Task(ABC):
    """What the engine needs from a problem type."""

    name = "task"
    monitor = "val_loss"  # default metric for early stopping and best checkpoints
    train_metrics: tuple[str, ...] = ("loss",)  # keys of train_summary()
    val_metrics: tuple[str, ...] = ("loss",)  # scalar keys of eval_meter().compute()

    def __init__(self, recipe, info):
        self.recipe = recipe
        self.info = info

    def train_meter(self) -> TrainMeter:
        """A fresh accumulator of the training metrics of one epoch (its state is checkpointed)."""
        return TrainMeter()

    def forward(self, model: torch.nn.Module, batch: dict[str, Any]) -> Any:
        return model(batch["input"])

    @abstractmethod
    def loss(self, outputs: Any, batch: dict[str, Any]) -> torch.Tensor:
        """Scalar loss of a batch."""

    @abstractmethod
    def train_update(self, meter: TrainMeter, outputs: Any, batch: dict[str, Any], loss: torch.Tensor) -> None:
        """Add one training batch to ``meter`` without synchronizing the device."""

    @abstractmethod
    def train_summary(self, meter: TrainMeter) -> dict[str, float]:
        """The epoch's training metrics, e.g. {"loss": ..., "accuracy": ...}."""

    @abstractmethod
    def eval_meter(self) -> Any:
        """An accumulator with ``update(outputs, batch, loss)`` and ``compute() -> dict``."""

    @abstractmethod
    def predict(self, outputs: Any) -> Any:
        """Model outputs → predictions (class probabilities, boxes, masks...)."""


def build_task(recipe, info) -> Task:
    return TASKS.get(recipe.task, "task").fn(recipe, info)
