"""Segmentation architectures and their up-sampling (M3, M10, K3): fcn, segnet, unet and fcn_resnet18.

Every up-sampling method is checked against its definition written out here on a small tensor
(hand-worked numbers or explicit loops), and every model against hand counts and behaviour that
follows from its design (zero skip scores, max-unpooling at the encoder's argmax positions).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainlab.data.bundle import DataInfo
from trainlab.errors import RecipeError
from trainlab.models import build_model
from trainlab.models.blocks import LearnedUpsample, Unpool2d, transposed_output_size
from trainlab.models.segmentation import UpConv, Upsample
from trainlab.recipe import ModelConfig, load_recipe
from trainlab.registry import MODELS

NEW = ("fcn", "segnet", "unet")
CLASSES = 5


def info(channels: int = 3, side: int = 64, classes: int = CLASSES) -> DataInfo:
    return DataInfo((channels, side, side), classes, [f"c{i}" for i in range(classes)])


def make(name: str, channels: int = 3, classes: int = CLASSES, **model) -> nn.Module:
    """The architecture straight from its MODELS entry (no input stage)."""
    cfg = ModelConfig(name=name, **model)
    return MODELS.get(name).fn(cfg, info(channels, classes=classes))


def params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# 2x2 input [[1, 2], [3, 4]] up-sampled by 2, worked by hand. Bilinear with align_corners=False:
# output pixel o samples the input at (o + 0.5)/2 − 0.5 = −0.25, 0.25, 0.75, 1.25, clamped to [0, 1],
# so each row [a, b] becomes [a, 0.75a + 0.25b, 0.25a + 0.75b, b]; the same along the columns.
X22 = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
BILINEAR_X22 = torch.tensor([[1.00, 1.25, 1.75, 2.00],
                             [1.50, 1.75, 2.25, 2.50],
                             [2.50, 2.75, 3.25, 3.50],
                             [3.00, 3.25, 3.75, 4.00]])
NEAREST_X22 = torch.tensor([[1.0, 1.0, 2.0, 2.0],
                            [1.0, 1.0, 2.0, 2.0],
                            [3.0, 3.0, 4.0, 4.0],
                            [3.0, 3.0, 4.0, 4.0]])
ZERO_X22 = torch.tensor([[1.0, 0.0, 2.0, 0.0],
                         [0.0, 0.0, 0.0, 0.0],
                         [3.0, 0.0, 4.0, 0.0],
                         [0.0, 0.0, 0.0, 0.0]])


# ------------------------------------------------------------------------------ up-sampling (M3)
def test_nearest_fills_each_cell_with_its_value():
    """M3: nearest unpooling by f puts x[i, j] in every pixel of its f x f cell (hand 2x2 and a loop for f = 3)."""
    assert torch.equal(Unpool2d(2, "nearest")(X22)[0, 0], NEAREST_X22)
    assert torch.equal(Upsample(1, 2, "nearest")(X22)[0, 0], NEAREST_X22)
    x = torch.arange(18.0).view(1, 2, 3, 3)
    out = Unpool2d(3, "nearest")(x)
    assert out.shape == (1, 2, 9, 9)
    for c in range(2):
        for r in range(9):
            for q in range(9):
                assert out[0, c, r, q] == x[0, c, r // 3, q // 3]


def test_zero_unpooling_puts_each_value_in_its_cell_corner():
    """M3: zero unpooling by f: x[i, j] at (f·i, f·j), zeros elsewhere (hand 2x2 and a loop for f = 3)."""
    assert torch.equal(Unpool2d(2, "zero")(X22)[0, 0], ZERO_X22)
    assert torch.equal(Upsample(1, 2, "zero")(X22)[0, 0], ZERO_X22)
    x = torch.arange(1.0, 19.0).view(1, 2, 3, 3)
    out = Unpool2d(3, "zero")(x)
    for c in range(2):
        for r in range(9):
            for q in range(9):
                want = x[0, c, r // 3, q // 3] if r % 3 == 0 and q % 3 == 0 else 0.0
                assert out[0, c, r, q] == want


def test_bilinear_matches_the_hand_computation():
    """M3: bilinear x2 (align_corners=False) of [[1, 2], [3, 4]] gives the numbers worked by hand above, in FCN's
    Upsample and in U-Net's up-convolution (its 1x1 conv set to the identity)."""
    torch.testing.assert_close(Upsample(1, 2, "bilinear")(X22)[0, 0], BILINEAR_X22)
    up = UpConv(1, 1, "bilinear")
    with torch.no_grad():
        up.conv.weight.fill_(1.0)
        up.conv.bias.zero_()
    torch.testing.assert_close(up(X22)[0, 0], BILINEAR_X22)
    near = UpConv(1, 1, "nearest")
    with torch.no_grad():
        near.conv.weight.fill_(1.0)
        near.conv.bias.zero_()
    torch.testing.assert_close(near(X22)[0, 0], NEAREST_X22)


