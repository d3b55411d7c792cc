"""Blocks of the model zoo checked against torch layers and the formulas of the notes (M1-M6)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainlab.models.blocks import (
    ClassifierHead,
    ConvNormAct,
    DeformableConv2d,
    DepthwiseSeparableConv,
    DropBlock2d,
    DropConnectLinear,
    Maxout,
    SEBlock,
    Unpool2d,
    conv_output_size,
    depthwise_conv,
    dilated_conv,
    grouped_conv,
    pointwise_conv,
    transposed_output_size,
)
from trainlab.models.layers import ChannelMaxout, make_activation, make_norm


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------ size arithmetic
@pytest.mark.parametrize("size,k,s,p,d", [(32, 5, 1, 2, 1), (5, 3, 1, 0, 1), (5, 3, 1, 1, 1), (224, 7, 2, 3, 1),
                                          (17, 3, 2, 1, 1), (16, 3, 1, 2, 2), (9, 2, 2, 0, 1), (28, 5, 3, 1, 1)])
def test_conv_and_pool_output_size_formula(size, k, s, p, d):
    """M1, S0 Q20: floor((I - K + 2P) / S) + 1 matches Conv2d and MaxPool2d."""
    x = torch.zeros(1, 1, size, size)
    conv = nn.Conv2d(1, 1, k, s, p, dilation=d)
    assert conv(x).shape[-1] == conv_output_size(size, k, s, p, d)
    if d == 1:
        assert (size - k + 2 * p) // s + 1 == conv_output_size(size, k, s, p)  # the notes' formula itself
    if p <= k // 2:
        pool = nn.MaxPool2d(k, s, p, dilation=d)
        assert pool(x).shape[-1] == conv_output_size(size, k, s, p, d)


def test_padding_examples_of_the_notes():
    """M1, S0 Q20: 5x5 with a 3x3 kernel is 3x3 without padding and 5x5 with padding 1."""
    x = torch.zeros(1, 1, 5, 5)
    assert nn.Conv2d(1, 16, 3, 1, 0)(x).shape[-2:] == (3, 3)
    assert nn.Conv2d(1, 16, 3, 1, 1)(x).shape[-2:] == (5, 5)
    assert conv_output_size(5, 3, 1, 0) == 3 and conv_output_size(5, 3, 1, 1) == 5


@pytest.mark.parametrize("size,k,s,p", [(4, 3, 2, 1), (7, 4, 2, 1), (3, 3, 1, 0), (5, 16, 8, 4), (1, 2, 2, 0)])
def test_transposed_conv_output_size_formula(size, k, s, p):
    """M3, S4 2.2: transposed convolution output (I - 1)·S + K - 2P matches ConvTranspose2d."""
    layer = nn.ConvTranspose2d(2, 2, k, s, p)
    assert layer(torch.zeros(1, 2, size, size)).shape[-1] == (size - 1) * s + k - 2 * p
    assert transposed_output_size(size, k, s, p) == (size - 1) * s + k - 2 * p


# -------------------------------------------------------------------------------- conv variants
def test_conv_variant_parameter_counts():
    """M2, S2 2.1/S4 2.4: pointwise = C·C', depthwise = k²·C, grouped = k²·C·C'/G, separable = k²·C + C·C'."""
    assert n_params(pointwise_conv(512, 128)) == 512 * 128
    dw = depthwise_conv(32, 3)
    assert n_params(dw) == 9 * 32 and dw.groups == 32
    assert n_params(grouped_conv(64, 128, 3, groups=2)) == 9 * 64 * 128 // 2
    assert n_params(nn.Conv2d(64, 128, 3, bias=False)) == 2 * n_params(grouped_conv(64, 128, 3, groups=2))
    sep = DepthwiseSeparableConv(32, 64, norm="none", activation="relu")
    assert n_params(sep) == (9 * 32 + 32) + (32 * 64 + 64)  # biases because there is no norm
    x = torch.randn(2, 512, 7, 9)
    assert pointwise_conv(512, 128)(x).shape == (2, 128, 7, 9)  # S0 Q17: depth changes, H x W do not


