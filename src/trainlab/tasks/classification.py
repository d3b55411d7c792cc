"""Image classification (K1): logits, (soft-target) loss, accuracy and the E1 metrics."""
from __future__ import annotations

import torch

from ..evaluate.classification import ClassificationMeter
from ..registry import LOSSES, TASKS
from .base import Task, TrainMeter


class _EvalMeter:
    def __init__(self, num_classes: int, topk: int):
        self.meter = ClassificationMeter(num_classes, topk)

    def update(self, outputs, batch, loss):
        self.meter.update(outputs, batch["target"], loss)

    def compute(self):
        return self.meter.compute()


class ClassificationTask(Task):
    name = "classification"
    monitor = "val_loss"

    train_metrics = ("loss", "accuracy")

    def __init__(self, recipe, info):
        super().__init__(recipe, info)
        k = recipe.eval.topk
        self.val_metrics = ("loss", "accuracy", "macro_precision", "macro_recall", "macro_f1", f"top{k}_accuracy")
        self.criterion = LOSSES.get(recipe.loss.name, "loss.name").fn(recipe.loss, info)

    def loss(self, outputs, batch):
        return self.criterion(outputs, batch["target"])

    def train_update(self, meter: TrainMeter, outputs, batch, loss):
        target = batch["target"]
        if target.dim() == 2:
            target = target.argmax(1)
        n = len(target)
        meter.loss_sum = meter.loss_sum + loss.detach() * n
        meter.correct = meter.correct + (outputs.detach().argmax(1) == target).sum()
        meter.n += n

    def train_summary(self, meter: TrainMeter):
        n = max(meter.n, 1)
        return {"loss": float(meter.loss_sum) / n, "accuracy": float(meter.correct) / n}

    def eval_meter(self):
        return _EvalMeter(self.info.num_classes, self.recipe.eval.topk)

    def predict(self, outputs):
        return torch.softmax(outputs.float(), dim=1)


@TASKS.register("classification", help="image classification: class logits, cross-entropy, accuracy/F1")
def classification(recipe, info):
    return ClassificationTask(recipe, info)