def test_unet_fixed_upsampling_commutes_with_its_1x1_conv():
    """M3/M10: U-Net's bilinear/nearest up-convolution runs its 1x1 conv before up-sampling; that equals the usual
    up-sample-then-conv (interpolation weights sum to 1, bias included), computed here the usual way."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7)
    for method in ("bilinear", "nearest"):
        up = UpConv(6, 3, method)
        extra = {"align_corners": False} if method == "bilinear" else {}
        big = F.interpolate(x, scale_factor=2, mode=method, **extra)
        torch.testing.assert_close(up(x), F.conv2d(big, up.conv.weight, up.conv.bias), atol=1e-5, rtol=1e-5)


def scatter_transposed(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """Transposed convolution by its definition, one channel: every input value adds value · kernel into the output
    at (stride·i, stride·j); overlaps add; then ``padding`` rows/columns are cut from each side."""
    h, wd = x.shape
    k = w.shape[0]
    full = torch.zeros((h - 1) * stride + k, (wd - 1) * stride + k)
    for i in range(h):
        for j in range(wd):
            full[i * stride: i * stride + k, j * stride: j * stride + k] += x[i, j] * w
    return full[padding: full.shape[0] - padding, padding: full.shape[1] - padding]


@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 1), (4, 2, 1), (2, 2, 0), (5, 3, 1)])
def test_transposed_conv_scatters_kernels_and_has_the_size_formula(kernel, stride, padding):
    """M3, S4 2.2: a transposed conv scatters value x kernel into the output (overlaps add); its side is
    (I − 1)·S + K − 2P, checked for I = 3 and 4 against the layer and transposed_output_size."""
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(1, 1, kernel, stride, padding, bias=False)
    for side in (3, 4):
        x = torch.randn(side, side)
        out = layer(x[None, None])[0, 0]
        expect = (side - 1) * stride + kernel - 2 * padding
        assert out.shape == (expect, expect)
        assert transposed_output_size(side, kernel, stride, padding) == expect
        torch.testing.assert_close(out, scatter_transposed(x, layer.weight[0, 0].detach(), stride, padding))


def test_learned_upsample_starts_as_bilinear_in_the_interior():
    """M3, S0 Q16: LearnedUpsample(f) at init is bilinear up-sampling away from the border (f//2 pixels, where the
    transposed conv sees zeros instead of clamped edge values); it multiplies the side by f exactly, and its
    weights are learnable."""
    out = LearnedUpsample(1, 2)(X22)[0, 0].detach()
    torch.testing.assert_close(out[1:3, 1:3], BILINEAR_X22[1:3, 1:3])
    assert abs(float(out[0, 0]) - 0.75 * 0.75 * 1.0) < 1e-6  # corner: only x[0, 0] reaches it, weight (3/4)²
    torch.manual_seed(0)
    x = torch.randn(1, 3, 5, 6)
    for f in (2, 3, 4, 5, 8):
        layer = LearnedUpsample(3, f)
        up = layer(x).detach()
        assert up.shape == (1, 3, 5 * f, 6 * f)
        ref = F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)
        b = f // 2
        torch.testing.assert_close(up[..., b:-b, b:-b], ref[..., b:-b, b:-b], atol=1e-5, rtol=1e-5)
        assert layer.weight.requires_grad


def test_unet_transposed_upconv_is_a_2x2_stride_2_scatter():
    """M3/M10: U-Net's up-convolution: 2x2 stride-2 transposed conv, side (I − 1)·2 + 2 = 2I, no overlaps, so with
    one channel each value times the kernel fills its own 2x2 cell (a Kronecker product) plus the bias."""
    torch.manual_seed(0)
    up = UpConv(1, 1, "transposed")
    x = torch.randn(1, 1, 3, 5)
    out = up(x).detach()
    assert out.shape == (1, 1, 6, 10)
    expect = torch.kron(x[0, 0], up.conv.weight[0, 0].detach()) + up.conv.bias.detach()
    torch.testing.assert_close(out[0, 0], expect)


def test_max_unpooling_puts_values_back_at_the_argmax_positions():
    """M3, S2 2.1: 2x2 max-pooling of a hand-made 4x4 map keeps the maxima and their positions; max-unpooling puts
    new values there, zeros elsewhere (hand result, and nn.MaxUnpool2d's); odd 3x3 with ceil mode and output_size."""
    x = torch.tensor([[[[1.0, 5.0, 2.0, 0.0],
                        [3.0, 4.0, 8.0, 1.0],
                        [0.0, 2.0, 1.0, 1.0],
                        [6.0, 1.0, 3.0, 7.0]]]])
    pooled, idx = nn.MaxPool2d(2, 2, return_indices=True)(x)
    assert pooled[0, 0].tolist() == [[5.0, 8.0], [6.0, 7.0]]
    assert idx[0, 0].tolist() == [[1, 6], [12, 15]]  # row · 4 + column of each maximum
    y = torch.tensor([[[[50.0, 80.0], [60.0, 70.0]]]])
    expect = torch.tensor([[0.0, 50.0, 0.0, 0.0],
                           [0.0, 0.0, 80.0, 0.0],
                           [0.0, 0.0, 0.0, 0.0],
                           [60.0, 0.0, 0.0, 70.0]])
    out = Unpool2d(2, "max")(y, idx)
    assert torch.equal(out[0, 0], expect)
    assert torch.equal(out, nn.MaxUnpool2d(2, 2)(y, idx))

    odd = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 9.0, 5.0], [6.0, 7.0, 8.0]]]])
    pooled, idx = nn.MaxPool2d(2, 2, ceil_mode=True, return_indices=True)(odd)
    assert pooled[0, 0].tolist() == [[9.0, 5.0], [7.0, 8.0]] and idx[0, 0].tolist() == [[4, 5], [7, 8]]
    out = Unpool2d(2, "max")(pooled, idx, output_size=(3, 3))
    assert out[0, 0].tolist() == [[0.0, 0.0, 0.0], [0.0, 9.0, 5.0], [0.0, 7.0, 8.0]]
    assert torch.equal(out, nn.MaxUnpool2d(2, 2)(pooled, idx, output_size=(3, 3)))
    with pytest.raises(ValueError, match="indices"):
        Unpool2d(2, "max")(pooled)


