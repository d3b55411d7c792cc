"""D3, D4, D5: the per-sample fast paths (benchmarks/augment.py) against straightforward references
written here: torchvision.transforms.v2.functional for geometry, a float64 colour map for jitter,
the batch rectangle draw for erasing."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from trainlab.data import augment as aug
from trainlab.data import occlusion as occ
from trainlab.data.color import LUMA, affine_planes, color_affine, hue_matrix


def _image(c=3, h=57, w=71, seed=0):
    return torch.randint(0, 256, (c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _layouts(x):
    """The same (C, H, W) image as a contiguous tensor, a crop view, a channels-last tensor and a
    channels-last crop view (what the pipeline hands to a resize)."""
    big = torch.zeros(x.shape[0], x.shape[1] + 5, x.shape[2] + 9, dtype=x.dtype)
    big[:, 2:2 + x.shape[1], 3:3 + x.shape[2]] = x
    cl = x[None].contiguous(memory_format=torch.channels_last)[0]
    big_cl = big[None].contiguous(memory_format=torch.channels_last)[0]
    return {"contiguous": x, "crop view": big[:, 2:2 + x.shape[1], 3:3 + x.shape[2]], "channels last": cl,
            "channels-last crop view": big_cl[:, 2:2 + x.shape[1], 3:3 + x.shape[2]]}


@pytest.mark.parametrize("c", [1, 3])
def test_channels_last_copy_keeps_every_pixel(c):
    """D3: channels_last_uint8 is the same image as a standard channels-last batch of one, whatever
    the input's strides."""
    x = _image(c)
    for name, view in _layouts(x).items():
        out = aug.channels_last_uint8(view)
        assert out.shape == (1, *x.shape), name
        assert out.is_contiguous(memory_format=torch.channels_last), name
        assert out.stride() == (x.numel(), 1, x.shape[2] * c, c), name
        assert torch.equal(out[0], x), name


@pytest.mark.parametrize("size", [(224, 224), (40, 50), (57, 140)])
def test_resize_is_torchvision_resize(size):
    """D3: resize_image (channels-last uint8 kernel) equals torchvision's bilinear antialiased
    resize of the same pixels, for every input layout."""
    x = _image()
    ref = F.resize(x, list(size), interpolation=F.InterpolationMode.BILINEAR, antialias=True)
    for name, view in _layouts(x).items():
        out = aug.resize_image(view, size)
        assert out.dtype == torch.uint8 and out.shape == ref.shape, name
        assert (out.int() - ref.int()).abs().max() <= 1, name


@pytest.mark.parametrize("vertical", [False, True])
def test_flip_fast_path_is_torchvision_flip(vertical):
    """D3: RandomFlip's bare-image path is torchvision's flip when drawn, the identity when not, and
    draws its coin as v2.RandomHorizontalFlip does (so p = 0.5 flips about half the samples)."""
    x = aug.as_image(_image())
    ref = F.vertical_flip(x) if vertical else F.horizontal_flip(x)
    assert torch.equal(aug.RandomFlip(1.0, vertical).apply_image(x), ref)
    assert torch.equal(aug.RandomFlip(0.0, vertical).apply_image(x), x)
    flip = aug.RandomFlip(0.5, vertical)
    torch.manual_seed(3)
    flipped = [torch.equal(flip.apply_image(x), ref) for _ in range(400)]
    torch.manual_seed(3)
    coins = [float(torch.rand(())) < 0.5 for _ in range(400)]
    assert flipped == coins


def _color_affine_reference(means, brightness, contrast, saturation, hue, order):
    """The composition step by step with numpy matrices (module docstring of trainlab.data.color)."""
    mu = np.asarray(means, dtype=np.float64)
    c = mu.size
    eye, w = np.eye(c), (np.array(LUMA) if c == 3 else np.ones(1))
    a, b = eye.copy(), np.zeros(c)
    for step in order:
        if step == 0:
            m, o = brightness * eye, 0.0
        elif step == 1:
            m, o = contrast * eye, (1.0 - contrast) * float(w @ (a @ mu + b))
        elif step == 2 and c == 3:
            m, o = saturation * eye + (1.0 - saturation) * np.outer(np.ones(3), w), 0.0
        elif step == 3 and c == 3:
            m, o = hue_matrix(hue), 0.0
        else:
            continue
        a, b = m @ a, m @ b + o
    return a, b


def test_color_affine_is_the_matrix_composition():
    """D4: color_affine (written out entry by entry) equals the product of the step matrices, for
    every order of the four steps, on one and three channels."""
    rng = np.random.default_rng(0)
    for order in itertools.permutations(range(4)):
        for c in (1, 3):
            means = rng.uniform(0, 255, c).tolist()
            factors = (*rng.uniform(0.6, 1.4, 3), rng.uniform(-0.1, 0.1))
            a, b = color_affine(means, *factors, order)
            ra, rb = _color_affine_reference(means, *factors, order)
            assert a.shape == (c, c) and b.shape == (c,)
            np.testing.assert_allclose(a, ra, rtol=0, atol=1e-12)
            np.testing.assert_allclose(b, rb, rtol=0, atol=1e-9)


