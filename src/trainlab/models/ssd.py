"""SSD, the single-shot multibox detector (Liu et al. 2016) (M9, L7, K2; notes S4 3.5).

A convolutional backbone gives several feature maps of decreasing resolution. Every cell of map k
carries the same set of *default boxes* (anchors) centred on the cell, of scale s_k (a fraction of
the image side) and several aspect ratios, plus one extra square box of scale sqrt(s_k s_{k+1}).
Fine maps with small boxes see small objects, coarse maps with large boxes large ones. A 3x3
convolution per map predicts, for every default box, C + 1 class scores (class 0 is background
inside the model; the contract's labels 0..C−1 are shifted by one) and 4 offsets from the default
box to the object's box.

Training (the multibox loss):

- **Matching**: each ground-truth box takes the default box it overlaps most, whatever the IoU (so
  that every object has a positive), then every default box whose best IoU with some ground truth
  reaches ``match_iou`` (0.5) takes that ground truth. The rest are background (negatives).
- **Box coding**: a positive regresses
  ((g_cx − d_cx) / (d_w v₀), (g_cy − d_cy) / (d_h v₀), log(g_w / d_w) / v₁, log(g_h / d_h) / v₁),
  the paper's "variances" v = (0.1, 0.2) scaling the targets to about unit size.
- **Hard negative mining**: a few hundred default boxes per image are nearly all background; their
  cross-entropy would swamp the positives'. Per image only the negatives with the highest
  confidence loss are kept, at most ``neg_pos_ratio`` (3) per positive.
- **Loss**: L = (L_conf + L_loc) / N, with N the number of positives in the batch; L_loc is
  smooth-L1 over the positives' offsets, L_conf the cross-entropy over positives and kept
  negatives. The two terms are returned separately (``loc``, ``conf``); their sum is the loss.

Empty images and empty batches (a choice; the paper does not say): an image without objects has no
positives, so the 3:1 rule would keep none of its negatives and the image would teach nothing,
although background-only images are where false positives are learnt away. ``min_negatives``
(default 3) hard negatives are therefore kept in every image; set it to 0 for the paper's rule.
N is clamped to at least 1: a batch without any positive has loc = 0 and conf = the sum of its
mined negatives' cross-entropy (0 with ``min_negatives: 0``), never 0/0.

Evaluation decodes every default box's offsets, takes the softmax over the C + 1 classes without
the background column as per-class scores, and runs the shared post-processing
(:func:`trainlab.models.detector.postprocess`: threshold, clip, class-aware NMS, top-k).
In training mode without targets the forward returns ``{}``: the contract asks for nothing there.

The backbone is small and plain, sized by ``model.width`` and ``model.depth``: stages of ``depth``
3x3 conv-norm-activation layers, each stage halving the side with its first (stride-2) conv and
doubling the width (up to 8 x ``width``); the last ``feature_maps`` stages are the feature maps.
"""
from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, ValidationInfo, field_validator
from torch import Tensor, nn

from ..errors import RecipeError
from ..registry import MODELS
from .blocks import ConvNormAct
from .detector import PostProcess, postprocess
from .options import Options, parse_options

# decode() clamps log-scale offsets here: an untrained head can predict exp(huge) = inf widths,
# and inf - inf in the XYXY corners would give NaN boxes (the bound allows 62x the default box).
MAX_LOG_SCALE = math.log(1000.0 / 16)