# ----------------------------------------------------------------------------- models (M10, K3)
SMALL = dict(width=8, depth=3)


@pytest.mark.parametrize("name", NEW)
def test_models_give_per_pixel_scores_at_any_size_and_backpropagate(name):
    """M10/K3: (N, C, H, W) → (N, classes, H, W) for 64x64, 37x50 and 33x33 (sizes the stride does not divide);
    backward gives a finite gradient to every parameter."""
    torch.manual_seed(0)
    net = make(name, **SMALL)
    for h, w in ((64, 64), (37, 50), (33, 33)):
        net.zero_grad()
        out = net(torch.randn(2, 3, h, w))
        assert out.shape == (2, CLASSES, h, w), (name, h, w)
        F.cross_entropy(out, torch.randint(0, CLASSES, (2, h, w))).backward()
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name,options", [("fcn", {"upsample": u, "skips": s}) for u in ("bilinear", "nearest", "zero")
                                          for s in (0, 1)]
                         + [("unet", {"upsample": u}) for u in ("bilinear", "nearest")]
                         + [("segnet", {"convs": 1}), ("fcn", {"convs": 3})])
def test_every_option_keeps_the_output_size(name, options):
    """M3/M10: each up-sampling option and stage length gives the input's size for an odd 21x30 input."""
    net = make(name, width=4, depth=3, options=options).eval()
    assert net(torch.randn(1, 3, 21, 30)).shape == (1, CLASSES, 21, 30)


def test_tiny_inputs_and_one_channel():
    """M10/K3: one-channel 8x8 (digits-sized) and even 1x1 inputs still give full-size score maps."""
    for name in NEW:
        net = make(name, channels=1).eval()  # the recipe defaults: width 32, depth 2
        assert net(torch.randn(4, 1, 8, 8)).shape == (4, CLASSES, 8, 8)
        assert net(torch.randn(1, 1, 1, 1)).shape == (1, CLASSES, 1, 1)


def conv_bn(cin: int, cout: int) -> int:
    """3x3 conv without bias (a norm follows) + BatchNorm's γ and β."""
    return 9 * cin * cout + 2 * cout


