"""D3, D4, D5, D7: per-sample transforms keep shapes and dtypes, move boxes and masks with the image,
photometric maths against torchvision, occlusion geometry, and the label-preserving guard."""
from __future__ import annotations

import math

import pytest
import torch
from helpers_data import shapes_recipe

from trainlab.data import build_data
from trainlab.data.transforms import build_transforms
from trainlab.errors import RecipeError
from trainlab.recipe import load_recipe


@pytest.fixture(scope="module")
def shapes():
    bundle = build_data(shapes_recipe(count=40, size=48), annotations=True)
    return bundle.train, bundle.info


GEOMETRIC = [
    ({"name": "hflip", "p": 1.0}, 0.0),
    ({"name": "vflip", "p": 1.0}, 0.0),
    ({"name": "random_crop", "padding": 6}, 0.0),
    ({"name": "rotate", "degrees": 45}, 1.0),
    ({"name": "affine", "degrees": 30, "translate": 0.2, "scale": [0.7, 1.3], "shear": 10}, 1.0),
    ({"name": "random_resized_crop", "scale": [0.3, 1.0]}, 1.0),
    ("mosaic", 1.0),
]


@pytest.mark.parametrize("spec, tol", GEOMETRIC, ids=lambda v: v if isinstance(v, str) else None)
def test_boxes_enclose_their_objects_after_geometric_ops(shapes, spec, tol):
    """D3: after every geometric op the box of each transformed instance mask lies inside the
    transformed box (exactly equal for flips and crops; within the resampling pixel otherwise),
    and the image keeps its shape and dtype."""
    from torchvision.ops import masks_to_boxes

    source, info = shapes
    pipe = build_transforms([spec], info, source=source)
    checked = 0
    for i in range(12):
        x, y = source.load(i)
        torch.manual_seed(100 + i)
        x2, y2 = pipe(x, y)
        assert x2.shape == x.shape and x2.dtype == x.dtype
        boxes = y2["boxes"].as_subclass(torch.Tensor)
        masks = y2["masks"].as_subclass(torch.Tensor).bool()
        assert len(boxes) == len(masks) == len(y2["labels"])
        assert tuple(y2["boxes"].canvas_size) == tuple(x.shape[1:])
        for k in range(len(boxes)):
            if not masks[k].any():
                continue
            mbox = masks_to_boxes(masks[k][None])[0] + torch.tensor([0.0, 0.0, 1.0, 1.0])
            assert bool((mbox[:2] >= boxes[k, :2] - tol).all() and (mbox[2:] <= boxes[k, 2:] + tol).all()), \
                (spec, i, k, mbox, boxes[k])
            if tol == 0.0:
                assert torch.equal(mbox, boxes[k])
            checked += 1
    assert checked >= 12


def test_flip_moves_box_exactly(shapes):
    """D3: hflip maps x to W - x for boxes (pixel-edge coordinates) and mirrors the masks."""
    source, info = shapes
    x, y = source.load(0)
    x2, y2 = build_transforms([{"name": "hflip", "p": 1.0}], info)(x, y)
    b, b2 = y["boxes"].as_subclass(torch.Tensor), y2["boxes"].as_subclass(torch.Tensor)
    w = x.shape[-1]
    assert torch.equal(b2, torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1))
    assert torch.equal(x2, x.flip(-1)) and torch.equal(y2["masks"], y["masks"].flip(-1))


def test_classification_samples_keep_shape_dtype_and_label():
    """D3, D4: digits (float 0..16) and shapes (uint8) keep shape, dtype, scale and label through a
    full per-sample pipeline."""
    specs = ["random_resized_crop", "random_crop", {"name": "rotate", "degrees": 10}, "color_jitter", "noise",
             "random_erasing", "cutout", "hide_and_seek", "gridmask", "grayscale"]
    for recipe in (load_recipe(None, ["data.augment=" + str(specs)]), shapes_recipe("data.augment=" + str(specs))):
        bundle = build_data(recipe)
        pipe = build_transforms(recipe.data.augment, bundle.info)
        for i in range(5):
            x, y = bundle.train.load(i)
            torch.manual_seed(i)
            x2, y2 = pipe(x, y)
            assert x2.shape == x.shape and x2.dtype == x.dtype and torch.equal(y2, y)
            assert float(x2.min()) >= 0 and float(x2.max()) <= bundle.info.max_value


