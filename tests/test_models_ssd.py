"""SSD (M9, L7, K2): default boxes, matching, box coding, hard negative mining, the multibox loss and
the detector contract.

The pure functions are checked against hand-worked cases (IoUs, offsets and selections written out
in comments) and against torchvision.ops (box_iou, box_convert); the loss against smooth-L1 and
cross-entropy written out here on the elements the 3:1 rule selects.
"""
from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, box_iou

import trainlab.models.ssd  # noqa: F401  registers "ssd" (the catalog import is added separately)
from trainlab.data.bundle import DataInfo
from trainlab.errors import RecipeError
from trainlab.models.ssd import (
    SSD, box_scales, cxcywh_to_xyxy, decode, default_boxes, encode, hard_negative_mining, match, multibox_loss,
    xyxy_to_cxcywh,
)
from trainlab.recipe import ModelConfig
from trainlab.registry import MODELS

CLASSES = 4


def info(classes: int = CLASSES, side: int = 64, **detection) -> DataInfo:
    extra = {"detection": detection} if detection else {}
    return DataInfo((3, side, side), classes, [f"c{i}" for i in range(classes)], extra=extra)


def make(classes: int = CLASSES, side: int = 64, width: int = 8, depth: int = 1, detection=None, **options) -> SSD:
    cfg = ModelConfig(name="ssd", width=width, depth=depth, options=options)
    return MODELS.get("ssd").fn(cfg, info(classes, side, **(detection or {})))


def target(boxes, labels) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.long)}


# ---------------------------------------------------------------------------- default boxes
def test_box_scales_follow_the_papers_linear_rule():
    """M9: s_k = s_min + (s_max − s_min)(k − 1)/(m − 1), and s_{m+1} continues the spacing."""
    assert box_scales(3, 0.2, 0.9) == pytest.approx([0.2, 0.55, 0.9, 1.25])
    assert box_scales(5, 0.2, 0.9) == pytest.approx([0.2, 0.375, 0.55, 0.725, 0.9, 1.075])
    assert box_scales(1, 0.3, 0.3) == pytest.approx([0.3, 1.0])


def test_default_box_count_and_positions():
    """M9: per map k and cell (i, j) row-major, ratio boxes of scale s_k then the extra sqrt(s_k s_k+1) square."""
    boxes = default_boxes([(2, 2), (1, 1)], (64, 64), [0.2, 0.5, 0.8], [1.0, 2.0])
    assert boxes.shape == (2 * 2 * 3 + 1 * 3, 4)
    r2 = math.sqrt(2.0)
    expected_first_cell = [
        [16, 16, 0.2 * 64, 0.2 * 64],                                 # ratio 1
        [16, 16, 0.2 * r2 * 64, 0.2 / r2 * 64],                       # ratio 2: wider than tall
        [16, 16, math.sqrt(0.2 * 0.5) * 64, math.sqrt(0.2 * 0.5) * 64],  # the extra square
    ]
    torch.testing.assert_close(boxes[:3], torch.tensor(expected_first_cell))
    # cell (0, 1) is next: x moves, y stays; cell (1, 0) after it
    torch.testing.assert_close(boxes[3, :2], torch.tensor([48.0, 16.0]))
    torch.testing.assert_close(boxes[6, :2], torch.tensor([16.0, 48.0]))
    torch.testing.assert_close(boxes[12:], torch.tensor([
        [32, 32, 32.0, 32.0], [32, 32, 0.5 * r2 * 64, 0.5 / r2 * 64],
        [32, 32, math.sqrt(0.5 * 0.8) * 64, math.sqrt(0.5 * 0.8) * 64]]))
    # a non-square image: scales are fractions of each side
    wide = default_boxes([(1, 2)], (32, 64), [0.5, 1.0], [1.0], extra_box=False)
    torch.testing.assert_close(wide, torch.tensor([[16.0, 16.0, 32.0, 16.0], [48.0, 16.0, 32.0, 16.0]]))