def test_fcn_counts_by_hand_and_skips_add_score_layers():
    """M10, S0 Q16: fcn = VGG stages (widths doubling, capped at 8 x width) + a 1x1 score layer per scored stage
    (FCN-32s: 1, 16s: 2, 8s: 3) + per-class bilinear-started transposed convs (kernel 2f for x f)."""
    w, k = 4, CLASSES
    widths = [4, 8, 16, 32, 32]  # depth 5, capped at 8 · 4
    trunk, cin = 0, 3
    for c in widths:
        trunk += conv_bn(cin, c) + conv_bn(c, c)
        cin = c
    for skips in (0, 1, 2):
        net = make("fcn", width=w, depth=5, options={"skips": skips})
        scores = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
        assert len(scores) == skips + 1
        score = sum((c + 1) * k for c in widths[::-1][: skips + 1])
        final = 32 // 2**skips  # the last stage's stride 2^5, over the x2 steps of the skips
        upsample = skips * k * 4 * 4 + k * (2 * final) ** 2
        assert params(net) == trunk + score + upsample, skips
    fixed = make("fcn", width=w, depth=5, options={"upsample": "bilinear"})
    assert params(fixed) == trunk + sum((c + 1) * k for c in widths[-3:])  # fixed up-sampling has no weights


def test_fcn_skip_scores_start_at_zero_so_fcn8s_starts_as_fcn32s():
    """M10, S0 Q16: the skip score layers start at zero and are marked to keep it through model.init; so with
    nearest up-sampling (x2 then x(S/2) nearest is xS nearest) FCN-8s at init gives exactly FCN-32s's scores."""
    torch.manual_seed(0)
    fcn8 = make("fcn", width=4, depth=4, options={"skips": 2, "upsample": "nearest"}).eval()
    for layer in (fcn8.score3, fcn8.score2):
        assert layer.weight.abs().max() == 0 and layer.bias.abs().max() == 0 and layer.trainlab_keep_init
    assert fcn8.score4.weight.abs().max() > 0
    fcn32 = make("fcn", width=4, depth=4, options={"skips": 0, "upsample": "nearest"}).eval()
    missing, unexpected = fcn32.load_state_dict(fcn8.state_dict(), strict=False)
    assert not missing and {k.split(".")[0] for k in unexpected} == {"score3", "score2"}
    x = torch.randn(2, 3, 37, 50)
    torch.testing.assert_close(fcn8(x), fcn32(x))
    # FCN-32s by hand: the last stage's scores, each repeated over its 16x16 cell, cropped to the input
    coarse = fcn32.score4(fcn32.backbone(x)[-1])
    torch.testing.assert_close(fcn32(x), coarse.repeat_interleave(16, 2).repeat_interleave(16, 3)[:, :, :37, :50])


def test_fcn_through_the_registry_keeps_its_special_init():
    """M10/K3/I1: `fcn` built by name from a segmentation recipe with model.init: xavier_uniform keeps its zero skip
    scores and bilinear up-sampling filters."""
    recipe = load_recipe({"task": "segmentation", "model": {"name": "fcn", "width": 4, "depth": 3,
                                                            "init": "xavier_uniform"}})
    net = build_model(recipe, info()).net
    assert net.score3.weight.abs().max() == 0 and net.score2.weight.abs().max() == 0
    tent = torch.tensor([0.25, 0.75, 0.75, 0.25])  # bilinear x2 filter: outer product of two tents
    torch.testing.assert_close(net.up_final.layer.weight[0, 0].detach(), tent[:, None] * tent[None, :])


def test_fcn_with_a_short_encoder_keeps_the_skips_it_has_room_for():
    """M10: FCN-8s needs three pooled stages; with model.depth 2 (the recipe default) fcn scores two stages."""
    net = make("fcn", width=4, depth=2)
    assert net.score3 is not None and net.score2 is None


def test_segnet_counts_by_hand():
    """M10: SegNet = encoder stages + mirrored decoder stages (last conv back to the shallower width) + 1x1
    classifier; max-unpooling has no weights."""
    widths, k, convs = [4, 8, 16], CLASSES, 2
    enc, cin = 0, 3
    for c in widths:
        enc += conv_bn(cin, c) + conv_bn(c, c)
        cin = c
    dec = conv_bn(16, 16) + conv_bn(16, 8) + conv_bn(8, 8) + conv_bn(8, 4) + conv_bn(4, 4) + conv_bn(4, 4)
    net = make("segnet", width=4, depth=3, options={"convs": convs})
    assert params(net) == enc + dec + (4 + 1) * k


