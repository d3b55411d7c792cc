"""DETR's set prediction loss (M9, L7, K2; notes S4 4.1): Hungarian matching, then class, L1 and GIoU.

A set detector predicts a fixed number Q of (class distribution over C classes + "no object",
box) pairs per image and learns with a loss that does not depend on the order of the queries:

1. **Matching** (:func:`match_queries`): per image, the cost of giving ground truth j to query i is
   ``w_class · (−p_i(c_j)) + w_l1 · ‖b_i − g_j‖₁ + w_giou · (−GIoU(b_i, g_j))`` (boxes as
   normalized (cx, cy, w, h) for the L1 term, as corners for GIoU); the one-to-one assignment of
   least total cost (:func:`hungarian`, ``scipy.optimize.linear_sum_assignment``) pairs each ground
   truth with one query. No gradient flows through the matching.
2. **Loss** (:func:`set_loss`) over the matched pairs: cross-entropy over all Q queries, the
   unmatched ones towards "no object" (the last class, index C) with weight ``eos_coef`` (0.1:
   most queries are empty, their term would swamp the rest), and, over the matched pairs, L1 on the
   normalized (cx, cy, w, h) and 1 − GIoU, each summed and divided by the batch's ground-truth
   count (at least 1). The returned terms are already weighted; their sum is the loss.

The one-to-one matching is why a set detector needs no NMS: only one query is rewarded for an
object, a second query on the same object is pushed to "no object", so the queries learn not to
duplicate each other.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .ssd import cxcywh_to_xyxy


@dataclass(frozen=True)
class SetLossWeights:
    """Weights of the matching costs and of the loss terms (DETR's: class 1, L1 5, GIoU 2)."""

    cls: float = 1.0
    l1: float = 5.0
    giou: float = 2.0
    eos_coef: float = 0.1


def box_area(boxes: Tensor) -> Tensor:
    """Areas (...,) of XYXY boxes (..., 4); a box with x1 < x0 or y1 < y0 has area 0."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise GIoU (N, M) of XYXY boxes ``a`` (N, 4) and ``b`` (M, 4), in [−1, 1].

    GIoU = IoU − |C \\ (A ∪ B)| / |C| with C the smallest box enclosing A and B (Rezatofighi et al.
    2019): unlike IoU it still ranks, and gives a gradient to, boxes that do not overlap.
    """
    area_a, area_b = box_area(a), box_area(b)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = inter / union.clamp(min=1e-12)
    hull = (torch.max(a[:, None, 2:], b[None, :, 2:]) - torch.min(a[:, None, :2], b[None, :, :2])).clamp(min=0).prod(-1)
    return iou - (hull - union) / hull.clamp(min=1e-12)


def hungarian(cost: Tensor) -> tuple[Tensor, Tensor]:
    """The assignment of least total cost in ``cost`` (N, M): (rows (K,), cols (K,)) int64, K = min(N, M).

    Each row and each column is used at most once; rows ascending. ``scipy.optimize.linear_sum_assignment``.
    """
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def match_queries(logits: Tensor, boxes: Tensor, targets: list[dict[str, Tensor]],
                  w: SetLossWeights) -> list[tuple[Tensor, Tensor]]:
    """Per image (query indices, target indices), the least-cost one-to-one matching.

    ``logits`` (N, Q, C + 1) with "no object" last, ``boxes`` (N, Q, 4) normalized (cx, cy, w, h);
    each target has ``boxes`` (K, 4) normalized (cx, cy, w, h) and ``labels`` (K,). The costs of the
    whole batch are computed at once and copied to the host once (one scipy call per image).
    """
    n, q = logits.shape[:2]
    sizes = [len(t["labels"]) for t in targets]
    if sum(sizes) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return [(empty, empty) for _ in targets]
    with torch.no_grad():
        prob = logits.flatten(0, 1).float().softmax(-1)  # (N Q, C + 1)
        out = boxes.flatten(0, 1).float()
        tgt_labels = torch.cat([t["labels"] for t in targets])
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).float()
        cost = (w.l1 * torch.cdist(out, tgt_boxes, p=1) - w.cls * prob[:, tgt_labels]
                - w.giou * generalized_box_iou(cxcywh_to_xyxy(out), cxcywh_to_xyxy(tgt_boxes)))
        cost = cost.view(n, q, -1).cpu()
    result = []
    for i, block in enumerate(cost.split(sizes, -1)):
        result.append(hungarian(block[i]))
    return result


def set_loss(logits: Tensor, boxes: Tensor, targets: list[dict[str, Tensor]], w: SetLossWeights,
             matches: list[tuple[Tensor, Tensor]] | None = None) -> dict[str, Tensor]:
    """The weighted terms {"class", "l1", "giou"} of one decoder layer's predictions.

    Shapes as :func:`match_queries` (which runs when ``matches`` is None). class: w_class · the
    cross-entropy averaged over all N·Q queries with class weights 1 and ``eos_coef`` for "no
    object" (PyTorch's weighted mean); l1 and giou: w · the sums over matched pairs of ‖b − g‖₁ and
    1 − GIoU, divided by the batch's ground-truth count (at least 1).
    """
    n, q, c1 = logits.shape
    if matches is None:
        matches = match_queries(logits, boxes, targets, w)
    device = logits.device
    classes = torch.full((n, q), c1 - 1, dtype=torch.long, device=device)
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(matches)]).to(device)
    src_idx = torch.cat([src for src, _ in matches]).to(device)
    classes[batch_idx, src_idx] = torch.cat([t["labels"][j.to(t["labels"].device)]
                                             for t, (_, j) in zip(targets, matches)]).to(device)
    weight = torch.ones(c1, device=device, dtype=logits.dtype)
    weight[-1] = w.eos_coef
    loss_class = F.cross_entropy(logits.flatten(0, 1).float(), classes.flatten(), weight.float())
    count = max(sum(len(t["labels"]) for t in targets), 1)
    pred = boxes[batch_idx, src_idx].float()
    gt = torch.cat([t["boxes"][j.to(t["boxes"].device)] for t, (_, j) in zip(targets, matches)]).float().to(device)
    loss_l1 = F.l1_loss(pred, gt, reduction="sum") / count
    loss_giou = (1 - torch.diag(generalized_box_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(gt)))).sum() / count
    return {"class": w.cls * loss_class, "l1": w.l1 * loss_l1, "giou": w.giou * loss_giou}