def test_model_default_boxes_for_64x64_inputs():
    """M9: 3 maps at strides 8, 16, 32 (8x8, 4x4, 2x2), 4 boxes per cell: 4 · (64 + 16 + 4) = 336."""
    net = make()
    feats = net.features(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 8), (4, 4), (2, 2)]
    defaults = net.anchors(feats, (64, 64))
    assert defaults.shape == (336, 4)
    logits, offsets = net.head(feats)
    assert logits.shape == (1, 336, CLASSES + 1) and offsets.shape == (1, 336, 4)


def test_head_order_matches_the_default_boxes():
    """M9: prediction d of the flattened head belongs to default box d (map, row, column, box)."""
    net = make(classes=2)

    class Pattern(nn.Module):
        """Channel a·cols + c at (i, j) holds 1000 i + 100 j + 10 a + c."""

        def __init__(self, boxes, cols):
            super().__init__()
            self.boxes, self.cols = boxes, cols

        def forward(self, f):
            n, _, h, w = f.shape
            i = torch.arange(h).view(1, 1, 1, h, 1)
            j = torch.arange(w).view(1, 1, 1, 1, w)
            a = torch.arange(self.boxes).view(1, self.boxes, 1, 1, 1)
            c = torch.arange(self.cols).view(1, 1, self.cols, 1, 1)
            return (1000 * i + 100 * j + 10 * a + c).float().expand(n, -1, -1, -1, -1).reshape(n, -1, h, w)

    net.class_heads = nn.ModuleList(Pattern(4, 3) for _ in net.class_heads)
    feats = net.features(torch.zeros(1, 3, 64, 64))
    logits, _ = net.head(feats)
    defaults = net.anchors(feats, (64, 64))
    d = 0
    for stride, side in ((8, 8), (16, 4), (32, 2)):
        for i in range(side):
            for j in range(side):
                for a in range(4):
                    assert logits[0, d].tolist() == [1000 * i + 100 * j + 10 * a + c for c in range(3)]
                    assert defaults[d, :2].tolist() == [(j + 0.5) * stride, (i + 0.5) * stride]
                    d += 1
    assert d == logits.shape[1]


def test_box_conversions_match_torchvision():
    """M9: (cx, cy, w, h) <-> XYXY as torchvision.ops.box_convert."""
    xyxy = torch.tensor([[1.0, 2.0, 5.0, 9.0], [0.0, 0.0, 64.0, 32.0]])
    torch.testing.assert_close(xyxy_to_cxcywh(xyxy), box_convert(xyxy, "xyxy", "cxcywh"))
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy), box_convert(xyxy, "cxcywh", "xyxy"))


# ------------------------------------------------------------------------------- matching
def test_match_threshold_and_forced_best_box():
    """M9, L7: IoU >= 0.5 makes a positive; each ground truth also takes its best box below 0.5."""
    defaults = torch.tensor([
        [0, 0, 10, 10],    # d0: gt0 IoU 1
        [5, 0, 15, 10],    # d1: gt0 IoU 50/150 = 1/3 → background
        [20, 20, 30, 30],  # d2: gt1 IoU 64/180 = 0.356 < 0.5, but gt1's best → forced positive
        [0, 0, 20, 20],    # d3: gt0 IoU 100/400 = 0.25 → background
        [40, 40, 50, 50],  # d4: no overlap → background
        [0, 0, 12, 10],    # d5: gt0 IoU 100/120 = 0.833 → positive, a second box for gt0
    ], dtype=torch.float32)
    gt = target([[0, 0, 10, 10], [22, 22, 34, 34]], [2, 0])
    labels, matched = match(defaults, gt["boxes"], gt["labels"], 0.5)
    assert matched.tolist() == [0, -1, 1, -1, -1, 0]
    assert labels.tolist() == [3, 0, 1, 0, 0, 3]  # object class + 1; 0 is background
    # without the forced rule gt1 would have no positive at all
    labels, matched = match(defaults, gt["boxes"][1:], gt["labels"][1:], 0.5)
    assert matched.tolist() == [-1, -1, 0, -1, -1, -1] and labels.tolist() == [0, 0, 1, 0, 0, 0]