def capture(module: nn.Module, store: dict, key: str):
    return module.register_forward_hook(lambda m, i, o: store.__setitem__(key, (i, o)))


def window_max_mask(x: torch.Tensor) -> torch.Tensor:
    """Where each value is the maximum of its 2x2 cell (ceil mode: a cell cut by the border is smaller)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (0, w % 2, 0, h % 2), value=float("-inf"))
    cells = padded.view(n, c, (h + 1) // 2, 2, (w + 1) // 2, 2).amax((3, 5), keepdim=True)
    cell_max = cells.expand(n, c, (h + 1) // 2, 2, (w + 1) // 2, 2).reshape(padded.shape)[..., :h, :w]
    return x == cell_max


def test_segnet_decoder_unpools_at_the_encoders_argmax_positions():
    """M3/M10: in SegNet each decoder stage's max-unpooling puts its input back where the mirrored encoder stage's
    pooling found its maxima (found here from the pre-pooling map, odd 9x7 size) and leaves zeros elsewhere."""
    torch.manual_seed(0)
    net = make("segnet", width=4, depth=2, activation="identity", norm="none").eval()
    seen: dict = {}
    hooks = [capture(net.encoder[1].convs, seen, "prepool"), capture(net.decoder[1].unpool, seen, "unpool")]
    net(torch.randn(2, 3, 9, 7))
    for h in hooks:
        h.remove()
    prepool = seen["prepool"][1]  # (2, 8, 5, 4): the deepest stage before pooling
    unpooled = seen["unpool"][1]
    assert unpooled.shape == prepool.shape
    at_max = window_max_mask(prepool)
    # the deepest stage's pooled values go straight to the decoder: the maxima come back in place
    torch.testing.assert_close(unpooled, torch.where(at_max, prepool, torch.zeros_like(prepool)))
    assert int(at_max.sum()) == 2 * 8 * 3 * 2  # one maximum per 2x2 cell (ceil mode: 3 x 2 cells)


def test_segnet_decoder_follows_changed_pooling_indices():
    """M3/M10: moving the encoder's argmax positions (a hook sends every index to its cell's top-left corner) moves
    where the decoder's unpooled activations land: they use the encoder's indices, not a fixed pattern."""
    torch.manual_seed(0)
    net = make("segnet", width=4, depth=2, activation="identity", norm="none").eval()
    x = torch.randn(1, 3, 8, 12)
    seen: dict = {}
    hook = capture(net.decoder[1].unpool, seen, "unpool")
    net(x)
    before = seen["unpool"][1] != 0

    def to_corner(module, inputs, output):
        pooled, idx = output
        w = inputs[0].shape[-1]  # 6: the pre-pooling width
        i = torch.arange(pooled.shape[-2]).view(-1, 1)
        j = torch.arange(pooled.shape[-1]).view(1, -1)
        return pooled, ((2 * i) * w + 2 * j).expand_as(idx).contiguous()

    moved = net.encoder[1].pool.register_forward_hook(to_corner)
    net(x)
    moved.remove()
    hook.remove()
    after = seen["unpool"][1] != 0
    corners = torch.zeros_like(after)
    corners[..., ::2, ::2] = True
    assert torch.equal(after, corners)
    assert not torch.equal(before, after)


def test_unet_counts_by_hand():
    """M10: U-Net = two 3x3 conv-norm-act per level, widths doubling for `depth` down-steps; each up-step a 2x2
    transposed conv halving the channels (or a 1x1 conv with fixed up-sampling), concatenation with the skip
    (2x the channels in), two convs; 1x1 classifier."""
    c, k = [4, 8, 16, 32], CLASSES
    down = conv_bn(3, 4) + conv_bn(4, 4) + sum(conv_bn(c[i - 1], c[i]) + conv_bn(c[i], c[i]) for i in (1, 2, 3))
    merge = sum(conv_bn(2 * c[i - 1], c[i - 1]) + conv_bn(c[i - 1], c[i - 1]) for i in (1, 2, 3))
    head = (4 + 1) * k
    transposed = sum(c[i] * c[i - 1] * 4 + c[i - 1] for i in (1, 2, 3))
    pointwise = sum(c[i] * c[i - 1] + c[i - 1] for i in (1, 2, 3))
    assert params(make("unet", width=4, depth=3)) == down + merge + transposed + head
    assert params(make("unet", width=4, depth=3, options={"upsample": "bilinear"})) == down + merge + pointwise + head


def test_unet_skip_connections_carry_full_resolution_detail():
    """M10/K3: the output at a pixel depends on the input there through the full-resolution skip: zeroing the
    decoder's up-sampled path (the up-convs' weights and biases) still leaves a per-pixel response."""
    torch.manual_seed(0)
    net = make("unet", width=4, depth=2, norm="none").eval()
    with torch.no_grad():
        for up in net.up:
            up.conv.weight.zero_()
            up.conv.bias.zero_()
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    net(x)[0, :, 5, 9].sum().backward()
    assert x.grad.abs().sum() > 0
    # and only the skip's receptive field answers: 4 convs 3x3 at full resolution reach 4 pixels away
    far = x.grad[0].abs().sum(0)
    assert far[:, :5].sum() == 0 and far[10:].sum() == 0


@pytest.mark.parametrize("name", NEW)
def test_norm_activation_and_dropout_reach_the_layers(name):
    """M4/M5/M10: model.norm, model.activation and model.dropout are honoured (Dropout2d before the classifier);
    norm none gives the convs biases instead."""
    net = make(name, width=4, depth=2, norm="group", activation="leaky_relu", dropout=0.3)
    kinds = {type(m) for m in net.modules()}
    assert nn.GroupNorm in kinds and nn.LeakyReLU in kinds and nn.BatchNorm2d not in kinds and nn.ReLU not in kinds
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout2d)]
    assert len(drops) == 1 and drops[0].p == 0.3
    plain = make(name, width=4, depth=2, norm="none")
    convs = [m for m in plain.modules() if type(m) is nn.Conv2d]
    assert all(m.bias is not None for m in convs)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in plain.modules())
    assert not any(isinstance(m, nn.Dropout2d) for m in make(name, width=4, depth=2).modules())


def test_models_build_by_name_with_their_registry_metadata():
    """M10/K3: fcn, segnet and unet are registry entries for the segmentation task with 3x64x64 / 5-class defaults,
    typed options, and build through build_model from a recipe; the wrong task or a bad option is a RecipeError."""
    for name in NEW:
        entry = MODELS.get(name)
        assert entry.meta["tasks"] == ("segmentation",)
        assert entry.meta["default_input"] == (3, 64, 64) and entry.meta["default_classes"] == 5
        recipe = load_recipe({"task": "segmentation", "model": {"name": name, "width": 4, "depth": 2}})
        model = build_model(recipe, info())
        assert model(torch.rand(2, 3, 20, 24)).shape == (2, CLASSES, 20, 24)
        with pytest.raises(RecipeError, match="task segmentation"):
            build_model(load_recipe({"model": {"name": name}}), info())
    with pytest.raises(RecipeError, match=r"model.options.skip: unknown option .*did you mean 'skips'"):
        make("fcn", options={"skip": 1})
    with pytest.raises(RecipeError, match="model.options.upsample"):
        make("unet", options={"upsample": "max_unpool"})
    with pytest.raises(RecipeError, match="model.options.convs"):
        make("segnet", options={"convs": 0})


def test_fcn_resnet18_keeps_resnet_parameter_names():
    """M10: fcn_resnet18 now runs the shared FCN head; its encoder keeps torchvision ResNet-18's tensor names under
    `backbone.` (minus the classifier), so earlier weight files still load."""
    import torchvision.models as tvm

    with torch.device("meta"):
        net = make("fcn_resnet18")
        ref = tvm.resnet18()
    names = {k for k in net.state_dict() if k.startswith("backbone.")}
    assert names == {"backbone." + k for k in ref.state_dict() if not k.startswith("fc.")}
    assert {k.split(".")[0] for k in net.state_dict()} == {"backbone", "score4", "score3", "score2", "up4", "up3",
                                                           "up_final"}


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_segnet_exports_with_its_unpooling(tmp_path, fmt):
    """M3/M13: SegNet's max-unpooling (a scatter at the pooling's indices) survives a TorchScript trace and ONNX
    export at an odd size: the reloaded model matches eager on two batch sizes (aten::max_unpool2d does neither)."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    from trainlab.export import export_model

    data = DataInfo((3, 13, 10), CLASSES, [f"c{i}" for i in range(CLASSES)])
    recipe = load_recipe({"task": "segmentation", "model": {"name": "segnet", "width": 4, "depth": 2}})
    result = export_model(build_model(recipe, data).eval(), data, fmt, tmp_path / f"segnet.{fmt}")
    assert result.max_abs_diff <= 1e-4