# ------------------------------------------------------------------------------------ options
class SSDOptions(Options):
    """ssd: feature maps, default boxes and the multibox loss."""

    feature_maps: int = Field(3, ge=1, le=6, description="feature maps that predict boxes, each half the "
                              "resolution of the one before (64x64 inputs: 8x8, 4x4, 2x2)")
    first_stride: int = Field(8, ge=2, le=64, description="output stride of the finest feature map (a power of 2)")
    min_scale: float = Field(0.2, gt=0.0, le=1.0, description="s_1: default box scale of the finest map, "
                             "fraction of the image side (the paper's s_min)")
    max_scale: float = Field(0.9, gt=0.0, le=1.0, description="s_m: scale of the coarsest map (s_max); the "
                             "scales in between are evenly spaced")
    sizes: list[PositiveFloat] | None = Field(None, description="explicit scales s_1..s_m and s_{m+1} (feature_maps "
                                         "+ 1 fractions of the side; s_{m+1} only sizes the extra box of the "
                                         "last map); overrides min_scale/max_scale")
    aspect_ratios: list[PositiveFloat] = Field(default_factory=lambda: [1.0, 2.0, 0.5], min_length=1,
                                          description="width/height ratios of the default boxes of scale s_k")
    extra_box: bool = Field(True, description="add the paper's square box of scale sqrt(s_k s_{k+1}) per cell")
    match_iou: float = Field(0.5, gt=0.0, le=1.0, description="a default box overlapping a ground truth at "
                             "least this much is a positive (each ground truth also gets its best box)")
    neg_pos_ratio: float = Field(3.0, ge=0.0, description="hard negatives kept per positive, per image")
    min_negatives: int = Field(3, ge=0, description="hard negatives kept in every image, also one without "
                               "objects (0: the paper's rule, an empty image adds nothing to the loss)")
    variances: tuple[PositiveFloat, PositiveFloat] = Field((0.1, 0.2), description="box coding scales of the centre "
                                                 "and of the log-size offsets")

    # field validators, not a model validator, so that the error names model.options.<the field>
    @field_validator("first_stride")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError("must be a power of 2")
        return v

    @field_validator("max_scale")
    @classmethod
    def _ordered(cls, v: float, info: ValidationInfo) -> float:
        if "min_scale" in info.data and v < info.data["min_scale"]:
            raise ValueError(f"must be >= min_scale ({info.data['min_scale']})")
        return v

    @field_validator("sizes")
    @classmethod
    def _one_per_map(cls, v: list[float] | None, info: ValidationInfo) -> list[float] | None:
        maps = info.data.get("feature_maps")
        if v is not None and maps is not None and len(v) != maps + 1:
            raise ValueError(f"feature_maps + 1 = {maps + 1} scales needed (s_1..s_m and s_m+1), got {len(v)}")
        return v

    def scales(self) -> list[float]:
        return list(self.sizes) if self.sizes is not None else box_scales(self.feature_maps, self.min_scale,
                                                                           self.max_scale)


# ----------------------------------------------------------------------------- default boxes
def box_scales(maps: int, min_scale: float, max_scale: float) -> list[float]:
    """The paper's scales s_k = s_min + (s_max − s_min)(k − 1)/(m − 1), k = 1..m, and s_{m+1}.

    s_{m+1} (only the last map's extra box uses it) continues the same spacing; with one map there
    is no spacing and it is 1 (the whole image). Returns m + 1 floats.
    """
    if maps == 1:
        return [min_scale, 1.0]
    step = (max_scale - min_scale) / (maps - 1)
    return [min_scale + step * k for k in range(maps + 1)]


def default_boxes(grids: list[tuple[int, int]], image_size: tuple[int, int], scales: list[float],
                  aspect_ratios: list[float], extra_box: bool = True) -> Tensor:
    """Default boxes (D, 4) as (cx, cy, w, h) in input pixels, in the order the head predicts them.

    ``grids`` are the feature maps' (h_k, w_k), ``image_size`` the input (H, W), ``scales`` s_1..s_{m+1}.
    For map k, cell (i, j) in row-major order, boxes centred at ((j + ½)/w_k · W, (i + ½)/h_k · H):
    for each ratio a, width s_k √a · W and height s_k / √a · H; then, with ``extra_box``, the square
    of scale √(s_k s_{k+1}). D = Σ_k h_k w_k A with A = len(aspect_ratios) + extra_box.
    Boxes are not clipped to the image (the paper's SSD300 does not clip either).
    """
    height, width = image_size
    out = []
    for k, (h, w) in enumerate(grids):
        s = scales[k]
        shapes = [(s * math.sqrt(a), s / math.sqrt(a)) for a in aspect_ratios]
        if extra_box:
            s_extra = math.sqrt(s * scales[k + 1])
            shapes.append((s_extra, s_extra))
        wh = torch.tensor(shapes) * torch.tensor([width, height])  # (A, 2)
        cy = (torch.arange(h) + 0.5) / h * height
        cx = (torch.arange(w) + 0.5) / w * width
        yy, xx = torch.meshgrid(cy, cx, indexing="ij")
        centres = torch.stack([xx, yy], -1).reshape(-1, 1, 2).expand(-1, len(shapes), 2)  # (h w, A, 2)
        out.append(torch.cat([centres, wh.expand_as(centres)], -1).reshape(-1, 4))
    return torch.cat(out)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) (cx, cy, w, h) → (x0, y0, x1, y1)."""
    c, wh = boxes[..., :2], boxes[..., 2:]
    return torch.cat([c - wh / 2, c + wh / 2], -1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(..., 4) (x0, y0, x1, y1) → (cx, cy, w, h)."""
    return torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], -1)