def test_match_shared_best_box_goes_to_the_larger_overlap():
    """M9: two ground truths with the same best box: the one overlapping it more keeps it; a ground
    truth overlapping nothing is not forced onto a box."""
    defaults = torch.tensor([[0, 0, 10, 10], [100, 100, 110, 110]], dtype=torch.float32)
    gt = target([[0, 0, 10, 9], [0, 0, 10, 8], [200, 200, 210, 210]], [1, 2, 3])  # IoUs 0.9, 0.8, 0
    labels, matched = match(defaults, gt["boxes"], gt["labels"], 0.95)  # no box passes the threshold
    assert matched.tolist() == [0, -1] and labels.tolist() == [2, 0]
    gt_swapped = target([[0, 0, 10, 8], [0, 0, 10, 9]], [2, 1])
    labels, matched = match(defaults, gt_swapped["boxes"], gt_swapped["labels"], 0.95)
    assert matched.tolist() == [1, -1] and labels.tolist() == [2, 0]


def test_match_agrees_with_torchvision_box_iou():
    """M9, L7: on random boxes, every non-forced default box is matched by torchvision.ops.box_iou's rule."""
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 50
    defaults = torch.cat([xy, xy + 4 + torch.rand(200, 2, generator=g) * 20], 1)
    xy = torch.rand(5, 2, generator=g) * 40
    gts = torch.cat([xy, xy + 6 + torch.rand(5, 2, generator=g) * 20], 1)
    gt_labels = torch.tensor([0, 1, 2, 3, 1])
    labels, matched = match(defaults, gts, gt_labels, 0.5)
    iou = box_iou(gts, defaults)  # (K, D)
    best_box = iou.argmax(1)      # each ground truth's forced box
    best, arg = iou.max(0)
    assert (best < 0.5).any() and (best >= 0.5).any()  # both rules are exercised
    for d in range(len(defaults)):
        claimants = [k for k in range(len(gts)) if best_box[k] == d]
        if claimants:  # forced: the claimant overlapping it most
            assert int(matched[d]) in claimants and iou[matched[d], d] == max(iou[k, d] for k in claimants)
        elif best[d] >= 0.5:
            assert int(matched[d]) == int(arg[d])
        else:
            assert int(matched[d]) == -1
    assert torch.equal(labels, torch.where(matched >= 0, gt_labels[matched.clamp(min=0)] + 1, 0))
    assert set(matched.tolist()) >= set(range(len(gts)))  # every object has a positive


def test_match_without_ground_truth_is_all_background():
    """M9: an image without objects: every default box is background."""
    labels, matched = match(torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]), torch.zeros(0, 4),
                            torch.zeros(0, dtype=torch.long))
    assert labels.tolist() == [0, 0] and matched.tolist() == [-1, -1]


# ------------------------------------------------------------------------------ box coding
def test_encode_hand_values_and_round_trip():
    """M9: t = ((g_cx − d_cx)/(d_w·0.1), (g_cy − d_cy)/(d_h·0.1), log(g_w/d_w)/0.2, log(g_h/d_h)/0.2);
    decode inverts it."""
    default = torch.tensor([[10.0, 10.0, 4.0, 8.0]])
    gt = torch.tensor([[9.0, 8.0, 15.0, 12.0]])  # cx 12, cy 10, w 6, h 4
    expected = torch.tensor([[2 / 0.4, 0.0, math.log(6 / 4) / 0.2, math.log(4 / 8) / 0.2]])
    torch.testing.assert_close(encode(gt, default), expected)
    torch.testing.assert_close(decode(expected, default), gt)
    g = torch.Generator().manual_seed(1)
    defaults = torch.cat([torch.rand(50, 2, generator=g) * 64, 2 + torch.rand(50, 2, generator=g) * 30], 1)
    xy = torch.rand(50, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g) * 20], 1)
    for variances in ((0.1, 0.2), (1.0, 1.0)):
        torch.testing.assert_close(decode(encode(boxes, defaults, variances), defaults, variances), boxes)


