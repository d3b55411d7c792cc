"""Semantic-segmentation metrics (E4) from one accumulated confusion matrix.

Every metric is a function of the (C, C) pixel confusion matrix ``cm[true, predicted]`` summed over
a whole split, so batches can be added on the device without a sync and the result does not
depend on the batch size:

    pixel accuracy   Σ_c cm[c, c] / Σ cm                  (share of labelled pixels right)
    class accuracy   cm[c, c] / Σ_j cm[c, j]              (recall of class c); its mean over classes
    IoU of class c   cm[c, c] / (Σ_j cm[c, j] + Σ_i cm[i, c] − cm[c, c])   (TP / (TP + FN + FP))
    mIoU             mean IoU over the classes that occur in the labels or the predictions

A class absent from both the labels and the predictions has no IoU (0/0): it is reported as None
and left out of the mean, as pycocotools-style evaluators and torchmetrics do.
"""
from __future__ import annotations

import math
from typing import Any

import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = None) -> torch.Tensor:
    """(C, C) int64 counts of pixels by (true class, predicted class).

    ``pred`` and ``target``: integer class maps of the same shape, e.g. (N, H, W). Pixels whose
    target is ``ignore_index`` (or outside 0..C-1) are not counted.
    """
    t = target.reshape(-1).long()
    p = pred.reshape(-1).long()
    valid = (t >= 0) & (t < num_classes)
    if ignore_index is not None:
        valid &= t != ignore_index
    idx = t[valid] * num_classes + p[valid]
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(cm: torch.Tensor) -> torch.Tensor:
    """(C,) float64 IoU of each class from a confusion matrix; NaN where the class is in neither
    the labels nor the predictions."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(1) + cm.sum(0) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))


def segmentation_metrics(cm: torch.Tensor) -> dict[str, Any]:
    """Pixel accuracy, mean class accuracy, mIoU and the per-class IoU / accuracy of a confusion
    matrix ``cm`` (C, C) (see the module docstring). Per-class values are None where undefined."""
    cm = cm.double().cpu()
    total = float(cm.sum())
    tp = cm.diag()
    support = cm.sum(1)
    iou = iou_per_class(cm)
    acc = torch.where(support > 0, tp / support.clamp(min=1), torch.full_like(tp, math.nan))

    def mean(v: torch.Tensor) -> float:
        ok = ~torch.isnan(v)
        return float(v[ok].mean()) if bool(ok.any()) else 0.0

    def listed(v: torch.Tensor) -> list[float | None]:
        return [None if math.isnan(x) else x for x in v.tolist()]

    return {
        "pixel_accuracy": float(tp.sum()) / total if total else 0.0,
        "mean_accuracy": mean(acc),
        "miou": mean(iou),
        "per_class": {"iou": listed(iou), "accuracy": listed(acc), "pixels": [int(x) for x in support.tolist()]},
        "confusion": [[int(x) for x in row] for row in cm.tolist()],
    }
