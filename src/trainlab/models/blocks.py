"""Building blocks of the model zoo (M1-M6).

Convolution variants (pointwise, depthwise, depthwise-separable, grouped, dilated, transposed,
deformable), squeeze-and-excitation, maxout, DropBlock, DropConnect and unpooling. Each is an
ordinary ``nn.Module`` usable from Python; the ``blocknet`` architecture and the options of the
zoo's networks put them in models from a recipe. Output-size arithmetic is in
:func:`conv_output_size` and :func:`transposed_output_size`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import make_activation, make_norm


# ----------------------------------------------------------------------------- size arithmetic
def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output side of a convolution or pooling: floor((I − K_eff + 2P) / S) + 1 (S0 Q20, M1).

    K_eff = dilation · (K − 1) + 1 is the extent of a dilated kernel (K itself when dilation is 1).
    """
    k_eff = dilation * (kernel - 1) + 1
    return (size - k_eff + 2 * padding) // stride + 1


def transposed_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                           output_padding: int = 0, dilation: int = 1) -> int:
    """Output side of a transposed convolution: (I − 1) · S + K_eff − 2P (+ output padding) (S4 2.2)."""
    return (size - 1) * stride + dilation * (kernel - 1) + 1 - 2 * padding + output_padding


def same_padding(kernel: int, dilation: int = 1) -> int:
    """Padding that keeps the side at stride 1 ("same" padding) for an odd kernel."""
    return dilation * (kernel - 1) // 2


# ------------------------------------------------------------------------------ conv variants
def pointwise_conv(cin: int, cout: int, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution: mixes channels, keeps H x W; changes the depth cheaply (S0 Q17)."""
    return nn.Conv2d(cin, cout, 1, bias=bias)


def depthwise_conv(channels: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                   bias: bool = False) -> nn.Conv2d:
    """One k x k filter per channel (groups = channels): spatial filtering without channel mixing."""
    return nn.Conv2d(channels, channels, kernel, stride, same_padding(kernel, dilation), dilation,
                     groups=channels, bias=bias)


def grouped_conv(cin: int, cout: int, kernel: int = 3, groups: int = 2, stride: int = 1,
                 bias: bool = False) -> nn.Conv2d:
    """Channels split into ``groups`` convolved separately: 1/groups of the weights and MACs (S4 2.4)."""
    if cin % groups or cout % groups:
        raise ValueError(f"grouped conv: {cin} and {cout} channels must both divide into {groups} groups")
    return nn.Conv2d(cin, cout, kernel, stride, same_padding(kernel), groups=groups, bias=bias)


def dilated_conv(cin: int, cout: int, kernel: int = 3, dilation: int = 2, stride: int = 1,
                 bias: bool = False) -> nn.Conv2d:
    """Holes between the taps: a (d(k−1)+1)-wide receptive field for k² weights (S4 2.3)."""
    return nn.Conv2d(cin, cout, kernel, stride, same_padding(kernel, dilation), dilation, bias=bias)


class ConvNormAct(nn.Sequential):
    """conv → norm → activation; the conv has a bias only when there is no norm after it."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, *, groups: int = 1,
                 dilation: int = 1, norm: str = "batch", activation: str = "relu"):
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, same_padding(kernel, dilation), dilation, groups=groups, bias=bias),
            make_norm(norm, cout),
            make_activation(activation, channels=cout),
        )


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise k x k (per channel) then pointwise 1x1 (across channels), each with norm and activation.

    MobileNet's factorization (S4 2.6): k²·C + C·C' weights instead of k²·C·C'.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, *, dilation: int = 1,
                 norm: str = "batch", activation: str = "relu"):
        super().__init__(
            depthwise_conv(cin, kernel, stride, dilation, bias=norm == "none"),
            make_norm(norm, cin),
            make_activation(activation, channels=cin),
            pointwise_conv(cin, cout, bias=norm == "none"),
            make_norm(norm, cout),
            make_activation(activation, channels=cout),
        )


