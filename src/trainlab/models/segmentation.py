"""Semantic segmentation (M3, M10, K3): FCN, SegNet and U-Net give per-pixel class scores (N, classes, H, W).

All three are fully convolutional: no fully connected layer, so any input size works, and the
output always has the input's H x W. They differ in how they bring the resolution that pooling took
away back (S0 Q16, S4 3.6):

- **FCN** (Long et al. 2015) predicts class scores from the last, coarsest stage with a 1x1
  "score" convolution, up-samples them by 2 and adds scores predicted from the earlier, finer
  stages (the skip connections of FCN-16s and FCN-8s, which bring back the detail that pooling
  lost), then up-samples to the input size. The up-sampling is a transposed convolution
  initialized as bilinear interpolation and learned (``upsample: transposed``), or fixed: bilinear,
  nearest or zero unpooling. ``fcn`` runs it on a VGG-style encoder, ``fcn_resnet18`` on ResNet-18.
- **SegNet** (Badrinarayanan et al. 2017) keeps the *positions* of the maxima of each max-pooling
  and its mirrored decoder puts every value back where it came from (max-unpooling), zeros
  elsewhere; the convolutions that follow fill the sparse map in. Boundaries come back sharp
  without learned up-sampling and without storing encoder feature maps.
- **U-Net** (Ronneberger et al. 2015) up-samples features (not scores) and concatenates the
  encoder's feature map of the same resolution before two convolutions: the decoder sees the
  fine detail itself, not only scores computed from it.

Sizes that the total stride does not divide: pooling uses ``ceil_mode`` so that no row or column is
dropped, an up-sampled map is then at least as large as its target, and :func:`_crop` takes its
top-left part (pooled cell i covers input pixels [2i, 2i + 1], so the top-left part stays aligned).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..errors import RecipeError
from ..registry import MODELS
from .blocks import ConvNormAct, LearnedUpsample, Unpool2d
from .convnets import _resnet
from .options import Options, StemOptions, is_small, parse_options

SEG_USES = ("width", "depth", "activation", "norm", "dropout")
SEG_META = dict(uses=SEG_USES, default_input=(3, 64, 64), default_classes=5, tasks=("segmentation",))


# ------------------------------------------------------------------------------------ options
class FCNHeadOptions(Options):
    skips: Literal[0, 1, 2] = Field(
        2, description="skip connections: 0 = FCN-32s, 1 = FCN-16s, 2 = FCN-8s (fcn: at most model.depth − 1)")
    upsample: Literal["transposed", "bilinear", "nearest", "zero"] = Field(
        "transposed", description="transposed: learned, bilinear at the start; the others are fixed")


class FCNOptions(FCNHeadOptions, StemOptions):
    """fcn_resnet18: the FCN head and the ResNet's stem."""


class StageOptions(Options):
    convs: int = Field(2, ge=1, le=4, description="3x3 conv-norm-activation layers per stage (VGG: 2 or 3)")


class VGGFCNOptions(StageOptions, FCNHeadOptions):
    """fcn: the FCN head on a VGG-style encoder."""


class SegNetOptions(StageOptions):
    """segnet: encoder and mirrored decoder stages."""


class UNetOptions(Options):
    upsample: Literal["transposed", "bilinear", "nearest"] = Field(
        "transposed", description="transposed: learned 2x2 stride-2 up-convolution (the paper's); bilinear or "
        "nearest: fixed up-sampling and a 1x1 conv; each halves the channels")


# --------------------------------------------------------------------------------- up-sampling
class Upsample(nn.Module):
    """Up-sampling by ``factor`` with the chosen method; output (N, C, H·f, W·f)."""

    def __init__(self, channels: int, factor: int, method: str):
        super().__init__()
        self.method = method
        self.factor = factor
        if method == "transposed":
            self.layer: nn.Module = LearnedUpsample(channels, factor)
        elif method in ("nearest", "zero"):
            self.layer = Unpool2d(factor, method)
        else:
            self.layer = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.method == "bilinear":
            return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)
        return self.layer(x)


