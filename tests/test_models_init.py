"""Initialization (I1-I4): the standard deviations of the notes, zero-initialized residual branches and
weights from a local file."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from trainlab.data.bundle import DataInfo
from trainlab.errors import RecipeError
from trainlab.models import build_model
from trainlab.models.init import init_weights, load_weights
from trainlab.recipe import load_recipe

DIGITS = DataInfo((1, 8, 8), 10, [str(i) for i in range(10)])


def recipe(**model):
    return load_recipe({"model": model})


def std_close(w: torch.Tensor, expect: float, tol: float = 0.03) -> bool:
    return abs(float(w.detach().std()) / expect - 1) < tol


@pytest.mark.parametrize("scheme", ["xavier_normal", "xavier_uniform"])
def test_xavier_std_is_one_over_sqrt_fan_in(scheme):
    """I1, S3: Xavier std = 1/sqrt(D_in) with D_in = k²·C_in for a conv and the input width for a linear layer."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(64, 128, 3), nn.Linear(512, 256), nn.Conv2d(64, 64, 3, groups=4))
    assert init_weights(net, scheme, gain=math.sqrt(2)) == 3  # Xavier ignores the rectifier gain
    conv, lin, grouped = net
    assert std_close(conv.weight, 1 / math.sqrt(3 * 3 * 64))
    assert std_close(lin.weight, 1 / math.sqrt(512))
    assert std_close(grouped.weight, 1 / math.sqrt(3 * 3 * 64 / 4))  # each output sees C_in / groups channels
    assert float(conv.bias.detach().abs().max()) == 0.0
    if scheme.endswith("uniform"):
        bound = math.sqrt(3) / math.sqrt(3 * 3 * 64)  # U(-a, a) has std a / sqrt(3)
        biggest = float(conv.weight.detach().abs().max())
        assert 0.99 * bound < biggest <= bound


@pytest.mark.parametrize("scheme", ["kaiming_normal", "kaiming_uniform"])
def test_msra_std_is_sqrt_two_over_fan_in_for_relu(scheme):
    """I2, S3: MSRA for ReLU doubles the variance: std = sqrt(2/D_in) (S3 prints 2/sqrt(D_in): the std grows by
    sqrt(2), not 2); torch's kaiming init agrees."""
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 128, 3)
    init_weights(conv, scheme, gain=math.sqrt(2))
    assert std_close(conv.weight, math.sqrt(2 / (3 * 3 * 64)))
    assert not std_close(conv.weight, 2 / math.sqrt(3 * 3 * 64), tol=0.2)
    ref = torch.empty_like(conv.weight)
    (nn.init.kaiming_normal_ if scheme.endswith("normal") else nn.init.kaiming_uniform_)(ref, nonlinearity="relu")
    assert abs(float(conv.weight.detach().std()) / float(ref.std()) - 1) < 0.03


def test_recipe_init_uses_the_activation_gain():
    """I2: model.init=kaiming_normal with tanh uses torch's gain 5/3; with leaky ReLU sqrt(2/(1+0.01²))."""
    torch.manual_seed(0)
    tanh = build_model(recipe(name="mlp", width=512, depth=2, activation="tanh", init="kaiming_normal"), DIGITS).net
    hidden = tanh[4]  # Flatten, Linear, BN, Tanh, Linear(512, 512)
    assert isinstance(hidden, nn.Linear) and hidden.in_features == 512
    assert std_close(hidden.weight, (5 / 3) / math.sqrt(512))
    leaky = build_model(recipe(name="cnn", width=64, activation="leaky_relu", init="kaiming_normal"), DIGITS).net
    conv = leaky[1][0]  # the second block's first conv: 64 -> 128 channels
    assert std_close(conv.weight, math.sqrt(2 / (1 + 0.01**2)) / math.sqrt(9 * 64))


def test_glorot_fan_average():
    """I1: init_fan=avg gives Glorot & Bengio's std sqrt(2/(D_in + D_out)), like torch's xavier_normal_."""
    torch.manual_seed(0)
    net = build_model(recipe(name="mlp", width=300, depth=1, init="xavier_normal", init_fan="avg"), DIGITS).net
    first = net[1]
    assert std_close(first.weight, math.sqrt(2 / (64 + 300)))
    ref = torch.empty(300, 64)
    nn.init.xavier_normal_(ref)
    assert abs(float(first.weight.detach().std()) / float(ref.std()) - 1) < 0.05


