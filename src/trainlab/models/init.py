"""Parameter initialization (I1-I4): Xavier and Kaiming/MSRA schemes, zero-initialized residual
branches and weights from a local file.

The notes (S3) give the Gaussian std for a layer with D_in inputs per output (D_in = k²·C_in for a
k x k convolution, divided by the groups): Xavier std = 1/sqrt(D_in), which keeps the variance of
the activations constant through a layer whose activation has slope 1 around zero (tanh); MSRA
(He et al.) multiplies the variance by 2 for ReLU, std = sqrt(2/D_in), because ReLU zeroes half of
its inputs. (S3 prints the MSRA std as 2/sqrt(D_in); the variance is doubled, so the std grows by
sqrt(2).) The uniform variants draw from [-a, a] with a = sqrt(3)·std, which has the same std.
Recurrent layers (D_in = the input size for input-to-hidden weights, the hidden size for
hidden-to-hidden ones) and attention projections follow the same rule, one gate or projection
matrix at a time.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import RecipeError
from .layers import is_weight_layer, weight_layer_types

SCHEMES = ("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal")
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(D_in, D_out) of a linear or conv weight.

    Linear (out, in): D_in = in. Conv (C_out, C_in/groups, k, k): D_in = k²·C_in/groups and
    D_out = k²·C_out. A transposed conv stores (C_in, C_out/groups, k, k), so the same rule gives
    it D_in = k²·C_out/groups, torch's convention.
    """
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def init_std(scheme: str, fan_in: int, fan_out: int, gain: float, fan: str = "in") -> float:
    """Standard deviation of ``scheme`` for a layer with ``fan_in`` inputs and ``fan_out`` outputs per unit.

    xavier: 1/sqrt(D_in) (``fan="in"``, the notes' form) or sqrt(2/(D_in + D_out)) (``fan="avg"``,
    Glorot & Bengio's compromise between the forward and the backward pass). kaiming: gain/sqrt(D_in)
    with gain sqrt(2) for ReLU (see :data:`trainlab.models.layers.GAINS`).
    """
    if scheme.startswith("xavier"):
        return 1.0 / math.sqrt(fan_in) if fan == "in" else math.sqrt(2.0 / (fan_in + fan_out))
    if scheme.startswith("kaiming"):
        return gain / math.sqrt(fan_in)
    raise ValueError(f"no standard deviation for init scheme {scheme!r}")


def _kept(net: nn.Module) -> set[int]:
    """ids of modules that must start at a specific value (deformable offsets at zero, bilinear
    up-sampling, zero-initialized FCN skip scores): they mark themselves ``trainlab_keep_init``."""
    kept = set()
    for m in net.modules():
        if getattr(m, "trainlab_keep_init", False):
            kept.update(id(x) for x in m.modules())
    return kept


def _weighted_layers(net: nn.Module):
    """Every layer whose weights ``model.init`` draws: conv and linear layers (the weight layers
    of :mod:`trainlab.models.layers`), recurrent and attention layers, whose initial value is not
    deliberately special."""
    types = (*weight_layer_types(), nn.RNNBase, nn.MultiheadAttention)
    kept = _kept(net)
    for m in net.modules():
        if id(m) not in kept and isinstance(m, types):
            yield m


# Gates stacked in a recurrent weight matrix (rows), in torch's order: LSTM i, f, g, o; GRU r, z, n.
GATES = {"LSTM": 4, "GRU": 3}


def _stacked_linears(net: nn.Module) -> dict[int, int]:
    """ids of linear layers that stack several projections → how many (Swin's fused q/k/v)."""
    swin = getattr(sys.modules.get("torchvision.models.swin_transformer"), "ShiftedWindowAttention", None)
    if swin is None:  # only a net that imported torchvision's Swin can hold one: no import here
        return {}
    return {id(m.qkv): 3 for m in net.modules() if isinstance(m, swin)}


