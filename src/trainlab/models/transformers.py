"""Vision transformers (M8, S4 4.3-4.4): ViT-Tiny, ViT-Small and Swin-T, built with torchvision's
classes (no weights downloaded).

ViT cuts the image into patches, embeds each as a token, adds a class token and learned position
embeddings and runs a transformer encoder; the class token's output is classified. For small
inputs the patch side defaults to side/8 (64 tokens), so a 32x32 image gets 4x4 patches and an 8x8
digit 1x1 patches. Swin builds a hierarchy: attention inside local windows, shifted every other
block, with patch merging between stages; small inputs get 2x2 patches and 4x4 windows.
Transformers always use LayerNorm (``model.norm`` does not apply); ``model.activation`` other
than ``auto`` replaces the MLP's GELU.
"""
from __future__ import annotations

from pydantic import Field
from torch import nn

from ..errors import RecipeError
from ..registry import MODELS
from .blocks import as_head
from .layers import replace_activations, resolve_activation
from .options import SMALL_INPUT, Options, parse_options

TRANSFORMER_USES = ("activation", "dropout")


class ViTOptions(Options):
    patch_size: int | None = Field(None, ge=1, description="patch side in pixels (default: 16, or side/8 for "
                                   f"inputs up to {SMALL_INPUT} px)")
    dim: int | None = Field(None, ge=1, description="token width (tiny 192, small 384)")
    depth: int | None = Field(None, ge=1, description="encoder blocks (12)")
    heads: int | None = Field(None, ge=1, description="attention heads (tiny 3, small 6)")
    mlp_ratio: float = Field(4.0, gt=0.0, description="MLP hidden width / token width")
    attention_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the attention weights")
    drop_connect: float = Field(0.0, ge=0.0, lt=1.0, description="DropConnect probability on the classifier weights")


def _side(info, name: str) -> int:
    if len(info.input_shape) != 3:
        raise RecipeError(f"model.name: {name} takes images (C, H, W), the data gives {list(info.input_shape)}")
    _, h, w = info.input_shape
    if h != w:
        raise RecipeError(f"model.name: {name} needs square images, got {h}x{w} (set data.image_size to one number)")
    return h


def default_patch(side: int, large: int = 16) -> int:
    """The largest patch side that divides ``side`` and is at most 16 (large) or side/8 (small)."""
    target = large if side > SMALL_INPUT else max(1, side // 8)
    return max(d for d in range(1, target + 1) if side % d == 0)


def _vit_class():
    """torchvision's VisionTransformer taking any number of input channels (torchvision imported on use)."""
    from torchvision import models as tvm

    class ViT(tvm.VisionTransformer):
        def __init__(self, in_channels: int, **kwargs):
            super().__init__(**kwargs)
            if in_channels != 3:
                old = self.conv_proj
                self.conv_proj = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride)
                fan_in = in_channels * old.kernel_size[0] * old.kernel_size[1]
                nn.init.trunc_normal_(self.conv_proj.weight, std=(1.0 / fan_in) ** 0.5)
                nn.init.zeros_(self.conv_proj.bias)

    return ViT


def _vit(cfg, info, dim: int, heads: int) -> nn.Module:
    opts = parse_options(cfg.options, ViTOptions, cfg.name)
    side = _side(info, cfg.name)
    patch = opts.patch_size or default_patch(side)
    if side % patch:
        raise RecipeError(f"model.options.patch_size: {patch} does not divide the {side}x{side} input")
    dim = opts.dim or dim
    heads = opts.heads or heads
    if dim % heads:
        raise RecipeError(f"model.options.dim: {dim} is not divisible by {heads} heads")
    net = _vit_class()(info.input_shape[0], image_size=side, patch_size=patch, num_layers=opts.depth or 12,
               num_heads=heads, hidden_dim=dim, mlp_dim=int(dim * opts.mlp_ratio), dropout=cfg.dropout,
               attention_dropout=opts.attention_dropout, num_classes=info.num_classes)
    act = resolve_activation(cfg.activation, "gelu")
    if act != "gelu":
        replace_activations(net, act, native=(nn.GELU,))
    net.heads.head = as_head(net.heads.head, 0.0, opts.drop_connect)
    return net


META = dict(options=ViTOptions, uses=TRANSFORMER_USES, auto_activation="gelu", auto_norm="layer",
            default_input=(3, 224, 224))


@MODELS.register("vit_tiny", help="ViT-Tiny: patch embedding + 12 transformer blocks, width 192, 3 heads", **META)
def vit_tiny(cfg, info):
    return _vit(cfg, info, 192, 3)


@MODELS.register("vit_small", help="ViT-Small: patch embedding + 12 transformer blocks, width 384, 6 heads", **META)
def vit_small(cfg, info):
    return _vit(cfg, info, 384, 6)


class SwinOptions(Options):
    patch_size: int | None = Field(None, ge=1, description=f"patch side (4; 2 for inputs up to {SMALL_INPUT} px)")
    window_size: int | None = Field(None, ge=1, description=f"attention window side (7; 4 for inputs up to "
                                    f"{SMALL_INPUT} px)")
    embed_dim: int = Field(96, ge=1, description="channels of the first stage (doubled at each merge)")
    depths: list[int] = Field([2, 2, 6, 2], description="blocks per stage")
    heads: list[int] = Field([3, 6, 12, 24], description="attention heads per stage")
    stochastic_depth: float = Field(0.2, ge=0.0, lt=1.0, description="drop-path rate of the last block")
    drop_connect: float = Field(0.0, ge=0.0, lt=1.0, description="DropConnect probability on the classifier weights")


@MODELS.register("swin_t", help="Swin-T: shifted-window attention, 4 stages with patch merging", options=SwinOptions,
                 uses=TRANSFORMER_USES, auto_activation="gelu", auto_norm="layer", default_input=(3, 224, 224))
def swin_t(cfg, info):
    from torchvision import models as tvm

    opts = parse_options(cfg.options, SwinOptions, cfg.name)
    if len(info.input_shape) != 3:
        raise RecipeError(f"model.name: swin_t takes images (C, H, W), the data gives {list(info.input_shape)}")
    if len(opts.depths) != len(opts.heads):
        raise RecipeError(f"model.options.heads: {len(opts.heads)} entries for {len(opts.depths)} stages")
    small = min(info.input_shape[1:]) <= SMALL_INPUT
    patch = opts.patch_size or (2 if small else 4)
    window = opts.window_size or (4 if small else 7)
    net = tvm.SwinTransformer(patch_size=[patch, patch], embed_dim=opts.embed_dim, depths=opts.depths,
                              num_heads=opts.heads, window_size=[window, window], dropout=cfg.dropout,
                              stochastic_depth_prob=opts.stochastic_depth, num_classes=info.num_classes)
    if info.input_shape[0] != 3:
        old = net.features[0][0]
        net.features[0][0] = nn.Conv2d(info.input_shape[0], old.out_channels, old.kernel_size, old.stride)
    act = resolve_activation(cfg.activation, "gelu")
    if act != "gelu":
        replace_activations(net, act, native=(nn.GELU,))
    net.head = as_head(net.head, 0.0, opts.drop_connect)
    return net
