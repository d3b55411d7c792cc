"""FCN on a ResNet-18 backbone (M10 head, S0 Q16, S4 3.6): per-pixel class scores (N, classes, H, W).

Fully convolutional: no fully connected layer, so any input size works. Class scores are predicted
at 1/32 of the input (1/8 with the small-input stem) from the last stage, then up-sampled by 2 and
added to scores predicted from the earlier, finer stages (the skip connections of FCN-16s and
FCN-8s, which bring back the detail that pooling lost), and finally up-sampled to the input size.
The up-sampling is a transposed convolution initialized as bilinear interpolation and learned
(``model.options.upsample: transposed``), or fixed: bilinear, nearest or zero unpooling.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..errors import RecipeError
from ..registry import MODELS
from .blocks import LearnedUpsample, Unpool2d
from .convnets import _resnet
from .options import StemOptions, parse_options


class FCNOptions(StemOptions):
    skips: Literal[0, 1, 2] = Field(2, description="skip connections: 0 = FCN-32s, 1 = FCN-16s, 2 = FCN-8s")
    upsample: Literal["transposed", "bilinear", "nearest", "zero"] = Field(
        "transposed", description="transposed: learned, bilinear at the start; the others are fixed")


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


class FCN(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, skips: int, upsample: str, dropout: float,
                 small: bool):
        super().__init__()
        self.backbone = backbone
        self.skips = skips
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.score4 = nn.Conv2d(512, num_classes, 1)
        self.score3 = nn.Conv2d(256, num_classes, 1) if skips >= 1 else None
        self.score2 = nn.Conv2d(128, num_classes, 1) if skips >= 2 else None
        for score in (self.score3, self.score2):
            if score is not None:  # FCN zero-initializes the skip scores: training starts as the coarser net
                nn.init.zeros_(score.weight)
                nn.init.zeros_(score.bias)
                score.trainlab_keep_init = True
        self.up4 = Upsample(num_classes, 2, upsample) if skips >= 1 else None
        self.up3 = Upsample(num_classes, 2, upsample) if skips >= 2 else None
        stride4 = 8 if small else 32  # output stride of the last stage
        self.up_final = Upsample(num_classes, stride4 // 2**skips, upsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        c = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        c2 = b.layer2(b.layer1(c))
        c3 = b.layer3(c2)
        c4 = b.layer4(c3)
        s = self.score4(self.dropout(c4))
        if self.score3 is not None:
            skip = self.score3(c3)
            s = _crop(self.up4(s), skip.shape) + skip
        if self.score2 is not None:
            skip = self.score2(c2)
            s = _crop(self.up3(s), skip.shape) + skip
        return _crop(self.up_final(s), x.shape)


@MODELS.register("fcn_resnet18", help="FCN-8s on ResNet-18: 1x1 score layers, skip connections, learned up-sampling; "
                 "outputs (N, classes, H, W)", options=FCNOptions, uses=("activation", "norm", "dropout"),
                 default_input=(3, 224, 224), default_classes=21, tasks=("segmentation",))
def fcn_resnet18(cfg, info):
    from .options import is_small

    opts = parse_options(cfg.options, FCNOptions, cfg.name)
    if len(info.input_shape) != 3:
        raise RecipeError(f"model.name: fcn_resnet18 takes images (C, H, W), the data gives {list(info.input_shape)}")
    backbone_cfg = cfg.model_copy(update={"options": {"stem": opts.stem}, "dropout": 0.0})
    backbone = _resnet(backbone_cfg, info, "BasicBlock", [2, 2, 2, 2])
    backbone.fc = nn.Identity()  # dense prediction: no classifier
    backbone.avgpool = nn.Identity()
    return FCN(backbone, info.num_classes, opts.skips, opts.upsample, cfg.dropout, is_small(info, opts.stem))
