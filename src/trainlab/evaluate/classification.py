"""Classification metrics (E1): accuracy, top-k, per-class precision/recall/F1, confusion matrix.

Pure functions on tensors plus one accumulator, so metrics over a whole split are exact (counts
are summed over batches, never averaged per batch).
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import DataError


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64 counts; row = true class, column = predicted class. pred, target: (N,) ints.

    Only pairs that happened are counted: a target outside 0..C-1 is a DataError naming it, and a
    sample whose prediction is outside 0..C-1 is left out, as scikit-learn's
    ``confusion_matrix(target, pred, labels=range(C))`` leaves it out.
    """
    t, p = target.reshape(-1).long(), pred.reshape(-1).long()
    bad = (t < 0) | (t >= num_classes)
    if bool(bad.any()):
        # A label outside the classes is a data error (labels 1..10 for 10 classes, a stray -1):
        # dropping it would report metrics over fewer samples than the split has.
        raise DataError(f"target {int(t[bad][0])} is not a class index: expected 0..{num_classes - 1} "
                        f"({num_classes} classes)")
    # A prediction outside the classes (a caller's -1 for "no answer"; argmax never gives one) is
    # dropped rather than refused, so the matrix matches scikit-learn's; before, t*C + p put it in a
    # neighbouring row as a pair that never happened. It goes to an extra bin, cut off below.
    cells = num_classes * num_classes
    idx = torch.where((p >= 0) & (p < num_classes), t * num_classes + p, cells)
    return torch.bincount(idx, minlength=cells + 1)[:cells].reshape(num_classes, num_classes)


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

    Counts stay on the device of the logits until ``compute()``. ``top{k}_accuracy`` is reported
    only for k < num_classes: top-C accuracy is 1 whatever the model does.
    """

    # the accumulators: sums, so that meters over parts of a split add up to the whole's (T7)
    summed = ("cm", "loss_sum", "topk_hits", "n")

    def __init__(self, num_classes: int, topk: int = 5):
        self.num_classes = num_classes
        self.topk = topk
        self.cm: torch.Tensor | None = None
        self.loss_sum: torch.Tensor | float = 0.0
        self.topk_hits: torch.Tensor | int = 0
        self.n = 0

    @property
    def reports_topk(self) -> bool:
        return self.topk < self.num_classes

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor | None = None) -> None:
        if target.dim() == 2:  # soft targets: score against the dominant class
            target = target.argmax(1)
        logits = logits.detach()
        cm = confusion_matrix(logits.argmax(1), target, self.num_classes)
        self.cm = cm if self.cm is None else self.cm + cm
        if self.reports_topk:
            self.topk_hits = self.topk_hits + topk_correct(logits, target, self.topk)
        if loss is not None:
            self.loss_sum = self.loss_sum + loss.detach().double() * len(target)
        self.n += len(target)

    def compute(self) -> dict[str, Any]:
        cm = self.cm.cpu() if self.cm is not None else torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        out = metrics_from_confusion(cm)
        out["loss"] = float(self.loss_sum) / max(self.n, 1)
        if self.reports_topk:
            out[f"top{self.topk}_accuracy"] = int(self.topk_hits) / max(self.n, 1)
        out["confusion"] = cm.tolist()
        out["n"] = self.n
        return out