def weight_chunks(m: nn.Module, stacked: int = 1) -> list[tuple[torch.Tensor, int]]:
    """(weight, chunks) pairs of a layer: each weight is drawn as ``chunks`` stacked matrices.

    A recurrent layer stacks one (hidden, D_in) matrix per gate in ``weight_ih_l*`` (D_in = the
    layer's input size) and ``weight_hh_l*`` (D_in = the hidden size); LSTM projections
    ``weight_hr_l*`` are one matrix. Attention stacks the query, key and value projections in
    ``in_proj_weight`` (each (E, E)); its ``out_proj`` is an ordinary linear layer, drawn on its own.
    ``stacked`` is the number of projections a linear layer stacks (3 for Swin's fused qkv).
    """
    if isinstance(m, nn.RNNBase):
        gates = GATES.get(m.mode, 1)
        return [(getattr(m, name), 1 if name.startswith("weight_hr") else gates)
                for name in m._flat_weights_names if name.startswith("weight_")]
    if isinstance(m, nn.MultiheadAttention):
        if m.in_proj_weight is not None:
            return [(m.in_proj_weight, 3)]
        return [(m.q_proj_weight, 1), (m.k_proj_weight, 1), (m.v_proj_weight, 1)]
    return [(m.weight, stacked)]


def _biases(m: nn.Module) -> list[torch.Tensor]:
    if isinstance(m, nn.RNNBase):
        return [getattr(m, name) for name in m._flat_weights_names if name.startswith("bias_")]
    if isinstance(m, nn.MultiheadAttention):
        return [m.in_proj_bias] if m.in_proj_bias is not None else []
    return [m.bias] if getattr(m, "bias", None) is not None else []


def draw(weight: torch.Tensor, scheme: str, gain: float, fan: str = "in") -> None:
    """Fill ``weight`` in place with ``scheme``'s distribution for its own (D_in, D_out)."""
    fan_in, fan_out = fans(weight)
    std = init_std(scheme, fan_in, fan_out, gain, fan)
    if scheme.endswith("uniform"):
        bound = math.sqrt(3.0) * std
        weight.uniform_(-bound, bound)
    else:
        weight.normal_(0.0, std)