# ---------------------------------------------------------------------------------- matching
def match(defaults: Tensor, gt_boxes: Tensor, gt_labels: Tensor, iou_threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Assign ground truths to default boxes; returns (labels (D,) int64, matched (D,) int64).

    ``defaults`` (D, 4) and ``gt_boxes`` (K, 4) are both XYXY; ``gt_labels`` (K,) in 0..C−1.
    ``labels`` is 0 for background and gt label + 1 for a positive; ``matched`` is the index of the
    assigned ground truth, −1 for background. Rules, in order:

    1. every default box whose highest IoU with some ground truth is >= ``iou_threshold`` takes
       that ground truth (the first one on a tie);
    2. every ground truth takes its best default box (the first one on a tie) whatever the IoU,
       so that no object is left without a positive, overriding rule 1. Two ground truths with the
       same best box: the one that overlaps it more keeps it (the later one on a tie). A ground
       truth that overlaps no default box at all (IoU 0 everywhere) is not forced anywhere.
    """
    from torchvision.ops import box_iou

    d = defaults.shape[0]
    matched = torch.full((d,), -1, dtype=torch.long, device=defaults.device)
    if gt_boxes.shape[0] == 0:
        return torch.zeros(d, dtype=torch.long, device=defaults.device), matched
    iou = box_iou(gt_boxes, defaults)  # (K, D)
    best_iou, best_gt = iou.max(0)
    matched = torch.where(best_iou >= iou_threshold, best_gt, matched)
    forced_iou, forced_box = iou.max(1)
    # A plain index assignment with repeated indices has no defined winner; assigning in order of
    # increasing IoU (stable) lets the ground truth that overlaps a shared box most write last.
    # K is small: one copy to the host, then a Python loop.
    order = torch.sort(forced_iou, stable=True).indices.tolist()
    forced_iou, forced_box = forced_iou.tolist(), forced_box.tolist()
    for k in order:
        if forced_iou[k] > 0:
            matched[forced_box[k]] = k
    labels = torch.where(matched >= 0, gt_labels.long()[matched.clamp(min=0)] + 1, 0)
    return labels, matched


def encode(boxes: Tensor, defaults: Tensor, variances: tuple[float, float] = (0.1, 0.2)) -> Tensor:
    """Offsets (..., 4) of XYXY ``boxes`` from (cx, cy, w, h) ``defaults`` (same leading shape).

    t = ((g_cx − d_cx)/(d_w v₀), (g_cy − d_cy)/(d_h v₀), log(g_w/d_w)/v₁, log(g_h/d_h)/v₁).
    """
    g = xyxy_to_cxcywh(boxes)
    centre = (g[..., :2] - defaults[..., :2]) / (defaults[..., 2:] * variances[0])
    size = torch.log(g[..., 2:] / defaults[..., 2:]) / variances[1]
    return torch.cat([centre, size], -1)


def decode(offsets: Tensor, defaults: Tensor, variances: tuple[float, float] = (0.1, 0.2)) -> Tensor:
    """XYXY boxes (..., 4) from ``offsets`` relative to (cx, cy, w, h) ``defaults``: encode's inverse."""
    centre = defaults[..., :2] + offsets[..., :2] * variances[0] * defaults[..., 2:]
    size = defaults[..., 2:] * torch.exp((offsets[..., 2:] * variances[1]).clamp(max=MAX_LOG_SCALE))
    return cxcywh_to_xyxy(torch.cat([centre, size], -1))


# -------------------------------------------------------------------------------------- loss
def hard_negative_mining(conf_loss: Tensor, positives: Tensor, ratio: float = 3.0, min_negatives: int = 0) -> Tensor:
    """The negatives to train on: (N, D) bool, per image the highest-loss non-positive boxes.

    ``conf_loss`` (N, D) is each default box's classification loss against background,
    ``positives`` (N, D) bool. Image i keeps k_i = min(max(⌊ratio · P_i⌋, min_negatives), D − P_i)
    negatives (P_i its positives): those with the largest loss, the lower index first on ties.
    """
    loss = conf_loss.detach().masked_fill(positives, -math.inf)  # positives sort last, never picked
    pos = positives.sum(1)
    k = (pos.to(loss.dtype) * ratio).floor().long().clamp(min=min_negatives)
    k = torch.minimum(k, positives.shape[1] - pos)
    order = loss.sort(dim=1, descending=True, stable=True).indices
    rank = order.argsort(1)  # rank[i, j]: position of box j in image i's descending order
    return rank < k[:, None]


def multibox_loss(class_logits: Tensor, box_offsets: Tensor, labels: Tensor, target_offsets: Tensor,
                  neg_pos_ratio: float = 3.0, min_negatives: int = 0) -> dict[str, Tensor]:
    """SSD's loss terms {"loc", "conf"}, each a scalar divided by N = max(1, number of positives).

    ``class_logits`` (N, D, C + 1) with background at 0, ``box_offsets`` (N, D, 4) predicted,
    ``labels`` (N, D) int64 from :func:`match` (0 = background), ``target_offsets`` (N, D, 4) from
    :func:`encode` (read at positives only). loc: Σ smooth-L1 (β = 1) over the positives' four
    offsets; conf: Σ cross-entropy over the positives and the negatives
    :func:`hard_negative_mining` keeps.
    """
    positives = labels > 0
    n = positives.sum().clamp(min=1).to(class_logits.dtype)
    ce = F.cross_entropy(class_logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
    negatives = hard_negative_mining(ce, positives, neg_pos_ratio, min_negatives)
    loc = F.smooth_l1_loss(box_offsets[positives], target_offsets[positives], reduction="sum", beta=1.0)
    conf = ce[positives | negatives].sum()
    return {"loc": loc / n, "conf": conf / n}


# ------------------------------------------------------------------------------------- model
class SSD(nn.Module):
    """Backbone stages, a class and a box 3x3 conv per feature map, the multibox loss, post-processing.

    Input (N, C, H, W) normalized images; forward follows :mod:`trainlab.models.detector`'s contract.
    ``widths`` are the channels of the backbone's stages (each halves the side, ``convs`` 3x3
    conv-norm-activation layers); the last ``opts.feature_maps`` stages' outputs are the feature maps.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: list[int], convs: int, norm: str,
                 activation: str, opts: SSDOptions, post: PostProcess):
        super().__init__()
        self.num_classes = num_classes
        self.opts = opts
        self.post = post
        self.scales = opts.scales()
        self.stages = nn.ModuleList()
        cin = in_channels
        for cout in widths:
            # each stage halves the side with its first conv (stride 2), then refines at that scale
            layers = [ConvNormAct(cin, cout, 3, 2, norm=norm, activation=activation)]
            layers += [ConvNormAct(cout, cout, 3, norm=norm, activation=activation) for _ in range(convs - 1)]
            self.stages.append(nn.Sequential(*layers))
            cin = cout
        boxes = len(opts.aspect_ratios) + int(opts.extra_box)
        maps = widths[-opts.feature_maps:]
        self.class_heads = nn.ModuleList(nn.Conv2d(c, boxes * (num_classes + 1), 3, padding=1) for c in maps)
        self.box_heads = nn.ModuleList(nn.Conv2d(c, boxes * 4, 3, padding=1) for c in maps)

    def features(self, x: Tensor) -> list[Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out[-self.opts.feature_maps:]

    def head(self, feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        """(class logits (N, D, C + 1), offsets (N, D, 4)), boxes ordered as :func:`default_boxes`."""
        def flat(y: Tensor, cols: int) -> Tensor:  # (N, A·cols, h, w) → (N, h·w·A, cols)
            n, _, h, w = y.shape
            return y.view(n, -1, cols, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, cols)

        logits = torch.cat([flat(c(f), self.num_classes + 1) for c, f in zip(self.class_heads, feats)], 1)
        offsets = torch.cat([flat(b(f), 4) for b, f in zip(self.box_heads, feats)], 1)
        return logits, offsets

    def anchors(self, feats: list[Tensor], image_size: tuple[int, int]) -> Tensor:
        grids = [tuple(f.shape[-2:]) for f in feats]
        boxes = default_boxes(grids, image_size, self.scales, self.opts.aspect_ratios, self.opts.extra_box)
        return boxes.to(feats[0].device)

    def assign(self, defaults: Tensor, targets: list[dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
        """Per image: (labels (N, D) with background 0, target offsets (N, D, 4), zero at negatives)."""
        corners = cxcywh_to_xyxy(defaults)
        labels, offsets = [], []
        for t in targets:
            gt = t["boxes"].as_subclass(Tensor).float().reshape(-1, 4).to(defaults.device)
            lab, idx = match(corners, gt, t["labels"].as_subclass(Tensor).to(defaults.device), self.opts.match_iou)
            off = torch.zeros_like(defaults)
            pos = idx >= 0
            if gt.shape[0]:  # no bool(pos.any()): that would wait for the device once per image
                off[pos] = encode(gt[idx[pos]], defaults[pos], self.opts.variances)
            labels.append(lab)
            offsets.append(off)
        return torch.stack(labels), torch.stack(offsets)

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None) -> dict:
        feats = self.features(images)
        logits, offsets = self.head(feats)
        size = tuple(images.shape[-2:])
        defaults = self.anchors(feats, size)
        out: dict = {}
        if targets is not None:
            labels, target_offsets = self.assign(defaults, targets)
            out["losses"] = multibox_loss(logits.float(), offsets.float(), labels, target_offsets,
                                          self.opts.neg_pos_ratio, self.opts.min_negatives)
        if not self.training:
            scores = logits.float().softmax(-1)[..., 1:]  # background column dropped: (N, D, C)
            boxes = decode(offsets.float(), defaults, self.opts.variances)
            out["detections"] = [postprocess(b, s, size, self.post) for b, s in zip(boxes, scores)]
        return out


def _widths(width: int, stages: int) -> list[int]:
    """Channels per backbone stage: ``width`` doubling each stage, at most 8 x width."""
    return [width * 2 ** min(i, 3) for i in range(stages)]


@MODELS.register("ssd", help="SSD: conv stages giving several feature maps, per map a 3x3 conv predicting class "
                 "scores and box offsets for its default boxes; multibox loss with hard negative mining",
                 options=SSDOptions, uses=("width", "depth", "activation", "norm"), default_input=(3, 64, 64),
                 default_classes=4, tasks=("detection",))
def ssd(cfg, info) -> nn.Module:
    opts = parse_options(cfg.options, SSDOptions, cfg.name)
    if len(info.input_shape) != 3:
        raise RecipeError(f"model.name: {cfg.name} takes images (C, H, W), the data gives {list(info.input_shape)}")
    # log2(first_stride) stages reach the finest map, one more stride-2 stage per further map;
    # model.depth is the number of convs per stage
    stages = int(math.log2(opts.first_stride)) + opts.feature_maps - 1
    return SSD(info.input_shape[0], info.num_classes, _widths(cfg.width, stages), cfg.depth, cfg.norm,
               cfg.activation, opts, PostProcess.from_info(info))
