"""Classification metrics (E1): accuracy, top-k, per-class precision/recall/F1, confusion matrix.

Pure functions on tensors plus one accumulator, so metrics over a whole split are exact (counts
are summed over batches, never averaged per batch).
"""
from __future__ import annotations

from typing import Any

import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64 counts; row = true class, column = predicted class. pred, target: (N,) ints."""
    idx = target.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def topk_correct(logits: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """Number of samples whose true class is among the k highest scores. logits (N, C), target (N,)."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return (top == target.unsqueeze(1)).any(dim=1).sum()


def metrics_from_confusion(cm: torch.Tensor) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support and their macro averages from a confusion matrix.

    A class never predicted has precision 0, a class absent from the targets recall 0 (the
    scikit-learn convention with zero_division=0); macro averages run over classes present in the
    targets or the predictions.
    """
    cm = cm.double()
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    present = (support > 0) | (predicted > 0)
    n = cm.sum()
    m = present.sum().clamp(min=1)
    return {
        "accuracy": float(tp.sum() / n) if n > 0 else 0.0,
        "macro_precision": float(precision[present].sum() / m),
        "macro_recall": float(recall[present].sum() / m),
        "macro_f1": float(f1[present].sum() / m),
        "per_class": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": support.long().tolist(),
        },
    }


class ClassificationMeter:
    """Accumulates loss, top-k hits and the confusion matrix over batches.

    Counts stay on the device of the logits until ``compute()``, so updating never waits for it.
    """

    def __init__(self, num_classes: int, topk: int = 5):
        self.num_classes = num_classes
        self.topk = topk
        self.cm: torch.Tensor | None = None
        self.loss_sum: torch.Tensor | float = 0.0
        self.topk_hits: torch.Tensor | int = 0
        self.n = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor | None = None) -> None:
        if target.dim() == 2:  # soft targets: score against the dominant class
            target = target.argmax(1)
        logits = logits.detach()
        cm = confusion_matrix(logits.argmax(1), target, self.num_classes)
        self.cm = cm if self.cm is None else self.cm + cm
        self.topk_hits = self.topk_hits + topk_correct(logits, target, self.topk)
        if loss is not None:
            self.loss_sum = self.loss_sum + loss.detach().double() * len(target)
        self.n += len(target)

    def compute(self) -> dict[str, Any]:
        cm = self.cm.cpu() if self.cm is not None else torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        out = metrics_from_confusion(cm)
        out["loss"] = float(self.loss_sum) / max(self.n, 1)
        out[f"top{self.topk}_accuracy"] = int(self.topk_hits) / max(self.n, 1)
        out["confusion"] = cm.tolist()
        out["n"] = self.n
        return out
