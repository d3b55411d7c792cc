"""E2: box formats, IoU, NMS, batched NMS and Soft-NMS against torchvision.ops and the paper."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision.ops as tv
from torchvision.ops import boxes as tv_boxes

from trainlab.evaluate import boxes as B

SRC = str(Path(__file__).resolve().parents[2] / "src")


def random_boxes(gen: torch.Generator, n: int, kind: str, dtype=torch.float32) -> torch.Tensor:
    """xyxy boxes; "grid" snaps to a coarse grid (ties, duplicates, zero width or height),
    "degenerate" swaps some corners (x2 < x1) as a careless model might output."""
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 100
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 40
    if kind == "grid":
        xy, wh = (xy / 10).round() * 10, (wh / 10).round() * 10
    b = torch.cat([xy, xy + wh], 1)
    if kind == "degenerate":
        flip = torch.rand(n, generator=gen) < 0.3
        b[flip] = b[flip][:, [2, 3, 0, 1]]
    if n > 4 and kind != "plain":
        b[1] = b[0]  # an exact duplicate
        b[3, 2] = b[3, 0]  # zero width
    return b.to(dtype)


def random_scores(gen: torch.Generator, n: int, ties: bool) -> torch.Tensor:
    s = torch.rand(n, generator=gen)
    return (s * 5).round() / 5 if ties else s


CASES = [(seed, kind) for seed in range(12) for kind in ("plain", "grid", "degenerate")]


@pytest.mark.parametrize("seed,kind", CASES)
def test_box_iou_matches_torchvision(seed, kind):
    """E2: pairwise IoU equals torchvision's box_iou, incl. zero-area and degenerate boxes."""
    gen = torch.Generator().manual_seed(seed)
    a = random_boxes(gen, 37, kind)
    b = random_boxes(gen, 23, kind)
    ref = tv.box_iou(a, b)
    got = B.box_iou(a, b)
    assert got.shape == (37, 23) and got.dtype == ref.dtype
    # torchvision gives NaN for 0/0 (two empty boxes); ours is 0 there and identical elsewhere
    torch.testing.assert_close(got, torch.nan_to_num(ref, nan=0.0), rtol=0, atol=0)
    a, b = a.double(), b.double()
    torch.testing.assert_close(B.box_iou(a, b), torch.nan_to_num(tv.box_iou(a, b), nan=0.0), rtol=0, atol=0)


def test_box_iou_of_two_empty_boxes_is_zero():
    """E2: two zero-area boxes: IoU 0, not NaN."""
    z = torch.tensor([[5.0, 5.0, 5.0, 9.0]])
    assert B.box_iou(z, z).item() == 0.0
    assert B.box_iou(torch.zeros(0, 4), z).shape == (0, 1)