def test_special_layers_keep_their_start():
    """I1/M2/M3: model.init leaves the deformable offsets at zero and the FCN up-sampling bilinear."""
    net = build_model(recipe(name="blocknet", init="kaiming_normal", options={"conv": "deformable"}), DIGITS).net
    offsets = [m.offset for m in net.modules() if hasattr(m, "taps")]
    assert offsets and all(float(o.weight.detach().abs().max()) == 0 for o in offsets)
    fcn = build_model(load_recipe({"task": "segmentation", "model": {"name": "fcn_resnet18", "init": "xavier_uniform"}}),
                      DataInfo((3, 16, 16), 4, list("abcd"))).net
    from trainlab.models.blocks import bilinear_kernel

    torch.testing.assert_close(fcn.up_final.layer.weight[0, 0], bilinear_kernel(4))


def test_zero_init_residual_makes_every_block_start_as_its_shortcut():
    """I3, S4 1.1: with the last norm of each residual branch at zero, a ResNet block outputs relu(shortcut(x))."""
    torch.manual_seed(0)
    net = build_model(recipe(name="resnet18", zero_init_residual=True), DIGITS).net.eval()
    from torchvision.models.resnet import BasicBlock

    seen = []

    def check(block, args, out):
        x = args[0]
        short = x if block.downsample is None else block.downsample(x)
        torch.testing.assert_close(out, torch.relu(short))
        seen.append(block)

    for m in net.modules():
        if isinstance(m, BasicBlock):
            m.register_forward_hook(check)
    net(torch.randn(3, 1, 8, 8))
    assert len(seen) == 8
    plain = build_model(recipe(name="resnet18"), DIGITS).net
    assert float(plain.layer1[0].bn2.weight.detach().abs().sum()) > 0


@pytest.mark.parametrize("name, blocks", [("se_resnet18", 8), ("mobilenet_v2", 10), ("xception", 12),
                                         ("vit_tiny", 12), ("blocknet", 2)])
def test_zero_init_residual_across_families(name, blocks):
    """I3, S4 1.1: SE-ResNet, MobileNet v2, Xception, ViT and a residual blocknet have their branch ends zeroed:
    every residual block starts as its shortcut (SE-ResNet relu(shortcut), MobileNet's inverted residual and ViT's
    encoder block the identity, Xception its shortcut, blocknet act(shortcut)); without the option none does."""
    from torchvision.models.mobilenetv2 import InvertedResidual
    from torchvision.models.resnet import BasicBlock
    from torchvision.models.vision_transformer import EncoderBlock

    from trainlab.models.blocknet import Block
    from trainlab.models.convnets import XceptionBlock

    def shortcut(block, x):
        if isinstance(block, BasicBlock):
            return torch.relu(x if block.downsample is None else block.downsample(x))
        if isinstance(block, XceptionBlock):
            return block.shortcut(x)
        if isinstance(block, Block):
            return block.drop(block.act2(block.shortcut(x)))
        return x  # an inverted residual with its shortcut, a ViT encoder block

    def residual(m):
        return (isinstance(m, (BasicBlock, XceptionBlock, EncoderBlock))
                or (isinstance(m, InvertedResidual) and m.use_res_connect)
                or (isinstance(m, Block) and m.shortcut is not None))

    def starts_as_shortcut(zero_init):
        torch.manual_seed(0)
        opts = {"residual": True} if name == "blocknet" else {}
        info = DataInfo((3, 32, 32), 10, [str(i) for i in range(10)])
        net = build_model(recipe(name=name, zero_init_residual=zero_init, options=opts), info).net.eval()
        same = []
        # exactly: a zeroed branch adds exact zeros (activations shrink to ~1e-7 in MobileNet's last blocks)
        hooks = [m.register_forward_hook(lambda block, args, out: same.append(
            torch.equal(out, shortcut(block, args[0])))) for m in net.modules() if residual(m)]
        with torch.no_grad():
            net(torch.randn(2, 3, 32, 32))
        for h in hooks:
            h.remove()
        return same

    assert starts_as_shortcut(True) == [True] * blocks
    assert starts_as_shortcut(False) == [False] * blocks