def test_depthwise_conv_filters_each_channel_alone():
    """M2: a depthwise conv equals one single-channel conv per channel."""
    torch.manual_seed(0)
    dw = depthwise_conv(3, 3)
    x = torch.randn(1, 3, 6, 6)
    per_channel = torch.cat([F.conv2d(x[:, c:c + 1], dw.weight[c:c + 1], padding=1) for c in range(3)], 1)
    torch.testing.assert_close(dw(x), per_channel)


def test_dilated_conv_receptive_field_and_size():
    """M2, S4 2.3: dilation d spreads a k x k kernel over d(k-1)+1 pixels with k² weights, same padding keeps size."""
    conv = dilated_conv(1, 1, 3, dilation=2)
    assert n_params(conv) == 9
    assert conv(torch.zeros(1, 1, 11, 11)).shape[-1] == 11
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0  # the top-left tap reads (i - 2, j - 2)
    x = torch.zeros(1, 1, 11, 11)
    x[0, 0, 3, 3] = 1.0
    assert conv(x)[0, 0, 5, 5] == 1.0


def test_deformable_conv_starts_as_plain_conv_and_follows_offsets():
    """M2, S4 2.7: zero offsets give the ordinary convolution; an offset of +1 column shifts the sampling."""
    from torchvision.ops import deform_conv2d

    torch.manual_seed(0)
    layer = DeformableConv2d(2, 4, 3)
    x = torch.randn(1, 2, 7, 7)
    plain = F.conv2d(x, layer.conv.weight, padding=1)
    torch.testing.assert_close(layer(x), plain, atol=1e-5, rtol=1e-5)
    offset = torch.zeros(1, 18, 7, 7)
    offset[:, 1::2] = 1.0  # (dy, dx) pairs: dx = +1 for every tap
    shifted = deform_conv2d(x, offset, layer.conv.weight, padding=(1, 1))
    moved = F.pad(x, (0, 1))[:, :, :, 1:]  # the input moved one column left, zero at the right edge
    # Column 0 differs: there the shifted left taps read real pixels instead of the zero padding.
    torch.testing.assert_close(shifted[..., 1:], F.conv2d(moved, layer.conv.weight, padding=1)[..., 1:],
                               atol=1e-5, rtol=1e-5)
    mod = DeformableConv2d(2, 4, 3, modulated=True)
    torch.testing.assert_close(mod(x), F.conv2d(x, mod.conv.weight, padding=1), atol=1e-5, rtol=1e-5)
    layer(x).sum().backward()
    assert layer.offset.weight.grad is not None and layer.offset.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------- SE, maxout
def test_se_block_matches_its_formula():
    """M2/M8, S4 2.5: x · sigmoid(W2 relu(W1 avgpool(x) + b1) + b2), one weight per channel."""
    torch.manual_seed(0)
    se = SEBlock(32, reduction=4)
    x = torch.randn(3, 32, 5, 5)
    s = x.mean((2, 3))
    w1, b1 = se.fc1.weight.flatten(1), se.fc1.bias
    w2, b2 = se.fc2.weight.flatten(1), se.fc2.bias
    scale = torch.sigmoid(F.relu(s @ w1.T + b1) @ w2.T + b2)
    torch.testing.assert_close(se(x), x * scale[:, :, None, None])
    assert n_params(se) == 32 * 8 + 8 + 8 * 32 + 32


def test_maxout_layer_is_max_of_linear_pieces():
    """M5: a maxout unit is max_j (w_j·x + b_j)."""
    torch.manual_seed(0)
    layer = Maxout(6, 4, pieces=3)
    x = torch.randn(5, 6)
    z = x @ layer.linear.weight.T + layer.linear.bias
    torch.testing.assert_close(layer(x), z.view(5, 4, 3).amax(-1))
    conv = Maxout(6, 4, pieces=2, conv=True)
    assert conv(torch.randn(2, 6, 3, 3)).shape == (2, 4, 3, 3)


