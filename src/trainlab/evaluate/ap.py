"""Precision–recall curves and average precision (E3), as pure tensor functions.

The notes (S4 3.4) compute AP for one class like this: run the detector on every test image,
take its detections from the highest score down, mark each one a true positive if it matches a
still-unmatched ground-truth box (IoU > 0.5) and a false positive otherwise, trace precision
against recall, and take the area under that curve. mAP is the mean of AP over classes; COCO's
mAP also averages over IoU thresholds 0.50, 0.55, ..., 0.95.

Two ways to take "the area under the curve" are in use, and both first replace precision by its
*interpolated* value, the best precision at this recall or any higher one (so the curve never rises):

- COCO (101-point): the mean of the interpolated precision at recall 0, 0.01, ..., 1.00
  (0 at recall levels the detector never reaches).
- VOC 2010+ (all-point): the exact area under the interpolated step curve.

All functions work on 1-D tensors in score order and compute in float64.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# numpy's linspace, as COCO uses: torch.linspace rounds some of the 101 values differently, and a
# recall that lands exactly on a level (29/100, say) must compare the same way
COCO_RECALL_THRESHOLDS = torch.from_numpy(np.linspace(0.0, 1.0, 101))


def precision_recall(
    scores: Tensor, is_tp: Tensor, num_gt: int, ignore: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Precision and recall after each detection, best score first.

    Args:
        scores: ``(N,)`` detection scores.
        is_tp: ``(N,)`` bool, True where the detection matched a ground truth.
        num_gt: number of ground-truth objects (those that count; > 0).
        ignore: optional ``(N,)`` bool; ignored detections (matched to a crowd region, say) are
            dropped before the curve is traced.

    Returns:
        ``(precision (K,), recall (K,), scores (K,))`` for the K kept detections, sorted by score
        descending (ties keep input order).
    """
    if num_gt <= 0:
        raise ValueError(f"num_gt must be positive, got {num_gt}")
    keep = ~ignore if ignore is not None else torch.ones_like(is_tp, dtype=torch.bool)
    s, tp = scores[keep].to(torch.float64), is_tp[keep].to(torch.bool)
    order = torch.argsort(s, descending=True, stable=True)
    tp = tp[order]
    tps = torch.cumsum(tp, 0).to(torch.float64)
    fps = torch.cumsum(~tp, 0).to(torch.float64)
    # the epsilon only matters for an empty prefix; it is the one pycocotools adds
    precision = tps / (fps + tps + torch.finfo(torch.float64).eps)
    return precision, tps / num_gt, s[order]


def interpolated_precision(precision: Tensor) -> Tensor:
    """``(K,) -> (K,)``: the best precision at this point or any later one (higher recall)."""
    return torch.flip(torch.cummax(torch.flip(precision, [0]), 0).values, [0])


def ap_101(precision: Tensor, recall: Tensor, recall_thresholds: Tensor | None = None) -> Tensor:
    """COCO's AP: mean interpolated precision at recall 0, 0.01, ..., 1 (a 0-dim float64 tensor).

    ``precision`` and ``recall`` are the curve of :func:`precision_recall`; at each recall level
    the precision used is that of the first detection reaching it, interpolated.
    """
    r = COCO_RECALL_THRESHOLDS if recall_thresholds is None else recall_thresholds.to(torch.float64)
    return sampled_precision(precision, recall, r).mean()


def sampled_precision(precision: Tensor, recall: Tensor, recall_thresholds: Tensor) -> Tensor:
    """Interpolated precision at each recall threshold ``(R,)``; 0 where recall never gets there."""
    r = recall_thresholds.to(torch.float64)
    env = interpolated_precision(precision.to(torch.float64))
    idx = torch.searchsorted(recall.to(torch.float64), r, side="left")
    reached = idx < env.numel()
    out = torch.zeros_like(r)
    out[reached] = env[idx[reached]]
    return out


def ap_all_points(precision: Tensor, recall: Tensor) -> Tensor:
    """VOC 2010+ AP: area under the interpolated curve, summed at every recall change (0-dim)."""
    if precision.numel() == 0:
        return torch.zeros((), dtype=torch.float64)
    env = interpolated_precision(precision.to(torch.float64))
    rec = recall.to(torch.float64)
    step = torch.diff(rec, prepend=rec.new_zeros(1))
    return (step * env).sum()


def average_precision(
    scores: Tensor, is_tp: Tensor, num_gt: int, method: str = "coco", ignore: Tensor | None = None
) -> Tensor:
    """AP of one class from scored, matched detections: ``method`` is "coco" (101-point) or "voc"."""
    precision, recall, _ = precision_recall(scores, is_tp, num_gt, ignore)
    if method == "coco":
        return ap_101(precision, recall)
    if method == "voc":
        return ap_all_points(precision, recall)
    raise ValueError(f"unknown AP method {method!r}; known: coco, voc")