@pytest.mark.parametrize("fmt_in,fmt_out", [(a, b) for a in B.FORMATS for b in B.FORMATS])
def test_box_convert_matches_torchvision(fmt_in, fmt_out):
    """E2: format conversions agree with torchvision.ops.box_convert, also batched (..., 4)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 50, 4, generator=gen, dtype=torch.float64) * 100
    ref = tv.box_convert(x.reshape(-1, 4), fmt_in, fmt_out).reshape(2, 50, 4)
    torch.testing.assert_close(B.box_convert(x, fmt_in, fmt_out), ref, rtol=1e-12, atol=1e-12)
    back = B.box_convert(B.box_convert(x, fmt_in, fmt_out), fmt_out, fmt_in)
    torch.testing.assert_close(back, x, rtol=1e-12, atol=1e-9)


def test_box_convert_rejects_unknown_format():
    """E2: an unknown format names the known ones."""
    with pytest.raises(ValueError, match="xyxy, xywh, cxcywh"):
        B.box_convert(torch.zeros(1, 4), "xyxy", "yolo")


def test_box_area_matches_torchvision():
    """E2: box areas."""
    x = random_boxes(torch.Generator().manual_seed(0), 40, "grid")
    torch.testing.assert_close(B.box_area(x), tv.box_area(x), rtol=0, atol=0)
    torch.testing.assert_close(B.box_area(B.box_convert(x, "xyxy", "cxcywh"), "cxcywh"), tv.box_area(x))


@pytest.mark.parametrize("seed,kind", CASES)
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_torchvision(seed, kind, threshold):
    """E2: greedy NMS keeps exactly torchvision's boxes in its order, with tied scores and
    duplicate, empty and degenerate boxes; both of our methods (matrix and loop)."""
    gen = torch.Generator().manual_seed(100 + seed)
    n = int(torch.randint(0, 200, (1,), generator=gen))
    b = random_boxes(gen, n, kind)
    s = random_scores(gen, n, ties=seed % 2 == 0)
    ref = tv.nms(b, s, threshold)
    assert torch.equal(B.nms(b, s, threshold, matrix=True), ref)
    assert torch.equal(B.nms(b, s, threshold, matrix=False), ref)
    assert torch.equal(B.nms(b.double(), s.double(), threshold), tv.nms(b.double(), s.double(), threshold))


def test_nms_threshold_compared_in_double_like_torchvision():
    """E2: an IoU equal to float32(0.3) (which is > 0.3) is suppressed at threshold 0.3, as in torchvision."""
    # box 2 overlaps box 1 with IoU 3/10 computed in float32; float32(0.3) > 0.3
    b = torch.tensor([[0.0, 0.0, 10.0, 1.0], [0.0, 0.0, 3.0, 1.0]])
    s = torch.tensor([0.9, 0.8])
    iou = B.box_iou(b, b)[0, 1].item()
    assert iou > 0.3
    assert torch.equal(B.nms(b, s, 0.3), tv.nms(b, s, 0.3))
    assert B.nms(b, s, 0.3).tolist() == [0]


def test_nms_many_boxes_uses_loop_and_agrees():
    """E2: beyond the matrix limit NMS switches to the loop; still torchvision's answer."""
    gen = torch.Generator().manual_seed(7)
    b = random_boxes(gen, 4200, "plain") * 5
    s = torch.rand(4200, generator=gen)
    assert torch.equal(B.nms(b, s, 0.5), tv.nms(b, s, 0.5))


def test_nms_long_suppression_chain_is_fast_and_agrees():
    """E2: 2000 sliding boxes [i, 0, i+10, 10] with decreasing scores form one long suppression
    chain (each box overlaps the next three at IoU > 0.5). The matrix method resolves it in one
    pass, not one O(N²) sweep per chain level (that took ~9 s here); same answer as torchvision,
    also class-aware with two interleaved chains. The bound is a generous sanity check; the
    comparison of speed with torchvision is benchmarks/nms.py."""
    import time

    n = 2000
    i = torch.arange(n, dtype=torch.float32)
    b = torch.stack((i, torch.zeros(n), i + 10, torch.full((n,), 10.0)), dim=1)
    s = torch.linspace(1.0, 0.0, n)
    labels = torch.arange(n) % 2
    start = time.perf_counter()
    keep = B.nms(b, s, 0.5, matrix=True)
    batched = B.batched_nms(b, s, labels, 0.5, matrix=True)
    elapsed = time.perf_counter() - start
    assert torch.equal(keep, tv.nms(b, s, 0.5))
    assert keep.tolist() == list(range(0, n, 4))  # 0 drops 1..3, 4 drops 5..7, ...
    assert torch.equal(batched, tv.batched_nms(b, s, labels, 0.5))
    assert elapsed < 2.0, f"NMS of a 2000-box chain took {elapsed:.1f} s"


@pytest.mark.parametrize("seed", range(10))
def test_batched_nms_matches_torchvision(seed):
    """E2: class-aware NMS keeps the same set as torchvision (per-class reference and the
    public function), ordered by decreasing score with ties by index."""
    gen = torch.Generator().manual_seed(200 + seed)
    n = int(torch.randint(1, 300, (1,), generator=gen))
    b = random_boxes(gen, n, ("plain", "grid", "degenerate")[seed % 3])
    s = random_scores(gen, n, ties=seed % 2 == 1)
    labels = torch.randint(0, 5, (n,), generator=gen) * 7 - 3  # arbitrary, negative ids too
    for matrix in (True, False):
        got = B.batched_nms(b, s, labels, 0.5, matrix=matrix)
        assert sorted(got.tolist()) == sorted(tv_boxes._batched_nms_vanilla(b, s, labels, 0.5).tolist())
        assert sorted(got.tolist()) == sorted(tv.batched_nms(b, s, labels, 0.5).tolist())
        key = [(-s[i].item(), i) for i in got.tolist()]
        assert key == sorted(key)


