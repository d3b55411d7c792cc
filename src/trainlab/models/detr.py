"""DETR, detection as set prediction with a transformer (Carion et al. 2020; M9, L7, K2; notes S4 4.1).

A zoo CNN (:mod:`trainlab.models.backbone`) gives its deepest feature map; a 1x1 conv projects it to
``hidden`` channels and its h·w cells become the tokens of a transformer encoder, with the sine
code of their position (:mod:`trainlab.models.positional`) added to the queries and keys of every
attention. The decoder starts from ``num_queries`` empty slots with learned positional
embeddings (the *object queries*): self-attention between the slots lets them agree on who takes
which object, cross-attention to the encoded map gathers each slot's object. Each decoder layer's
output goes through the same heads: a linear class head over the C classes plus "no object" and a
3-layer MLP giving a normalized (cx, cy, w, h) box through a sigmoid.

Loss: the set loss of :mod:`trainlab.models.set_loss` (Hungarian matching on class, L1 and GIoU
costs; cross-entropy with a down-weighted "no object", L1, GIoU) on the last layer, named
``class``, ``l1``, ``giou``, plus the same loss on every earlier decoder layer (*auxiliary
losses*, each layer matched on its own), summed over those layers as ``aux_class``, ``aux_l1``,
``aux_giou``. All six are recorded (``train_loss_<term>``); their sum is the training loss.

Evaluation: each query is one candidate, scored by its highest class probability (the "no object"
column excluded) and labelled by that class, then the shared post-processing
(:func:`trainlab.models.detector.postprocess`). The model needs no NMS (the one-to-one matching
trains duplicates away, see :mod:`trainlab.models.set_loss`); the shared post-processing applies
its class-aware NMS anyway, which only drops a query overlapping a better one of the same class
by more than ``eval.nms_iou``, i.e. a duplicate.

The transformer is the paper's post-norm one (attention, add, LayerNorm; FFN, add, LayerNorm),
written here on ``nn.MultiheadAttention`` because PyTorch's encoder and decoder layers cannot add a
positional code to the queries and keys only. Images of one batch share a size (the detection
task stacks them), so no padding mask is needed.
"""
from __future__ import annotations

from pydantic import Field
import torch
from torch import Tensor, nn

from ..errors import RecipeError
from ..registry import MODELS
from .backbone import build_backbone
from .detector import PostProcess, postprocess
from .options import Options, parse_options
from .positional import sine_encoding
from .set_loss import SetLossWeights, set_loss
from .ssd import cxcywh_to_xyxy, xyxy_to_cxcywh


class SetDetectorOptions(Options):
    """Options shared by detr and deformable_detr."""

    backbone: str = Field("cnn", description="zoo CNN whose feature maps the transformer reads (cnn, resnet18, "
                          "mobilenet_v2, ...; built with model.width/depth/activation/norm)")
    backbone_options: dict = Field(default_factory=dict, description="model.options of the backbone")
    backbone_weights: str | None = Field(None, description="local classification weights for the backbone (I4)")
    hidden: int = Field(128, ge=8, le=1024, description="transformer width (the paper: 256); divisible by 4 "
                        "and by heads")
    heads: int = Field(4, ge=1, le=32, description="attention heads (the paper: 8)")
    encoder_layers: int = Field(2, ge=0, le=12, description="transformer encoder layers (the paper: 6)")
    decoder_layers: int = Field(2, ge=1, le=12, description="transformer decoder layers (the paper: 6); each one's "
                                "output is trained with the set loss (auxiliary losses)")
    ffn: int = Field(256, ge=8, description="width of the feed-forward layers (the paper: 2048)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout in the transformer (the paper: 0.1)")
    num_queries: int = Field(16, ge=1, le=1000, description="object queries: the most objects one image can have "
                             "(the paper: 100)")
    class_weight: float = Field(1.0, ge=0.0, description="weight of the class cost and loss")
    l1_weight: float = Field(5.0, ge=0.0, description="weight of the L1 box cost and loss (normalized cx, cy, w, h)")
    giou_weight: float = Field(2.0, ge=0.0, description="weight of the GIoU cost and loss")
    eos_coef: float = Field(0.1, gt=0.0, le=1.0, description="cross-entropy weight of the \"no object\" class "
                            "(most queries are empty: at 1 they would teach the queries to say nothing)")
    aux_loss: bool = Field(True, description="train every decoder layer's output with the set loss (aux_* terms)")

    def weights(self) -> SetLossWeights:
        return SetLossWeights(self.class_weight, self.l1_weight, self.giou_weight, self.eos_coef)


class DETROptions(SetDetectorOptions):
    """detr: the deepest feature map of the backbone, full attention."""


def check_options(opts: SetDetectorOptions, info, name: str) -> None:
    """The checks pydantic fields cannot make alone; one-line RecipeErrors."""
    if len(info.input_shape) != 3:
        raise RecipeError(f"model.name: {name} takes images (C, H, W), the data gives {list(info.input_shape)}")
    if opts.hidden % opts.heads:
        raise RecipeError(f"model.options.hidden: {opts.hidden} is not divisible by heads ({opts.heads}) for {name}")
    if opts.hidden % 4:
        raise RecipeError(f"model.options.hidden: {opts.hidden} is not divisible by 4 (the sine code's x and y "
                          f"halves of sines and cosines) for {name}")


class MLP(nn.Module):
    """``layers`` linear layers with ReLU between: (..., in) -> (..., out)."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int, layers: int):
        super().__init__()
        dims = [dim_in] + [hidden] * (layers - 1) + [dim_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class FeedForward(nn.Module):
    """x + FFN(x) then LayerNorm (post-norm): (N, L, C) -> (N, L, C)."""

    def __init__(self, dim: int, ffn: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, dim),
                                 nn.Dropout(dropout))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.net(x))


class EncoderLayer(nn.Module):
    """Self-attention with the positional code on queries and keys, then the FFN: (N, S, C) -> (N, S, C)."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.ffn = FeedForward(dim, ffn, dropout)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        q = x + pos
        x = self.norm(x + self.drop(self.attn(q, q, x, need_weights=False)[0]))
        return self.ffn(x)


