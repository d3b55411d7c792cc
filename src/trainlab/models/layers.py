"""Activation and normalization layers chosen by name (M4, M5)."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import unknown_name

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "prelu": lambda: nn.PReLU(),
    "elu": lambda: nn.ELU(inplace=True),
    "gelu": lambda: nn.GELU(),
    "silu": lambda: nn.SiLU(inplace=True),
    "sigmoid": lambda: nn.Sigmoid(),
    "tanh": lambda: nn.Tanh(),
    "identity": lambda: nn.Identity(),
}


def make_activation(name: str, field: str = "model.activation") -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise unknown_name("activation", name, ACTIVATIONS, field) from None


def make_norm(kind: str, channels: int, dims: int = 2) -> nn.Module:
    """A normalization layer for ``channels`` features of a ``dims``-d feature map (0 = vectors).

    ``layer`` normalizes over all of a sample's features (LayerNorm; GroupNorm with one group on
    feature maps, which is the same computation), ``group`` over groups of up to 32 channels.
    """
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm1d(channels) if dims == 0 else nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.LayerNorm(channels) if dims == 0 else nn.GroupNorm(1, channels)
    if kind == "group":
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    raise unknown_name("norm", kind, ("batch", "layer", "group", "none"), "model.norm")
