"""The two first architectures: a multi-layer perceptron and a small CNN (M1, M8)."""
from __future__ import annotations

from torch import nn

from ..registry import MODELS
from .layers import make_activation, make_norm
from .options import Options, parse_options


@MODELS.register("mlp", help="flatten, depth x (linear, norm, activation), dropout, linear head",
                 uses=("width", "depth", "activation", "norm", "dropout"), default_input=(1, 8, 8), default_classes=10,
                 options=Options)
def mlp(cfg, info) -> nn.Module:
    parse_options(cfg.options, Options, cfg.name)  # no options: a stray key is an error, not ignored
    in_features = 1
    for d in info.input_shape:
        in_features *= d
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for _ in range(cfg.depth):
        layers += [nn.Linear(width, cfg.width), make_norm(cfg.norm, cfg.width, dims=0),
                   make_activation(cfg.activation, channels=cfg.width)]
        width = cfg.width
    if cfg.dropout:
        layers.append(nn.Dropout(cfg.dropout))
    layers.append(nn.Linear(width, info.num_classes))
    return nn.Sequential(*layers)


class ConvBlock(nn.Sequential):
    """conv 3x3 (same padding) → norm → activation, twice, then 2x2 max-pooling."""

    def __init__(self, cin: int, cout: int, norm: str, activation: str, pool: bool):
        layers = []
        for c in (cin, cout):
            layers += [
                nn.Conv2d(c, cout, 3, padding=1, bias=norm == "none"),
                make_norm(norm, cout),
                make_activation(activation, channels=cout),
            ]
        if pool:
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)


@MODELS.register("cnn", help="depth x (2 conv-norm-act + max-pool, width doubling), avg-pool, dropout, linear",
                 uses=("width", "depth", "activation", "norm", "dropout"), default_input=(1, 8, 8), default_classes=10,
                 options=Options)
def cnn(cfg, info) -> nn.Module:
    parse_options(cfg.options, Options, cfg.name)
    channels, height, width = info.input_shape
    layers: list[nn.Module] = []
    cin, size = channels, min(height, width)
    for i in range(cfg.depth):
        cout = cfg.width * 2**i
        pool = size >= 4  # keep at least a 2x2 map for the last block on tiny inputs (8x8 digits)
        layers.append(ConvBlock(cin, cout, cfg.norm, cfg.activation, pool))
        size = size // 2 if pool else size
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if cfg.dropout:
        layers.append(nn.Dropout(cfg.dropout))
    layers.append(nn.Linear(cin, info.num_classes))
    return nn.Sequential(*layers)
