"""What every detector shares (K2, M9, E2): the forward contract and the post-processing.

A detection model registered with ``tasks=("detection",)`` is built as ``fn(cfg, info)`` with
``info.num_classes`` object classes (no background class: a detector that needs one adds it
itself) and ``info.extra["detection"]`` the post-processing settings of the recipe's ``eval``
section. Its forward is::

    forward(images, targets=None) -> {"losses": {name: scalar}, "detections": [...]}

``images`` (N, C, H, W) are the normalized inputs; ``targets`` is a list of N dicts with ``boxes``
(K, 4) float XYXY in input pixels (pixel-edge coordinates) and ``labels`` (K,) int64 in
[0, num_classes); K may be 0 (an image of background only). The detection task's collate hands
them over as plain tensors, clipped to the image, boxes without area dropped. ``losses`` (its sum
is the training loss) is present whenever targets are given and the model can compute them in its
current mode; ``detections`` (one dict per image: ``boxes`` (M, 4) XYXY pixels, ``scores`` (M,),
``labels`` (M,) int64) is present in eval mode. torchvision's detectors compute losses only in
training mode, so for them evaluation reports mAP without a validation loss (their registry entry
says ``eval_loss=False``). Without targets in training mode, yolo_v1 returns detections, ssd
``{}`` and torchvision's detectors raise: nothing trains without targets.

Each model keeps its paper's loss scale (YOLO: a sum over an image's cells, averaged over
images; SSD: sums divided by the matched default boxes; torchvision: means over sampled anchors
and proposals), so a learning rate does not carry over between them; the built-in recipes set
one per model. The post-processing settings are read when the model is built (from the run's
recipe for `trainlab evaluate` and `predict`); changing them means building the model again.

Post-processing (S1 Q30, S4 3.3) is shared: keep (box, class) pairs scoring above
``score_threshold``, clip to the image, drop empty boxes, class-aware NMS at ``nms_iou`` and the
``max_detections`` best. NMS is :func:`torchvision.ops.batched_nms` (the project's own
:func:`trainlab.evaluate.boxes.nms` is the tested teaching reference, 3-80x slower).
"""
from __future__ import annotations

from dataclasses import dataclass
import torch
from torch import Tensor


@dataclass(frozen=True)
class PostProcess:
    """Detection post-processing settings (the recipe's ``eval.score_threshold``, ``eval.nms_iou``,
    ``eval.max_detections``)."""

    score_threshold: float = 0.05
    nms_iou: float = 0.5
    max_detections: int = 100

    @classmethod
    def from_info(cls, info) -> PostProcess:
        """The settings the task put in ``info.extra["detection"]`` (defaults when absent)."""
        found = (getattr(info, "extra", None) or {}).get("detection") or {}
        return cls(**{k: found[k] for k in ("score_threshold", "nms_iou", "max_detections") if k in found})


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Boxes (..., 4) XYXY clipped to an image of ``size`` (H, W)."""
    h, w = size
    x = boxes[..., 0::2].clamp(0, w)
    y = boxes[..., 1::2].clamp(0, h)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)


def postprocess(boxes: Tensor, scores: Tensor, size: tuple[int, int], pp: PostProcess,
                labels: Tensor | None = None) -> dict[str, Tensor]:
    """One image's detections from its candidates.

    ``boxes`` (N, 4) XYXY pixels with ``scores`` (N, K) per-class scores in [0, 1] (each box is a
    candidate for every class; background excluded), or ``scores`` (N,) with ``labels`` (N,).
    Returns ``{"boxes": (M, 4), "scores": (M,), "labels": (M,)}``, best score first, M <=
    ``pp.max_detections``: pairs above the score threshold, clipped to ``size`` (H, W), non-empty,
    after class-aware NMS (torchvision.ops.batched_nms: boxes of different classes never suppress
    each other).
    """
    from torchvision.ops import batched_nms

    boxes, scores = boxes.float(), scores.float()
    if scores.dim() == 2:
        n, k = scores.shape
        labels = torch.arange(k, device=scores.device).expand(n, k).reshape(-1)
        boxes = boxes[:, None, :].expand(n, k, 4).reshape(-1, 4)
        scores = scores.reshape(-1)
    elif labels is None:
        raise ValueError("postprocess: scores (N,) need labels (N,)")
    keep = scores > pp.score_threshold
    boxes, scores, labels = clip_boxes(boxes[keep], size), scores[keep], labels[keep]
    wh = boxes[:, 2:] - boxes[:, :2]
    keep = (wh > 1e-3).all(1)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, pp.nms_iou)[: pp.max_detections]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep].long()}


def empty_detections(device: torch.device | str = "cpu") -> dict[str, Tensor]:
    return {"boxes": torch.zeros(0, 4, device=device), "scores": torch.zeros(0, device=device),
            "labels": torch.zeros(0, dtype=torch.long, device=device)}