def test_nms_empty_input():
    """E2: no boxes in, no indices out."""
    out = B.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert out.dtype == torch.int64 and out.numel() == 0
    assert B.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0


def soft_nms_reference(boxes, scores, method, nt, sigma, thresh):
    """Algorithm 1 of Bodla et al. (2017), literally, one box at a time in Python floats."""
    remaining = [i for i in range(len(scores)) if scores[i] >= thresh]
    s = [float(v) for v in scores]
    picked = []
    while remaining:
        m = max(remaining, key=lambda i: (s[i], -i))
        picked.append((m, s[m]))
        remaining.remove(m)
        for i in remaining:
            o = float(tv.box_iou(boxes[m : m + 1], boxes[i : i + 1]).nan_to_num(0.0))
            if method == "linear":
                s[i] *= (1 - o) if o >= nt else 1.0
            else:
                s[i] *= math.exp(-(o * o) / sigma)
        remaining = [i for i in remaining if s[i] >= thresh]
    return picked


@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("seed", range(4))
def test_soft_nms_matches_the_paper(method, seed):
    """E2: Soft-NMS (linear and gaussian) picks the same boxes in the same order with the same
    decayed scores as a literal transcription of the paper's algorithm."""
    gen = torch.Generator().manual_seed(300 + seed)
    b = random_boxes(gen, 60, "plain", torch.float64)
    s = torch.rand(60, generator=gen, dtype=torch.float64)
    keep, new = B.soft_nms(b, s, method=method, iou_threshold=0.3, sigma=0.5, score_threshold=0.05)
    ref = soft_nms_reference(b, s, method, 0.3, 0.5, 0.05)
    assert keep.tolist() == [i for i, _ in ref]
    torch.testing.assert_close(new, torch.tensor([v for _, v in ref], dtype=torch.float64))
    assert (new[1:] <= new[:-1]).all()


def test_soft_nms_worked_example():
    """E2: two boxes with IoU 0.5: linear keeps both with the second score halved; gaussian
    multiplies it by exp(-0.25 / 0.5); with hard NMS at 0.4 it would be gone."""
    b = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    s = torch.tensor([0.9, 0.8], dtype=torch.float64)
    keep, new = B.soft_nms(b, s, method="linear", iou_threshold=0.3)
    assert keep.tolist() == [0, 1] and new.tolist() == pytest.approx([0.9, 0.4])
    keep, new = B.soft_nms(b, s, method="gaussian", sigma=0.5)
    assert new.tolist() == pytest.approx([0.9, 0.8 * math.exp(-0.5)])
    assert tv.nms(b, s, 0.4).tolist() == [0]
    keep, _ = B.soft_nms(b, s, method="linear", iou_threshold=0.3, score_threshold=0.5)
    assert keep.tolist() == [0]


def test_boxes_module_does_not_import_matplotlib():
    """E2: importing the box ops stays light (no matplotlib)."""
    code = "import sys, trainlab.evaluate.boxes; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": SRC}, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_ops_on_cuda_match_torchvision():
    """E2: on a GPU the same answers, computed on the device."""
    gen = torch.Generator().manual_seed(5)
    b = random_boxes(gen, 500, "grid").cuda()
    s = random_scores(gen, 500, ties=True).cuda()
    labels = torch.randint(0, 4, (500,), generator=gen).cuda()
    torch.testing.assert_close(B.box_iou(b, b), torch.nan_to_num(tv.box_iou(b, b), nan=0.0))
    for matrix in (True, False):
        keep = B.nms(b, s, 0.5, matrix=matrix)
        assert keep.is_cuda and torch.equal(keep.cpu(), tv.nms(b.cpu(), s.cpu(), 0.5))
        got = B.batched_nms(b, s, labels, 0.5, matrix=matrix)
        assert sorted(got.tolist()) == sorted(tv_boxes._batched_nms_vanilla(b.cpu(), s.cpu(), labels.cpu(), 0.5).tolist())
    keep, new = B.soft_nms(b, s, method="gaussian")
    assert keep.is_cuda and new.is_cuda
