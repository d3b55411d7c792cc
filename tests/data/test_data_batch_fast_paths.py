"""D5, D6: the CPU fast paths of the batch operations against straightforward references written
here: grid masks against the rectangles they come from, uint8 mask fills against masked_fill,
random fills, MixUp's uint8 rounding against the formula, CutMix's in-place paste against a
masked select."""
from __future__ import annotations

import pytest
import torch

from trainlab.data import occlusion as occ
from trainlab.data.batch import build_batch_transforms
from trainlab.data.bundle import DataInfo
from trainlab.data.mixing import mix_images, paste_rects_



def _images(n, h, w, seed=0, c=3):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("h, w", [(60, 80), (7, 5), (33, 17), (3, 3), (64, 48)])
def test_grid_masks_are_the_pixels_of_their_rectangles(h, w):
    """D5: Hide-and-Seek's and GridMask's masks (row/column masks crossed, cell flags spread) hide
    exactly the pixels of the rectangles drawn from the same generator state (rect_mask)."""
    for seed in range(4):
        for grid in (1, 3, 4, 5):
            got = occ.hide_and_seek_mask(6, h, w, grid, 0.5, torch.Generator().manual_seed(seed))
            rects = occ.hide_and_seek_rects(6, h, w, grid, 0.5, torch.Generator().manual_seed(seed))
            assert got.dtype == torch.bool and got.shape == (6, 1, h, w)
            assert torch.equal(got, occ.rect_mask(rects, h, w))
        for d_min, d_max, ratio in ((0.2, 0.5, 0.5), (0.01, 1.0, 0.9), (0.5, 0.5, 0.1)):
            got = occ.gridmask_mask(6, h, w, d_min, d_max, ratio, torch.Generator().manual_seed(seed))
            rects = occ.gridmask_rects(6, h, w, d_min, d_max, ratio, torch.Generator().manual_seed(seed))
            assert torch.equal(got, occ.rect_mask(rects, h, w))


