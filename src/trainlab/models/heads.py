"""A shared trunk with several named heads (M14, K7): the multitask task's model.

The trunk is any zoo model (``model.options.trunk``, built with the recipe's width, depth,
activation, norm and dropout) whose last layer projects to ``model.options.features`` shared
features, as the embedding task's models project to ``model.embed_dim``; so a conv net, a ResNet,
a ViT or an MLP can be the trunk without per-architecture code. The features pass through the
trunk's activation once (the shared representation); each head is a linear layer to its outputs
(with ``model.options.hidden`` > 0: a hidden layer of that width and the activation first). The heads and their sizes come from the task through
``info.extra["heads"]`` ({name: outputs}), in the recipe's order.

With ``loss.uncertainty`` the model also holds one learned log-variance per head
(:class:`UncertaintyWeights`, ``info.extra["uncertainty"]``): a parameter like any other, so
the optimizer trains it and checkpoints save it.

forward: images (N, C, H, W) → ``{"trunk": (N, F) shared features, "heads": {name: (N, outputs)},
"log_vars": (H,) or absent}``.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from pydantic import Field
from torch import nn

from ..errors import RecipeError
from ..registry import MODELS
from .layers import make_activation
from .options import Options, parse_options


class MultiTaskOptions(Options):
    trunk: str = Field("cnn", description="zoo architecture of the shared trunk (cnn, resnet18, mlp, vit_tiny, ...)")
    features: int = Field(64, ge=2, le=65536, description="width of the shared feature vector the trunk ends in")
    hidden: int = Field(0, ge=0, le=65536, description="hidden units of each head (0: one linear layer)")
    trunk_options: dict = Field(default_factory=dict, description="the trunk architecture's own model.options")


class UncertaintyWeights(nn.Module):
    """One learned log-variance s_i per head (Kendall et al. 2018), zero at the start (weight 1)."""

    def __init__(self, n: int):
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(n))


class MultiTaskNet(nn.Module):
    def __init__(self, trunk: nn.Module, act: nn.Module, heads: dict[str, nn.Module],
                 uncertainty: UncertaintyWeights | None):
        super().__init__()
        self.trunk = trunk
        self.act = act
        self.heads = nn.ModuleDict(heads)
        self.uncertainty = uncertainty

    def forward(self, x: torch.Tensor) -> dict:
        features = self.act(self.trunk(x))
        out = {"trunk": features, "heads": {name: head(features) for name, head in self.heads.items()}}
        if self.uncertainty is not None:
            out["log_vars"] = self.uncertainty.log_vars
        return out


def not_inplace(act: nn.Module) -> nn.Module:
    """The shared features feed every head and the trainer's gradient probe: an in-place
    activation would overwrite them."""
    if hasattr(act, "inplace"):
        act.inplace = False
    return act


def make_head(features: int, outputs: int, hidden: int, activation: str, auto: str) -> nn.Module:
    if not hidden:
        return nn.Linear(features, outputs)
    return nn.Sequential(nn.Linear(features, hidden), make_activation(activation, channels=hidden, auto=auto),
                         nn.Linear(hidden, outputs))


@MODELS.register("multitask", help="shared zoo trunk (model.options.trunk) ending in model.options.features, one "
                 "small head per recipe head (multitask task)", tasks=("multitask",),
                 uses=("width", "depth", "activation", "norm", "dropout"), options=MultiTaskOptions)
def multitask(cfg, info) -> nn.Module:
    opts = parse_options(cfg.options, MultiTaskOptions, cfg.name)
    heads = info.extra.get("heads")
    if not heads:
        raise RecipeError("model.name: multitask builds the heads of the multitask task (task: multitask, heads: [...])")
    if opts.trunk == "multitask":
        raise RecipeError("model.options.trunk: give a zoo architecture (cnn, resnet18, ...), not multitask")
    entry = MODELS.get(opts.trunk, "model.options.trunk")
    if entry.meta.get("tasks"):
        raise RecipeError(f"model.options.trunk: {opts.trunk!r} is a {'/'.join(entry.meta['tasks'])} model; give an "
                          "image classifier (cnn, resnet18, mlp, ...)")
    trunk_cfg = cfg.model_copy(update={"name": opts.trunk, "options": opts.trunk_options})
    trunk = entry.fn(trunk_cfg, replace(info, num_classes=opts.features,
                                        class_names=[f"f{i}" for i in range(opts.features)]))
    # "auto" is the trunk's own activation (GELU after a ViT, ReLU after a conv net)
    auto = entry.meta.get("auto_activation", "relu")
    built = {name: make_head(opts.features, int(n), opts.hidden, cfg.activation, auto) for name, n in heads.items()}
    weights = UncertaintyWeights(len(heads)) if info.extra.get("uncertainty") else None
    act = not_inplace(make_activation(cfg.activation, channels=opts.features, auto=auto))
    return MultiTaskNet(trunk, act, built, weights)