def test_color_matrix_matches_torchvision_adjust_functions():
    """D4: brightness, contrast and saturation composed into one colour matrix equal torchvision's
    adjust_brightness -> adjust_contrast -> adjust_saturation (inputs kept away from clipping)."""
    from torchvision.transforms.v2 import functional as F

    from trainlab.data.color import apply_color_affine, channel_means, color_affine

    g = torch.Generator().manual_seed(0)
    x = 0.35 + 0.3 * torch.rand(3, 20, 24, generator=g)
    for b, c, s in [(1.1, 0.8, 1.2), (0.9, 1.15, 0.7), (1.0, 1.0, 0.0)]:
        ref = F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(x, b), c), s)
        a, off = color_affine(channel_means(x), b, c, s, 0.0, order=(0, 1, 2))
        assert torch.allclose(apply_color_affine(x, a, off, 1.0), ref, atol=1e-5)
    # contrast first, brightness second: the grey mean of contrast is taken at its turn
    ref = F.adjust_brightness(F.adjust_contrast(x, 1.3), 0.8)
    a, off = color_affine(channel_means(x), 0.8, 1.3, 1.0, 0.0, order=(1, 0))
    assert torch.allclose(apply_color_affine(x, a, off, 1.0), ref, atol=1e-5)
    xu = (x * 255).round().to(torch.uint8)  # uint8 result: rounded, within one level
    ref = F.adjust_contrast(F.adjust_brightness(xu.float() / 255, 1.1), 0.9) * 255
    a, off = color_affine(channel_means(xu), 1.1, 0.9, 1.0, 0.0, order=(0, 1))
    assert (apply_color_affine(xu, a, off, 255.0).float() - ref).abs().max() <= 1.0


def test_hue_rotates_chroma_at_constant_luma():
    """D4: a hue shift of h turns rotates (I, Q) by 2πh in YIQ space and keeps Y."""
    from trainlab.data.color import hue_matrix

    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
    rgb = torch.tensor([[0.8, 0.3, 0.1], [0.2, 0.6, 0.4]], dtype=torch.float64).T
    for h in (0.1, -0.25, 0.5):
        out = torch.from_numpy(hue_matrix(h)) @ rgb
        a, b = yiq @ rgb, yiq @ out
        assert torch.allclose(a[0], b[0], atol=2e-3)
        angle = 2 * math.pi * h
        rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float64)
        assert torch.allclose(rot @ a[1:], b[1:], atol=2e-3)


def test_noise_has_the_requested_std():
    """D4: additive noise on a mid-grey uint8 image has std = std · 255 (rounding aside)."""
    from trainlab.data.bundle import DataInfo

    info = DataInfo(input_shape=(3, 64, 64), num_classes=2, class_names=["a", "b"])
    x = torch.full((3, 64, 64), 128, dtype=torch.uint8)
    torch.manual_seed(0)
    out, _ = build_transforms([{"name": "noise", "std": 0.1}], info)(x, torch.tensor(0))
    diff = out.float() - 128
    assert abs(float(diff.std()) - 25.5) < 1.0 and abs(float(diff.mean())) < 0.5


