"""Faster R-CNN and RetinaNet (M9, K2, L2): torchvision's detectors on trainlab's backbones.

torchvision implements both well (anchor generation, the region proposal network, RoIAlign, box
coding, sampling, focal loss, class-aware NMS), so this module only assembles them: a zoo CNN cut
to its feature maps (:mod:`trainlab.models.backbone`), a feature pyramid over them, anchors from
``model.options``, and the adapter to trainlab's detector contract (:mod:`trainlab.models.detector`).

- **Faster R-CNN** (Ren et al. 2015): a region proposal network scores anchors as object / not
  object and regresses them into proposals; RoIAlign pools each proposal's features, and a box
  head classifies it (background is class 0 inside, so labels are shifted by one) and refines it.
- **RetinaNet** (Lin et al. 2017): one stage, dense anchors on every pyramid level, a
  classification subnet trained with the sigmoid focal loss (L2: the many easy background anchors
  are down-weighted by (1 − p_t)^γ) and a box subnet.

The images reach torchvision already normalized by trainlab's input stage and at their training
size: its transform is set to mean 0, std 1 and to the input's own size, so it neither
re-normalizes nor resizes (it still pads to a multiple of 32).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..registry import MODELS
from .backbone import build_backbone
from .detector import PostProcess
from .options import Options, parse_options

DET_USES = ("width", "depth", "activation", "norm")
MASK_THRESHOLD = 0.5  # Mask R-CNN's per-pixel probability above which a pixel belongs to the instance
# eval_loss=False: torchvision computes losses only in training mode, so no val_loss is recorded
DET_META = dict(uses=DET_USES, default_input=(3, 64, 64), default_classes=4, tasks=("detection",), eval_loss=False)


class AnchorDetectorOptions(Options):
    backbone: str = Field("cnn", description="zoo CNN whose feature maps the detector reads (cnn, resnet18, "
                          "mobilenet_v2, ...), built with model.width/depth/activation/norm")
    backbone_options: dict = Field(default_factory=dict, description="model.options of the backbone")
    backbone_weights: str | None = Field(None, description="local classification weights for the backbone (I4): "
                                         "a trainlab run's model.safetensors or a .pt state dict")
    levels: int | None = Field(None, ge=1, le=5, description="deepest feature maps of the backbone the detector "
                               "reads (default: up to 3, as many as it has)")
    fpn_channels: int = Field(64, ge=8, description="channels of the feature pyramid (torchvision's default: 256)")
    anchor_sizes: list[float] | None = Field(None, description="base anchor side in pixels per level, finest "
                                             "first (default: 4 x the level's stride)")
    anchor_scales: list[float] = Field([1.0], min_length=1, description="multipliers of each level's base size "
                                       "(RetinaNet's paper: 1, 1.26, 1.59)")
    aspect_ratios: list[float] = Field([0.5, 1.0, 2.0], min_length=1, description="anchor height / width")

    @model_validator(mode="after")
    def _positive(self):
        for key in ("anchor_sizes", "anchor_scales", "aspect_ratios"):
            if any(v <= 0 for v in getattr(self, key) or ()):
                raise ValueError(f"{key}: every value must be > 0")
        if self.anchor_sizes is not None and self.levels is not None and len(self.anchor_sizes) != self.levels:
            raise ValueError(f"anchor_sizes: one size per level ({self.levels}), got {len(self.anchor_sizes)}")
        return self


class FasterRCNNOptions(AnchorDetectorOptions):
    proposals_train: int = Field(256, ge=1, description="RPN proposals kept after NMS per image in training "
                                 "(torchvision: 2000)")
    proposals_test: int = Field(128, ge=1, description="RPN proposals kept per image at evaluation (torchvision: 1000)")
    rois_per_image: int = Field(128, ge=1, description="proposals sampled per image for the box head's loss "
                                "(torchvision: 512)")
    representation: int = Field(256, ge=8, description="width of the box head's two FC layers (torchvision: 1024)")


class RetinaNetOptions(AnchorDetectorOptions):
    anchor_scales: list[float] = Field([1.0, 1.26, 1.59], min_length=1,
                                       description="multipliers of each level's base size (2^0, 2^(1/3), 2^(2/3))")
    extra_levels: Literal[0, 2] = Field(0, description="P6 and P7 above the backbone's levels (the paper: 2; "
                                        "small inputs have no room for them)")
    head_norm: Literal["group", "none"] = Field("group", description="norm in the two subnets' convolutions: "
                                                "GroupNorm (torchvision's RetinaNet v2) or none (the paper)")


class _WithFPN(nn.Module):
    """Backbone feature maps → a feature pyramid; ``out_channels`` as torchvision's detectors want."""

    def __init__(self, body, channels: int, extra):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.body = body
        self.fpn = FeaturePyramidNetwork(body.out_channels, channels, extra_blocks=extra)
        self.out_channels = channels

    def forward(self, x):
        return self.fpn(self.body(x))