def init_weights(net: nn.Module, scheme: str, gain: float, fan: str = "in") -> int:
    """Re-initialize every conv, linear, recurrent and attention weight of ``net`` with ``scheme``;
    their biases become 0.

    Stacked matrices (the gates of an LSTM/GRU, attention's q/k/v) are drawn one matrix at a time
    (:func:`weight_chunks`), so D_out is that of one gate or projection. Embedding tables, position
    embeddings and class tokens keep the architecture's init: a token looks up one row rather than
    summing D_in inputs, so the fan-in formulas do not apply to them.
    Returns the number of layers initialized. ``default`` leaves the architecture's own init.
    """
    if scheme == "default":
        return 0
    if scheme not in SCHEMES:
        raise RecipeError(f"model.init: unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    count = 0
    stacked = _stacked_linears(net)
    with torch.no_grad():
        for m in _weighted_layers(net):
            for weight, chunks in weight_chunks(m, stacked.get(id(m), 1)):
                for part in weight.chunk(chunks, dim=0):  # views: drawing a part fills the weight
                    draw(part, scheme, gain, fan)
            for bias in _biases(m):
                bias.zero_()
            count += 1
    return count


# --------------------------------------------------------------------------- residual branches
def residual_branch_ends(net: nn.Module) -> list[nn.Module]:
    """The last layer of every residual branch: its last norm, or its last conv/linear without one.

    Zeroing them makes every residual block start as its shortcut (identity), so a deep network
    starts as a shallow one and the variance does not grow with the number of blocks (S4 1.1).
    """
    from .blocknet import Block
    from .convnets import XceptionBlock

    def last_of(layers: list[nn.Module], norm_first: bool = True) -> nn.Module | None:
        norms = [m for m in layers if isinstance(m, NORMS)]
        weighted = [m for m in layers if is_weight_layer(m)]
        if norm_first and norms:
            return norms[-1]
        return weighted[-1] if weighted else None

    def tv(module: str, name: str) -> type:
        # torchvision's blocks can only be in ``net`` if their module was imported: do not import it here.
        cls = getattr(sys.modules.get(f"torchvision.models.{module}"), name, None)
        return cls if cls is not None else _Never

    Bottleneck, BasicBlock = tv("resnet", "Bottleneck"), tv("resnet", "BasicBlock")
    InvertedResidual = tv("mobilenetv2", "InvertedResidual")
    EncoderBlock = tv("vision_transformer", "EncoderBlock")
    SwinTransformerBlock = tv("swin_transformer", "SwinTransformerBlock")
    ends: list[nn.Module] = []
    for m in net.modules():
        if isinstance(m, Bottleneck):
            ends.append(last_of([m.conv3, m.bn3]))
        elif isinstance(m, BasicBlock):
            ends.append(last_of([m.conv2, m.bn2]))
        elif isinstance(m, InvertedResidual) and m.use_res_connect:
            ends.append(last_of(list(m.conv.modules())))
        elif isinstance(m, XceptionBlock):
            ends.append(last_of(list(m.branch.modules())))
        elif isinstance(m, Block) and m.shortcut is not None:
            ends.append(last_of(list(m.conv2.modules()) + [m.norm2]))
        elif isinstance(m, EncoderBlock):
            ends += [m.self_attention.out_proj, last_of(list(m.mlp.modules()), norm_first=False)]
        elif isinstance(m, SwinTransformerBlock):
            ends += [m.attn.proj, last_of(list(m.mlp.modules()), norm_first=False)]
    return [e for e in ends if e is not None]


class _Never:
    """A class no module is an instance of."""


def zero_init_residual(net: nn.Module, name: str) -> int:
    """Zero the last norm's scale (or the last weight) of every residual branch (I3)."""
    ends = residual_branch_ends(net)
    if not ends:
        raise RecipeError(f"model.zero_init_residual: {name} has no residual branches (use a ResNet, "
                          "SE-ResNet, ResNeXt, MobileNet v2, Xception, ViT, Swin, or blocknet with residual)")
    with torch.no_grad():
        for m in ends:
            m.weight.zero_()
            if not isinstance(m, NORMS) and m.bias is not None:
                m.bias.zero_()
    return len(ends)


# -------------------------------------------------------------------------------- weights file
@dataclass
class WeightsReport:
    """What loading a weights file did: names matched, missing from the file, unexpected in it."""

    path: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # same name, different shape: skipped

    def line(self) -> str:
        def some(names):
            return f" ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" if names else ""

        return (f"weights {self.path}: {len(self.matched)} tensors loaded, {len(self.missing)} missing"
                f"{some(self.missing)}, {len(self.unexpected)} unexpected{some(self.unexpected)}, "
                f"{len(self.mismatched)} skipped for shape{some(self.mismatched)}")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file (a trainlab checkpoint too) or a .pt/.pth state dict.

    Names are reduced to the network's own: a trainlab checkpoint's ``model.net.`` prefix, a
    wrapped model's ``net.`` and a DataParallel ``module.`` prefix are removed.
    """
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"model.weights: file {str(p)!r} does not exist")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            tensors = load(p.read_bytes())
        except (SafetensorError, ValueError, RuntimeError) as err:
            raise RecipeError(f"model.weights: {p} is not a readable safetensors file "
                              f"({str(err).splitlines()[0]})") from None
    elif p.suffix in (".pt", ".pth", ".bin"):
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
            raise RecipeError(f"model.weights: {p} is not a readable state dict "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
        for key in ("state_dict", "model"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise RecipeError(f"model.weights: {p} does not hold a mapping of names to tensors")
        tensors = dict(obj)
    else:
        raise RecipeError(f"model.weights: {p}: expected a .safetensors, .pt or .pth file")
    for prefix in ("model.net.", "net.", "module."):
        if any(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return tensors


def load_weights(net: nn.Module, path: str | Path) -> WeightsReport:
    """Load every tensor of ``path`` whose name and shape match ``net``; report the rest (I4)."""
    tensors = read_weights(path)
    own = net.state_dict()
    report = WeightsReport(str(path))
    for k in own:
        if k not in tensors:
            report.missing.append(k)
        elif tuple(tensors[k].shape) != tuple(own[k].shape):
            report.mismatched.append(f"{k} {list(tensors[k].shape)} vs {list(own[k].shape)}")
        else:
            report.matched.append(k)
    report.unexpected = [k for k in tensors if k not in own]
    if not report.matched:
        file_keys = ", ".join(list(tensors)[:3])
        model_keys = ", ".join(list(own)[:3])
        raise RecipeError(f"model.weights: no tensor of {path} matches the model (file: {file_keys}, ...; "
                          f"model: {model_keys}, ...)")
    with torch.no_grad():
        for k in report.matched:
            own[k].copy_(tensors[k].to(own[k].dtype))
    return report
