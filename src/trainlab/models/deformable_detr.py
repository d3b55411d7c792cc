"""Deformable DETR (Zhu et al. 2021; M9, L7, K2; notes S4 4.2): DETR with deformable attention.

DETR converges slowly (hundreds of epochs on COCO) because each query's attention starts spread
over every cell and must learn where to look, and it sees one coarse map because full attention is
quadratic in the cells. Deformable DETR replaces the encoder's self-attention and the decoder's
cross-attention with multi-scale deformable attention (:mod:`trainlab.models.deformable_attention`):
each query samples a few points around a *reference point* on every level, so the encoder reads
``levels`` maps of the backbone at once and attention is local from the start.

- **Encoder**: the backbone's deepest ``levels`` maps, each projected to ``hidden`` channels by a
  1x1 conv + GroupNorm, flattened and concatenated (finest first). A cell's positional code is the
  sine code of its map plus a learned embedding of its level; its reference point is its own
  centre, the same normalized point on every level.
- **Decoder**: each object query is a learned (positional embedding, content) pair; a linear layer
  + sigmoid turns the positional part into the query's reference point. Self-attention between
  the queries is full attention (there are few), cross-attention to the encoder is deformable.
- **Heads**: the heads of :class:`trainlab.models.detr.SetDetector`; the box's centre is predicted
  relative to the reference point (σ(σ⁻¹(ref) + Δ)), so a query starts where it looks.

Loss, auxiliary losses and post-processing are DETR's (:mod:`trainlab.models.detr`). What stays
out: *iterative box refinement* (each decoder layer refining the previous layer's boxes and using
them as reference points) and the *two-stage* variant (queries proposed by the encoder); and the
paper's sigmoid focal loss for classes: the class term here is DETR's softmax cross-entropy with
a down-weighted "no object", so both models share one set loss.
"""
from __future__ import annotations

from pydantic import Field
import torch
from torch import Tensor, nn

from ..registry import MODELS
from .backbone import build_backbone
from .deformable_attention import MSDeformableAttention
from .detector import PostProcess
from .detr import FeedForward, SetDetector, SetDetectorOptions, check_options
from .options import parse_options
from .positional import sine_encoding


class DeformableDETROptions(SetDetectorOptions):
    """deformable_detr: several maps of the backbone, deformable attention."""

    levels: int = Field(3, ge=1, le=5, description="deepest feature maps of the backbone the encoder reads "
                        "(the paper: 4, the last one an extra stride-2 conv)")
    points: int = Field(4, ge=1, le=16, description="sampling points per head and level (the paper: 4)")


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """log(x / (1 − x)) with x clamped to [eps, 1 − eps] (a reference point on the border stays finite)."""
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


