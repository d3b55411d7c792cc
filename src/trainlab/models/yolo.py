"""YOLO v1 (M9, L7, K2): a single-shot detector whose grid cells own the objects centred in them.

Redmon et al. 2016 ("You Only Look Once", S1 Q30, S4 3.5) cut the image into an S x S grid. Each
cell predicts B boxes, each (x, y, √w, √h, confidence), and one class distribution shared by its
boxes: S·S·(B·5 + C) numbers for the whole image from one forward pass, no proposals.

- x, y: the box centre's offset inside its cell, in [0, 1] (sigmoid);
- √w, √h: the square roots of the box side over the image side, in [0, 1] (sigmoid; the paper
  regresses the roots so that an error of a few pixels costs a small box more than a large one);
- confidence: Pr(object) · IoU(predicted box, ground truth), trained towards that IoU (sigmoid);
- class probabilities Pr(class | object), one softmax per cell.

At test time a box's score for class c is confidence · Pr(c | object), then the shared
post-processing of :mod:`trainlab.models.detector` (threshold, clipping, class-aware NMS).

The loss (:func:`yolo_v1_loss`) is the paper's sum of squared errors. The cell that contains a
ground-truth centre is responsible for it, and of its B predictors the one whose box overlaps that
ground truth most; every other predictor learns confidence 0 with weight λnoobj. The paper's
network ends in two fully connected layers; here a convolutional head predicts each cell from its
own feature vector (see :class:`YoloV1`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..errors import RecipeError
from ..registry import MODELS
from .blocks import ConvNormAct
from .detector import PostProcess, postprocess
from .layers import resolve_activation, resolve_norm
from .options import Options, parse_options

BOX_FIELDS = 5  # x, y, √w, √h, confidence


class YoloV1Options(Options):
    grid: int = Field(8, ge=0, le=64, description="cells per side S (the paper's 7 for 448-pixel inputs); the "
                      "backbone's map is max-pooled to S x S. 0: the backbone's own map, input side / 2^depth "
                      "(any input size then keeps cells of 2^depth pixels)")
    boxes_per_cell: int = Field(2, ge=1, le=8, description="B: boxes each cell predicts (one class distribution "
                                "per cell, whatever B)")
    lambda_coord: float = Field(5.0, ge=0.0, description="λcoord: weight of the box coordinate errors")
    lambda_noobj: float = Field(0.5, ge=0.0, description="λnoobj: weight of the confidence error of predictors "
                                "responsible for no object (most of them, which would swamp the rest)")


# ------------------------------------------------------------------------------------------ math
def decode_head(raw: Tensor, boxes_per_cell: int) -> Tensor:
    """The head's raw outputs (N, Sh, Sw, B·5 + C) → predictions of the same shape.

    Per box x, y, √w, √h and confidence through a sigmoid (all live in [0, 1]); the C class scores
    of the cell through a softmax (one distribution per cell, as in the paper).
    """
    split = boxes_per_cell * BOX_FIELDS
    return torch.cat([raw[..., :split].sigmoid(), raw[..., split:].softmax(-1)], -1)


def cell_boxes(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Predicted boxes (N, Sh, Sw, B, 4) as (x, y, √w, √h) → XYXY input pixels (N, Sh, Sw, B, 4).

    The centre of cell (i, j)'s box is ((j + x)·W/Sw, (i + y)·H/Sh); its sides are (√w)²·W, (√h)²·H.
    """
    n, sh, sw = boxes.shape[:3]
    h, w = image_size
    rows = torch.arange(sh, device=boxes.device, dtype=boxes.dtype).view(1, sh, 1, 1)
    cols = torch.arange(sw, device=boxes.device, dtype=boxes.dtype).view(1, 1, sw, 1)
    cx = (cols + boxes[..., 0]) * (w / sw)
    cy = (rows + boxes[..., 1]) * (h / sh)
    bw = boxes[..., 2].square() * w
    bh = boxes[..., 3].square() * h
    return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)


def paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of each box in ``a`` (..., 4) with the box at the same place in ``b`` (..., 4), XYXY → (...).

    0 where both boxes are empty (a degenerate ground truth matches nothing).
    """
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def assign_targets(targets: list[dict[str, Tensor]], grid: tuple[int, int], image_size: tuple[int, int],
                   device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """The ground truth laid out on the grid: which cell is responsible for which box.

    ``targets``: N dicts with ``boxes`` (K, 4) XYXY input pixels and ``labels`` (K,). A box
    belongs to the cell containing its centre (a centre on the far edge to the last cell). The
    paper's cells hold one object each; when several centres fall in one cell, the **largest** box
    (by area; among equal areas the later one) is its object and the others are left out of the loss
    (they are not negatives either: no cell claims them). The largest, because it is the one most
    visible and the smaller ones are often hidden behind it (the shapes data draws it in front).

    Returns, for the grid (Sh, Sw): ``mask`` (N, Sh, Sw) bool, the cells with an object;
    ``boxes`` (N, Sh, Sw, 4) its XYXY box; ``coords`` (N, Sh, Sw, 4) its (x, y, √w, √h) regression
    targets; ``labels`` (N, Sh, Sw) int64. Cells without an object hold zeros.
    """
    sh, sw = grid
    h, w = image_size
    n = len(targets)
    boxes = [t["boxes"].as_subclass(Tensor).to(device, torch.float32).reshape(-1, 4) for t in targets]
    labels = [t["labels"].as_subclass(Tensor).to(device, torch.long).reshape(-1) for t in targets]
    image = torch.cat([torch.full((len(b),), k, device=device, dtype=torch.long) for k, b in enumerate(boxes)]
                      or [torch.zeros(0, dtype=torch.long, device=device)])
    gt = torch.cat(boxes or [torch.zeros(0, 4, device=device)])
    gl = torch.cat(labels or [torch.zeros(0, dtype=torch.long, device=device)])

    cx, cy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
    gx, gy = cx * (sw / w), cy * (sh / h)  # centre in cell units
    col = gx.floor().long().clamp(0, sw - 1)
    row = gy.floor().long().clamp(0, sh - 1)
    cell = (image * sh + row) * sw + col

    # One winner per cell, deterministically: rank the boxes by area (stable, so equal areas keep
    # their order) and let each cell keep the highest rank among its boxes.
    area = (gt[:, 2:] - gt[:, :2]).clamp(min=0).prod(-1)
    order = torch.sort(area, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=device)
    best = torch.full((n * sh * sw,), -1, dtype=torch.long, device=device)
    best = best.scatter_reduce(0, cell, rank, "amax")
    winner = rank == best[cell]

    mask = torch.zeros(n * sh * sw, dtype=torch.bool, device=device)
    out_boxes = torch.zeros(n * sh * sw, 4, device=device)
    coords = torch.zeros(n * sh * sw, 4, device=device)
    out_labels = torch.zeros(n * sh * sw, dtype=torch.long, device=device)
    c = cell[winner]  # distinct cells: plain indexing is deterministic
    mask[c] = True
    out_boxes[c] = gt[winner]
    wh = (gt[:, 2:] - gt[:, :2]).clamp(min=0) / gt.new_tensor([w, h])
    coords[c] = torch.stack([gx - col, gy - row, wh[:, 0].sqrt(), wh[:, 1].sqrt()], -1)[winner]
    out_labels[c] = gl[winner]
    return {"mask": mask.view(n, sh, sw), "boxes": out_boxes.view(n, sh, sw, 4),
            "coords": coords.view(n, sh, sw, 4), "labels": out_labels.view(n, sh, sw)}


def yolo_v1_loss(pred: Tensor, targets: list[dict[str, Tensor]], num_classes: int, B: int, lambda_coord: float,
                 lambda_noobj: float, image_size: tuple[int, int]) -> dict[str, Tensor]:
    """The YOLO v1 sum-squared loss of decoded predictions ``pred`` (N, Sh, Sw, B·5 + C).

    ``pred`` holds, per cell, B boxes (x, y, √w, √h, confidence) then C class probabilities (the
    output of :func:`decode_head`); ``targets`` are N dicts with ``boxes`` (K, 4) XYXY pixels of an
    image of ``image_size`` (H, W) and ``labels`` (K,). Cell assignment: :func:`assign_targets`.
    In a cell with an object, the responsible predictor is the one of the B whose box has the
    highest IoU with the object's box (the first on a tie, e.g. when none overlaps it); 1obj marks
    it, 1noobj every other predictor (those of empty cells and the others of its cell). Terms::

        coord = λcoord Σ 1obj [(x − x̂)² + (y − ŷ)² + (√w − √ŵ)² + (√h − √ĥ)²]
        obj   =        Σ 1obj (C − IoU)²         IoU of the responsible box, a constant (detached)
        noobj = λnoobj Σ 1noobj C²
        class =        Σ over cells with an object Σ_c (p(c) − 1[c = label])²

    The paper sums over the batch; each term here is divided by N, so that the loss of an
    image, and with it the right learning rate, does not depend on the batch size. Returns
    ``{"coord", "obj", "noobj", "class"}``, scalars whose sum is the training loss.
    """
    n, sh, sw, _ = pred.shape
    if len(targets) != n:
        raise ValueError(f"yolo_v1_loss: {n} images but {len(targets)} targets; need one target dict per image")
    boxes = pred[..., : B * BOX_FIELDS].reshape(n, sh, sw, B, BOX_FIELDS)
    probs = pred[..., B * BOX_FIELDS: B * BOX_FIELDS + num_classes]
    gt = assign_targets(targets, (sh, sw), image_size, pred.device)
    mask = gt["mask"]

    with torch.no_grad():  # the IoU chooses and sets a target: no gradient goes through it
        iou = paired_iou(cell_boxes(boxes[..., :4], image_size), gt["boxes"][:, :, :, None, :])  # (N, Sh, Sw, B)
        best = iou.argmax(-1, keepdim=True)
        responsible = torch.zeros_like(iou, dtype=torch.bool).scatter_(-1, best, True) & mask[..., None]
        iou_target = iou.gather(-1, best).squeeze(-1)  # (N, Sh, Sw)

    chosen = boxes.gather(3, best[..., None].expand(n, sh, sw, 1, BOX_FIELDS)).squeeze(3)  # (N, Sh, Sw, 5)
    coord_err = (chosen[..., :4] - gt["coords"]).square().sum(-1)
    conf = boxes[..., 4]
    onehot = F.one_hot(gt["labels"], num_classes).to(probs.dtype)
    return {
        "coord": lambda_coord * coord_err[mask].sum() / n,
        "obj": (chosen[..., 4] - iou_target)[mask].square().sum() / n,
        "noobj": lambda_noobj * conf[~responsible].square().sum() / n,
        "class": (probs - onehot).square().sum(-1)[mask].sum() / n,
    }


def yolo_v1_detections(pred: Tensor, num_classes: int, B: int, image_size: tuple[int, int],
                       pp: PostProcess) -> list[dict[str, Tensor]]:
    """Detections per image from decoded predictions ``pred`` (N, Sh, Sw, B·5 + C).

    Every predicted box is a candidate for every class with the paper's class-specific score
    confidence · Pr(class | object); :func:`~trainlab.models.detector.postprocess` keeps the pairs
    above the threshold, clips, runs class-aware NMS and keeps the best ``max_detections``.
    """
    n, sh, sw, _ = pred.shape
    boxes = pred[..., : B * BOX_FIELDS].reshape(n, sh, sw, B, BOX_FIELDS)
    probs = pred[..., B * BOX_FIELDS: B * BOX_FIELDS + num_classes]
    xyxy = cell_boxes(boxes[..., :4], image_size).reshape(n, -1, 4)
    scores = (boxes[..., 4, None] * probs[:, :, :, None, :]).reshape(n, -1, num_classes)
    return [postprocess(xyxy[k], scores[k], image_size, pp) for k in range(n)]


# ---------------------------------------------------------------------------------------- network
class YoloV1(nn.Module):
    """Backbone → (max-pool to S x S) → conv head → S·S·(B·5 + C) predictions; the detector contract.

    The backbone is ``depth`` stages of two 3x3 conv-norm-activation layers closed by 2x2
    max-pooling, widths ``width · 2^i`` (at most 8·width), like the paper's stack of 3x3 convs and
    poolings in miniature. The head is a 3x3 conv-norm-activation and a 1x1 conv to B·5 + C
    channels. The paper's two fully connected layers let every cell see the whole image; a conv head
    sees the receptive field only (52 pixels at depth 3, enough for 64-pixel images), but it has
    far fewer weights (a 128-channel 8x8 map straight into 8·8·14 outputs is 7.3 M weights),
    which matters with a few thousand training images, and its weights do not depend on S.

    ``forward(images, targets=None)`` returns ``{"losses": ...}`` when targets are given and
    ``{"detections": ...}`` in eval mode (both in eval mode with targets); in training mode without
    targets it returns detections too (profiling and tracing call ``net(x)``).
    """

    def __init__(self, in_channels: int, num_classes: int, width: int, depth: int, grid: int, opts: YoloV1Options,
                 norm: str, activation: str, dropout: float, pp: PostProcess):
        super().__init__()
        self.num_classes = num_classes
        self.boxes_per_cell = opts.boxes_per_cell
        self.lambda_coord, self.lambda_noobj = opts.lambda_coord, opts.lambda_noobj
        self.pp = pp
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(depth):
            cout = min(width * 2**i, 8 * width)
            layers += [ConvNormAct(cin, cout, 3, norm=norm, activation=activation),
                       ConvNormAct(cout, cout, 3, norm=norm, activation=activation),
                       nn.MaxPool2d(2, 2, ceil_mode=True)]
            cin = cout
        self.backbone = nn.Sequential(*layers)
        # grid 0: the cells are the backbone's own positions; otherwise max-pool (which keeps the
        # strongest response of each region, as the backbone's own poolings do) to S x S.
        self.to_grid = nn.AdaptiveMaxPool2d(grid) if grid else nn.Identity()
        outputs = opts.boxes_per_cell * BOX_FIELDS + num_classes
        self.head = nn.Sequential(ConvNormAct(cin, 2 * cin, 3, norm=norm, activation=activation),
                                  nn.Dropout2d(dropout) if dropout else nn.Identity(),
                                  nn.Conv2d(2 * cin, outputs, 1))

    def predict(self, images: Tensor) -> Tensor:
        """Decoded predictions (N, Sh, Sw, B·5 + C) for normalized images (N, C, H, W)."""
        raw = self.head(self.to_grid(self.backbone(images)))
        return decode_head(raw.permute(0, 2, 3, 1), self.boxes_per_cell)

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None) -> dict:
        pred = self.predict(images)
        size = (images.shape[-2], images.shape[-1])
        out: dict = {}
        if targets is not None:
            out["losses"] = yolo_v1_loss(pred, targets, self.num_classes, self.boxes_per_cell,
                                         self.lambda_coord, self.lambda_noobj, size)
        if not self.training or targets is None:
            out["detections"] = yolo_v1_detections(pred.detach(), self.num_classes, self.boxes_per_cell, size,
                                                   self.pp)
        return out


@MODELS.register("yolo_v1", help="YOLO v1: conv backbone (model.depth pooled stages), S x S grid of cells, each "
                 "predicting B boxes + confidence and one class distribution; the paper's sum-squared loss",
                 options=YoloV1Options, uses=("width", "depth", "activation", "norm", "dropout"),
                 auto_activation="leaky_relu", default_input=(3, 64, 64), default_classes=4, tasks=("detection",))
def yolo_v1(cfg, info) -> nn.Module:
    opts = parse_options(cfg.options, YoloV1Options, cfg.name)
    if len(info.input_shape) != 3:
        raise RecipeError(f"model.name: {cfg.name} takes images (C, H, W), the data gives {list(info.input_shape)}")
    channels, height, width = info.input_shape
    side = math.ceil(min(height, width) / 2**cfg.depth)
    if opts.grid > side:
        raise RecipeError(f"model.options.grid: {opts.grid} cells per side need a feature map at least that wide; "
                          f"{cfg.depth} pooled stages leave {side} of {min(height, width)} pixels "
                          f"(lower model.depth or grid)")
    # auto: the paper's leaky ReLU (trainlab's slope 0.01, the paper's 0.1) and batch norm (YOLO v2's addition)
    return YoloV1(channels, info.num_classes, cfg.width, cfg.depth, opts.grid, opts,
                  resolve_norm(cfg.norm), resolve_activation(cfg.activation, "leaky_relu"), cfg.dropout,
                  PostProcess.from_info(info))
