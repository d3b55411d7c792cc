"""The architecture registry (M8, M10 head): every entry builds for 8x8, 32x32 and 224x224 inputs, trains a
step, and has the parameter count of its reference (torchvision's builder, a published count or a hand sum)."""
from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from trainlab.data.bundle import DataInfo
from trainlab.errors import RecipeError
from trainlab.models import build_model
from trainlab.recipe import load_recipe
from trainlab.registry import MODELS

# trainlab's own architectures (tests elsewhere may register throwaway models into the registry);
# the detectors take targets and return losses and boxes: tests/tasks/test_detection.py and the
# models' own tests cover them; the multitask trunk and heads: tests/tasks/test_multitask.py
ALL = [e.name for e in MODELS.entries() if ":" not in e.name and e.fn.__module__.startswith("trainlab.")
       and not {"detection", "instance_segmentation", "multitask"} & set(e.meta.get("tasks", ()))]
DENSE = [e.name for e in MODELS.entries() if "segmentation" in e.meta.get("tasks", ())]
TASK = {"char_rnn": "sequence", **{name: "segmentation" for name in DENSE}}


def info_for(name: str, shape=(1, 8, 8), classes: int = 10) -> DataInfo:
    if name == "char_rnn":
        return DataInfo((12,), 7, list("abcdefg"), kind="sequence", extra={"vocab_size": 7})
    return DataInfo(tuple(shape), classes, [str(i) for i in range(classes)])


def recipe_for(name: str, **model):
    return load_recipe({"task": TASK.get(name, "classification"), "model": {"name": name, **model}})


def params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def meta_net(name: str, shape=(3, 224, 224), classes: int = 1000, **model) -> nn.Module:
    with torch.device("meta"):
        return build_model(recipe_for(name, **model), info_for(name, shape, classes)).net


def test_registry_lists_every_architecture_of_the_issue():
    """M8/M7/M10: the zoo's names are all registered."""
    wanted = {"vgg11", "vgg16_bn", "resnet18", "resnet34", "resnet50", "resnext50_32x4d", "se_resnet18", "se_resnet50",
              "squeezenet1_1", "mobilenet_v1", "mobilenet_v2", "shufflenet_v2", "xception", "vit_tiny", "vit_small",
              "swin_t", "fcn_resnet18", "rnn", "lstm", "gru", "char_rnn", "mlp", "cnn", "blocknet"}
    assert wanted <= set(ALL)
    assert "timm:resnet18" in MODELS