def _crop(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """The top-left ``size`` of ``x``: an up-sampled map is at least as large as its target."""
    return x[:, :, : size[-2], : size[-1]]


def _widths(width: int, depth: int, cap: int | None) -> list[int]:
    """Channels per stage: ``width`` doubling each stage, at most ``cap`` (VGG stops at 8 x 64 = 512)."""
    return [width * 2**i if cap is None else min(width * 2**i, cap) for i in range(depth)]


def _convs(cin: int, cout: int, n: int, norm: str, activation: str) -> nn.Sequential:
    """``n`` 3x3 conv-norm-activation layers ("same" padding), the first one cin → cout."""
    return nn.Sequential(*(ConvNormAct(cin if i == 0 else cout, cout, 3, norm=norm, activation=activation)
                           for i in range(n)))


def _check_image(info, name: str) -> None:
    if len(info.input_shape) != 3:
        raise RecipeError(f"model.name: {name} takes images (C, H, W), the data gives {list(info.input_shape)}")


# ------------------------------------------------------------------------------------------ FCN
class FCN(nn.Module):
    """The FCN head on an encoder: score layers on the last ``skips + 1`` stages, up-sampling, sums.

    ``backbone(x)`` returns the stages' feature maps, finest first, each stage halving the side
    (rounding up); ``channels`` are their widths and ``stride`` the last one's output stride.
    ``score4`` scores the last stage, ``score3`` and ``score2`` the one and two before (the names
    of ResNet-18's layer4/3/2, kept so that fcn_resnet18 weight files still load).
    Input (N, C, H, W); output (N, classes, H, W).
    """

    def __init__(self, backbone: nn.Module, channels: list[int], stride: int, num_classes: int, skips: int,
                 upsample: str, dropout: float):
        super().__init__()
        if len(channels) < skips + 1:
            raise RecipeError(f"model.options.skips: {skips} skip connections need {skips + 1} stages, "
                              f"the encoder has {len(channels)} (raise model.depth)")
        self.backbone = backbone
        self.skips = skips
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.score4 = nn.Conv2d(channels[-1], num_classes, 1)
        self.score3 = nn.Conv2d(channels[-2], num_classes, 1) if skips >= 1 else None
        self.score2 = nn.Conv2d(channels[-3], num_classes, 1) if skips >= 2 else None
        for score in (self.score3, self.score2):
            if score is not None:  # FCN zero-initializes the skip scores: training starts as the coarser net
                nn.init.zeros_(score.weight)
                nn.init.zeros_(score.bias)
                score.trainlab_keep_init = True
        self.up4 = Upsample(num_classes, 2, upsample) if skips >= 1 else None
        self.up3 = Upsample(num_classes, 2, upsample) if skips >= 2 else None
        self.up_final = Upsample(num_classes, stride // 2**skips, upsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *_, c2, c3, c4 = [None, None, *self.backbone(x)]  # c2/c3 are None when the encoder is that short
        s = self.score4(self.dropout(c4))
        if self.score3 is not None:
            skip = self.score3(c3)
            s = _crop(self.up4(s), skip.shape) + skip
        if self.score2 is not None:
            skip = self.score2(c2)
            s = _crop(self.up3(s), skip.shape) + skip
        return _crop(self.up_final(s), x.shape)


class ResNetStages(nn.Module):
    """ResNet's stem and layer1-4 without pooling and classifier; returns layer2, layer3, layer4's maps.

    The torchvision modules are registered under their own names, so the parameter names are the
    ResNet's (``backbone.layer1.0.conv1.weight``...).
    """

    NAMES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")

    def __init__(self, resnet: nn.Module):
        super().__init__()
        for name in self.NAMES:
            setattr(self, name, getattr(resnet, name))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c2 = self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))))
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]