def test_maxout_activation_starts_as_relu_and_learns():
    """M5: the maxout activation with two pieces is max(0·x, 1·x) = ReLU at the start; more pieces stay convex."""
    x = torch.linspace(-3, 3, 61).view(1, 1, 61, 1).repeat(2, 4, 1, 1)
    torch.testing.assert_close(ChannelMaxout(4, 2)(x), F.relu(x))
    torch.testing.assert_close(make_activation("maxout", channels=4)(x), F.relu(x))
    three = ChannelMaxout(None, 3)(torch.linspace(-3, 3, 61))
    assert torch.all(three >= F.relu(torch.linspace(-3, 3, 61)) - 1e-6)
    second = torch.diff(torch.diff(three))
    assert torch.all(second >= -1e-5)  # convex
    act = ChannelMaxout(4, 2)
    act(torch.randn(2, 4, 3, 3)).sum().backward()
    assert act.slope.grad.abs().sum() > 0


@pytest.mark.parametrize("name,formula", [
    ("sigmoid", lambda x: 1 / (1 + torch.exp(-x))),
    ("tanh", lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x))),
    ("relu", lambda x: torch.clamp(x, min=0)),
    ("leaky_relu", lambda x: torch.where(x > 0, x, 0.01 * x)),
    ("prelu", lambda x: torch.where(x > 0, x, 0.25 * x)),
    ("gelu", lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))),
])
def test_activations_match_their_formulas(name, formula):
    """M5, S1 Q27: sigmoid 1/(1+e^-x), tanh, ReLU max(0, x), leaky ReLU, PReLU (learned slope 0.25 at start), GELU."""
    x = torch.linspace(-4, 4, 101)
    torch.testing.assert_close(make_activation(name)(x.clone()), formula(x), atol=1e-6, rtol=1e-5)


def test_sigmoid_gradient_is_at_most_a_quarter():
    """M5, S1 Q27: trainlab's sigmoid has sigmoid'(x) <= 0.25 (vanishing gradients), its ReLU' = 1 for x > 0."""
    x = torch.linspace(-6, 6, 241, requires_grad=True)
    make_activation("sigmoid")(x).sum().backward()
    assert x.grad.max() <= 0.25 + 1e-7 and abs(float(x.grad.max()) - 0.25) < 1e-3
    y = torch.linspace(0.1, 5, 50, requires_grad=True)
    make_activation("relu")(y.clone()).sum().backward()
    assert torch.all(y.grad == 1)


def test_softmax_is_a_probability_distribution():
    """M5, S1 Q26: a classifier's predicted probabilities are softmax(z)_i = e^z_i / sum_j e^z_j per row."""
    from trainlab.tasks.classification import ClassificationTask

    task = ClassificationTask.__new__(ClassificationTask)  # predict() uses no recipe or data
    z = torch.tensor([[2.0, 1.0, 0.1], [0.0, 3.0, -1.0]], dtype=torch.float16)
    p = task.predict(z)
    zf = z.float()
    torch.testing.assert_close(p, torch.exp(zf) / torch.exp(zf).sum(1, keepdim=True))
    assert p.dtype == torch.float32  # computed in float32 even from half-precision logits
    torch.testing.assert_close(p.sum(1), torch.ones(2))
    assert p.argmax(1).tolist() == [0, 1]


