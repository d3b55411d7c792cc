"""``blocknet``: a configurable conv net that puts the zoo's blocks into a model from a recipe (M2-M6).

``model.depth`` stages, each one block of two convolutions (the variant chosen by
``model.options.conv``), optionally with a residual shortcut, squeeze-and-excitation and
DropBlock, then a down-sampling step (max-pool, average-pool or a strided conv) while the map is
at least 4 pixels wide. Widths start at ``model.width`` and double per stage. The head is global
average pooling and a linear layer (with ``model.dropout`` and DropConnect) or a maxout layer.

    model: {name: blocknet, width: 32, depth: 3, activation: prelu, norm: group,
            options: {conv: separable, se: true, residual: true, drop_block: 0.1}}
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..errors import RecipeError
from ..registry import MODELS
from .blocks import (
    DeformableConv2d,
    DropBlock2d,
    Maxout,
    SEBlock,
    as_head,
    depthwise_conv,
    pointwise_conv,
    same_padding,
)
from .layers import make_activation, make_norm, resolve_activation, resolve_norm
from .options import Options, parse_options

CONVS = ("standard", "pointwise", "separable", "grouped", "dilated", "deformable")


class BlockNetOptions(Options):
    conv: Literal["standard", "pointwise", "separable", "grouped", "dilated", "deformable"] = Field(
        "standard", description="convolution of each block: standard 3x3, pointwise 1x1, separable "
        "(depthwise 3x3 + pointwise), grouped 3x3, dilated 3x3, deformable 3x3 (learned offsets)")
    groups: int = Field(4, ge=1, description="groups of the grouped convolution (must divide model.width; "
                        "the conv reading the image uses gcd(groups, its channels))")
    dilation: int = Field(2, ge=1, description="dilation of the dilated convolution")
    modulated: bool = Field(False, description="deformable conv v2: also learn a weight per sampling tap")
    residual: bool = Field(False, description="add a shortcut around each block (1x1 conv when widths differ)")
    se: bool = Field(False, description="squeeze-and-excitation on each block")
    se_reduction: int = Field(8, ge=1, description="SE bottleneck ratio r")
    drop_block: float = Field(0.0, ge=0.0, lt=1.0, description="DropBlock rate after each block")
    drop_block_size: int = Field(3, ge=1, description="DropBlock square side")
    pool: Literal["max", "avg", "stride"] = Field("max", description="down-sampling between stages")
    head: Literal["linear", "maxout"] = Field("linear", description="classifier: linear, or a maxout layer then linear")
    maxout_pieces: int = Field(2, ge=2, description="pieces of the maxout head")
    drop_connect: float = Field(0.0, ge=0.0, lt=1.0, description="DropConnect probability on the classifier weights")


def make_conv(kind: str, cin: int, cout: int, opts: BlockNetOptions, bias: bool, stem: bool = False) -> nn.Module:
    """One convolution of the chosen variant, keeping H x W.

    A grouped ``stem`` conv (the one reading the input image) uses gcd(groups, C_in) groups: a
    1- or 3-channel image cannot be cut into ``groups`` parts. Every other grouped conv uses
    ``opts.groups`` exactly (the builder checks that it divides the widths).
    """
    if kind == "standard":
        return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)
    if kind == "pointwise":
        return pointwise_conv(cin, cout, bias)
    if kind == "separable":
        return nn.Sequential(depthwise_conv(cin, 3), pointwise_conv(cin, cout, bias))
    if kind == "grouped":
        g = math.gcd(opts.groups, cin) if stem else opts.groups
        return nn.Conv2d(cin, cout, 3, padding=1, groups=g, bias=bias)
    if kind == "dilated":
        return nn.Conv2d(cin, cout, 3, padding=same_padding(3, opts.dilation), dilation=opts.dilation, bias=bias)
    return DeformableConv2d(cin, cout, 3, bias=bias, modulated=opts.modulated)


class Block(nn.Module):
    """conv → norm → act → conv → norm (→ SE) (+ shortcut) → act (→ DropBlock)."""

    def __init__(self, cin: int, cout: int, opts: BlockNetOptions, norm: str, activation: str, stem: bool = False):
        super().__init__()
        bias = norm == "none"
        self.conv1 = make_conv(opts.conv, cin, cout, opts, bias, stem)
        self.norm1 = make_norm(norm, cout)
        self.act1 = make_activation(activation, channels=cout)
        self.conv2 = make_conv(opts.conv, cout, cout, opts, bias)
        self.norm2 = make_norm(norm, cout)
        self.se = SEBlock(cout, opts.se_reduction) if opts.se else nn.Identity()
        self.shortcut: nn.Module | None = None
        if opts.residual:
            self.shortcut = nn.Identity() if cin == cout else nn.Sequential(pointwise_conv(cin, cout), make_norm(norm, cout))
        self.act2 = make_activation(activation, channels=cout)
        self.drop = DropBlock2d(opts.drop_block, opts.drop_block_size) if opts.drop_block else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x))))))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.drop(self.act2(out))


class BlockNet(nn.Module):
    def __init__(self, in_channels: int, side: int, num_classes: int, width: int, depth: int, opts: BlockNetOptions,
                 norm: str, activation: str, dropout: float):
        super().__init__()
        stages: list[nn.Module] = []
        cin, size = in_channels, side
        for i in range(depth):
            cout = width * 2**i
            stages.append(Block(cin, cout, opts, norm, activation, stem=i == 0))
            if size >= 4:
                if opts.pool == "max":
                    stages.append(nn.MaxPool2d(2))
                elif opts.pool == "avg":
                    stages.append(nn.AvgPool2d(2))
                else:
                    stages.append(nn.Conv2d(cout, cout, 3, 2, 1))
                size = (size + 1) // 2 if opts.pool == "stride" else size // 2
            cin = cout
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        if opts.head == "maxout":
            self.pre_head: nn.Module = Maxout(cin, cin, opts.maxout_pieces)
        else:
            self.pre_head = nn.Identity()
        self.head = as_head(nn.Linear(cin, num_classes), dropout, opts.drop_connect)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pre_head(torch.flatten(self.pool(self.features(x)), 1)))


@MODELS.register("blocknet", help="configurable CNN: conv variant, SE, residual, DropBlock, DropConnect, maxout "
                 "head from model.options", options=BlockNetOptions,
                 uses=("width", "depth", "activation", "norm", "dropout"), default_input=(1, 8, 8),
                 default_classes=10)
def blocknet(cfg, info):
    opts = parse_options(cfg.options, BlockNetOptions, cfg.name)
    if opts.conv == "grouped" and cfg.width % opts.groups:
        # Stage widths are width·2^i: groups dividing the first width divides them all.
        raise RecipeError(f"model.options.groups: {opts.groups} does not divide width {cfg.width} "
                          "(model.width must be a multiple of the groups)")
    c, h, w = info.input_shape
    return BlockNet(c, min(h, w), info.num_classes, cfg.width, cfg.depth, opts, resolve_norm(cfg.norm),
                    resolve_activation(cfg.activation), cfg.dropout)