def cell_centres(shapes: list[tuple[int, int]], device=None) -> Tensor:
    """Normalized (x, y) (S, 2) of the centres of every cell of the levels ``shapes``, row-major, finest first."""
    out = []
    for h, w in shapes:
        y, x = torch.meshgrid((torch.arange(h, device=device) + 0.5) / h, (torch.arange(w, device=device) + 0.5) / w,
                              indexing="ij")
        out.append(torch.stack([x, y], -1).reshape(-1, 2))
    return torch.cat(out)


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention over all levels' cells, then the FFN: (N, S, C) -> (N, S, C)."""

    def __init__(self, dim: int, heads: int, levels: int, points: int, ffn: int, dropout: float):
        super().__init__()
        self.attn = MSDeformableAttention(dim, heads, levels, points)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.ffn = FeedForward(dim, ffn, dropout)

    def forward(self, x: Tensor, pos: Tensor, reference: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        x = self.norm(x + self.drop(self.attn(x + pos, reference, x, shapes)))
        return self.ffn(x)


class DeformableDecoderLayer(nn.Module):
    """Queries' self-attention, deformable cross-attention to the memory, FFN: (N, Q, C) -> (N, Q, C)."""

    def __init__(self, dim: int, heads: int, levels: int, points: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = MSDeformableAttention(dim, heads, levels, points)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.ffn = FeedForward(dim, ffn, dropout)

    def forward(self, tgt: Tensor, query_pos: Tensor, reference: Tensor, memory: Tensor,
                shapes: list[tuple[int, int]]) -> Tensor:
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.drop(self.self_attn(q, q, tgt, need_weights=False)[0]))
        tgt = self.norm2(tgt + self.drop(self.cross_attn(tgt + query_pos, reference, memory, shapes)))
        return self.ffn(tgt)


def _groups(channels: int) -> int:
    """GroupNorm groups of about 4 channels each (at most 32), dividing ``channels``."""
    g = min(32, max(1, channels // 4))
    while channels % g:
        g -= 1
    return g


class DeformableDETR(SetDetector):
    """Backbone's ``levels`` maps → projections → deformable encoder → decoder with reference points → heads."""

    def __init__(self, backbone: nn.Module, num_classes: int, opts: DeformableDETROptions, post: PostProcess):
        super().__init__(num_classes, opts, post)
        d, levels = opts.hidden, len(backbone.out_channels)
        self.backbone = backbone
        self.project = nn.ModuleList(nn.Sequential(nn.Conv2d(c, d, 1), nn.GroupNorm(_groups(d), d))
                                     for c in backbone.out_channels)
        self.level_embed = nn.Parameter(torch.randn(levels, d) * 0.02)
        self.encoder = nn.ModuleList(DeformableEncoderLayer(d, opts.heads, levels, opts.points, opts.ffn, opts.dropout)
                                     for _ in range(opts.encoder_layers))
        self.decoder = nn.ModuleList(DeformableDecoderLayer(d, opts.heads, levels, opts.points, opts.ffn, opts.dropout)
                                     for _ in range(opts.decoder_layers))
        self.query = nn.Embedding(opts.num_queries, 2 * d)  # (positional embedding, content) per query
        self.reference = nn.Linear(d, 2)

    def decode(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        maps = [p(f) for p, f in zip(self.project, self.backbone(images).values())]
        n, d = maps[0].shape[:2]
        shapes = [tuple(m.shape[-2:]) for m in maps]
        memory = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)  # (N, S, d)
        pos = torch.cat([sine_encoding(h, w, d, device=memory.device).flatten(1).t() + self.level_embed[lvl]
                         for lvl, (h, w) in enumerate(shapes)])[None].to(memory.dtype)  # (1, S, d)
        centres = cell_centres(shapes, memory.device)[None].expand(n, -1, -1).to(memory.dtype)
        for layer in self.encoder:
            memory = layer(memory, pos, centres, shapes)
        query_pos, tgt = self.query.weight[None].expand(n, -1, -1).split(d, -1)
        reference = self.reference(query_pos).sigmoid()  # (N, Q, 2) normalized (x, y)
        out = []
        for layer in self.decoder:
            tgt = layer(tgt, query_pos, reference, memory, shapes)
            delta = self.box_head(tgt)
            boxes = torch.cat([delta[..., :2] + inverse_sigmoid(reference), delta[..., 2:]], -1).sigmoid()
            out.append((self.class_head(tgt), boxes))
        return out


@MODELS.register("deformable_detr", help="Deformable DETR: DETR whose encoder and cross-attention sample a few "
                 "points per head and level around reference points (multi-scale deformable attention); "
                 "no box refinement, no two-stage", options=DeformableDETROptions,
                 uses=("width", "depth", "activation", "norm"), default_input=(3, 64, 64), default_classes=4,
                 tasks=("detection",))
def deformable_detr(cfg, info) -> nn.Module:
    opts = parse_options(cfg.options, DeformableDETROptions, cfg.name)
    check_options(opts, info, cfg.name)
    body = build_backbone(cfg, info, opts.backbone, opts.backbone_options, opts.backbone_weights, opts.levels)
    return DeformableDETR(body, info.num_classes, opts, PostProcess.from_info(info))