class VGGEncoder(nn.Module):
    """``depth`` stages of ``convs`` 3x3 conv-norm-activation layers, each closed by 2x2 max-pooling.

    Input (N, C, H, W); returns every stage's pooled map, stage i (N, C_i, ⌈H/2^(i+1)⌉, ⌈W/2^(i+1)⌉).
    """

    def __init__(self, cin: int, widths: list[int], convs: int, norm: str, activation: str):
        super().__init__()
        self.stages = nn.ModuleList()
        for cout in widths:
            self.stages.append(nn.Sequential(*_convs(cin, cout, convs, norm, activation),
                                             nn.MaxPool2d(2, 2, ceil_mode=True)))
            cin = cout

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


@MODELS.register("fcn", help="FCN-8s/16s/32s on a VGG-style encoder (model.depth pooled stages): 1x1 score layers, "
                 "skip connections, learned up-sampling; outputs (N, classes, H, W)", options=VGGFCNOptions, **SEG_META)
def fcn(cfg, info):
    opts = parse_options(cfg.options, VGGFCNOptions, cfg.name)
    _check_image(info, cfg.name)
    widths = _widths(cfg.width, cfg.depth, 8 * cfg.width)
    encoder = VGGEncoder(info.input_shape[0], widths, opts.convs, cfg.norm, cfg.activation)
    # FCN-8s needs three stages; a shorter encoder keeps the skips it has room for (the default depth is 2).
    skips = min(opts.skips, cfg.depth - 1)
    return FCN(encoder, widths, 2**cfg.depth, info.num_classes, skips, opts.upsample, cfg.dropout)


@MODELS.register("fcn_resnet18", help="FCN-8s on ResNet-18: 1x1 score layers, skip connections, learned up-sampling; "
                 "outputs (N, classes, H, W)", options=FCNOptions, uses=("activation", "norm", "dropout"),
                 default_input=(3, 224, 224), default_classes=21, tasks=("segmentation",))
def fcn_resnet18(cfg, info):
    opts = parse_options(cfg.options, FCNOptions, cfg.name)
    _check_image(info, cfg.name)
    backbone_cfg = cfg.model_copy(update={"options": {"stem": opts.stem}, "dropout": 0.0})
    backbone = ResNetStages(_resnet(backbone_cfg, info, "BasicBlock", [2, 2, 2, 2]))
    stride = 8 if is_small(info, opts.stem) else 32  # output stride of layer4
    return FCN(backbone, [128, 256, 512], stride, info.num_classes, opts.skips, opts.upsample, cfg.dropout)


# --------------------------------------------------------------------------------------- SegNet
class SegNetStage(nn.Module):
    """Encoder stage: convs, then 2x2 max-pooling that also returns where each maximum was."""

    def __init__(self, cin: int, cout: int, convs: int, norm: str, activation: str):
        super().__init__()
        self.convs = _convs(cin, cout, convs, norm, activation)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True, return_indices=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
        x = self.convs(x)
        size = x.shape[-2:]
        pooled, indices = self.pool(x)
        return pooled, indices, size


class SegNetDecoderStage(nn.Module):
    """Decoder stage: max-unpooling with the mirrored encoder stage's indices, then convs (cin → cout last)."""

    def __init__(self, cin: int, cout: int, convs: int, norm: str, activation: str):
        super().__init__()
        self.unpool = Unpool2d(2, "max")
        layers = [ConvNormAct(cin, cin if i < convs - 1 else cout, 3, norm=norm, activation=activation)
                  for i in range(convs)]
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, indices: torch.Tensor, size: torch.Size) -> torch.Tensor:
        # output_size: the pre-pooling size, so an odd side comes back odd (ceil-mode pooling rounded it up)
        return self.convs(self.unpool(x, indices, output_size=tuple(size)))


