"""Pruning (T8): zero the weights that matter least, through ``torch.nn.utils.prune``.

Unstructured pruning ranks every conv and linear weight of the network together by magnitude
(global L1) and zeroes the smallest ``amount``: the network keeps its shapes, so it runs as before
(a sparse kernel would be needed to make it faster). Structured pruning removes whole output
channels of each conv and linear layer (the ``amount`` with the smallest L2 norm), except the
last layer, whose outputs are the classes: a channel gone is a channel a smaller dense layer
would not compute.

The masks are made permanent (``prune.remove``): the result is a plain model whose state dict
loads anywhere; fine-tuning keeps the zeros with :class:`KeepZeros`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from ..errors import RecipeError
from .layers import weight_layers


def check_amount(amount: float) -> float:
    """``amount`` must be a fraction strictly between 0 and 1 (RecipeError naming it)."""
    if not isinstance(amount, (int, float)) or not 0.0 < float(amount) < 1.0:
        raise RecipeError(f"--amount: expected a fraction of the weights strictly between 0 and 1, got {amount}")
    return float(amount)


def prune_model(model: nn.Module, amount: float, structured: bool = False) -> None:
    """Zero ``amount`` of ``model``'s conv and linear weights in place (see the module docstring)."""
    check_amount(amount)
    layers = [m for m in weight_layers(model) if getattr(m, "weight", None) is not None]
    if not layers:
        raise RecipeError("prune: the model has no conv or linear layers to prune")
    if structured:
        for m in layers[:-1]:  # the last layer's outputs are the classes
            prune.ln_structured(m, "weight", amount=amount, n=2, dim=0)
        pruned = layers[:-1]
    else:
        prune.global_unstructured([(m, "weight") for m in layers], pruning_method=prune.L1Unstructured,
                                  amount=amount)
        pruned = layers
    for m in pruned:
        prune.remove(m, "weight")


@dataclass
class LayerSparsity:
    name: str
    params: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / max(self.params, 1)


def sparsity(model: nn.Module) -> list[LayerSparsity]:
    """Zeroed weights per conv and linear layer, in module order."""
    types = tuple({type(m) for m in weight_layers(model)})
    return [LayerSparsity(name, m.weight.numel(), int((m.weight == 0).sum()))
            for name, m in model.named_modules() if isinstance(m, types) and getattr(m, "weight", None) is not None]


class KeepZeros:
    """The zero pattern of a pruned model's weights, put back after each optimizer step so that
    fine-tuning cannot regrow them (momentum and weight decay would)."""

    def __init__(self, model: nn.Module):
        self.pairs = [(m.weight, (m.weight != 0).to(m.weight.dtype)) for m in weight_layers(model)
                      if getattr(m, "weight", None) is not None and bool((m.weight == 0).any())]

    @torch.no_grad()
    def apply(self) -> None:
        for w, mask in self.pairs:
            w.mul_(mask.to(w.device))