class DecoderLayer(nn.Module):
    """Slots' self-attention, cross-attention to the memory, FFN: (N, Q, C) -> (N, Q, C)."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.ffn = FeedForward(dim, ffn, dropout)

    def forward(self, tgt: Tensor, query_pos: Tensor, memory: Tensor, pos: Tensor) -> Tensor:
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.drop(self.self_attn(q, q, tgt, need_weights=False)[0]))
        tgt = self.norm2(tgt + self.drop(self.cross_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0]))
        return self.ffn(tgt)


class SetDetector(nn.Module):
    """What DETR and Deformable DETR share: the heads, the set loss and the post-processing.

    A subclass implements ``decode(images) -> list of (logits (N, Q, C + 1), boxes (N, Q, 4)
    normalized (cx, cy, w, h))``, one pair per decoder layer, the last layer last.
    """

    def __init__(self, num_classes: int, opts: SetDetectorOptions, post: PostProcess):
        super().__init__()
        self.num_classes = num_classes
        self.opts = opts
        self.weights = opts.weights()
        self.post = post
        self.class_head = nn.Linear(opts.hidden, num_classes + 1)
        self.box_head = MLP(opts.hidden, opts.hidden, 4, 3)

    def decode(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        raise NotImplementedError

    def losses(self, layers: list[tuple[Tensor, Tensor]], targets: list[dict[str, Tensor]],
               size: tuple[int, int]) -> dict[str, Tensor]:
        h, w = size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=layers[-1][1].device)
        # the set loss works on normalized (cx, cy, w, h): DETR's cost and loss weights assume that scale
        norm = [{"boxes": xyxy_to_cxcywh(t["boxes"].as_subclass(Tensor).float().reshape(-1, 4).to(scale.device))
                 / scale, "labels": t["labels"].as_subclass(Tensor).long().to(scale.device)} for t in targets]
        out = set_loss(*layers[-1], norm, self.weights)
        if self.opts.aux_loss and len(layers) > 1:
            aux = [set_loss(logits, boxes, norm, self.weights) for logits, boxes in layers[:-1]]
            out.update({f"aux_{k}": sum(a[k] for a in aux) for k in ("class", "l1", "giou")})
        return out

    def detections(self, logits: Tensor, boxes: Tensor, size: tuple[int, int]) -> list[dict[str, Tensor]]:
        h, w = size
        scores, labels = logits.float().softmax(-1)[..., :-1].max(-1)  # "no object" is never a detection
        corners = cxcywh_to_xyxy(boxes.float()) * torch.tensor([w, h, w, h], dtype=torch.float32, device=boxes.device)
        return [postprocess(b, s, size, self.post, labels=lab) for b, s, lab in zip(corners, scores, labels)]

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None) -> dict:
        size = tuple(images.shape[-2:])
        if self.training and targets is None:
            return {}
        layers = self.decode(images)
        out: dict = {}
        if targets is not None:
            out["losses"] = self.losses(layers, targets, size)
        if not self.training:
            out["detections"] = self.detections(*layers[-1], size)
        return out


class DETR(SetDetector):
    """Backbone's deepest map → 1x1 projection → encoder → decoder of object queries → heads."""

    def __init__(self, backbone: nn.Module, num_classes: int, opts: DETROptions, post: PostProcess):
        super().__init__(num_classes, opts, post)
        d = opts.hidden
        self.backbone = backbone
        self.project = nn.Conv2d(backbone.out_channels[-1], d, 1)
        self.encoder = nn.ModuleList(EncoderLayer(d, opts.heads, opts.ffn, opts.dropout)
                                     for _ in range(opts.encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(d, opts.heads, opts.ffn, opts.dropout)
                                     for _ in range(opts.decoder_layers))
        self.decoder_norm = nn.LayerNorm(d)  # shared by every layer's output before the heads, as the paper
        self.query_pos = nn.Embedding(opts.num_queries, d)

    def decode(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        feat = self.project(list(self.backbone(images).values())[-1])  # (N, d, h, w)
        n, d, h, w = feat.shape
        memory = feat.flatten(2).transpose(1, 2)  # (N, h w, d)
        pos = sine_encoding(h, w, d, device=feat.device).flatten(1).t()[None].to(memory.dtype)  # (1, h w, d)
        for layer in self.encoder:
            memory = layer(memory, pos)
        query_pos = self.query_pos.weight[None].expand(n, -1, -1)
        tgt = torch.zeros_like(query_pos)
        out = []
        for layer in self.decoder:
            tgt = layer(tgt, query_pos, memory, pos)
            hs = self.decoder_norm(tgt)
            out.append((self.class_head(hs), self.box_head(hs).sigmoid()))
        return out


@MODELS.register("detr", help="DETR: zoo CNN backbone, sine positional code, transformer encoder-decoder with "
                 "object queries; set loss with Hungarian matching (class, L1, GIoU), no NMS needed",
                 options=DETROptions, uses=("width", "depth", "activation", "norm"), default_input=(3, 64, 64),
                 default_classes=4, tasks=("detection",))
def detr(cfg, info) -> nn.Module:
    opts = parse_options(cfg.options, DETROptions, cfg.name)
    check_options(opts, info, cfg.name)
    body = build_backbone(cfg, info, opts.backbone, opts.backbone_options, opts.backbone_weights, 1)
    return DETR(body, info.num_classes, opts, PostProcess.from_info(info))