class SegNet(nn.Module):
    """SegNet: encoder stages with index-keeping max-pooling, a mirrored decoder that max-unpools with them.

    Input (N, C, H, W); output (N, classes, H, W). The decoder stores no encoder feature maps,
    only the argmax positions (one integer per pooled value).
    """

    def __init__(self, cin: int, widths: list[int], num_classes: int, convs: int, norm: str, activation: str,
                 dropout: float):
        super().__init__()
        self.encoder = nn.ModuleList()
        for cout in widths:
            self.encoder.append(SegNetStage(cin, cout, convs, norm, activation))
            cin = cout
        # decoder[i] mirrors encoder[i]: from widths[i] back to the width of the stage before it
        self.decoder = nn.ModuleList(
            SegNetDecoderStage(widths[i], widths[max(i - 1, 0)], convs, norm, activation) for i in range(len(widths)))
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        saved = []
        for stage in self.encoder:
            x, indices, size = stage(x)
            saved.append((indices, size))
        for stage, (indices, size) in zip(reversed(self.decoder), reversed(saved)):
            x = stage(x, indices, size)
        return self.classifier(self.dropout(x))


@MODELS.register("segnet", help="SegNet: conv encoder whose max-pooling keeps its indices, mirrored decoder that "
                 "max-unpools with them; outputs (N, classes, H, W)", options=SegNetOptions, **SEG_META)
def segnet(cfg, info):
    opts = parse_options(cfg.options, SegNetOptions, cfg.name)
    _check_image(info, cfg.name)
    widths = _widths(cfg.width, cfg.depth, 8 * cfg.width)
    return SegNet(info.input_shape[0], widths, info.num_classes, opts.convs, cfg.norm, cfg.activation, cfg.dropout)


# ---------------------------------------------------------------------------------------- U-Net
class UpConv(nn.Module):
    """U-Net's up-convolution: side x 2, channels cin → cout. Input (N, cin, H, W); output (N, cout, 2H, 2W).

    ``transposed``: a learned 2x2 stride-2 transposed convolution ((I − 1)·2 + 2 = 2I, no overlaps).
    ``bilinear`` / ``nearest``: fixed up-sampling and a 1x1 convolution. The 1x1 conv runs first, on
    the 4x smaller map: both interpolations are per-channel weighted sums whose weights add up to 1,
    so they commute with a 1x1 conv (bias included) and the result is the same.
    """

    def __init__(self, cin: int, cout: int, method: str):
        super().__init__()
        self.method = method
        if method == "transposed":
            self.conv: nn.Module = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        else:
            self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.method == "transposed":
            return x
        if self.method == "bilinear":
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return F.interpolate(x, scale_factor=2, mode="nearest")


class UNet(nn.Module):
    """U-Net: ``depth`` down-sampling steps; each decoder level up-samples, concatenates the encoder's map
    of the same resolution (skip connection) and applies two 3x3 conv-norm-activation layers.

    Widths ``width · 2^level``. Input (N, C, H, W); output (N, classes, H, W).
    """

    def __init__(self, cin: int, width: int, depth: int, num_classes: int, upsample: str, norm: str,
                 activation: str, dropout: float):
        super().__init__()
        widths = _widths(width, depth + 1, None)
        self.down = nn.ModuleList([_convs(cin, widths[0], 2, norm, activation)])
        for i in range(1, depth + 1):
            self.down.append(_convs(widths[i - 1], widths[i], 2, norm, activation))
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.up = nn.ModuleList(UpConv(widths[i], widths[i - 1], upsample) for i in range(depth, 0, -1))
        self.merge = nn.ModuleList(_convs(2 * widths[i - 1], widths[i - 1], 2, norm, activation)
                                   for i in range(depth, 0, -1))
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            skip = skips.pop()
            x = merge(torch.cat([skip, _crop(up(x), skip.shape)], dim=1))
        return self.classifier(self.dropout(x))


@MODELS.register("unet", help="U-Net: encoder-decoder with concatenated skip connections at every resolution "
                 "(model.depth down-sampling steps); outputs (N, classes, H, W)", options=UNetOptions, **SEG_META)
def unet(cfg, info):
    opts = parse_options(cfg.options, UNetOptions, cfg.name)
    _check_image(info, cfg.name)
    return UNet(info.input_shape[0], cfg.width, cfg.depth, info.num_classes, opts.upsample, cfg.norm,
                cfg.activation, cfg.dropout)
