"""The 2-D sine positional encoding of DETR's transformer (M9; notes S4 4.1).

Attention is blind to where a token sits, so each feature-map cell gets a fixed code of its row and
column added to its queries and keys: half of the channels encode y, half x, each as sines and
cosines of the (normalized) position at geometrically spaced frequencies, as in "Attention is all
you need" extended to two axes. The positions are normalized to (0, 2π], so the same code spans a
map of any size.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def sine_encoding(height: int, width: int, dim: int, temperature: float = 10000.0,
                  device: torch.device | str | None = None) -> Tensor:
    """The code (dim, height, width) of every cell of a height x width map; ``dim`` divisible by 4.

    Channels [0, dim/2) encode y, [dim/2, dim) x; within each half, pairs (sin, cos) of
    pos · 2π / extent / T^(2k/(dim/2)), pos the 1-based row (column) index.
    """
    if dim % 4:
        raise ValueError(f"sine_encoding: dim must be divisible by 4, got {dim}")
    half = dim // 2
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device) / height * 2 * math.pi
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device) / width * 2 * math.pi
    freq = temperature ** (2 * (torch.arange(half, device=device) // 2).float() / half)

    def code(pos: Tensor) -> Tensor:  # (L,) -> (L, half): sin on even channels, cos on odd ones
        angle = pos[:, None] / freq
        return torch.stack([angle[:, 0::2].sin(), angle[:, 1::2].cos()], -1).flatten(1)

    cy, cx = code(y), code(x)  # (H, half), (W, half)
    out = torch.cat([cy[:, None, :].expand(height, width, half), cx[None, :, :].expand(height, width, half)], -1)
    return out.permute(2, 0, 1).contiguous()