def test_occlusion_regions():
    """D5: erasing area within `scale`, cutout squares of side `size`, hide-and-seek hides whole grid
    cells, and GridMask hides (y + δy) mod d < side and (x + δx) mod d < side (formula re-derived here
    from the same random draws)."""
    from trainlab.data import occlusion as occ

    h, w = 60, 80
    g = torch.Generator().manual_seed(0)
    rects = occ.erasing_rects(500, h, w, (0.1, 0.3), (0.5, 2.0), g)
    area = ((rects[..., 2] - rects[..., 0]) * (rects[..., 3] - rects[..., 1])).float() / (h * w)
    assert float(area.min()) >= 0.07 and float(area.max()) <= 0.34  # rounding of the sides aside
    assert bool((rects[..., :2] >= 0).all() and (rects[..., 2] <= h).all() and (rects[..., 3] <= w).all())
    sq = occ.cutout_rects(200, h, w, size=20, holes=1, gen=g)
    inside = (sq[..., 0] > 0) & (sq[..., 2] < h) & (sq[..., 1] > 0) & (sq[..., 3] < w)
    assert bool(((sq[..., 2] - sq[..., 0])[inside] == 20).all())

    def hidden(rects):
        """Pixels the ops hide: filled through slices on the CPU, one masked kernel elsewhere (both checked)."""
        filled = occ.fill_rects_(torch.ones(len(rects), 1, h, w), rects, 0.0, 1.0)[:, 0] == 0
        assert torch.equal(filled, occ.rect_mask(rects, h, w)[:, 0])
        return filled

    mask = hidden(occ.hide_and_seek_rects(4, h, w, grid=4, p_hide=0.5, gen=g))
    cells = mask.reshape(4, 4, h // 4, 4, w // 4)
    assert bool((cells.all(dim=(2, 4)) | ~cells.any(dim=(2, 4))).all())  # each cell all or nothing
    assert 0 < int(cells.all(dim=(2, 4)).sum()) < 4 * 16
    for seed in range(5):
        got = hidden(occ.gridmask_rects(3, h, w, 0.2, 0.5, 0.5, gen=torch.Generator().manual_seed(seed)))
        u = torch.rand((3, 3), generator=torch.Generator().manual_seed(seed))
        for i in range(3):
            d = max(2.0, round(min(h, w) * (0.2 + 0.3 * float(u[i, 0]))))
            side = min(max(1.0, round(d * 0.5)), d - 1)
            dy, dx = math.floor(float(u[i, 1]) * d), math.floor(float(u[i, 2]) * d)
            ys, xs = torch.arange(h)[:, None], torch.arange(w)[None, :]
            ref = (torch.remainder(ys + dy, d) < side) & (torch.remainder(xs + dx, d) < side)
            assert torch.equal(got[i], ref)


def test_batch_occlusion_keeps_dtype_and_only_touches_its_regions():
    """D5: batch occlusion ops keep (N, C, H, W) uint8, fill only the hidden pixels, and p=0 is a no-op."""
    from trainlab.data.batch import build_batch_transforms
    from trainlab.data.bundle import DataInfo

    info = DataInfo(input_shape=(3, 40, 40), num_classes=3, class_names=list("abc"))
    x = torch.randint(1, 255, (8, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for name in ("random_erasing", "cutout", "hide_and_seek", "gridmask"):
        op = build_batch_transforms([{"name": name, "p": 1.0, "value": 0.0}], info)
        out = op({"input": x.clone(), "target": torch.zeros(8, dtype=torch.long)}, torch.Generator().manual_seed(0))
        y = out["input"]
        assert y.dtype == torch.uint8 and y.shape == x.shape
        changed = y != x
        assert bool(changed.any()) and bool((y[changed] == 0).all())
        assert bool((changed.all(1) | ~changed.any(1)).all())  # all channels of a pixel together
        same = build_batch_transforms([{"name": name, "p": 0.0}], info)(
            {"input": x.clone(), "target": torch.zeros(8, dtype=torch.long)}, torch.Generator().manual_seed(0))
        assert torch.equal(same["input"], x)


def test_label_changing_transforms_are_refused():
    """D7: digits refuse flips and rotations beyond 30 degrees (also through affine); small rotations
    pass; data.forbid adds the user's own rules; unknown names in data.forbid are errors."""
    def build(*overrides):
        return build_data(load_recipe(None, list(overrides)))

    with pytest.raises(RecipeError, match=r"data.augment\[0\]: 'hflip' changes the label"):
        build("data.augment=[hflip]")
    with pytest.raises(RecipeError, match=r"data.augment\[1\]: 'rotate' with degrees=45 .*rotate>30"):
        build("data.augment=[cutout, {name: rotate, degrees: 45}]")
    with pytest.raises(RecipeError, match=r"'affine' with degrees=40"):
        build("data.augment=[{name: affine, degrees: [-40, 10]}]")
    build("data.augment=[{name: rotate, degrees: 30}, cutout]")
    with pytest.raises(RecipeError, match=r"data.augment\[0\]: 'rotate' with degrees=15 .*data.forbid"):
        build_data(shapes_recipe("data.augment=[rotate]", "data.forbid=['rotate>10']"))
    with pytest.raises(RecipeError, match=r"data.batch_augment\[0\]: 'mixup' changes the label"):
        build_data(shapes_recipe("data.batch_augment=[mixup]", "data.forbid=[mixup]"))
    with pytest.raises(RecipeError, match=r"data.forbid\[0\]: unknown transform 'hflp'; did you mean 'hflip'"):
        build("data.forbid=[hflp]")
    with pytest.raises(RecipeError, match="mosaic tiles four images with their boxes"):
        build("data.augment=[mosaic]")


def test_bad_transform_options_name_the_field():
    """D3: a misspelt option or an out-of-range value is a one-line RecipeError naming the entry."""
    bundle = build_data(load_recipe(None, []))
    with pytest.raises(RecipeError, match=r"data.augment\[0\] \(rotate\): .*'degree'.*options: degrees, p"):
        build_transforms([{"name": "rotate", "degree": 5}], bundle.info)
    with pytest.raises(RecipeError, match=r"data.augment\[0\] \(color_jitter\): hue must be in"):
        build_transforms([{"name": "color_jitter", "hue": 0.9}], bundle.info)
    with pytest.raises(RecipeError, match=r"data.augment\[0\]: unknown transform 'blur'"):
        build_transforms(["blur"], bundle.info)


@pytest.mark.parametrize("spec, message", [
    ({"name": "random_erasing", "scale": [0.5, 0.2]}, "scale must be 0 < min <= max <= 1, got [0.5, 0.2]"),
    ({"name": "random_erasing", "scale": [0.1, 1.5]}, "scale must be 0 < min <= max <= 1, got [0.1, 1.5]"),
    ({"name": "random_erasing", "scale": [0.1, 0.2, 0.3]}, "scale must be [min, max], got [0.1, 0.2, 0.3]"),
    ({"name": "random_erasing", "ratio": [0, 1]}, "ratio must be 0 < min <= max, got [0.0, 1.0]"),
    ({"name": "random_erasing", "value": "noise"}, "value must be a fraction of the value range"),
    ({"name": "cutout", "holes": 0}, "size must be > 0 and holes >= 1, got size=0.5, holes=0"),
    ({"name": "cutout", "p": -0.1}, "p must be in [0, 1], got -0.1"),
    ({"name": "hide_and_seek", "p_hide": 1.5}, "p_hide must be in [0, 1], got 1.5"),
    ({"name": "hide_and_seek", "grid": 0}, "grid must be >= 1, got 0"),
    ({"name": "gridmask", "d_min": 0.6, "d_max": 0.5}, "need 0 < d_min <= d_max <= 1"),
    ({"name": "gridmask", "ratio": 1}, "ratio must be in (0, 1), got 1"),
    ({"name": "gridmask", "value": 1.5}, "value must be a fraction of the value range"),
])
def test_occlusion_options_are_checked_alike_per_sample_and_per_batch(spec, message):
    """D5: data.augment's occlusion transforms and data.batch_augment's occlusion ops refuse the same option
    values with the same one-line RecipeError naming the field."""
    import re

    from trainlab.data.batch import build_batch_transforms
    from trainlab.data.bundle import DataInfo

    info = DataInfo((3, 8, 8), 2, ["a", "b"])
    for field, build in (("data.augment", build_transforms), ("data.batch_augment", build_batch_transforms)):
        with pytest.raises(RecipeError, match=rf"^{re.escape(field)}\[0\] \({spec['name']}\): {re.escape(message)}"):
            build([spec], info)