class SeparableConv2d(nn.Sequential):
    """Xception's separable convolution: depthwise k x k then pointwise 1x1, no norm in between."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1):
        super().__init__(depthwise_conv(cin, kernel, stride, dilation), pointwise_conv(cin, cout))


class DeformableConv2d(nn.Module):
    """Deformable convolution (Dai et al. 2017; v2 modulation by Zhu et al. 2018) (S4 2.7).

    A plain convolution predicts, at every output position, a 2-d offset for each of the k² taps
    (and with ``modulated`` a weight in (0, 1) per tap); :class:`torchvision.ops.DeformConv2d`
    then samples the input bilinearly at the shifted positions. The offset branch starts at zero,
    so the layer starts as the ordinary convolution and learns where to look.

    Input (N, C, H, W); output (N, C', H', W') with the usual size arithmetic.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int | None = None,
                 dilation: int = 1, groups: int = 1, bias: bool = False, modulated: bool = False):
        super().__init__()
        from torchvision.ops import DeformConv2d

        padding = same_padding(kernel, dilation) if padding is None else padding
        taps = kernel * kernel
        self.modulated = modulated
        self.offset = nn.Conv2d(cin, (3 if modulated else 2) * taps, kernel, stride, padding, dilation)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.offset.trainlab_keep_init = True  # model.init must not move the start off the plain conv
        self.conv = DeformConv2d(cin, cout, kernel, stride, padding, dilation, groups, bias)
        self.taps = taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.offset(x)
        if self.modulated:
            offset, mask = out[:, : 2 * self.taps], torch.sigmoid(out[:, 2 * self.taps:])
            # sigmoid(0) = 0.5: double it so that the zero-initialized layer is the plain convolution.
            return self.conv(x, offset, 2.0 * mask)
        return self.conv(x, out)