def test_zero_init_residual_needs_residual_branches():
    """I3: a net without residual branches is a RecipeError rather than a silent no-op."""
    with pytest.raises(RecipeError, match="zero_init_residual: vgg11 has no residual branches"), torch.device("meta"):
        build_model(recipe(name="vgg11", zero_init_residual=True), DIGITS)


def test_weights_from_a_safetensors_file(tmp_path, capsys):
    """I4: model.weights loads a local safetensors file into the net and reports what matched."""
    torch.manual_seed(0)
    source = build_model(recipe(name="cnn"), DIGITS).net
    path = tmp_path / "cnn.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(1)
    loaded = build_model(recipe(name="cnn", weights=str(path)), DIGITS).net
    for (k, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    line = capsys.readouterr().out
    assert f"{len(source.state_dict())} tensors loaded, 0 missing" in line


def test_weights_with_a_different_head_report_missing_and_mismatched(tmp_path):
    """I4: pretrained weights for another number of classes load everything but the head, which is reported."""
    src = build_model(recipe(name="cnn"), DataInfo((1, 8, 8), 5, list("abcde"))).net
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "five.safetensors"
    save_file(state, str(path))
    dst = build_model(recipe(name="cnn"), DIGITS).net
    report = load_weights(dst, path)
    head = [k for k in dst.state_dict() if k.startswith("4.")]  # the final Linear of the cnn
    assert sorted(m.split(" ")[0] for m in report.mismatched) == sorted(head)
    assert report.unexpected == ["extra.weight"] and report.missing == []
    assert len(report.matched) == len(dst.state_dict()) - len(head)
    torch.testing.assert_close(dst.state_dict()["0.0.weight"], src.state_dict()["0.0.weight"])


def test_weights_from_a_trainlab_checkpoint(tmp_path):
    """I4: a trainlab checkpoint (tensors under model.net., plus optimizer and RNG state) initializes a new run."""
    from trainlab import fit

    run = fit("digits-mlp", ["train.epochs=1", "run.tensorboard=false", "run.plots=false", "train.progress=false",
                             f"run.dir={tmp_path / 'run'}", "model.width=16"], quiet=True)
    ckpt = run.dir / "checkpoints" / "last.safetensors"
    net = build_model(load_recipe("digits-mlp", ["model.width=16"]), DIGITS).net
    report = load_weights(net, ckpt)
    assert not report.missing and not report.mismatched and not report.unexpected
    from safetensors.torch import load_file

    saved = load_file(str(ckpt))
    torch.testing.assert_close(net.state_dict()["1.weight"], saved["model.net.1.weight"])


def test_bad_weights_files_are_recipe_errors(tmp_path):
    """I4: a missing file, an unreadable one or one whose names match nothing is a one-line RecipeError."""
    net = build_model(recipe(name="cnn"), DIGITS).net
    with pytest.raises(RecipeError, match="does not exist"):
        load_weights(net, tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a file")
    with pytest.raises(RecipeError, match="not a readable safetensors"):
        load_weights(net, bad)
    other = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(RecipeError, match="no tensor of .* matches the model"):
        load_weights(net, other)
    pth = tmp_path / "state.pth"
    torch.save({"state_dict": net.state_dict()}, pth)
    assert len(load_weights(net, pth).matched) == len(net.state_dict())


# ------------------------------------------------------------------ recurrent and attention layers
def chunk_stds_close(weight: torch.Tensor, chunks: int, expect: float, tol: float = 0.03) -> bool:
    return all(std_close(part, expect, tol) for part in weight.detach().chunk(chunks, dim=0))


@pytest.mark.parametrize("cell, gates", [(nn.LSTM, 4), (nn.GRU, 3), (nn.RNN, 1)])
def test_recurrent_weights_follow_the_fan_in_rule_per_gate(cell, gates):
    """I1/I2, M7: model.init draws every gate's matrix of weight_ih_l* with D_in = the layer's input size
    (the input width, then 2·hidden after a bidirectional layer) and of weight_hh_l* with D_in = hidden;
    biases become 0. Xavier std 1/sqrt(D_in), MSRA std gain/sqrt(D_in) (S3)."""
    torch.manual_seed(0)
    rnn = cell(200, 128, num_layers=2, bidirectional=True)
    assert init_weights(rnn, "xavier_normal", gain=math.sqrt(2)) == 1
    for suffix in ("", "_reverse"):
        assert chunk_stds_close(getattr(rnn, f"weight_ih_l0{suffix}"), gates, 1 / math.sqrt(200))
        assert chunk_stds_close(getattr(rnn, f"weight_ih_l1{suffix}"), gates, 1 / math.sqrt(2 * 128))
        assert chunk_stds_close(getattr(rnn, f"weight_hh_l1{suffix}"), gates, 1 / math.sqrt(128))
        assert float(getattr(rnn, f"bias_hh_l0{suffix}").detach().abs().max()) == 0.0
    init_weights(rnn, "kaiming_uniform", gain=5 / 3)  # tanh's gain
    assert chunk_stds_close(rnn.weight_hh_l0, gates, (5 / 3) / math.sqrt(128))
    bound = math.sqrt(3) * (5 / 3) / math.sqrt(200)
    assert 0.99 * bound < float(rnn.weight_ih_l0.detach().abs().max()) <= bound
    # Glorot's average uses one gate's D_out (hidden), not the stacked gates·hidden rows.
    init_weights(rnn, "xavier_normal", gain=1.0, fan="avg")
    assert chunk_stds_close(rnn.weight_ih_l0, gates, math.sqrt(2 / (200 + 128)))


def test_lstm_projection_weights_are_initialized_too():
    """I1, M7: an LSTM with proj_size has weight_hr_l* (proj, hidden): one matrix, D_in = hidden; weight_hh reads
    the projected state, D_in = proj."""
    torch.manual_seed(0)
    rnn = nn.LSTM(64, 256, proj_size=96)
    init_weights(rnn, "kaiming_normal", gain=math.sqrt(2))
    assert std_close(rnn.weight_hr_l0, math.sqrt(2 / 256))
    assert chunk_stds_close(rnn.weight_hh_l0, 4, math.sqrt(2 / 96))


def test_recipe_init_reaches_the_recurrent_models():
    """I1, M7: model.init=xavier_normal on `lstm` and `char_rnn` redraws the recurrent weights (they used to keep
    torch's U(±1/sqrt(hidden))); the embedding table keeps its N(0, 1) start (a token looks one row up)."""
    torch.manual_seed(0)
    lstm = build_model(recipe(name="lstm", width=128, init="xavier_normal"), DIGITS).net.rnn
    # A digit row is a frame of 8 pixels: each gate's (128, 8) matrix has 1,024 draws (std known to ~2%).
    assert chunk_stds_close(lstm.weight_ih_l0, 4, 1 / math.sqrt(8), tol=0.1)
    assert not chunk_stds_close(lstm.weight_ih_l0, 4, 1 / math.sqrt(3 * 128), tol=0.1)  # torch's U(±1/sqrt(H))
    assert chunk_stds_close(lstm.weight_hh_l0, 4, 1 / math.sqrt(128))
    text = DataInfo((16,), 40, [chr(65 + i) for i in range(40)], kind="sequence", extra={"task": "sequence"})
    r = load_recipe({"task": "sequence", "model": {"name": "char_rnn", "width": 128, "init": "xavier_normal",
                                                   "options": {"embed": 64}}})
    torch.manual_seed(0)
    char = build_model(r, text).net
    assert chunk_stds_close(char.rnn.weight_ih_l0, 4, 1 / math.sqrt(64))
    assert chunk_stds_close(char.rnn.weight_hh_l0, 4, 1 / math.sqrt(128))
    assert std_close(char.embedding.weight, 1.0, tol=0.1)


def test_attention_projections_are_drawn_per_query_key_value():
    """I1/I2, M8: nn.MultiheadAttention's in_proj_weight stacks q, k and v (each (E, E), D_in = E); out_proj is a
    linear layer; separate q/k/v weights (kdim, vdim) each get their own D_in."""
    torch.manual_seed(0)
    att = nn.MultiheadAttention(256, 4)
    assert init_weights(att, "kaiming_normal", gain=math.sqrt(2)) == 2  # the attention and its out_proj
    assert chunk_stds_close(att.in_proj_weight, 3, math.sqrt(2 / 256))
    assert std_close(att.out_proj.weight, math.sqrt(2 / 256))
    assert float(att.in_proj_bias.detach().abs().max()) == 0.0
    cross = nn.MultiheadAttention(128, 4, kdim=400, vdim=64)
    init_weights(cross, "xavier_normal", gain=1.0)
    assert std_close(cross.q_proj_weight, 1 / math.sqrt(128))
    assert std_close(cross.k_proj_weight, 1 / math.sqrt(400))
    assert std_close(cross.v_proj_weight, 1 / math.sqrt(64), tol=0.05)


def test_recipe_init_reaches_vit_and_swin_attention():
    """I1/I2, M8: model.init redraws every ViT attention in_proj_weight (per q/k/v, D_in = the token width) and
    Swin's fused qkv linear as three projections (init_fan=avg: sqrt(2/(C + C)), not sqrt(2/(C + 3C))); class
    token, position embeddings and Swin's relative-position bias tables keep their own init."""
    info = DataInfo((1, 8, 8), 10, [str(i) for i in range(10)])
    torch.manual_seed(0)
    plain = build_model(recipe(name="vit_tiny", options={"dim": 192, "depth": 2}), info).net
    torch.manual_seed(0)
    vit = build_model(recipe(name="vit_tiny", init="kaiming_normal", options={"dim": 192, "depth": 2}), info).net
    attentions = [m for m in vit.modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(attentions) == 2
    for att in attentions:
        assert chunk_stds_close(att.in_proj_weight, 3, math.sqrt(2) / math.sqrt(192))  # GELU: torch's ReLU gain
    assert torch.equal(vit.encoder.pos_embedding, plain.encoder.pos_embedding)
    torch.manual_seed(0)
    swin = build_model(recipe(name="swin_t", init="xavier_normal", init_fan="avg",
                              options={"embed_dim": 96, "depths": [1, 1], "heads": [3, 6]}),
                       DataInfo((3, 16, 16), 10, [str(i) for i in range(10)])).net
    qkv = [m.qkv for m in swin.modules() if hasattr(m, "qkv")]
    assert len(qkv) == 2
    for layer in qkv:
        c = layer.in_features
        assert chunk_stds_close(layer.weight, 3, math.sqrt(2 / (c + c)))


def test_one_list_of_conv_and_linear_layers():
    """L1, L4, I1, X3: the weight penalty, model.bias_init, model.init and the doctor's weight layers all
    take the same conv and linear layers: every conv (transposed too, 1-3d), linear, bilinear and
    torchvision's deformable conv; not norms, embeddings or recurrent layers (those only for init)."""
    from torchvision.ops import DeformConv2d

    from trainlab.losses import penalized_parameters, weight_penalty
    from trainlab.models.layers import is_weight_layer
    from trainlab.models.wrapper import init_biases

    layers = [nn.Linear(3, 4), nn.Bilinear(2, 3, 4), nn.Conv1d(2, 3, 3), nn.Conv2d(2, 3, 3), nn.Conv3d(2, 3, 3),
              nn.ConvTranspose1d(2, 3, 3), nn.ConvTranspose2d(2, 3, 3), nn.ConvTranspose3d(2, 3, 3),
              DeformConv2d(2, 3, 3)]
    others = [nn.BatchNorm2d(3), nn.LayerNorm(4), nn.Embedding(5, 4), nn.GRU(4, 4)]
    net = nn.Sequential(*layers, *others)
    expected = [m.weight for m in layers]
    assert [id(w) for w in penalized_parameters(net)] == [id(w) for w in expected]
    l1, l2 = 0.01, 0.1
    total = sum(l1 * w.abs().sum() + 0.5 * l2 * (w**2).sum() for w in expected)
    assert torch.allclose(weight_penalty(penalized_parameters(net), l1, l2), total)
    assert [is_weight_layer(m) for m in net] == [True] * len(layers) + [False] * len(others)
    init_biases(net, -3.0)
    assert all(bool((m.bias == -3.0).all()) for m in layers)
    assert not (others[0].bias == -3.0).any() and not (others[3].bias_ih_l0 == -3.0).any()
    for m in layers:
        nn.init.zeros_(m.weight)
    table = others[2].weight.detach().clone()
    assert init_weights(net, "kaiming_normal", math.sqrt(2.0)) == len(layers) + 1  # + the GRU
    assert all(float(m.weight.detach().abs().sum()) > 0 and not m.bias.any() for m in layers)
    assert torch.equal(others[2].weight, table)  # the embedding keeps its own init