# ---------------------------------------------------------------------------------- norms (M4)
def test_batchnorm_uses_batch_statistics_in_training_and_running_ones_in_eval():
    """M4, S2 2.1/S4 1.6: norm=batch in trainlab's layers: a conv block (ConvNormAct) normalizes each channel of
    its conv's output over (N, H, W), the mlp each feature of its linear layer's output over the batch, before the
    activation: train: (z - batch mean)/sqrt(batch var + eps)·γ + β, running averages updated; eval: the running
    statistics."""
    torch.manual_seed(0)
    block = ConvNormAct(2, 3, kernel=1, norm="batch", activation="relu")
    conv, bn = block[0], block[1]
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    x = torch.randn(8, 2, 4, 4) * 3 + 1
    z = conv(x).detach()
    mean = z.mean((0, 2, 3))
    var = z.var((0, 2, 3), unbiased=False)
    per_channel = lambda v: v[None, :, None, None]  # noqa: E731
    gamma, beta = per_channel(bn.weight), per_channel(bn.bias)
    expect = (z - per_channel(mean)) / torch.sqrt(per_channel(var) + bn.eps) * gamma + beta
    torch.testing.assert_close(block(x), torch.relu(expect), atol=1e-5, rtol=1e-5)
    m = bn.momentum
    n = z.numel() / 3
    torch.testing.assert_close(bn.running_mean, (1 - m) * torch.zeros(3) + m * mean)
    torch.testing.assert_close(bn.running_var, (1 - m) * torch.ones(3) + m * var * n / (n - 1))
    block.eval()
    y = torch.randn(2, 2, 4, 4)
    zy = conv(y).detach()
    rm, rv = per_channel(bn.running_mean), per_channel(bn.running_var)
    expect_eval = (zy - rm) / torch.sqrt(rv + bn.eps) * gamma + beta
    torch.testing.assert_close(block(y), torch.relu(expect_eval), atol=1e-5, rtol=1e-5)
    assert bn.weight.shape == (3,)  # S2: γ, β, mean, var all have one entry per channel
    # the mlp from a recipe: each hidden feature normalized over the batch between its linear layer and ReLU
    from trainlab.data.bundle import DataInfo
    from trainlab.models import build_model
    from trainlab.recipe import load_recipe

    recipe = load_recipe({"model": {"name": "mlp", "width": 5, "depth": 1, "norm": "batch", "activation": "relu",
                                    "dropout": 0.0}})
    net = build_model(recipe, DataInfo((1, 3, 4), 4, list("abcd"))).net
    first, head = net[1], net[-1]
    v = torch.randn(16, 1, 3, 4) * 2 - 1
    h = first(v.flatten(1)).detach()
    normed = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5)  # γ = 1, β = 0 at the start
    torch.testing.assert_close(net(v), head(torch.relu(normed)), atol=1e-5, rtol=1e-5)


def test_layernorm_normalizes_each_sample_over_its_features():
    """M4, S4 1.7: layer norm uses each sample's own mean and variance, independent of the batch."""
    ln = make_norm("layer", 6, dims=0)
    x = torch.randn(4, 6) * 5 + 2
    expect = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + ln.eps)
    torch.testing.assert_close(ln(x), expect, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ln(x[:1]), ln(x)[:1])  # no batch dependence
    gn = make_norm("layer", 6)  # feature maps: GroupNorm(1) is layer norm over C, H, W
    f = torch.randn(2, 6, 3, 3)
    flat = f.flatten(1)
    ref = (flat - flat.mean(1, keepdim=True)) / torch.sqrt(flat.var(1, unbiased=False, keepdim=True) + gn.eps)
    torch.testing.assert_close(gn(f), ref.view_as(f), atol=1e-5, rtol=1e-5)
    assert isinstance(make_norm("group", 64), nn.GroupNorm) and isinstance(make_norm("none", 8), nn.Identity)


# ------------------------------------------------------------------------------ regularization
def test_dropout_uses_inverted_scaling():
    """M6, S4 1.2/S3: the classifier head's dropout zeroes units with probability p and multiplies the
    rest by 1/(1-p) in training; in eval it is the identity."""
    torch.manual_seed(0)
    n = 500
    head = ClassifierHead(n, n, dropout=0.5)
    with torch.no_grad():  # identity weights: the head's output is its dropped input
        head.weight.copy_(torch.eye(n))
        head.bias.zero_()
    x = torch.ones(400, n)
    with torch.no_grad():
        y = head(x)
    assert set(torch.unique(y).tolist()) == {0.0, 2.0}  # S4's mask of 0s and 2s
    assert abs(float((y == 0).float().mean()) - 0.5) < 0.01
    assert abs(float(y.mean()) - 1.0) < 0.01  # the expectation is unchanged
    head.eval()
    with torch.no_grad():
        assert torch.equal(head(x), x)


