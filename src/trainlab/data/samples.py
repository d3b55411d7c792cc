"""The sample format, and batching of samples that carry boxes and masks (D10).

A classification data set yields ``(image, label)`` with ``label`` a 0-dim int64 tensor. A data set
that knows where its objects are (shapes, coco, segmentation) yields ``(image, target)`` with
``target`` a dict:

    label      0-dim int64: the image's class (its dominant object); classification trains on it
    boxes      tv_tensors.BoundingBoxes (K, 4), XYXY in pixel-edge coordinates: pixel j spans
               [j, j + 1), so a box is exactly the extent of its mask and flips map it exactly
    labels     (K,) int64: the class of each box
    masks      tv_tensors.Mask (K, H, W) uint8: one instance mask per box
    semantic   tv_tensors.Mask (H, W) uint8: ids into ``info.extra["semantic_classes"]``

Boxes and masks are torchvision tv_tensors, so every geometric transform moves them with the image.
:func:`collate` turns a list of such samples into ``{"input", "target", "annotations", "semantic"}``:
``target`` stays the (N,) class labels the classification task reads; ``annotations`` is the list
of per-image ``{"boxes", "labels", "masks"}`` dicts that torchvision's detection models take.
"""
from __future__ import annotations

from typing import Any

import torch

ANNOTATION_KEYS = ("boxes", "labels", "masks")


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """(K, 4) float XYXY pixel-edge boxes enclosing each (K, H, W) mask; an empty mask gives zeros."""
    k = masks.shape[0]
    if k == 0:
        return torch.zeros(0, 4)
    rows = masks.any(dim=2)  # (K, H)
    cols = masks.any(dim=1)  # (K, W)
    h, w = rows.shape[1], cols.shape[1]
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    big = max(h, w) + 1
    y0 = torch.where(rows, ar_h, big).amin(1)
    y1 = torch.where(rows, ar_h + 1, 0).amax(1)
    x0 = torch.where(cols, ar_w, big).amin(1)
    x1 = torch.where(cols, ar_w + 1, 0).amax(1)
    out = torch.stack([x0, y0, x1, y1], 1).float()
    empty = ~rows.any(1)
    out[empty] = 0.0
    return out


def make_target(
    label: int,
    boxes: torch.Tensor | None,
    labels: torch.Tensor | None,
    size: tuple[int, int],
    masks: torch.Tensor | None = None,
    semantic: torch.Tensor | None = None,
) -> dict[str, Any]:
    """A target dict with tv_tensors; ``size`` is the image (H, W)."""
    from torchvision import tv_tensors

    target: dict[str, Any] = {"label": torch.tensor(int(label), dtype=torch.long)}
    if boxes is not None:
        target["boxes"] = tv_tensors.BoundingBoxes(
            boxes.float().reshape(-1, 4), format="XYXY", canvas_size=tuple(size)
        )
        target["labels"] = labels.long().reshape(-1)
    if masks is not None:
        target["masks"] = tv_tensors.Mask(masks.to(torch.uint8))
    if semantic is not None:
        target["semantic"] = tv_tensors.Mask(semantic.to(torch.uint8))
    return target


def resize_sample(image: torch.Tensor, target: dict[str, Any], size) -> tuple[torch.Tensor, dict[str, Any]]:
    """An image (C, H, W) and its target resized to ``size`` (H, W): boxes scale, masks use nearest."""
    from torchvision.transforms.v2 import functional as F

    size = [int(size[0]), int(size[1])]
    image = F.resize(image, size, antialias=True)
    out = dict(target)
    for key in ("boxes", "masks", "semantic"):
        if key in target:
            out[key] = F.resize(target[key], size)
    return image, out


def drop_small_boxes(target: dict[str, Any], min_size: float = 1.0) -> dict[str, Any]:
    """Remove boxes narrower or lower than ``min_size`` pixels, with their labels and masks."""
    boxes = target.get("boxes")
    if boxes is None or boxes.shape[0] == 0:
        return target
    wh = boxes[:, 2:] - boxes[:, :2]
    keep = (wh >= min_size).all(1)
    if bool(keep.all()):
        return target
    from torchvision import tv_tensors

    out = dict(target)
    out["boxes"] = tv_tensors.wrap(boxes[keep], like=boxes)
    out["labels"] = target["labels"][keep]
    if "masks" in target:
        out["masks"] = tv_tensors.wrap(target["masks"][keep], like=target["masks"])
    return out


def dominant_class(labels: torch.Tensor, areas: torch.Tensor, fallback: int = 0) -> int:
    """The class covering the largest total area (ties: the lower class id)."""
    if labels.numel() == 0:
        return fallback
    num = int(labels.max()) + 1
    totals = torch.zeros(num, dtype=torch.float64).index_add_(0, labels.long(), areas.double())
    return int(totals.argmax())


def pad_stack(tensors: list[torch.Tensor], fill: float) -> torch.Tensor:
    """Stack tensors (..., H, W) of possibly different sizes into (N, ..., H_max, W_max), each
    placed at the top left and the rest filled with ``fill`` (a plain stack when sizes agree)."""
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) == 1:
        return torch.stack(tensors)
    lead = {t.shape[:-2] for t in tensors}
    if len(lead) != 1:
        raise ValueError(f"cannot batch tensors whose leading dims differ: {sorted(tuple(x) for x in lead)}")
    h = max(t.shape[-2] for t in tensors)
    w = max(t.shape[-1] for t in tensors)
    out = tensors[0].new_full((len(tensors), *tensors[0].shape[:-2], h, w), fill)
    for i, t in enumerate(tensors):
        out[i, ..., : t.shape[-2], : t.shape[-1]] = t
    return out


def collate(samples: list[tuple[torch.Tensor, Any]]) -> dict[str, Any]:
    """Stack samples into a batch dict (see the module docstring)."""
    xs, ys = zip(*samples)
    batch: dict[str, Any] = {"input": torch.stack([x.as_subclass(torch.Tensor) for x in xs])}
    if isinstance(ys[0], dict):
        batch["target"] = torch.stack([y["label"] for y in ys])
        if any(k in ys[0] for k in ANNOTATION_KEYS):
            batch["annotations"] = [{k: y[k] for k in ANNOTATION_KEYS if k in y} for y in ys]
        if "semantic" in ys[0]:
            batch["semantic"] = torch.stack([y["semantic"].as_subclass(torch.Tensor) for y in ys])
        return batch
    batch["target"] = torch.stack(ys) if isinstance(ys[0], torch.Tensor) else torch.as_tensor(ys)
    return batch