def test_uint8_mask_fill_is_masked_fill():
    """D5: the CPU uint8 fill (x·keep + hide·value in bytes) equals masked_fill for constants, keeps
    the other pixels for random fills, and draws the same noise from the same seed."""
    x = _images(6, 20, 30)
    mask = torch.rand(6, 1, 20, 30, generator=torch.Generator().manual_seed(1)) < 0.4
    for value in (0.0, 0.3, 0.5, 1.0):
        assert torch.equal(occ.fill_masked_(x.clone(), mask, value, 255.0), x.masked_fill(mask, round(value * 255)))
    outs = [occ.fill_masked_(x.clone(), mask, "random", 255.0, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(outs[0], outs[1])
    keep = ~mask.expand_as(x)
    assert torch.equal(outs[0][keep], x[keep])
    assert 120 < float(outs[0][~keep].float().mean()) < 135  # uniform bytes: mean 127.5


def test_random_bytes_are_uniform_and_reproducible():
    """D5: random fill bytes drawn as 64-bit words are uniform in every byte position (chi-square
    against 256 equal bins) and repeat with the generator's seed."""
    from scipy import stats

    b = occ.random_bytes(8 * 40000 + 3, torch.Generator().manual_seed(0))
    assert b.dtype == torch.uint8 and b.shape == (8 * 40000 + 3,)
    assert torch.equal(b, occ.random_bytes(8 * 40000 + 3, torch.Generator().manual_seed(0)))
    assert not torch.equal(b, occ.random_bytes(8 * 40000 + 3, torch.Generator().manual_seed(1)))
    words = b[: 8 * 40000].view(-1, 8)
    for k in range(8):
        counts = torch.bincount(words[:, k].long(), minlength=256).numpy()
        assert stats.chisquare(counts).pvalue > 1e-3


@pytest.mark.parametrize("dtype, max_value", [(torch.uint8, 255.0), (torch.float32, 1.0), (torch.bfloat16, 1.0)])
def test_random_rect_fill_touches_only_its_rectangles(dtype, max_value):
    """D5: Random Erasing's random fill (one draw for all rectangles, written through slices) changes
    only the rectangles' pixels, stays in the value range and repeats with the seed."""
    x = (_images(8, 40, 50).float() / 255).to(dtype) if dtype != torch.uint8 else _images(8, 40, 50)
    rects = occ.erasing_rects(8, 40, 50, gen=torch.Generator().manual_seed(2))
    rects[3] = 0  # an image left alone
    outs = [occ.fill_rects_(x.clone(), rects, "random", max_value, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(outs[0], outs[1]) and outs[0].dtype == dtype
    inside = occ.rect_mask(rects, 40, 50).expand_as(x)
    assert torch.equal(outs[0][~inside], x[~inside]) and torch.equal(outs[0][3], x[3])
    assert float(outs[0].float().max()) <= max_value and float(outs[0].float().min()) >= 0
    assert float((outs[0][inside] != x[inside]).float().mean()) > 0.9


@pytest.mark.parametrize("name, rects", [
    ("hide_and_seek", lambda n, h, w, g: occ.hide_and_seek_rects(n, h, w, 4, 0.5, g)),
    ("gridmask", lambda n, h, w, g: occ.gridmask_rects(n, h, w, 0.2, 0.5, 0.5, g)),
    ("random_erasing", lambda n, h, w, g: occ.erasing_rects(n, h, w, (0.02, 0.33), (0.3, 3.3), g)),
    ("cutout", lambda n, h, w, g: occ.cutout_rects(n, h, w, 0.5, 1, g)),
])
@pytest.mark.parametrize("value, p", [(0.0, 1.0), (0.4, 0.5), (1.0, 0.7)])
def test_batch_occlusion_is_the_masked_fill_of_its_rectangles(name, rects, value, p):
    """D5: each occlusion op hides, in the images drawn with probability p, exactly the pixels of its
    rectangles (geometry drawn first, then the per-image draws), filled with value · 255."""
    info = DataInfo(input_shape=(3, 45, 52), num_classes=3, class_names=list("abc"))
    x = _images(16, 45, 52)
    op = build_batch_transforms([{"name": name, "value": value, "p": p}], info)
    out = op({"input": x.clone(), "target": torch.zeros(16, dtype=torch.long)}, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    hidden = occ.rect_mask(rects(16, 45, 52, g), 45, 52)
    if p < 1.0:
        hidden &= (torch.rand(16, generator=g) < p)[:, None, None, None]
    assert torch.equal(out["input"], x.masked_fill(hidden, round(value * 255)))


@pytest.mark.parametrize("n, c, h, w", [(13, 3, 224, 224), (5, 1, 7, 9), (1, 3, 3, 3), (300, 3, 8, 8)])
def test_uint8_mixup_is_the_rounded_blend(n, c, h, w):
    """D6: uint8 MixUp is round(λ·a + (1 − λ)·b) (either way within float error of a tie), so
    |out − exact| <= 0.5; λ = 1 gives a and λ = 0 gives b exactly; the input is not modified;
    float inputs give the float32 blend."""
    g = torch.Generator().manual_seed(n)
    x = _images(n, h, w, seed=n, c=c)
    perm = torch.randperm(n, generator=g)
    lam = torch.rand(n, generator=g)
    lam[0] = 1.0
    lam[-1] = 0.0 if n > 1 else 1.0
    before = x.clone()
    out = mix_images(x, perm, lam)
    assert torch.equal(x, before) and out.dtype == torch.uint8 and out.shape == x.shape
    lam64 = lam.double()[:, None, None, None]
    exact = lam64 * x.double() + (1 - lam64) * x[perm].double()
    assert float((out.double() - exact).abs().max()) <= 0.5 + 1e-4
    tie = ((exact - exact.floor()) - 0.5).abs() < 1e-4
    assert torch.equal(out.double()[~tie], torch.floor(exact + 0.5)[~tie])
    assert torch.equal(out[0], x[0])
    if n > 1:
        assert torch.equal(out[-1], x[perm[-1]])
    mixed = mix_images(x.float(), perm, lam)
    assert mixed.dtype == torch.float32 and float((mixed.double() - exact).abs().max()) < 1e-3


def test_mixup_batch_is_reproducible_and_keeps_uint8():
    """D6: the same generator seed gives the same uint8 MixUp batch, target and λ."""
    info = DataInfo(input_shape=(3, 12, 12), num_classes=5, class_names=list("abcde"))
    batch = {"input": _images(16, 12, 12), "target": torch.arange(16) % 5}
    op = build_batch_transforms([{"name": "mixup", "alpha": 0.4, "p": 0.7}], info)
    a, b = (op(dict(batch), torch.Generator().manual_seed(3)) for _ in range(2))
    assert a["input"].dtype == torch.uint8
    assert all(torch.equal(a[k], b[k]) for k in ("input", "target", "mix_lambda"))
    assert torch.allclose(a["target"].sum(1), torch.ones(16))


def _cycle_perms(n, g):
    yield torch.arange(n)  # every image its own partner
    yield torch.roll(torch.arange(n), 1)  # one cycle through the whole batch
    if n > 1:
        swap = torch.arange(n)
        swap[:2] = torch.tensor([1, 0])
        yield swap  # a 2-cycle and fixed points
    for _ in range(4):
        yield torch.randperm(n, generator=g)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.bfloat16])
def test_cutmix_paste_in_place_is_the_masked_select(dtype):
    """D6: CutMix's in-place CPU paste (along the cycles of the permutation, one saved patch per
    cycle) gives where(rect_mask, x[perm], x) of the batch before pasting, for overlapping,
    clipped and empty rectangles."""
    g = torch.Generator().manual_seed(0)
    for n, h, w in ((9, 20, 24), (2, 5, 5), (1, 4, 4), (64, 32, 32)):
        x = _images(n, h, w, seed=n).to(dtype)
        for perm in _cycle_perms(n, g):
            y0, x0 = torch.randint(0, h, (n,), generator=g), torch.randint(0, w, (n,), generator=g)
            y1 = (y0 + torch.randint(0, h + 1, (n,), generator=g)).clamp(max=h)
            x1 = (x0 + torch.randint(0, w + 1, (n,), generator=g)).clamp(max=w)
            rects = torch.stack([y0, x0, y1, x1], 1)[:, None]
            ref = torch.where(occ.rect_mask(rects, h, w), x[perm], x)
            target = x.clone()
            assert paste_rects_(target, perm, rects) is target
            assert torch.equal(target, ref)
