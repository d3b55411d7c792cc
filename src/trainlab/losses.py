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


@LOSSES.register("cross_entropy", help="softmax + cross-entropy, optional label smoothing; soft targets too")
def cross_entropy(cfg, info):
    smoothing = cfg.label_smoothing

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, label_smoothing=smoothing)

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
