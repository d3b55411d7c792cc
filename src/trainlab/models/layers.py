"""Activation and normalization layers chosen by name (M4, M5).

``model.activation`` and ``model.norm`` may be ``auto``: the architecture's own choice (ReLU and
BatchNorm for convolutional nets, GELU and LayerNorm for transformers, no norm for plain VGG).
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..errors import unknown_name

NORMS = ("auto", "batch", "layer", "group", "none")

# Conv and linear layers in all their forms: layers whose ``weight`` multiplies their input. One
# list for everything that means "conv and linear layers": the L1/L2 weight penalty (L1, L4),
# ``model.bias_init``, ``model.init`` (which adds recurrent and attention layers) and the doctor's
# weight layers. torchvision's DeformConv2d is one too (see :func:`weight_layer_types`).
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def weight_layer_types() -> tuple[type[nn.Module], ...]:
    """WEIGHT_LAYERS, plus torchvision's DeformConv2d once ``torchvision.ops`` is imported.

    Only a network that already imported torchvision.ops can hold a DeformConv2d, so it is looked
    up in ``sys.modules`` rather than imported (importing torchvision costs start-up).
    """
    deform = getattr(sys.modules.get("torchvision.ops"), "DeformConv2d", None)
    return WEIGHT_LAYERS + ((deform,) if deform is not None else ())


def is_weight_layer(module: nn.Module) -> bool:
    return isinstance(module, weight_layer_types())


def weight_layers(net: nn.Module) -> Iterator[nn.Module]:
    """The conv and linear layers of ``net`` (see :data:`WEIGHT_LAYERS`), in module order."""
    types = weight_layer_types()
    return (m for m in net.modules() if isinstance(m, types))


class ChannelMaxout(nn.Module):
    """Maxout as an activation: each channel is the max of ``pieces`` learned affine maps of itself.

    y_c = max_j (a_cj · x_c + b_cj). A maxout unit (Goodfellow et al. 2013) is the max of k linear
    functions; here each unit sees only its own channel, so the layer drops in wherever ReLU does
    and keeps the width. The pieces start as tangents of softplus with slopes evenly spaced in
    [0, 1]: with two pieces that is exactly ReLU (slopes 0 and 1, no offset), and with more every
    piece is the maximum somewhere, so every piece receives gradient. ``channels=None`` shares one
    set of pieces across channels (like ``nn.PReLU()``), which also fits (N, L, D) token inputs.

    Input (N, C, ...) or anything when shared; output has the same shape.
    """

    def __init__(self, channels: int | None = None, pieces: int = 2):
        super().__init__()
        if pieces < 2:
            raise ValueError("maxout needs at least 2 pieces")
        s = torch.linspace(0.0, 1.0, pieces, dtype=torch.float64)
        inner = s.clamp(1e-12, 1 - 1e-12)
        # Tangent of softplus with slope s has offset H(s), the binary entropy in nats (0 at the ends).
        offset = -(inner * inner.log() + (1 - inner) * (1 - inner).log())
        offset[0] = offset[-1] = 0.0
        n = channels or 1
        self.channels = channels
        self.slope = nn.Parameter(s.float().repeat(n, 1))
        self.offset = nn.Parameter(offset.float().repeat(n, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels is None:
            return (x.unsqueeze(-1) * self.slope[0] + self.offset[0]).amax(-1)
        view = (1, -1) + (1,) * (x.dim() - 2) + (self.slope.shape[1],)
        return (x.unsqueeze(-1) * self.slope.view(view) + self.offset.view(view)).amax(-1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, pieces={self.slope.shape[1]}"


ACTIVATIONS: dict[str, Callable[[int | None], nn.Module]] = {
    "relu": lambda c: nn.ReLU(inplace=True),
    "relu6": lambda c: nn.ReLU6(inplace=True),
    "leaky_relu": lambda c: nn.LeakyReLU(0.01, inplace=True),
    "prelu": lambda c: nn.PReLU(c or 1),
    "elu": lambda c: nn.ELU(inplace=True),
    "gelu": lambda c: nn.GELU(),
    "silu": lambda c: nn.SiLU(inplace=True),
    "sigmoid": lambda c: nn.Sigmoid(),
    "tanh": lambda c: nn.Tanh(),
    "maxout": lambda c: ChannelMaxout(c, 2),
    "identity": lambda c: nn.Identity(),
}

# Gain g of the initialization Var(w) = g² / D_in that keeps the activations' scale through a layer
# followed by this activation (He et al. 2015 for rectifiers; torch.nn.init.calculate_gain's values
# for the rest). GELU, SiLU, ELU and maxout started as ReLU behave like rectifiers.
GAINS: dict[str, float] = {
    "relu": math.sqrt(2.0),
    "relu6": math.sqrt(2.0),
    "leaky_relu": math.sqrt(2.0 / (1 + 0.01**2)),
    "prelu": math.sqrt(2.0 / (1 + 0.25**2)),  # PReLU's initial slope is 0.25
    "elu": math.sqrt(2.0),
    "gelu": math.sqrt(2.0),
    "silu": math.sqrt(2.0),
    "maxout": math.sqrt(2.0),
    "sigmoid": 1.0,
    "tanh": 5.0 / 3.0,
    "identity": 1.0,
}


def resolve_activation(name: str, auto: str = "relu", field: str = "model.activation") -> str:
    """The concrete activation name for ``name`` (``auto`` becomes the architecture's ``auto``)."""
    name = auto if name == "auto" else name
    if name not in ACTIVATIONS:
        raise unknown_name("activation", name, ["auto", *ACTIVATIONS], field)
    return name


def make_activation(name: str, field: str = "model.activation", *, channels: int | None = None,
                    auto: str = "relu") -> nn.Module:
    """An activation layer by name; ``channels`` gives PReLU and maxout one parameter set per channel."""
    return ACTIVATIONS[resolve_activation(name, auto, field)](channels)


def activation_gain(name: str, auto: str = "relu") -> float:
    return GAINS[resolve_activation(name, auto)]


def resolve_norm(kind: str, auto: str = "batch") -> str:
    kind = auto if kind == "auto" else kind
    if kind not in NORMS[1:]:
        raise unknown_name("norm", kind, NORMS, "model.norm")
    return kind


def make_norm(kind: str, channels: int, dims: int = 2, *, auto: str = "batch") -> nn.Module:
    """A normalization layer for ``channels`` features of a ``dims``-d feature map (0 = vectors).

    ``layer`` normalizes over all of a sample's features (LayerNorm; GroupNorm with one group on
    feature maps, which is the same computation), ``group`` over groups of up to 32 channels.
    """
    kind = resolve_norm(kind, auto)
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm1d(channels) if dims == 0 else nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.LayerNorm(channels) if dims == 0 else nn.GroupNorm(1, channels)
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def norm_factory(kind: str, auto: str = "batch") -> Callable[[int], nn.Module]:
    """``channels -> norm layer`` for feature maps, the ``norm_layer`` torchvision builders take."""
    kind = resolve_norm(kind, auto)
    return lambda channels: make_norm(kind, channels)


def replace_activations(net: nn.Module, name: str, native: tuple[type, ...] = (nn.ReLU, nn.ReLU6)) -> int:
    """Swap every ``native`` activation module in ``net`` for ``name`` (shared-parameter forms).

    Used on torchvision builders, whose activation is fixed. Returns the number replaced.
    """
    count = 0
    for parent in list(net.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, native):
                setattr(parent, child_name, make_activation(name))
                count += 1
    return count


def replace_norms(net: nn.Module, kind: str) -> int:
    """Swap every BatchNorm2d in ``net`` for ``kind`` (layer, group, none) with the same width."""
    count = 0
    for parent in list(net.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, child_name, make_norm(kind, child.num_features))
                count += 1
    return count