def task_loss(out: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Cross-entropy against class 0 for logits (N, C), per-step (N, T, V) and per-pixel (N, C, H, W) outputs."""
    if out.dim() == 3:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), torch.zeros(out.shape[0] * out.shape[1], dtype=torch.long))
    target = torch.zeros(out.shape[0], *out.shape[2:], dtype=torch.long)
    return F.cross_entropy(out, target)


@pytest.mark.parametrize("name", ALL)
def test_every_entry_trains_a_step_on_a_tiny_batch(name):
    """M8: build for 8x8 one-channel input (digits), forward and backward a batch of 4, take an SGD step, and
    again: outputs have the task's shape, the loss is finite, every gradient is finite and nearly every parameter
    tensor gets one in the second step (after the first, zero-initialized heads such as ViT's pass gradient on;
    Swin's 1x1 windows in its last stages leave attention nothing to compare, so their query/key weights get none)."""
    torch.manual_seed(0)
    info = info_for(name)
    model = build_model(recipe_for(name), info)
    # A batch of 4: with 2 samples, BatchNorm on the 1x1 maps of the last stages maps any input to +-1.
    x = torch.randint(0, 7, (4, 12)) if name == "char_rnn" else torch.randn(4, 1, 8, 8)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        out = model(x)
        expect = (4, 12, 7) if name == "char_rnn" else (4, 10, 8, 8) if name in DENSE else (4, 10)
        assert tuple(out.shape) == expect
        loss = task_loss(out.float(), expect[1])
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(int(g.abs().sum() > 0) for g in grads) >= 0.85 * len(grads)


@pytest.mark.parametrize("name", [n for n in ALL if n != "char_rnn"])
def test_every_image_entry_builds_for_32_and_224(name):
    """M8: shape inference on the meta device for 3x32x32 (10 classes) and 3x224x224 (1000 classes)."""
    for shape, classes in (((3, 32, 32), 10), ((3, 224, 224), 1000)):
        if name in ("rnn", "lstm", "gru"):  # 224 recurrent steps: the fused CPU kernel beats meta's per-step decomposition
            net = build_model(recipe_for(name), info_for(name, shape, classes)).net.eval()
            out = net(torch.zeros(2, *shape))
        else:
            net = meta_net(name, shape, classes).eval()
            out = net(torch.zeros(2, *shape, device="meta"))
        expect = (2, classes, *shape[1:]) if name in DENSE else (2, classes)
        assert tuple(out.shape) == expect, (name, shape)


TORCHVISION = {"vgg11": tvm.vgg11, "vgg16_bn": tvm.vgg16_bn, "resnet18": tvm.resnet18, "resnet34": tvm.resnet34,
               "resnet50": tvm.resnet50, "resnext50_32x4d": tvm.resnext50_32x4d, "squeezenet1_1": tvm.squeezenet1_1,
               "mobilenet_v2": tvm.mobilenet_v2, "shufflenet_v2": tvm.shufflenet_v2_x1_0, "swin_t": tvm.swin_t}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_parameters_match_torchvision_at_224(name):
    """M8: at 3x224x224 with 1000 classes the same tensors (names and shapes) as torchvision's builder."""
    with torch.device("meta"):
        ref = TORCHVISION[name](weights=None)
    ours = meta_net(name)
    assert params(ours) == params(ref)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
           {k: tuple(v.shape) for k, v in ref.state_dict().items()}


def test_resnet18_count_is_the_published_one():
    """M8/M12: ResNet-18 for 1000 classes has 11,689,512 parameters."""
    assert params(meta_net("resnet18")) == 11_689_512


def se_params(channels: list[int], r: int = 16) -> int:
    """Two 1x1 'FC' layers with biases per block: C·C/r + C/r + C/r·C + C."""
    return sum(c * (c // r) * 2 + c // r + c for c in channels)


def test_se_resnets_add_the_squeeze_excitation_parameters():
    """M8, S4 2.5: SE-ResNet = ResNet + SE blocks; SE-ResNet-50 has the published 28,088,024 parameters."""
    basic = [64] * 2 + [128] * 2 + [256] * 2 + [512] * 2
    bottleneck = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    assert params(meta_net("se_resnet18")) == 11_689_512 + se_params(basic)
    assert params(meta_net("se_resnet50")) == 25_557_032 + se_params(bottleneck) == 28_088_024


def test_mobilenet_v1_matches_the_hand_count():
    """M8, S4 2.6: 3x3 stem + 13 depthwise-separable layers (k²·C + C·C' weights, BN γ/β) + FC = 4,231,976."""
    layers = [(32, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512)] + [(512, 512)] * 5 \
        + [(512, 1024), (1024, 1024)]
    total = 3 * 3 * 3 * 32 + 2 * 32
    for cin, cout in layers:
        total += 9 * cin + 2 * cin + cin * cout + 2 * cout
    total += 1024 * 1000 + 1000
    assert params(meta_net("mobilenet_v1")) == total == 4_231_976
    # the factorization's saving: a standard 3x3 conv layer for the same shapes
    standard = sum(9 * cin * cout for cin, cout in layers)
    separable = sum(9 * cin + cin * cout for cin, cout in layers)
    assert separable < standard / 8


def test_xception_and_vits_match_published_counts():
    """M8: Xception 22,855,952 (Keras' trainable count), ViT-Tiny 5,717,416 and ViT-Small 22,050,664 (timm)."""
    assert params(meta_net("xception", (3, 299, 299))) == 22_855_952
    assert params(meta_net("vit_tiny")) == 5_717_416
    assert params(meta_net("vit_small")) == 22_050_664


def test_vit_count_by_hand():
    """M8, S4 4.3: patch embedding + class token + positions + 12 x (attention + MLP + 2 LN) + LN + head."""
    d, mlp, layers, patch, tokens, classes = 192, 768, 12, 16, 14 * 14 + 1, 1000
    block = (3 * d * d + 3 * d) + (d * d + d) + (d * mlp + mlp + mlp * d + d) + 4 * d
    total = 3 * patch * patch * d + d + d + tokens * d + layers * block + 2 * d + d * classes + classes
    assert params(meta_net("vit_tiny")) == total


def test_small_input_stem_and_channels():
    """M8: for 8x8 one-channel digits ResNet-18 gets a 3x3 stride-1 stem and no max-pool (torchvision's count
    minus the 7x7x3 stem plus a 3x3x1 one); 224 keeps the ImageNet stem."""
    small = build_model(recipe_for("resnet18"), info_for("resnet18", (1, 8, 8), 10)).net
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    ref = params(tvm.resnet18(num_classes=10))
    assert params(small) == ref - 7 * 7 * 3 * 64 + 3 * 3 * 1 * 64
    big = meta_net("resnet18", (1, 224, 224), 10)
    assert big.conv1.kernel_size == (7, 7) and big.conv1.in_channels == 1
    forced = meta_net("resnet18", (3, 224, 224), 10, options={"stem": "small"})
    assert forced.conv1.stride == (1, 1)


def test_vgg_small_head_and_pools():
    """M8, S3 VGG: stages of 3x3 convs; on 8x8 inputs only the max-pools that leave >= 1 pixel are kept."""
    net = build_model(recipe_for("vgg11"), info_for("vgg11")).net
    pools = [m for m in net.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (3, 3) for c in convs) and len(convs) == 8
    features = sum(params(c) for c in convs)
    assert params(net) == features + (512 * 512 + 512) * 2 + 512 * 10 + 10


def test_recurrent_counts_by_hand():
    """M7, S1 Q24-25: per layer gates·(H·(D + H) + 2H) (gates: RNN 1, GRU 3, LSTM 4) plus the linear head."""
    for name, gates in (("rnn", 1), ("gru", 3), ("lstm", 4)):
        net = build_model(recipe_for(name, width=32, depth=2), info_for(name)).net
        d, h = 8, 32  # an 8x8 digit is 8 frames of 8 pixels
        expect = gates * (h * (d + h) + 2 * h) + gates * (h * (h + h) + 2 * h) + h * 10 + 10
        assert params(net) == expect, name
    char = build_model(recipe_for("char_rnn", width=64, depth=1), info_for("char_rnn")).net
    assert params(char) == 7 * 32 + 4 * (64 * (32 + 64) + 2 * 64) + 64 * 7 + 7


def test_fcn_outputs_per_pixel_scores_with_skips():
    """M10 head, S0 Q16: FCN-8s = ResNet-18 trunk + 1x1 score layers on stages 2-4 + learned up-sampling;
    any input size gives (N, classes, H, W)."""
    net = build_model(recipe_for("fcn_resnet18"), info_for("fcn_resnet18", (3, 32, 32), 5)).net
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 5, 32, 32)
    assert net.eval()(torch.randn(1, 3, 21, 27)).shape == (1, 5, 21, 27)  # not a multiple of the stride
    trunk = params(tvm.resnet18()) - (512 * 1000 + 1000)
    scores = (512 + 256 + 128) * 5 + 3 * 5
    upsample = 5 * 4 * 4 * 2 + 5 * 4 * 4  # two x2 (4x4 kernels) and the final x2 on the small stem, per class
    assert params(net) == trunk - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64 + scores + upsample
    coarse = build_model(recipe_for("fcn_resnet18", options={"skips": 0, "upsample": "bilinear"}),
                         info_for("fcn_resnet18", (3, 32, 32), 5)).net
    assert coarse(torch.randn(1, 3, 32, 32)).shape == (1, 5, 32, 32)


def test_activation_and_norm_choices_reach_the_layers():
    """M4/M5: model.activation and model.norm replace the architecture's own (auto keeps them)."""
    info = info_for("resnet18")
    net = build_model(recipe_for("resnet18", activation="leaky_relu", norm="group"), info).net
    assert not any(isinstance(m, (nn.ReLU, nn.BatchNorm2d)) for m in net.modules())
    assert any(isinstance(m, nn.LeakyReLU) for m in net.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in net.modules())
    vit = meta_net("vit_tiny", (3, 32, 32), 10, activation="relu")
    assert not any(isinstance(m, nn.GELU) for m in vit.modules())
    assert any(isinstance(m, nn.GELU) for m in meta_net("vit_tiny", (3, 32, 32), 10).modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in meta_net("vgg11", (3, 32, 32), 10).modules())
    mob = build_model(recipe_for("mobilenet_v1", activation="maxout", norm="none"), info).net
    assert any(type(m).__name__ == "ChannelMaxout" for m in mob.modules())
    mob(torch.randn(2, 1, 8, 8)).sum().backward()


def test_blocknet_options_put_blocks_into_the_model():
    """M2-M6: conv variants, SE, residual, DropBlock, DropConnect and a maxout head from model.options."""
    info = info_for("blocknet")
    assert params(build_model(recipe_for("blocknet"), info).net) == params(build_model(recipe_for("cnn"), info).net)
    for conv in ("pointwise", "separable", "grouped", "dilated", "deformable"):
        opts = {"conv": conv, "se": True, "residual": True, "drop_block": 0.1, "drop_connect": 0.2, "head": "maxout"}
        net = build_model(recipe_for("blocknet", options=opts), info).net
        net(torch.randn(4, 1, 8, 8)).sum().backward()
    sep = build_model(recipe_for("blocknet", options={"conv": "separable"}), info).net
    assert params(sep) < params(build_model(recipe_for("blocknet"), info).net) / 3


def test_bad_options_and_tasks_are_one_line_errors():
    """M8: unknown option keys, bad values and a model used with the wrong task are RecipeErrors naming the field."""
    info = info_for("resnet18")
    with pytest.raises(RecipeError, match=r"model.options.drop_blok: unknown option .*did you mean 'drop_block'"):
        build_model(recipe_for("resnet18", options={"drop_blok": 0.1}), info)
    with pytest.raises(RecipeError, match="model.options.scale"):
        build_model(recipe_for("shufflenet_v2", options={"scale": 0.7}), info)
    with pytest.raises(RecipeError, match="model.options.patch_size: 3 does not divide"):
        build_model(recipe_for("vit_tiny", options={"patch_size": 3}), info)
    with pytest.raises(RecipeError, match="task segmentation"):
        build_model(load_recipe({"model": {"name": "fcn_resnet18"}}), info)
    with pytest.raises(RecipeError, match="unknown activation"):
        build_model(recipe_for("resnet18", activation="relu7"), info)


def test_timm_names_need_the_extra(monkeypatch):
    """M8: 'timm:<name>' without timm installed is a one-line error that says to install trainlab[timm]."""
    monkeypatch.setitem(sys.modules, "timm", None)  # importing timm now raises ImportError
    with pytest.raises(RecipeError, match=r"install trainlab\[timm\]"):
        build_model(recipe_for("timm:resnet18"), info_for("resnet18"))


def test_timm_builder_passes_the_data_shape(monkeypatch):
    """M8: a timm model is created without weights, with the data's channels, classes and image size."""
    calls = []
    fake = types.ModuleType("timm")
    fake.list_models = lambda: ["resnet18", "vit_tiny_patch16_224"]

    def create_model(name, **kwargs):
        calls.append((name, kwargs))
        return nn.Sequential(nn.Flatten(), nn.Linear(64, kwargs["num_classes"]))

    fake.create_model = create_model
    monkeypatch.setitem(sys.modules, "timm", fake)
    net = build_model(recipe_for("timm:resnet18", options={"drop_path_rate": 0.1}), info_for("resnet18")).net
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    name, kwargs = calls[0]
    assert name == "resnet18" and kwargs["pretrained"] is False and kwargs["in_chans"] == 1
    assert kwargs["num_classes"] == 10 and kwargs["img_size"] == (8, 8) and kwargs["drop_path_rate"] == 0.1
    with pytest.raises(RecipeError, match="did you mean timm:resnet18"):
        build_model(recipe_for("timm:resnet81"), info_for("resnet18"))


def test_cli_timm_error_is_one_line(monkeypatch, capsys):
    """M8: the CLI prints the missing-extra error as one line and exits 2."""
    from trainlab.cli import main

    monkeypatch.setitem(sys.modules, "timm", None)
    assert main(["profile", "timm:resnet18"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "install trainlab[timm]" in err[0] and err[0].startswith("trainlab profile: error:")


def test_models_command_lists_the_zoo(capsys):
    """M8: `trainlab models` lists every architecture; --show gives its options."""
    from trainlab.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("resnext50_32x4d", "swin_t", "char_rnn", "timm:<name>"):
        assert name in out
    assert main(["models", "--show", "resnet18"]) == 0
    assert "drop_block" in capsys.readouterr().out


def test_blocknet_grouped_conv_keeps_the_requested_groups():
    """M2: conv=grouped uses model.options.groups in every block; only the stem's conv, which reads the image's
    1 or 3 channels, falls back to gcd(groups, C_in). Groups that do not divide model.width are a RecipeError
    (groups=5 used to build groups=4 silently)."""
    with pytest.raises(RecipeError, match="model.options.groups: 5 does not divide width 32"):
        build_model(recipe_for("blocknet", options={"conv": "grouped", "groups": 5}), info_for("blocknet"))
    for channels, stem_groups in ((1, 1), (3, 1), (6, 2)):
        net = build_model(recipe_for("blocknet", width=16, depth=3, options={"conv": "grouped", "groups": 8}),
                          info_for("blocknet", (channels, 8, 8))).net
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        assert [m.groups for m in convs] == [stem_groups] + [8] * 5
        for m in convs:  # a grouped conv has 1/G of the weights: C_out · (C_in / G) · 3 · 3
            assert m.weight.numel() == m.out_channels * (m.in_channels // m.groups) * 9
        net(torch.randn(2, channels, 8, 8))