def test_dropblock_drops_contiguous_squares_at_the_requested_rate():
    """M6, S2 1.1: DropBlock zeroes block x block squares, about a fraction p of the units, rescaling the rest."""
    torch.manual_seed(0)
    db = DropBlock2d(p=0.2, block_size=3)
    x = torch.ones(16, 8, 24, 24)
    y = db(x)
    dropped = (y == 0).float()
    assert 0.14 < float(dropped.mean()) < 0.26
    torch.testing.assert_close(y.mean(), torch.tensor(1.0), atol=1e-4, rtol=0)  # kept units rescaled
    # every dropped pixel lies in a fully dropped 3x3 square
    covered = F.max_pool2d(-F.max_pool2d(-dropped, 3, 1, 1), 3, 1, 1)
    assert torch.equal(covered * dropped, dropped)
    assert torch.equal(dropped, covered.clamp(max=1) * dropped)
    db.eval()
    assert torch.equal(db(x), x)


def test_dropconnect_drops_weights_with_inverted_scaling():
    """M6: DropConnect zeroes weights (not units) with probability p and rescales by 1/(1-p); eval uses W."""
    torch.manual_seed(0)
    layer = DropConnectLinear(20, 5, p=0.5)
    x = torch.randn(3, 20)
    layer.eval()
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    layer.train()
    outs = torch.stack([layer(x) for _ in range(4000)])
    torch.testing.assert_close(outs.mean(0), F.linear(x, layer.weight, layer.bias), atol=0.05, rtol=0.05)
    one = torch.zeros(1, 20)
    one[0, 0] = 1.0
    values = torch.unique(torch.stack([layer(one) - layer.bias for _ in range(50)])[:, 0, 0])
    assert all(abs(v) < 1e-6 or abs(v - 2 * layer.weight[0, 0]) < 1e-5 for v in values.tolist())
    head = ClassifierHead(20, 5, dropout=0.3, drop_connect=0.2)
    assert set(dict(head.named_parameters())) == {"weight", "bias"}  # same names as nn.Linear


# ----------------------------------------------------------------------------------- unpooling
def test_unpooling_zero_nearest_and_max():
    """M3, S2 2.1: unpooling fills with zeros, with the nearest value, or back at the max-pool positions."""
    x = torch.arange(1.0, 5.0).view(1, 1, 2, 2)
    zero = Unpool2d(2, "zero")(x)
    assert torch.equal(zero[0, 0], torch.tensor([[1.0, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]))
    torch.testing.assert_close(Unpool2d(2, "nearest")(x), F.interpolate(x, scale_factor=2, mode="nearest"))
    torch.manual_seed(0)
    img = torch.randn(2, 3, 6, 6)
    pooled, idx = nn.MaxPool2d(2, return_indices=True)(img)
    torch.testing.assert_close(Unpool2d(2, "max")(pooled, idx), nn.MaxUnpool2d(2)(pooled, idx))
    restored = Unpool2d(2, "max")(pooled, idx)
    assert torch.equal(restored.amax((2, 3)), img.amax((2, 3)))  # each max goes back where it came from
    with pytest.raises(ValueError):
        Unpool2d(2, "max")(pooled)


def test_conv_norm_act_has_bias_only_without_norm():
    """M1/M4: a conv followed by a norm needs no bias (the norm's β replaces it)."""
    assert ConvNormAct(3, 8, norm="batch")[0].bias is None
    assert ConvNormAct(3, 8, norm="none")[0].bias is not None
    assert isinstance(ConvNormAct(3, 8, norm="group", activation="prelu")[2], nn.PReLU)