def test_decode_never_gives_inf_or_nan():
    """M9: huge predicted log-scales are clamped, so an untrained head cannot produce inf - inf corners."""
    out = decode(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), torch.tensor([[10.0, 10.0, 4.0, 4.0]]))
    assert torch.isfinite(out).all()


# ------------------------------------------------------------------------ hard negatives
def test_hard_negative_mining_three_to_one_with_ties_and_caps():
    """L7: per image the ⌊3·P⌋ highest-loss negatives, the lower index first on ties, at most all negatives."""
    loss = torch.tensor([
        [0.9, 0.5, 0.5, 0.5, 0.1, 2.0],  # 1 positive (the 2.0, never picked): 3 negatives, ties → indices 1, 2
        [0.3, 0.2, 0.1, 0.4, 0.0, 0.0],  # 2 positives: 6 wanted, only 4 negatives exist → all of them
        [0.3, 0.2, 0.1, 0.4, 0.7, 0.6],  # no positive: none (the paper's rule)
    ])
    positives = torch.tensor([
        [False, False, False, False, False, True],
        [True, True, False, False, False, False],
        [False] * 6,
    ])
    expected = torch.tensor([
        [True, True, True, False, False, False],
        [False, False, True, True, True, True],
        [False] * 6,
    ])
    assert torch.equal(hard_negative_mining(loss, positives, 3.0), expected)
    # min_negatives keeps some in every image; a fractional ratio rounds down (1.5 · 1 → 1)
    expected[2] = torch.tensor([False, False, False, False, True, True])
    assert torch.equal(hard_negative_mining(loss, positives, 3.0, min_negatives=2), expected)
    assert hard_negative_mining(loss, positives, 1.5)[0].tolist() == [True, False, False, False, False, False]


# --------------------------------------------------------------------------- multibox loss
def test_multibox_loss_against_hand_computation():
    """L7: loc = Σ smooth-L1 over positives / N, conf = Σ CE over positives and mined negatives / N,
    N = the batch's positives."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 3, generator=g)
    offsets = torch.randn(2, 5, 4, generator=g) * 2
    targets = torch.randn(2, 5, 4, generator=g)
    labels = torch.tensor([[0, 2, 0, 0, 0], [1, 1, 0, 0, 0]])
    out = multibox_loss(logits, offsets, labels, targets, neg_pos_ratio=1.0)

    ce = -F.log_softmax(logits, -1).gather(-1, labels[..., None])[..., 0]  # (2, 5)
    # image 0: 1 positive → the 1 negative of highest CE; image 1: 2 positives → its 2 highest of 3 negatives
    neg0 = [int(ce[0, [0, 2, 3, 4]].argmax())]
    neg0 = [[0, 2, 3, 4][neg0[0]]]
    neg1 = [2 + int(i) for i in ce[1, 2:].topk(2).indices]
    conf = ce[0, 1] + ce[0, neg0].sum() + ce[1, 0] + ce[1, 1] + ce[1, neg1].sum()
    pos = labels > 0
    d = (offsets[pos] - targets[pos]).abs()
    loc = torch.where(d < 1, 0.5 * d**2, d - 0.5).sum()
    n = 3
    torch.testing.assert_close(out["conf"], conf / n)
    torch.testing.assert_close(out["loc"], loc / n)
    assert set(out) == {"loc", "conf"}


def test_multibox_loss_without_positives_is_finite():
    """L7: N = 0 → loc 0, conf = the mined negatives' CE (N clamped to 1), gradients finite; 0 with no mining."""
    logits = torch.randn(2, 6, 3, requires_grad=True)
    offsets = torch.randn(2, 6, 4, requires_grad=True)
    labels = torch.zeros(2, 6, dtype=torch.long)
    out = multibox_loss(logits, offsets, labels, torch.zeros(2, 6, 4), 3.0, min_negatives=2)
    ce = -F.log_softmax(logits, -1)[..., 0]
    torch.testing.assert_close(out["conf"], ce.topk(2, dim=1).values.sum())
    assert out["loc"].item() == 0.0
    sum(out.values()).backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(offsets.grad).all()
    out = multibox_loss(logits, offsets, labels, torch.zeros(2, 6, 4), 3.0, min_negatives=0)
    assert out["conf"].item() == 0.0 and out["loc"].item() == 0.0