def _anchors(opts, strides: list[int], extra_strides: list[int]):
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    if opts.anchor_sizes is not None and len(opts.anchor_sizes) != len(strides):
        from ..errors import RecipeError

        raise RecipeError(f"model.options.anchor_sizes: one size per level; the backbone gives {len(strides)} "
                          f"(strides {strides}), got {len(opts.anchor_sizes)}")
    base = [float(v) for v in opts.anchor_sizes] if opts.anchor_sizes else [4.0 * s for s in strides]
    base += [4.0 * s for s in extra_strides]
    sizes = tuple(tuple(float(b * m) for m in opts.anchor_scales) for b in base)
    ratios = (tuple(float(r) for r in opts.aspect_ratios),) * len(sizes)
    return AnchorGenerator(sizes, ratios)


class TorchvisionDetector(nn.Module):
    """A torchvision detector behind trainlab's contract: ``forward(images, targets)`` →
    ``{"losses"}`` in training, ``{"detections"}`` in eval mode (torchvision computes no loss
    then). ``shift`` is added to labels going in and taken off coming out (Faster R-CNN's class 0
    is background)."""

    def __init__(self, model: nn.Module, shift: int):
        super().__init__()
        self.model = model
        self.shift = shift

    def forward(self, images, targets=None):
        batch = list(images.unbind(0))
        if self.training:
            if targets is None:
                raise ValueError("a detector in training mode needs its targets")
            shifted = [{**t, "labels": t["labels"] + self.shift} for t in targets]
            losses = self.model(batch, shifted)
            return {"losses": {k.removeprefix("loss_"): v for k, v in losses.items()}}
        return {"detections": [self._result(d) for d in self.model(batch)]}

    def _result(self, d):
        out = {"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - self.shift}
        if "masks" in d:  # Mask R-CNN: per-instance probabilities (M, 1, H, W) pasted into the image
            out["masks"] = (d["masks"][:, 0] >= MASK_THRESHOLD).to(torch.uint8)
        return out


def _common(cfg, info, schema):
    opts = parse_options(cfg.options, schema, cfg.name)
    body = build_backbone(cfg, info, opts.backbone, opts.backbone_options, opts.backbone_weights, opts.levels)
    c, h, w = info.input_shape
    sizes = dict(min_size=min(h, w), max_size=max(h, w), image_mean=[0.0] * c, image_std=[1.0] * c)
    return opts, body, sizes, PostProcess.from_info(info)


def _groups(channels: int) -> int:
    """GroupNorm groups of about 4 channels each (at most 32, torchvision's), dividing ``channels``."""
    g = min(32, max(1, channels // 4))
    while channels % g:
        g -= 1
    return g


def _above(body, n: int) -> list[int]:
    """Strides of ``n`` pyramid levels added above the backbone's deepest one."""
    return [body.strides[-1] * 2 ** (k + 1) for k in range(n)]


def _two_stage(cfg, info, schema, masks: bool) -> nn.Module:
    """Faster R-CNN, or Mask R-CNN with ``masks`` (the same detector plus a mask head on 14x14 RoIs)."""
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    opts, body, sizes, pp = _common(cfg, info, schema)
    backbone = _WithFPN(body, opts.fpn_channels, LastLevelMaxPool())
    names = [str(i) for i in range(len(body.strides))]
    # LastLevelMaxPool adds a "pool" map: the RPN sees one more level than the RoI pooler
    anchors = _anchors(opts, body.strides, _above(body, 1))
    kwargs = dict(
        num_classes=None, rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(opts.fpn_channels * 49, opts.representation),
        box_predictor=FastRCNNPredictor(opts.representation, info.num_classes + 1),
        rpn_pre_nms_top_n_train=2 * opts.proposals_train, rpn_post_nms_top_n_train=opts.proposals_train,
        rpn_pre_nms_top_n_test=2 * opts.proposals_test, rpn_post_nms_top_n_test=opts.proposals_test,
        box_batch_size_per_image=opts.rois_per_image,
        box_score_thresh=pp.score_threshold, box_nms_thresh=pp.nms_iou, box_detections_per_img=pp.max_detections,
        **sizes)
    if not masks:
        return TorchvisionDetector(FasterRCNN(backbone, **kwargs), shift=1)
    c = opts.mask_channels
    model = MaskRCNN(backbone, mask_roi_pool=MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2),
                     mask_head=MaskRCNNHeads(opts.fpn_channels, [c] * opts.mask_convs, 1),
                     mask_predictor=MaskRCNNPredictor(c, c, info.num_classes + 1), **kwargs)
    return TorchvisionDetector(model, shift=1)


@MODELS.register("faster_rcnn", help="Faster R-CNN (torchvision): RPN + RoIAlign box head on a zoo CNN with a "
                 "feature pyramid; anchors from model.options", options=FasterRCNNOptions, **DET_META)
def faster_rcnn(cfg, info) -> nn.Module:
    return _two_stage(cfg, info, FasterRCNNOptions, masks=False)


class MaskRCNNOptions(FasterRCNNOptions):
    mask_channels: int = Field(64, ge=4, description="channels of the mask head's convolutions (torchvision: 256)")
    mask_convs: int = Field(4, ge=1, le=8, description="3x3 convolutions of the mask head (the paper: 4)")


@MODELS.register("mask_rcnn", help="Mask R-CNN (torchvision): Faster R-CNN plus a per-RoI mask head (14x14 "
                 "RoIAlign, 28x28 masks) on a zoo CNN with a feature pyramid",
                 options=MaskRCNNOptions, **{**DET_META, "tasks": ("instance_segmentation",)})
def mask_rcnn(cfg, info) -> nn.Module:
    return _two_stage(cfg, info, MaskRCNNOptions, masks=True)


@MODELS.register("retinanet", help="RetinaNet (torchvision): one-stage dense anchors, focal loss, feature pyramid "
                 "on a zoo CNN; anchors from model.options", options=RetinaNetOptions, **DET_META)
def retinanet(cfg, info) -> nn.Module:
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.retinanet import RetinaNetHead
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    opts, body, sizes, pp = _common(cfg, info, RetinaNetOptions)
    anchors = _anchors(opts, body.strides, _above(body, opts.extra_levels))
    extra = LastLevelP6P7(opts.fpn_channels, opts.fpn_channels) if opts.extra_levels else None
    backbone = _WithFPN(body, opts.fpn_channels, extra)
    norm = None
    if opts.head_norm == "group":
        from functools import partial

        norm = partial(nn.GroupNorm, _groups(opts.fpn_channels))
    head = RetinaNetHead(opts.fpn_channels, anchors.num_anchors_per_location()[0], info.num_classes,
                         norm_layer=norm)
    model = RetinaNet(backbone, num_classes=info.num_classes, anchor_generator=anchors, head=head,
                      score_thresh=pp.score_threshold, nms_thresh=pp.nms_iou, detections_per_img=pp.max_detections,
                      **sizes)
    return TorchvisionDetector(model, shift=0)