class LearnedUpsample(nn.ConvTranspose2d):
    """Transposed convolution that multiplies the side by ``factor`` exactly, bilinear at the start.

    Kernel 2f (2f − 1 for odd f), stride f, padding ⌊f/2⌋ gives (I − 1)·f + K − 2P = I·f.
    FCN initializes its up-sampling filters as bilinear interpolation and lets training refine
    them (S0 Q16, S4 3.6). Each channel (class score map) is up-sampled by its own filter
    (groups = channels): C·K² weights rather than C²·K², which matters with many classes.
    Input (N, C, H, W); output (N, C, H·f, W·f).
    """

    def __init__(self, channels: int, factor: int, bias: bool = False):
        if factor < 1:
            raise ValueError(f"up-sampling factor must be >= 1, got {factor}")
        kernel = 2 * factor - factor % 2
        super().__init__(channels, channels, kernel, factor, factor // 2, groups=channels, bias=bias)
        self.factor = factor
        self.trainlab_keep_init = True  # model.init keeps the bilinear start
        with torch.no_grad():
            self.weight.copy_(bilinear_kernel(kernel).expand_as(self.weight))


def bilinear_kernel(size: int) -> torch.Tensor:
    """(size, size) filter of bilinear up-sampling by (size + 1) // 2: the outer product of two tents."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 else factor - 0.5
    pos = torch.arange(size, dtype=torch.float32)
    tent = (1 - (pos - center).abs() / factor).clamp(min=0)
    return tent[:, None] * tent[None, :]


# --------------------------------------------------------------------------------- attention
class SEBlock(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) (S4 2.5).

    Squeeze: global average pooling, one number per channel (global context). Excite: a bottleneck
    of two fully connected layers (C → C/r → C) and a sigmoid give a weight in (0, 1) per channel,
    which rescales the feature map. Input and output (N, C, H, W).
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 8):
        super().__init__()
        hidden = max(channels // reduction, min(min_hidden, channels))
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s), inplace=True)))
        return x * s


# ------------------------------------------------------------------------------------ maxout
class Maxout(nn.Module):
    """Maxout layer (Goodfellow et al. 2013): ``out_features`` units, each the max of ``pieces`` linear maps.

    With ``conv=True`` the maps are 1x1 convolutions over (N, C, H, W); otherwise linear layers
    over (N, D). A maxout network with enough pieces approximates any convex activation, so the
    layer is both the affine map and the non-linearity.
    """

    def __init__(self, in_features: int, out_features: int, pieces: int = 2, conv: bool = False):
        super().__init__()
        self.pieces = pieces
        self.out_features = out_features
        layer = nn.Conv2d(in_features, out_features * pieces, 1) if conv else nn.Linear(in_features, out_features * pieces)
        self.linear = layer
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        if self.conv:
            n, _, h, w = z.shape
            return z.view(n, self.out_features, self.pieces, h, w).amax(2)
        return z.view(*z.shape[:-1], self.out_features, self.pieces).amax(-1)


# ---------------------------------------------------------------------------- regularization
class DropBlock2d(nn.Module):
    """DropBlock (Ghiasi et al. 2018): drop contiguous block_size x block_size squares of a feature map.

    Dropping single activations barely regularizes a conv net, because neighbours carry the same
    information; dropping whole squares does. Block centres are drawn with rate
    γ = p / b² · (H·W) / ((H − b + 1)(W − b + 1)) so that about a fraction ``p`` of the units is
    dropped; the kept units are scaled by (number of units) / (number kept). Identity in eval mode.
    Input and output (N, C, H, W).
    """

    def __init__(self, p: float = 0.1, block_size: int = 3):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropBlock p must be in [0, 1), got {p}")
        self.p = p
        self.block_size = block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        n, c, h, w = x.shape
        b = min(self.block_size, h, w)
        valid_h, valid_w = h - b + 1, w - b + 1
        gamma = self.p / (b * b) * (h * w) / (valid_h * valid_w)
        seeds = (torch.rand(n, c, valid_h, valid_w, device=x.device) < gamma).to(x.dtype)
        # A seed at (i, j) drops rows i..i+b-1 and columns j..j+b-1: dilate by max-pooling.
        seeds = F.pad(seeds, (b - 1, b - 1, b - 1, b - 1))
        dropped = F.max_pool2d(seeds, b, stride=1)
        keep = 1.0 - dropped
        return x * keep * (keep.numel() / keep.sum().clamp(min=1.0))

    def extra_repr(self) -> str:
        return f"p={self.p}, block_size={self.block_size}"


class DropConnectLinear(nn.Linear):
    """Linear layer with DropConnect (Wan et al. 2013): drop weights, not activations.

    In training each weight is zeroed with probability ``p`` (one mask per mini-batch) and the
    kept weights are scaled by 1/(1 − p), the inverted scaling that lets evaluation use W as is.
    Input (N, in_features), output (N, out_features).
    """

    def __init__(self, in_features: int, out_features: int, p: float = 0.5, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropConnect p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return F.linear(x, self.weight, self.bias)
        keep = torch.rand_like(self.weight) >= self.p
        return F.linear(x, self.weight * keep / (1.0 - self.p), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", p={self.p}"


class ClassifierHead(DropConnectLinear):
    """The final linear layer of a classifier, with dropout on its input and DropConnect on its weights.

    It keeps nn.Linear's parameter names (``weight``, ``bias``), so weight files written for the
    plain architecture still load. Input (N, in_features), output (N, classes).
    """

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0, drop_connect: float = 0.0,
                 bias: bool = True):
        super().__init__(in_features, out_features, drop_connect, bias)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dropout:
            x = F.dropout(x, self.dropout, self.training)
        return super().forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", dropout={self.dropout}"


def as_head(linear: nn.Linear, dropout: float = 0.0, drop_connect: float = 0.0) -> nn.Module:
    """``linear`` as a :class:`ClassifierHead` with the same weights (itself when both rates are 0)."""
    if not dropout and not drop_connect:
        return linear
    head = ClassifierHead(linear.in_features, linear.out_features, dropout, drop_connect, linear.bias is not None)
    head = head.to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        head.weight.copy_(linear.weight)
        if linear.bias is not None:
            head.bias.copy_(linear.bias)
    return head


# ---------------------------------------------------------------------------------- unpooling
class Unpool2d(nn.Module):
    """Up-sampling by ``factor`` without weights (S2 2.1, M3).

    - ``zero``: each value goes to the top-left corner of its factor x factor cell, zeros elsewhere;
    - ``nearest``: each value fills its whole cell;
    - ``max``: each value goes back where the max-pooling took it from (``indices`` from
      ``nn.MaxPool2d(return_indices=True)``), zeros elsewhere, as in SegNet.

    Input (N, C, H, W); output (N, C, H·f, W·f), or ``output_size`` for ``max``.
    """

    MODES = ("zero", "nearest", "max")

    def __init__(self, factor: int = 2, mode: str = "zero"):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"unpooling mode must be one of {self.MODES}, got {mode!r}")
        self.factor = factor
        self.mode = mode

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None,
                output_size: tuple[int, int] | None = None) -> torch.Tensor:
        f = self.factor
        if self.mode == "nearest":
            return x.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)
        if self.mode == "zero":
            n, c, h, w = x.shape
            out = x.new_zeros(n, c, h, f, w, f)
            out[:, :, :, 0, :, 0] = x
            return out.view(n, c, h * f, w * f)
        if indices is None:
            raise ValueError("max unpooling needs the indices of the max-pooling it inverts")
        # F.max_unpool2d's result as a scatter into the flattened H x W plane: aten::max_unpool2d has no
        # ONNX export and its output_size check fails under torch.jit.trace; ScatterElements exports.
        n, c, h, w = x.shape
        out_h, out_w = (h * f, w * f) if output_size is None else tuple(output_size)[-2:]
        out = x.new_zeros(n, c, out_h * out_w).scatter(2, indices.flatten(2), x.flatten(2))
        return out.view(n, c, out_h, out_w)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, mode={self.mode!r}"