# ----------------------------------------------------------------------------- the model
def test_registered_for_detection():
    """K2, M9: the registry entry and its metadata; options are validated."""
    entry = MODELS.get("ssd")
    assert entry.meta["tasks"] == ("detection",)
    assert entry.meta["default_input"] == (3, 64, 64) and entry.meta["default_classes"] == 4
    with pytest.raises(RecipeError, match="model.options.sizes"):
        make(sizes=[0.2, 0.5])  # 3 maps need 4 scales
    with pytest.raises(RecipeError, match="first_stride"):
        make(first_stride=6)
    with pytest.raises(RecipeError, match="did you mean 'match_iou'"):
        make(match_io=0.4)
    net = make(sizes=[0.1, 0.3, 0.5, 0.7], aspect_ratios=[1.0], extra_box=False)
    assert net.anchors(net.features(torch.zeros(1, 3, 64, 64)), (64, 64)).shape == (84, 4)


def test_training_forward_gives_losses_only():
    """K2: training mode with targets → {"losses": {"loc", "conf"}}; an image without boxes is allowed."""
    torch.manual_seed(0)
    net = make().train()
    out = net(torch.randn(2, 3, 64, 64), [target([[4, 4, 30, 30]], [1]), target([], [])])
    assert set(out) == {"losses"} and set(out["losses"]) == {"loc", "conf"}
    assert all(torch.isfinite(v) for v in out["losses"].values())
    assert net(torch.randn(2, 3, 64, 64)) == {}  # nothing to compute without targets in training mode


