"""Losses by name (``loss.name``) and the L1 / coupled-L2 penalties (L1, L4).

A loss builder takes the recipe's ``loss`` section and the :class:`~trainlab.data.DataInfo` and
returns ``fn(outputs, targets) -> scalar``. Classification targets may be class indices (N,) or
soft targets (N, C) from MixUp/CutMix; cross-entropy handles both.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import LOSSES


@LOSSES.register("cross_entropy", help="softmax + cross-entropy, optional label smoothing, class weights and an "
                 "ignored target value; soft targets too; per pixel for (N, C, H, W) scores")
def cross_entropy(cfg, info):
    """Cross-entropy of class scores (N, C) or (N, C, H, W) against class indices (N) / (N, H, W)
    or soft targets of the scores' shape (L1, L3, L7). ``loss.class_weights`` weights each class's
    terms and the mean is over the weights of the counted targets, as torch defines it.
    ``loss.ignore_index`` marks class-index targets that add nothing (the unlabelled pixels of a
    segmentation mask; the segmentation task sets it to the data set's); a batch with no counted
    target has loss 0 rather than 0/0. Soft targets (MixUp, CutMix) have nothing to ignore."""
    smoothing = cfg.label_smoothing
    ignore = cfg.ignore_index
    weight = None if cfg.class_weights is None else torch.tensor(cfg.class_weights, dtype=torch.float32)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = None if weight is None else weight.to(logits.device)
        logits = logits.float()
        if ignore is None or target.is_floating_point():
            return F.cross_entropy(logits, target, weight=w, label_smoothing=smoothing)
        total = F.cross_entropy(logits, target, weight=w, ignore_index=ignore, label_smoothing=smoothing,
                                reduction="sum")
        counted = target != ignore
        denom = counted.sum() if w is None else w[target[counted]].sum()
        return total / denom.clamp(min=1)

    return loss


def penalized_parameters(model: nn.Module) -> list[torch.Tensor]:
    """Weights of conv and linear layers (:func:`trainlab.models.layers.weight_layers`): the
    parameters a weight penalty applies to. Biases, norms and embeddings are not penalized."""
    from .models.layers import weight_layers

    return [m.weight for m in weight_layers(model)]


def weight_penalty(params: list[torch.Tensor], l1: float, l2: float) -> torch.Tensor:
    """l1 · Σ|w| + (l2 / 2) · Σ w², so that the L2 gradient is l2 · w as in weight decay (L4)."""
    total = params[0].new_zeros(())
    for w in params:
        if l1:
            total = total + l1 * w.abs().sum()
        if l2:
            total = total + 0.5 * l2 * w.pow(2).sum()
    return total
