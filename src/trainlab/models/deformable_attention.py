"""Multi-scale deformable attention (Zhu et al. 2021, Deformable DETR; M9; notes S4 4.2).

Full attention lets every query look at every cell of every feature map: quadratic in the cells,
and slow to learn because the attention starts out spread over the whole image. Deformable
attention lets each query look at a few points only: per head m, level l and point k, the query
predicts a sampling offset Δp_mlk from its reference point p (a normalized (x, y) in [0, 1]) and an
attention weight A_mlk (softmax over the L·K points of the head); the output is

    Σ_m W_m [ Σ_l Σ_k A_mlk · V_ml(p + Δp_mlk) ]

with V_ml(·) the head's projected values on level l, sampled bilinearly (``grid_sample``; points
outside the map read zeros). Cost is linear in the number of queries and independent of the map
sizes, so the encoder can attend over several resolutions at once.

:func:`deformable_attention` is the sampling-and-weighting core (pure, no parameters);
:class:`MSDeformableAttention` adds the projections that predict offsets and weights from the
query. The tests check the core against a direct loop over points (forward and gradients).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def deformable_attention(value: Tensor, shapes: list[tuple[int, int]], locations: Tensor, weights: Tensor) -> Tensor:
    """Attention-weighted bilinear samples of multi-level values.

    ``value`` (N, S, M, D): M heads of D channels for the S = Σ_l H_l W_l cells of the levels
    ``shapes`` [(H_l, W_l)], each level row-major, finest first; ``locations`` (N, Lq, M, L, K, 2):
    normalized (x, y) in [0, 1] of K points per head and level (0 and 1 are the map's outer pixel
    edges, so pixel centres sit at (j + ½)/W); ``weights`` (N, Lq, M, L, K). Returns (N, Lq, M·D).
    """
    n, _, m, d = value.shape
    _, lq, _, levels, k, _ = locations.shape
    per_level = value.split([h * w for h, w in shapes], 1)
    grids = 2 * locations - 1  # grid_sample's [-1, 1], align_corners=False: -1 and 1 are the outer edges
    samples = []
    for lvl, (h, w) in enumerate(shapes):
        v = per_level[lvl].permute(0, 2, 3, 1).reshape(n * m, d, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(n * m, lq, k, 2)
        # (N M, D, Lq, K); a point outside the map reads zeros, so offsets cannot pull in border copies
        samples.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    sampled = torch.stack(samples, -2).flatten(-2)  # (N M, D, Lq, L K)
    attn = weights.transpose(1, 2).reshape(n * m, 1, lq, levels * k)
    out = (sampled * attn).sum(-1)  # (N M, D, Lq)
    return out.view(n, m * d, lq).transpose(1, 2)


class MSDeformableAttention(nn.Module):
    """Deformable attention of ``heads`` heads over ``levels`` maps with ``points`` points each.

    forward(query (N, Lq, C), reference (N, Lq, 2) normalized (x, y), value (N, S, C),
    shapes [(H_l, W_l)]) -> (N, Lq, C). Offsets are in units of each level's cells (Δp / (W_l, H_l)),
    so a point at offset 1 moves one cell whatever the level.
    """

    def __init__(self, dim: int, heads: int, levels: int, points: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"MSDeformableAttention: dim {dim} not divisible by heads {heads}")
        self.heads, self.levels, self.points = heads, levels, points
        self.offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention = nn.Linear(dim, heads * levels * points)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The paper's start: zero weights, so each head's points begin at fixed offsets spread in
        # its own direction (head m at angle 2πm/M, point k at k + 1 cells), the attention uniform.
        nn.init.zeros_(self.offsets.weight)
        angle = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        direction = torch.stack([angle.cos(), angle.sin()], -1)
        direction = direction / direction.abs().max(-1, keepdim=True).values
        bias = direction[:, None, None, :] * torch.arange(1, self.points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.offsets.bias.copy_(bias.expand(self.heads, self.levels, self.points, 2).flatten())
        nn.init.zeros_(self.attention.weight)
        nn.init.zeros_(self.attention.bias)
        nn.init.xavier_uniform_(self.value.weight)
        nn.init.zeros_(self.value.bias)
        nn.init.xavier_uniform_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, query: Tensor, reference: Tensor, value: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        n, lq, c = query.shape
        m, levels, k = self.heads, self.levels, self.points
        v = self.value(value).view(n, value.shape[1], m, c // m)
        offsets = self.offsets(query).view(n, lq, m, levels, k, 2)
        weights = self.attention(query).view(n, lq, m, levels * k).softmax(-1).view(n, lq, m, levels, k)
        norm = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)  # (L, 2) as (x, y)
        locations = reference[:, :, None, None, None, :] + offsets / norm[None, None, None, :, None, :]
        return self.out(deformable_attention(v, shapes, locations, weights))
