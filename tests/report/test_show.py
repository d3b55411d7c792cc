"""Seeing inside a network (V3): filters, feature maps, vanilla-gradient saliency, Grad-CAM and the
penultimate features of a t-SNE view, checked against their definitions computed by hand; and
`trainlab show` end to end (a PNG in plots/, in report.md and report.html; bad input is one line)."""
from __future__ import annotations

import base64
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

import trainlab
from trainlab.cli import main
from trainlab.report import inside


def bilinear_by_hand(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with half-pixel centres (source = (i + 0.5) · in / out − 0.5, clamped at the
    border), written out pixel by pixel."""
    h, w = img.shape
    out = np.zeros(size)
    for i in range(size[0]):
        for j in range(size[1]):
            sy = max((i + 0.5) * h / size[0] - 0.5, 0.0)
            sx = max((j + 0.5) * w / size[1] - 0.5, 0.0)
            y0, x0 = int(math.floor(sy)), int(math.floor(sx))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            dy, dx = sy - y0, sx - x0
            out[i, j] = ((1 - dy) * (1 - dx) * img[y0, x0] + (1 - dy) * dx * img[y0, x1]
                         + dy * (1 - dx) * img[y1, x0] + dy * dx * img[y1, x1])
    return out


def test_grad_cam_matches_its_definition_on_a_small_network():
    """V3: Grad-CAM = bilinear up-sampling to the input size of ReLU(sum_k alpha_k A_k), alpha_k the
    spatial mean of d score / d A_k. After the last ReLU the network is average pooling and a linear
    layer, so d score_t / d A_k(i, j) = W[t, k] / (h·w) everywhere: alpha_k = W[t, k] / (h·w)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    x = torch.randn(1, 2, 9, 11)
    acts = net[:4](x)[0].detach().numpy()  # (4, 7, 9)
    w = net[6].weight.detach().numpy()
    for target in range(5):
        alpha = w[target] / (acts.shape[1] * acts.shape[2])
        cam = np.maximum(np.tensordot(alpha, acts, axes=1), 0.0)
        expected = bilinear_by_hand(cam, (9, 11))
        got = inside.grad_cam(net, x, net[3], target)
        assert got.shape == (1, 9, 11)
        np.testing.assert_allclose(got[0].numpy(), expected, rtol=1e-5, atol=1e-6)
    # the ReLU: a class every channel speaks against has an all-zero map
    with torch.no_grad():
        net[6].weight[0] = -net[6].weight[0].abs() - 0.1
    assert float(inside.grad_cam(net, x, net[3], 0).abs().max()) == 0.0


def test_maps_before_an_in_place_activation_are_the_layers_own():
    """V3: the zoo's activations work in place; the feature maps and the Grad-CAM of a convolution
    followed by ReLU(inplace=True) are still the convolution's output A (negative values too) and
    ReLU(sum_k alpha_k A_k), alpha_k the spatial mean of d score / d A_k = W[t, k]·[A_k > 0] / (h·w)."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(3, 2))
    x = torch.randn(1, 1, 5, 5)
    acts = net[0](x).detach()
    assert float(acts.min()) < 0
    torch.testing.assert_close(inside.feature_maps(net, x, net[0]), acts[0])
    grads = net[4].weight.detach()[1][None, :, None, None] * (acts > 0) / 25
    cam = torch.relu((grads.mean((2, 3), keepdim=True) * acts).sum(1)).numpy()
    np.testing.assert_allclose(inside.grad_cam(net, x, net[0], 1)[0].numpy(), bilinear_by_hand(cam[0], (5, 5)),
                               rtol=1e-5, atol=1e-6)


def test_vanilla_gradient_of_a_linear_model_is_its_weights():
    """V3: the vanilla-gradient saliency of score_t = W_t · x + b is |W_t| as an image, its largest
    value over the input channels."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 5, 3))
    x = torch.randn(2, 2, 4, 5)
    got = inside.vanilla_gradient(net, x, 1)
    expected = net[1].weight[1].detach().reshape(2, 4, 5).abs().amax(0)
    assert got.shape == (2, 4, 5)
    torch.testing.assert_close(got[0], expected)
    torch.testing.assert_close(got[1], expected)  # one gradient per input of the batch


class Backwards(nn.Module):
    """Layers declared in the opposite order of their use: call order is not declaration order."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(6 * 2 * 2, 3)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.head(self.pool(torch.relu(self.conv2(self.conv1(x)))).flatten(1))


def test_call_order_filters_feature_maps_and_penultimate_features():
    """V3: the first layer, the layers with maps and the penultimate layer are found in the order
    a forward pass calls them; the filters are the first conv's kernels, each scaled to its own
    range in a grid with white gaps; feature maps are the layer's output; the penultimate
    features are the last linear layer's input."""
    torch.manual_seed(2)
    net = Backwards()
    x = torch.randn(5, 3, 6, 6)
    layers = inside.call_order(net, x[:1])
    assert [layer.name for layer in layers] == ["conv1", "conv2", "pool", "head"]
    assert [layer.shape for layer in layers] == [(1, 4, 6, 6), (1, 6, 6, 6), (1, 6, 2, 2), (1, 3)]
    name, filters = inside.first_layer_filters(layers, (3, 6, 6))
    assert name == "conv1" and torch.equal(filters, net.conv1.weight.detach())
    grid = inside.filter_image(filters)  # 4 filters of 3x3 in colour: 2 x 2 tiles, 1-pixel gaps
    assert grid.shape == (2 * 4 + 1, 2 * 4 + 1, 3)
    k = net.conv1.weight.detach()[3]  # the 4th filter: second row, second column
    scaled = ((k - k.min()) / (k.max() - k.min())).permute(1, 2, 0)
    torch.testing.assert_close(grid[5:8, 5:8], scaled)
    assert torch.all(grid[0] == 1) and torch.all(grid[:, 4] == 1)
    assert inside.find_layer(layers, None, True, "features").name == "conv1"
    assert inside.find_layer(layers, None, True, "Grad-CAM").name == "conv2"  # the last conv, not the pooling
    maps = inside.feature_maps(net, x[2:3], net.conv2)
    torch.testing.assert_close(maps, net.conv2(net.conv1(x[2:3]))[0].detach())
    assert inside.penultimate(layers).name == "head"
    batches = [{"input": x[:3], "target": torch.tensor([0, 1, 2])}, {"input": x[3:], "target": torch.tensor([1, 0])}]
    feats, targets = inside.layer_inputs(net, batches, net.head, limit=4)
    expected = net.pool(torch.relu(net.conv2(net.conv1(x)))).flatten(1)[:4].detach()
    torch.testing.assert_close(feats, expected)
    assert targets.tolist() == [0, 1, 2, 1]


def test_mlp_filters_are_its_first_rows_as_images():
    """V3: a fully connected first layer over the whole image shows its rows as images."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(1 * 4 * 4, 7), nn.ReLU(), nn.Linear(7, 2))
    layers = inside.call_order(net, torch.zeros(1, 1, 4, 4))
    name, filters = inside.first_layer_filters(layers, (1, 4, 4))
    assert name == "1" and filters.shape == (7, 1, 4, 4)
    torch.testing.assert_close(filters[6, 0], net[1].weight.detach()[6].reshape(4, 4))
    with pytest.raises(trainlab.errors.TrainlabError, match="feature maps"):
        inside.find_layer(layers, None, True, "features")
    with pytest.raises(trainlab.errors.TrainlabError, match="not feature maps"):
        inside.find_layer(layers, "1", True, "features")


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("show")
    return trainlab.fit("digits-cnn", ["train.epochs=1", "train.progress=false", "run.tensorboard=false",
                                       "doctor.enabled=false", f"run.dir={root / 'cnn'}"], quiet=True)


@pytest.mark.slow
def test_show_writes_each_view_into_plots_and_the_reports(cnn_run, tmp_path, capsys):
    """V3/V5: `trainlab show RUN filters|features|saliency|embeddings` writes plots/<view>.png and
    rewrites report.md and report.html to include it; --input takes an image file."""
    from PIL import Image

    digit = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    Image.fromarray(digit).save(tmp_path / "digit.png")
    calls = [["filters"], ["features", "--layer", "net.1.0"], ["saliency", "--input", str(tmp_path / "digit.png")],
             ["embeddings", "--n", "60"]]
    for args in calls:
        assert main(["show", str(cnn_run.dir), *args]) == 0, capsys.readouterr().err
    files = ["filters.png", "features-net-1-0.png", "saliency.png", "embeddings.png"]
    for name in files:
        assert (cnn_run.plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    md = (cnn_run.dir / "report.md").read_text()
    page = (cnn_run.dir / "report.html").read_text()
    embedded = {base64.b64decode(d) for d in re.findall(r'src="data:image/png;base64,([^"]+)"', page)}
    for name in files:
        assert f"(plots/{name})" in md
        assert (cnn_run.plots / name).read_bytes() in embedded
    assert "wrote" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("args, needle", [
    (["colours"], "expected one of filters, features, saliency, embeddings"),
    (["features", "--layer", "net.9.9"], "--layer 'net.9.9': no such layer"),
    (["features", "--layer", "net.3"], "not feature maps"),
    (["saliency", "--class", "eleven"], "--class 'eleven': not a class"),
    (["filters", "--input", "x.png"], "--input"),
    (["features", "--input", "missing.png"], "missing.png"),
])
def test_show_bad_input_is_one_line_and_writes_nothing(cnn_run, args, needle, capsys):
    """V3: a bad view, layer, class or input file is one line on stderr, exit code 2, and the run
    is left as it was."""
    def files():  # the lock file's note names the last command that held it; it holds no result
        return {p.name: p.stat().st_mtime_ns for p in cnn_run.dir.rglob("*")
                if p.is_file() and p.name != ".trainlab.lock"}

    before = files()
    assert main(["show", str(cnn_run.dir), *args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and needle in err[0], err
    assert files() == before
