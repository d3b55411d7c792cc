"""Sequence task (K6): next-token prediction at every step, as a Char-RNN is trained (S1 Q23).

The model maps (N, T) token ids to (N, T, V) logits; the loss is the cross-entropy of every
step's prediction against the next token, averaged over all N·T steps. Reported: loss, accuracy
(next token right), perplexity exp(loss) (the number of equally likely choices the model is
left with) and bits per character loss / ln 2.
"""
from __future__ import annotations

import math

import torch

from ..errors import RecipeError
from ..registry import LOSSES, MODELS, TASKS
from .base import Task, TrainMeter


class _TokenMeter:
    def __init__(self):
        self.loss_sum = 0.0
        self.correct = 0
        self.n = 0

    def update(self, outputs, batch, loss):
        target = batch["target"]
        n = target.numel()
        self.loss_sum += float(loss.detach()) * n
        self.correct += int((outputs.argmax(-1) == target).sum())
        self.n += n

    def compute(self):
        loss = self.loss_sum / max(self.n, 1)
        return {"loss": loss, "accuracy": self.correct / max(self.n, 1), "perplexity": math.exp(min(loss, 50.0)),
                "bits_per_char": loss / math.log(2), "n": self.n}


class SequenceTask(Task):
    name = "sequence"
    monitor = "val_loss"
    train_metrics = ("loss", "accuracy")
    val_metrics = ("loss", "accuracy", "perplexity", "bits_per_char")
    # Lower perplexity and bits per character are better: a name-based guess took them for scores.
    metrics = {"loss": "min", "accuracy": "max", "perplexity": "min", "bits_per_char": "min"}
    quality = "accuracy"  # compared between splits (variance); a next-character model at 60% is not biased

    def __init__(self, recipe, info):
        super().__init__(recipe, info)
        if info.kind != "sequence":
            raise RecipeError(f"task: sequence needs a sequence data set (e.g. data.name=text), "
                              f"{recipe.data.name!r} gives {info.kind} data")
        entry = MODELS.get(recipe.model.name, "model.name")
        if "sequence" not in entry.meta.get("tasks", ()):
            seq_models = [e.name for e in MODELS.entries() if "sequence" in e.meta.get("tasks", ())]
            raise RecipeError(f"model.name: {recipe.model.name!r} does not predict a token per step; "
                              f"task sequence takes {', '.join(seq_models)}")
        self.criterion = LOSSES.get(recipe.loss.name, "loss.name").fn(recipe.loss, info)

    def loss(self, outputs, batch):
        v = outputs.shape[-1]
        return self.criterion(outputs.reshape(-1, v), batch["target"].reshape(-1))

    def train_update(self, meter: TrainMeter, outputs, batch, loss):
        target = batch["target"]
        n = target.numel()
        meter.loss_sum = meter.loss_sum + loss.detach() * n
        meter.correct = meter.correct + (outputs.detach().argmax(-1) == target).sum()
        meter.n += n

    def train_summary(self, meter: TrainMeter):
        n = max(meter.n, 1)
        return {"loss": float(meter.loss_sum) / n, "accuracy": float(meter.correct) / n}

    def eval_meter(self):
        return _TokenMeter()

    def table_columns(self):
        return [("train_loss", "train_loss"), ("train_accuracy", "train_acc"), ("val_loss", "val_loss"),
                ("val_accuracy", "val_acc"), ("val_perplexity", "val_ppl")]

    def curves(self):
        return [("accuracy", ["train_accuracy", "val_accuracy"]), ("perplexity", ["val_perplexity"])]

    def predict(self, outputs):
        """Next-token probabilities (N, T, V)."""
        return torch.softmax(outputs.float(), dim=-1)


@TASKS.register("sequence", help="next-token prediction at every step (Char-RNN): cross-entropy, accuracy, perplexity")
def sequence(recipe, info):
    return SequenceTask(recipe, info)
