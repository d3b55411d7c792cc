"""Any zoo CNN as a detection backbone: its feature maps at several strides (K2, M9, I4).

A classification network is a trunk of stages that halve the resolution, then a head (global
pooling, a classifier). :class:`FeatureBackbone` keeps the trunk and returns the output of the last
module at each of its deepest ``levels`` resolutions, as an ordered dict ``{"0": finest, ...}``
with ``out_channels`` and ``strides`` read off a dummy forward at build time. The trunk is found
without per-architecture code where the net says it:

- torchvision-style ResNets (``conv1 bn1 relu maxpool layer1..layer4``): the stem, then the layers;
- nets with a ``features`` sequence (VGG, MobileNet, SqueezeNet): its children;
- other nets: their children in order (``cnn`` is a plain sequence), up to the first global pooling,
  flattening or fully connected layer.

A net whose forward is not its children in order (a branching head before the pooling) is refused
with a RecipeError naming it. ``backbone_weights`` loads a local classification checkpoint (a
trainlab run's ``model.safetensors``, a .pt state dict) into the net before the head is cut (I4).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

import torch
from torch import nn

from ..errors import RecipeError

HEAD_TYPES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear)


def trunk_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ordered (name, module) pairs whose composition maps an image to the last feature map."""
    if all(hasattr(net, k) for k in ("conv1", "layer1", "layer4")):
        stem = nn.Sequential(*[getattr(net, k) for k in ("conv1", "bn1", "relu", "maxpool") if hasattr(net, k)])
        return [("stem", stem)] + [(f"layer{i}", getattr(net, f"layer{i}")) for i in range(1, 5)]
    children = list(net.features.named_children()) if isinstance(getattr(net, "features", None), nn.Sequential) \
        else list(net.named_children())
    out = []
    for name, m in children:
        if isinstance(m, HEAD_TYPES):
            break
        out.append((name, m))
    return out


class FeatureBackbone(nn.Module):
    """A CNN trunk returning its feature maps at the ``levels`` deepest strides.

    forward: images (N, C, H, W) → OrderedDict {"0": (N, C_0, H/s_0, W/s_0), ...}, finest first.
    """

    def __init__(self, net: nn.Module, input_shape: tuple[int, int, int], levels: int | None, name: str):
        super().__init__()
        modules = trunk_modules(net)
        c, h, w = input_shape
        x = torch.zeros(1, c, h, w)
        outs: list[tuple[int, int, int]] = []  # (module index, stride, channels)
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                for i, (_, m) in enumerate(modules):
                    x = m(x)
                    if x.dim() != 4:
                        break
                    outs.append((i, round(h / x.shape[-2]), x.shape[1]))
        except RuntimeError as err:
            raise RecipeError(f"model.options.backbone: {name!r} does not run as a sequence of stages "
                              f"({str(err).splitlines()[0][:100]}); use a CNN such as cnn, resnet18 or mobilenet_v2") from None
        finally:
            net.train(was_training)
        last_at: dict[int, tuple[int, int]] = {}
        for i, stride, ch in outs:
            if stride > 1:
                last_at[stride] = (i, ch)  # the last module at each resolution
        if levels is None:  # up to the three deepest, as many as the net has
            levels = min(3, len(last_at))
        strides = sorted(last_at)[-levels:]
        if not strides or len(strides) < levels:
            raise RecipeError(f"model.options.levels: {name!r} has {len(last_at)} down-sampled resolution(s) "
                              f"at a {h}x{w} input (strides {sorted(last_at)}); asked for {levels} "
                              "(a deeper backbone: model.depth)")
        self.taps = [last_at[s][0] for s in strides]
        self.strides = strides
        self.out_channels = [last_at[s][1] for s in strides]
        self.body = nn.ModuleList(m for _, m in modules[: self.taps[-1] + 1])

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, m in enumerate(self.body):
            x = m(x)
            if i in self.taps:
                out[str(len(out))] = x
        return out


def build_backbone(cfg, info, name: str, options: dict, weights: str | None, levels: int | None) -> FeatureBackbone:
    """The zoo model ``name`` (built with the recipe's width, depth, activation and norm and
    ``options``), with ``weights`` loaded when given, cut to its trunk."""
    from ..registry import MODELS
    from .init import load_weights

    entry = MODELS.get(name, "model.options.backbone")
    if entry.meta.get("tasks"):
        raise RecipeError(f"model.options.backbone: {name!r} is a {'/'.join(entry.meta['tasks'])} model; "
                          "give an image classifier (cnn, resnet18, mobilenet_v2, ...)")
    if info.kind != "image":
        raise RecipeError("model.options.backbone: a detector needs image inputs")
    net = entry.fn(cfg.model_copy(update={"name": name, "options": options, "dropout": 0.0}),
                   replace(info, num_classes=max(info.num_classes, 2)))
    if weights:
        try:
            report = load_weights(net, weights)
        except RecipeError as err:
            raise RecipeError(str(err).replace("model.weights", "model.options.backbone_weights", 1)) from None
        print("backbone " + report.line())
    return FeatureBackbone(net, tuple(info.input_shape), levels, name)