def test_empty_batch_has_finite_loss_and_gradients():
    """K2, L7: a batch of background-only images: loc 0, conf from the mined negatives, no NaN."""
    torch.manual_seed(0)
    net = make().train()
    out = net(torch.randn(2, 3, 64, 64), [target([], []), target([], [])])
    assert out["losses"]["loc"].item() == 0.0 and out["losses"]["conf"].item() > 0.0
    sum(out["losses"].values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    out = make(min_negatives=0).train()(torch.randn(2, 3, 64, 64), [target([], []), target([], [])])
    assert out["losses"]["conf"].item() == 0.0


def test_eval_output_format_threshold_and_max_detections():
    """K2, E2: eval → one dict per image (boxes XYXY in the image, scores above the threshold,
    best first, labels 0..C−1, at most max_detections); with targets, the losses too."""
    torch.manual_seed(0)
    net = make(detection={"score_threshold": 0.3, "max_detections": 5}).eval()
    with torch.no_grad():  # constant head: every box says class 0 with p = e²/(e² + 4), the others 1/(e² + 4)
        for head in (*net.class_heads, *net.box_heads):
            head.weight.zero_()
            head.bias.zero_()
        for head in net.class_heads:
            head.bias.view(4, CLASSES + 1)[:, 1] = 2.0
    x = torch.randn(3, 3, 64, 64)
    out = net(x)
    assert set(out) == {"detections"} and len(out["detections"]) == 3
    p = math.exp(2) / (math.exp(2) + 4)
    defaults = cxcywh_to_xyxy(net.anchors(net.features(x), (64, 64))).clamp(0, 64)
    for det in out["detections"]:
        assert set(det) == {"boxes", "scores", "labels"}
        assert det["boxes"].shape == (5, 4) and det["labels"].dtype == torch.long
        assert det["labels"].tolist() == [0] * 5  # the other classes' 0.088 is under the threshold
        torch.testing.assert_close(det["scores"], torch.full((5,), p))
        # zero offsets decode to the default boxes themselves (clipped to the image)
        assert all(((defaults - b).abs().amax(1) < 1e-4).any() for b in det["boxes"])
    loose = make(detection={"score_threshold": 0.01, "max_detections": 1000}).eval()
    loose.load_state_dict(net.state_dict())
    det = loose(x[:1])["detections"][0]
    assert len(det["scores"]) > 5 and set(det["labels"].tolist()) == {0, 1, 2, 3}
    assert torch.all(det["scores"][:-1] >= det["scores"][1:])
    assert (det["boxes"] >= 0).all() and (det["boxes"] <= 64).all()
    both = net(x, [target([[4, 4, 30, 30]], [1])] * 3)
    assert set(both) == {"losses", "detections"} and set(both["losses"]) == {"loc", "conf"}


def test_training_targets_decode_to_the_ground_truth_in_eval():
    """M9, K2: a head that predicted exactly the training targets (matching + encode) is evaluated
    to exactly the ground-truth boxes and classes (decode, background column, NMS of the duplicates)."""
    # variances other than the defaults: the training and the eval path must both read the options
    net = make(detection={"score_threshold": 0.5}, variances=[0.2, 0.3]).eval()
    x = torch.zeros(1, 3, 64, 64)
    t = target([[3, 5, 21, 40], [30, 28, 62, 50]], [3, 0])
    defaults = net.anchors(net.features(x), (64, 64))
    labels, offsets = net.assign(defaults, [t])
    assert (labels > 0).sum() >= 2
    logits = 20.0 * F.one_hot(labels, CLASSES + 1).float()  # (1, D, C + 1): certain of the matched class
    net.head = lambda feats: (logits, offsets)
    det = net(x)["detections"][0]
    order = det["labels"].argsort(descending=True)
    torch.testing.assert_close(det["boxes"][order], t["boxes"], atol=1e-4, rtol=0)
    assert det["labels"][order].tolist() == [3, 0]


def _square_images(n: int, g: torch.Generator) -> tuple[torch.Tensor, list[dict]]:
    """Noise images with one bright square (class 0) or a dim one (class 1), 14-30 px, random position."""
    images, targets = torch.randn(n, 3, 64, 64, generator=g) * 0.1, []
    for i in range(n):
        side = int(torch.randint(14, 31, (1,), generator=g))
        x0, y0 = (int(v) for v in torch.randint(0, 64 - side, (2,), generator=g))
        cls = i % 2
        images[i, :, y0:y0 + side, x0:x0 + side] = 2.0 if cls == 0 else -2.0
        targets.append(target([[x0, y0, x0 + side, y0 + side]], [cls]))
    return images, targets


def test_learns_to_find_squares():
    """M9, L7, K2: a few hundred steps on squares find held-out squares (best box IoU > 0.5, right class)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    net = make(classes=2, width=8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    images, targets = _square_images(64, g)
    for step in range(60):
        idx = torch.arange(16) + 16 * (step % 4)
        losses = net(images[idx], [targets[i] for i in idx])["losses"]
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    test_images, test_targets = _square_images(8, g)
    with torch.no_grad():
        dets = net.eval()(test_images)["detections"]
    hits = 0
    for det, t in zip(dets, test_targets):
        if len(det["scores"]):
            hits += bool(box_iou(det["boxes"][:1], t["boxes"])[0, 0] > 0.5 and det["labels"][0] == t["labels"][0])
    assert hits >= 6, f"{hits}/8 squares found"
    assert time.perf_counter() - start < 10
