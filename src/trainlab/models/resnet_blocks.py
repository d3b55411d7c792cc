"""ResNet pieces built on torchvision's: DropBlock placement and squeeze-and-excitation blocks (M6, M8).

Kept apart from :mod:`trainlab.models.convnets` so that listing or building other models does not
import torchvision's model zoo.
"""
from __future__ import annotations

import torch
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock, Bottleneck

from .blocks import DropBlock2d, SEBlock


class ResNet(tvm.ResNet):
    """torchvision's ResNet with an optional DropBlock after stages 3 and 4 (Ghiasi et al.'s placement)."""

    def __init__(self, *args, drop_block: float = 0.0, drop_block_size: int = 3, **kwargs):
        super().__init__(*args, **kwargs)
        self.drop_block = DropBlock2d(drop_block, drop_block_size) if drop_block else None

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = self.layer3(x)
        if self.drop_block is not None:
            x = self.drop_block(x)
        x = self.layer4(x)
        if self.drop_block is not None:
            x = self.drop_block(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class _SqueezeExcite:
    """Adds ``self.se``, an SE block over the block's output channels, to a ResNet block."""

    se_reduction = 16

    def __init__(self, inplanes, planes, *args, **kwargs):
        super().__init__(inplanes, planes, *args, **kwargs)
        self.se = SEBlock(planes * self.expansion, self.se_reduction, min_hidden=1)


class SEBasicBlock(_SqueezeExcite, BasicBlock):
    """ResNet basic block with squeeze-and-excitation on the residual branch, before the addition."""

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class SEBottleneck(_SqueezeExcite, Bottleneck):
    """ResNet bottleneck block with squeeze-and-excitation on the residual branch."""

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.relu(out + identity)