@pytest.mark.parametrize("c", [1, 3])
def test_uint8_colour_map_is_rounded_clamped_affine_map(c):
    """D4: affine_planes on uint8 is round-half-to-even(clamp(A x + b, 0, 255)) of every pixel,
    returned channels-last (the layout of the resize that follows)."""
    x = _image(c, 40, 33)
    rng = np.random.default_rng(1)
    a = np.eye(c) * 1.3 + rng.uniform(-0.3, 0.3, (c, c))
    b = rng.uniform(-60, 60, c)
    ref = np.einsum("ij,jhw->ihw", a.astype(np.float32).astype(np.float64), x.numpy().astype(np.float64))
    ref = np.rint(np.clip(ref + b.astype(np.float32)[:, None, None], 0, 255))
    out = affine_planes(x.float(), a, b, 255.0, torch.uint8)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert out[None].is_contiguous(memory_format=torch.channels_last)
    # float32 products may land either side of a .5 tie that float64 resolves: at most one level
    diff = np.abs(out.numpy().astype(np.int64) - ref.astype(np.int64))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    ties = torch.tensor([[0.5, 1.5, 2.5, 254.5, -3.0, 300.0, 7.49, 7.51]]).view(1, 1, 8)
    assert affine_planes(ties, np.eye(1), np.zeros(1), 255.0, torch.uint8).flatten().tolist() == \
        [0, 2, 2, 254, 0, 255, 7, 8]


def test_color_jitter_is_the_composed_map_of_its_drawn_factors():
    """D4: ColorJitter on a uint8 crop view equals the reference composition applied in float64 with
    the factors it draws and the crop's own channel means."""
    big = _image(3, 80, 90, seed=4)
    crop = aug.as_image(big[:, 10:60, 5:75])
    jitter = aug.ColorJitter(0.4, 0.4, 0.4, 0.1)
    torch.manual_seed(5)
    params = jitter.make_params([crop])
    out = jitter.transform(crop, params)
    x = crop.as_subclass(torch.Tensor).double()
    a, b = _color_affine_reference(x.mean(dim=(1, 2)).numpy(), params["brightness"], params["contrast"],
                                   params["saturation"], params["hue"], params["order"])
    ref = (torch.einsum("ij,jhw->ihw", torch.from_numpy(a), x) + torch.from_numpy(b)[:, None, None])
    ref = ref.clamp(0, 255).round()
    assert out.dtype == torch.uint8 and out.shape == crop.shape
    assert (out.double() - ref).abs().max() <= 1


def test_single_erasing_rectangle_is_the_batch_draw():
    """D5: the per-sample erasing rectangle (Python floats) is the batch function's rectangle for
    N = 1 from the same generator state."""
    for seed in range(3000):
        for h, w, scale, ratio in ((224, 224, (0.02, 0.33), (0.3, 3.3)), (37, 61, (0.1, 0.9), (0.5, 2.0))):
            torch.manual_seed(seed)
            ref = occ.erasing_rects(1, h, w, scale, ratio).tolist()
            torch.manual_seed(seed)
            assert occ.erasing_rect(h, w, scale, ratio) == ref


def test_standard_pipeline_is_reproducible_uint8_and_same_as_structured_path():
    """D3, D4, D5: the benchmark's pipeline (crop, flip, jitter, erasing) keeps uint8 and the shape,
    gives the same output for the same (seed, epoch, index), and the bare-image fast path gives the
    same pixels as the structured path a sample with a target dict takes."""
    from torchvision import tv_tensors

    from trainlab.data.bundle import DataInfo
    from trainlab.data.loader import sample_seed
    from trainlab.data.transforms import build_transforms

    specs = ["random_resized_crop", "hflip",
             {"name": "color_jitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
             {"name": "random_erasing", "p": 0.5, "value": "random"}]
    info = DataInfo(input_shape=(3, 64, 64), num_classes=2, class_names=["a", "b"])
    pipe = build_transforms(specs, info)
    for i in range(20):
        x = _image(3, 64, 64, seed=i)
        outs = []
        for _ in range(2):
            with sample_seed(7, 1, i):
                outs.append(pipe(x, torch.tensor(0))[0])
        with sample_seed(7, 1, i):
            target = {"masks": tv_tensors.Mask(torch.zeros(1, 64, 64, dtype=torch.uint8))}
            structured = pipe(x, target)[0]
        assert outs[0].dtype == torch.uint8 and outs[0].shape == x.shape
        assert torch.equal(outs[0], outs[1])
        assert torch.equal(outs[0], structured)


def test_color_affine_refuses_channel_counts_it_has_no_colour_model_for():
    """D4: colour jitter is defined for grayscale (1) and RGB (3) images; 2 or 4 channels are a
    clear error, not a silent 1 x 1 map built from the first channel."""
    for c in (2, 4):
        with pytest.raises(ValueError, match=f"1 or 3 channels, got {c}"):
            color_affine([10.0] * c, 1.2, 1.0, 1.0, 0.0, (0, 1))
