"""Convolutional classification architectures (M8): VGG, ResNet, ResNeXt, SE-ResNet, SqueezeNet,
MobileNet v1/v2, ShuffleNet v2 and Xception.

torchvision's builders are used where they exist (``weights=None``: nothing is downloaded), with
the input channels taken from the data and, for small inputs (side <= 64 px, or
``model.options.stem: small``), a 3x3 stride-1 stem without the max-pool, so that an 8x8 digit or a
32x32 image is not reduced to nothing before the first stage. MobileNet v1 and Xception are
written here from their papers. Every builder takes ``(cfg: ModelConfig, info: DataInfo)``.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from ..errors import RecipeError
from ..registry import MODELS
from .blocks import SeparableConv2d, as_head
from .layers import (
    make_activation,
    make_norm,
    norm_factory,
    replace_activations,
    replace_norms,
    resolve_activation,
    resolve_norm,
)
from .options import StemOptions, is_small, parse_options

IMAGENET = (3, 224, 224)
CONV_USES = ("activation", "norm", "dropout")


class ConvNetOptions(StemOptions):
    drop_connect: float = Field(0.0, ge=0.0, lt=1.0, description="DropConnect probability on the classifier weights")


def _stem_conv(cin: int, cout: int, small: bool, kernel: int = 7, stride: int = 2, bias: bool = False) -> nn.Conv2d:
    conv = (nn.Conv2d(cin, cout, 3, 1, 1, bias=bias) if small
            else nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=bias))
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # torchvision's conv init
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


def _activation_swap(net: nn.Module, cfg, native: str = "relu") -> None:
    act = resolve_activation(cfg.activation, native)
    if act != native:
        replace_activations(net, act)


# ------------------------------------------------------------------------------------- VGG
class SmallVGG(nn.Module):
    """VGG for small inputs: the same conv stages (fewer max-pools) and three FC layers 512 wide.

    Same attribute names and forward as torchvision's VGG, whose 25088 x 4096 first FC layer (100M
    weights) is sized for a 7x7 map of a 224 image and is never built here.
    """

    def __init__(self, features: nn.Module, num_classes: int, dropout: float):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(512, 512), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(512, 512), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(512, num_classes),
        )
        for m in self.modules():  # torchvision's VGG initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _vgg(cfg, info, layout: str, native_norm: str) -> nn.Module:
    from torchvision import models as tvm

    opts = parse_options(cfg.options, ConvNetOptions, cfg.name)
    norm = resolve_norm(cfg.norm, native_norm)
    features = tvm.vgg.make_layers(tvm.vgg.cfgs[layout], batch_norm=norm != "none")
    c, h, w = info.input_shape
    if c != 3:  # VGG's first conv is already 3x3 stride 1; only its input channels change
        features[0] = nn.Conv2d(c, 64, 3, padding=1)
    if is_small(info, opts.stem):
        # Keep a max-pool only while the map is at least 2x2: 8x8 digits keep three of the five.
        size, kept = min(h, w), []
        for layer in features:
            if isinstance(layer, nn.MaxPool2d):
                if size < 2:
                    continue
                size //= 2
            kept.append(layer)
        net: nn.Module = SmallVGG(nn.Sequential(*kept), info.num_classes, cfg.dropout)
    else:
        net = tvm.VGG(features, num_classes=info.num_classes, dropout=cfg.dropout)
    if norm not in ("batch", "none"):
        replace_norms(net, norm)
    _activation_swap(net, cfg)
    net.classifier[-1] = as_head(net.classifier[-1], 0.0, opts.drop_connect)
    return net


@MODELS.register("vgg11", help="VGG-11 (Simonyan & Zisserman): stages of 3x3 convs, 5 max-pools, 3 FC layers",
                 options=ConvNetOptions, uses=CONV_USES, auto_norm="none", default_input=IMAGENET)
def vgg11(cfg, info):
    return _vgg(cfg, info, "A", "none")


@MODELS.register("vgg16_bn", help="VGG-16 with BatchNorm after every conv", options=ConvNetOptions,
                 uses=CONV_USES, default_input=IMAGENET)
def vgg16_bn(cfg, info):
    return _vgg(cfg, info, "D", "batch")


# ---------------------------------------------------------------------------------- ResNets
class ResNetOptions(ConvNetOptions):
    drop_block: float = Field(0.0, ge=0.0, lt=1.0, description="DropBlock rate after stages 3 and 4 (0: off)")
    drop_block_size: int = Field(3, ge=1, description="DropBlock square side (the paper uses 7 at 224 px)")


class ResNeXtOptions(ResNetOptions):
    groups: int = Field(32, ge=1, description="cardinality: groups of the 3x3 convolution")
    width_per_group: int = Field(4, ge=1, description="channels per group in the first stage")


class SEResNetOptions(ResNetOptions):
    se_reduction: int = Field(16, ge=1, description="SE bottleneck ratio r (C -> C/r -> C)")


def _resnet(cfg, info, block: str, layers, schema=ResNetOptions, **kwargs) -> nn.Module:
    """A ResNet of ``block`` ("BasicBlock", "Bottleneck", "SEBasicBlock" or "SEBottleneck") and ``layers``."""
    from . import resnet_blocks
    from .resnet_blocks import ResNet

    opts = parse_options(cfg.options, schema, cfg.name)
    block = getattr(resnet_blocks, block)
    if getattr(opts, "se_reduction", 16) != 16:
        block = type(block.__name__, (block,), {"se_reduction": opts.se_reduction})
    net = ResNet(block, layers, num_classes=info.num_classes, norm_layer=norm_factory(cfg.norm),
                 drop_block=opts.drop_block, drop_block_size=opts.drop_block_size, **kwargs)
    small = is_small(info, opts.stem)
    if small or info.input_shape[0] != 3:
        net.conv1 = _stem_conv(info.input_shape[0], 64, small)
    if small:
        net.maxpool = nn.Identity()
    _activation_swap(net, cfg)
    net.fc = as_head(net.fc, cfg.dropout, opts.drop_connect)
    return net


RESNET_META = dict(uses=CONV_USES, default_input=IMAGENET)


@MODELS.register("resnet18", help="ResNet-18: basic residual blocks [2, 2, 2, 2]", options=ResNetOptions, **RESNET_META)
def resnet18(cfg, info):
    return _resnet(cfg, info, "BasicBlock", [2, 2, 2, 2])


@MODELS.register("resnet34", help="ResNet-34: basic residual blocks [3, 4, 6, 3]", options=ResNetOptions, **RESNET_META)
def resnet34(cfg, info):
    return _resnet(cfg, info, "BasicBlock", [3, 4, 6, 3])


@MODELS.register("resnet50", help="ResNet-50: 1x1-3x3-1x1 bottleneck blocks [3, 4, 6, 3]", options=ResNetOptions,
                 **RESNET_META)
def resnet50(cfg, info):
    return _resnet(cfg, info, "Bottleneck", [3, 4, 6, 3])


@MODELS.register("resnext50_32x4d", help="ResNeXt-50: bottlenecks whose 3x3 conv has 32 groups of 4 channels",
                 options=ResNeXtOptions, **RESNET_META)
def resnext50_32x4d(cfg, info):
    opts = parse_options(cfg.options, ResNeXtOptions, cfg.name)
    return _resnet(cfg, info, "Bottleneck", [3, 4, 6, 3], ResNeXtOptions,
                   groups=opts.groups, width_per_group=opts.width_per_group)


@MODELS.register("se_resnet18", help="ResNet-18 with a squeeze-and-excitation block in every residual branch",
                 options=SEResNetOptions, **RESNET_META)
def se_resnet18(cfg, info):
    return _resnet(cfg, info, "SEBasicBlock", [2, 2, 2, 2], SEResNetOptions)


@MODELS.register("se_resnet50", help="ResNet-50 with squeeze-and-excitation in every bottleneck",
                 options=SEResNetOptions, **RESNET_META)
def se_resnet50(cfg, info):
    return _resnet(cfg, info, "SEBottleneck", [3, 4, 6, 3], SEResNetOptions)


# ------------------------------------------------------------------------------- SqueezeNet
@MODELS.register("squeezenet1_1", help="SqueezeNet 1.1: fire modules (1x1 squeeze, 1x1 + 3x3 expand), conv head",
                 options=StemOptions, uses=("activation", "dropout"), auto_norm="none", default_input=IMAGENET)
def squeezenet1_1(cfg, info):
    from torchvision import models as tvm

    opts = parse_options(cfg.options, StemOptions, cfg.name)
    net = tvm.SqueezeNet("1_1", num_classes=info.num_classes, dropout=cfg.dropout)
    small = is_small(info, opts.stem)
    if small:
        net.features[0] = _stem_conv(info.input_shape[0], 64, True, bias=True)
    elif info.input_shape[0] != 3:
        net.features[0] = nn.Conv2d(info.input_shape[0], 64, 3, 2)  # torchvision's stem: no padding
    _activation_swap(net, cfg)
    return net


# ------------------------------------------------------------------------------ MobileNet v1
class MobileNetOptions(StemOptions):
    width_mult: float = Field(1.0, gt=0.0, le=4.0, description="width multiplier alpha of every layer")
    drop_connect: float = Field(0.0, ge=0.0, lt=1.0, description="DropConnect probability on the classifier weights")


# (output channels, stride) of the 13 depthwise-separable layers in Howard et al. 2017, Table 1.
MOBILENET_V1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


class MobileNetV1(nn.Module):
    """MobileNet v1: a 3x3 stem, then 13 depthwise-separable convolutions, average pool, linear."""

    def __init__(self, in_channels: int, num_classes: int, width_mult: float = 1.0, small: bool = False,
                 norm: str = "batch", activation: str = "relu", dropout: float = 0.0, drop_connect: float = 0.0):
        super().__init__()
        from .blocks import ConvNormAct, DepthwiseSeparableConv

        def ch(c: int) -> int:
            return max(8, int(c * width_mult))

        layers: list[nn.Module] = [ConvNormAct(in_channels, ch(32), 3, 1 if small else 2, norm=norm, activation=activation)]
        cin = ch(32)
        for cout, stride in MOBILENET_V1:
            layers.append(DepthwiseSeparableConv(cin, ch(cout), 3, stride, norm=norm, activation=activation))
            cin = ch(cout)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = as_head(nn.Linear(cin, num_classes), dropout, drop_connect)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@MODELS.register("mobilenet_v1", help="MobileNet v1: 13 depthwise-separable convolutions (depthwise 3x3 + pointwise)",
                 options=MobileNetOptions, uses=CONV_USES, default_input=IMAGENET)
def mobilenet_v1(cfg, info):
    opts = parse_options(cfg.options, MobileNetOptions, cfg.name)
    return MobileNetV1(info.input_shape[0], info.num_classes, opts.width_mult, is_small(info, opts.stem),
                       resolve_norm(cfg.norm), resolve_activation(cfg.activation), cfg.dropout, opts.drop_connect)


# ------------------------------------------------------------------------------ MobileNet v2
@MODELS.register("mobilenet_v2", help="MobileNet v2: inverted residuals with linear bottlenecks (ReLU6)",
                 options=MobileNetOptions, uses=CONV_USES, auto_activation="relu6", default_input=IMAGENET)
def mobilenet_v2(cfg, info):
    from torchvision import models as tvm

    opts = parse_options(cfg.options, MobileNetOptions, cfg.name)
    net = tvm.MobileNetV2(num_classes=info.num_classes, width_mult=opts.width_mult,
                          norm_layer=norm_factory(cfg.norm), dropout=cfg.dropout)
    small = is_small(info, opts.stem)
    if small or info.input_shape[0] != 3:
        stem = net.features[0][0]
        net.features[0][0] = _stem_conv(info.input_shape[0], stem.out_channels, small, kernel=3)
    _activation_swap(net, cfg, native="relu6")
    net.classifier[-1] = as_head(net.classifier[-1], 0.0, opts.drop_connect)
    return net


# ----------------------------------------------------------------------------- ShuffleNet v2
class ShuffleNetOptions(StemOptions):
    scale: float = Field(1.0, description="channel scale of the torchvision variants: 0.5, 1.0, 1.5 or 2.0")
    drop_connect: float = Field(0.0, ge=0.0, lt=1.0, description="DropConnect probability on the classifier weights")


SHUFFLE_CHANNELS = {0.5: [24, 48, 96, 192, 1024], 1.0: [24, 116, 232, 464, 1024],
                    1.5: [24, 176, 352, 704, 1024], 2.0: [24, 244, 488, 976, 2048]}


@MODELS.register("shufflenet_v2", help="ShuffleNet v2: channel split, depthwise conv, concat, channel shuffle",
                 options=ShuffleNetOptions, uses=CONV_USES, default_input=IMAGENET)
def shufflenet_v2(cfg, info):
    from torchvision import models as tvm

    opts = parse_options(cfg.options, ShuffleNetOptions, cfg.name)
    if opts.scale not in SHUFFLE_CHANNELS:
        raise RecipeError(f"model.options.scale: expected one of 0.5, 1.0, 1.5, 2.0 (got {opts.scale})")
    net = tvm.ShuffleNetV2([4, 8, 4], SHUFFLE_CHANNELS[opts.scale], num_classes=info.num_classes)
    small = is_small(info, opts.stem)
    if small or info.input_shape[0] != 3:
        net.conv1[0] = _stem_conv(info.input_shape[0], 24, small, kernel=3)
    if small:
        net.maxpool = nn.Identity()
    norm = resolve_norm(cfg.norm)
    if norm != "batch":
        replace_norms(net, norm)
    _activation_swap(net, cfg)
    net.fc = as_head(net.fc, cfg.dropout, opts.drop_connect)
    return net


# ---------------------------------------------------------------------------------- Xception
class XceptionOptions(StemOptions):
    middle_blocks: int = Field(8, ge=0, description="repetitions of the middle-flow block")
    drop_connect: float = Field(0.0, ge=0.0, lt=1.0, description="DropConnect probability on the classifier weights")


class XceptionBlock(nn.Module):
    """Separable convs (each preceded by the activation, followed by a norm) plus a shortcut.

    The entry- and exit-flow blocks end with a stride-2 max-pool and use a strided 1x1 conv as the
    shortcut; middle-flow blocks keep the size and add the input itself.
    """

    def __init__(self, cin: int, channels: list[int], stride: int, norm: str, activation: str,
                 first_activation: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        c = cin
        for i, cout in enumerate(channels):
            if i > 0 or first_activation:
                layers.append(make_activation(activation, channels=c))
            layers += [SeparableConv2d(c, cout), make_norm(norm, cout)]
            c = cout
        if stride > 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.branch = nn.Sequential(*layers)
        self.shortcut = (nn.Identity() if stride == 1 and cin == c
                         else nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), make_norm(norm, c)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.shortcut(x)


class Xception(nn.Module):
    """Xception (Chollet 2017): entry flow, 8 middle-flow blocks of 728 channels, exit flow; every
    3x3 convolution after the stem is depthwise-separable."""

    def __init__(self, in_channels: int, num_classes: int, small: bool = False, middle_blocks: int = 8,
                 norm: str = "batch", activation: str = "relu", dropout: float = 0.0, drop_connect: float = 0.0):
        super().__init__()

        def act(c):
            return make_activation(activation, channels=c)

        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, 1 if small else 2, 1, bias=False), make_norm(norm, 32), act(32),
            nn.Conv2d(32, 64, 3, 1, 1, bias=False), make_norm(norm, 64), act(64),
        )
        blocks = [
            XceptionBlock(64, [128, 128], 2, norm, activation, first_activation=False),
            XceptionBlock(128, [256, 256], 2, norm, activation),
            XceptionBlock(256, [728, 728], 2, norm, activation),
        ]
        blocks += [XceptionBlock(728, [728, 728, 728], 1, norm, activation) for _ in range(middle_blocks)]
        blocks.append(XceptionBlock(728, [728, 1024], 2, norm, activation))
        self.blocks = nn.Sequential(*blocks)
        self.exit = nn.Sequential(
            SeparableConv2d(1024, 1536), make_norm(norm, 1536), act(1536),
            SeparableConv2d(1536, 2048), make_norm(norm, 2048), act(2048),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = as_head(nn.Linear(2048, num_classes), dropout, drop_connect)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.exit(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@MODELS.register("xception", help="Xception: depthwise-separable convs with residual shortcuts (entry/middle/exit)",
                 options=XceptionOptions, uses=CONV_USES, default_input=(3, 299, 299))
def xception(cfg, info):
    opts = parse_options(cfg.options, XceptionOptions, cfg.name)
    return Xception(info.input_shape[0], info.num_classes, is_small(info, opts.stem), opts.middle_blocks,
                    resolve_norm(cfg.norm), resolve_activation(cfg.activation), cfg.dropout, opts.drop_connect)


__all__ = ["MobileNetV1", "SmallVGG", "Xception", "XceptionBlock"]
