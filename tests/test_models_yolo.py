"""YOLO v1 (M9, L7, K2): the sum-squared loss worked by hand, cell assignment, decoding, the detector contract.

The loss is checked against numbers written out here on a 2x2 grid of a 64x64 image (cells of 32
pixels), B = 2 boxes per cell and C = 2 classes; the network against the contract of
``trainlab.models.detector`` and against learning a tiny fixed batch of the shapes data.
"""
from __future__ import annotations

import pytest
import torch

from trainlab.data.bundle import DataInfo
from trainlab.errors import RecipeError
from trainlab.models.detector import PostProcess
from trainlab.models.yolo import (
    YoloV1,
    YoloV1Options,
    assign_targets,
    cell_boxes,
    decode_head,
    paired_iou,
    yolo_v1_detections,
    yolo_v1_loss,
)
from trainlab.recipe import ModelConfig
from trainlab.registry import MODELS

SIZE = (64, 64)


def info(classes: int = 4, side: int = 64, extra: dict | None = None) -> DataInfo:
    return DataInfo((3, side, side), classes, [f"c{i}" for i in range(classes)], extra=extra or {})


def make(classes: int = 4, side: int = 64, extra: dict | None = None, **model) -> YoloV1:
    """yolo_v1 straight from its MODELS entry (the catalog does not import it yet)."""
    import trainlab.models.yolo  # noqa: F401  registers yolo_v1

    model = {"width": 8, "depth": 3, **model}
    return MODELS.get("yolo_v1").fn(ModelConfig(name="yolo_v1", **model), info(classes, side, extra))


def target(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels).long()}


EMPTY = target([], [])


# ------------------------------------------------------------------------- the hand-worked cell
# Ground truth: a 16x16 box of class 1 centred at (24, 16) → XYXY [16, 8, 32, 24]. Its centre lies in
# cell (row 0, col 0); in cell units it is (24/32, 16/32) = (0.75, 0.5) and √(16/64) = 0.5 per side.
GT = target([[16.0, 8.0, 32.0, 24.0]], [1])
# Predictor 0 of that cell: x 0.25, y 0.5, √w 0.5, √h 0.5 → a 16x16 box centred at (8, 16), [0, 8, 16, 24]:
#   it only touches the ground truth at x = 16, IoU 0. Confidence 0.3.
# Predictor 1: x 0.75, y 0.5, √w 0.5, √h 0.25 → 16 x 4 centred at (24, 16), [16, 14, 32, 18], inside the
#   ground truth: IoU = 64 / 256 = 0.25, the higher one, so predictor 1 is responsible. Confidence 0.6.
# Class probabilities of the cell: (0.3, 0.7).
P0 = [0.25, 0.5, 0.5, 0.5, 0.3]
P1 = [0.75, 0.5, 0.5, 0.25, 0.6]
# The three empty cells: both confidences 0.1 and 0.2; their boxes and class probabilities are
# deliberately far off (they must not count).
EMPTY_CELL = [0.9, 0.9, 0.9, 0.9, 0.1] + [0.1, 0.1, 0.1, 0.1, 0.2] + [0.9, 0.1]
#   coord = λcoord · [(0.75 − 0.75)² + (0.5 − 0.5)² + (0.5 − 0.5)² + (0.25 − 0.5)²] = 5 · 0.0625 = 0.3125
#   obj   = (0.6 − IoU 0.25)² = 0.1225
#   noobj = λnoobj · [0.3² (predictor 0 of the object's cell) + 3 · (0.1² + 0.2²)] = 0.5 · 0.24 = 0.12
#   class = (0.3 − 0)² + (0.7 − 1)² = 0.18
HAND = {"coord": 0.3125, "obj": 0.1225, "noobj": 0.12, "class": 0.18}


def hand_pred(p0=P0, p1=P1, probs=(0.3, 0.7)) -> torch.Tensor:
    """(1, 2, 2, 12): the object's cell (0, 0) as above, the other three cells EMPTY_CELL."""
    cells = [list(p0) + list(p1) + list(probs), EMPTY_CELL, EMPTY_CELL, EMPTY_CELL]
    return torch.tensor(cells, dtype=torch.float64).view(1, 2, 2, 12)


def loss(pred, targets, lambda_coord=5.0, lambda_noobj=0.5):
    return yolo_v1_loss(pred, targets, 2, 2, lambda_coord, lambda_noobj, SIZE)


def test_loss_of_one_cell_by_hand():
    """M9, L7: coord, obj (target = IoU), noobj and class terms equal the hand-worked numbers."""
    got = loss(hand_pred(), [GT])
    assert set(got) == set(HAND)
    for k, v in HAND.items():
        assert got[k].item() == pytest.approx(v, abs=1e-12), k


def test_lambdas_scale_their_terms():
    """L7: λcoord multiplies the coordinate term and λnoobj the no-object confidence term, nothing else."""
    got = loss(hand_pred(), [GT], lambda_coord=2.0, lambda_noobj=1.0)
    assert got["coord"].item() == pytest.approx(2.0 * 0.0625)
    assert got["noobj"].item() == pytest.approx(0.24)
    assert got["obj"].item() == pytest.approx(HAND["obj"])
    assert got["class"].item() == pytest.approx(HAND["class"])


def test_responsible_predictor_is_the_one_with_highest_iou():
    """L7: the predictor with the higher IoU is responsible: only its coordinates get a gradient, and
    swapping the two predictors swaps which one it is (the loss stays the hand value)."""
    pred = hand_pred().requires_grad_()
    loss(pred, [GT])["coord"].backward()
    g = pred.grad[0, 0, 0]
    assert torch.all(g[0:5] == 0)            # predictor 0 (IoU 0): no coordinate gradient
    assert g[8].item() == pytest.approx(5 * 2 * (0.25 - 0.5))  # ∂/∂√h of predictor 1: λ · 2 · (0.25 − 0.5)
    assert torch.all(g[[5, 6, 7]] == 0)      # its exact x, y, √w: zero error
    swapped = hand_pred(P1, P0)
    got = loss(swapped, [GT])
    for k, v in HAND.items():
        assert got[k].item() == pytest.approx(v), k
    # Predictor 0 moved onto the ground truth exactly (IoU 1) now beats predictor 1 (IoU 0.25):
    # zero coordinate error, and its confidence 0.3 is pulled towards 1.
    exact = hand_pred([0.75, 0.5, 0.5, 0.5, 0.3], P1)
    got = loss(exact, [GT])
    assert got["coord"].item() == pytest.approx(0.0)
    assert got["obj"].item() == pytest.approx((0.3 - 1.0) ** 2)
    assert got["noobj"].item() == pytest.approx(0.5 * (0.6**2 + 3 * 0.05))


def test_confidence_target_is_the_detached_iou():
    """L7: the responsible confidence learns the IoU of its box (0 error at C = 0.25); the IoU is a
    constant target, so the obj term sends no gradient into the box coordinates."""
    at_iou = hand_pred(P0, P1[:4] + [0.25])
    assert loss(at_iou, [GT])["obj"].item() == pytest.approx(0.0, abs=1e-12)
    pred = hand_pred().requires_grad_()
    loss(pred, [GT])["obj"].backward()
    g = pred.grad[0, 0, 0]
    assert g[9].item() == pytest.approx(2 * (0.6 - 0.25))
    assert torch.all(g[:9] == 0) and torch.all(g[10:] == 0)


def test_empty_image_gives_only_noobj_and_the_batch_mean():
    """M9, L7: an image without objects costs λnoobj Σ C² only; the terms are means over the batch (÷ N)."""
    empty = hand_pred()
    got = loss(empty, [EMPTY])
    # all 8 predictors are negatives: 0.3² + 0.6² + 3 · (0.1² + 0.2²) = 0.6
    assert got["noobj"].item() == pytest.approx(0.5 * 0.6)
    for k in ("coord", "obj", "class"):
        assert got[k].item() == 0.0
    both = loss(torch.cat([hand_pred(), empty]), [GT, EMPTY])
    for k, v in HAND.items():
        alone = v + (0.5 * 0.6 if k == "noobj" else 0.0)
        assert both[k].item() == pytest.approx(alone / 2), k


def test_several_centres_in_one_cell_the_largest_wins():
    """M9: one object per cell as in the paper: of two centres in cell (0, 0) the larger box is its object,
    whatever their order; a centre on the image's far edge belongs to the last cell."""
    small, large = [20.0, 12.0, 28.0, 20.0], [8.0, 0.0, 40.0, 30.0]  # centres (24, 16) and (24, 15)
    for boxes, labels in (([small, large], [0, 1]), ([large, small], [1, 0])):
        gt = assign_targets([target(boxes, labels)], (2, 2), SIZE)
        assert gt["mask"][0].tolist() == [[True, False], [False, False]]
        assert gt["labels"][0, 0, 0].item() == 1
        assert gt["boxes"][0, 0, 0].tolist() == large
        # (x, y, √w, √h) = (24/32, 15/32, √(32/64), √(30/64))
        torch.testing.assert_close(gt["coords"][0, 0, 0], torch.tensor([0.75, 15 / 32, 0.5**0.5, (30 / 64) ** 0.5]))
    edge = assign_targets([target([[0.0, 0.0, 64.0, 64.0], [60.0, 60.0, 64.0, 64.0]], [2, 3])], (2, 2), SIZE)
    assert edge["mask"][0].tolist() == [[False, False], [False, True]]
    assert edge["labels"][0, 1, 1].item() == 2  # the full-image box (centre 32, 32 → cell 1, 1) is larger


def test_decoding_puts_boxes_in_input_pixels():
    """M9: cell (i, j)'s box centre is ((j + x)·W/Sw, (i + y)·H/Sh), its sides (√w)²·W and (√h)²·H."""
    boxes = torch.zeros(1, 2, 4, 1, 4)
    boxes[0, 1, 3, 0] = torch.tensor([0.5, 0.25, 0.5, 0.25])  # row 1, col 3 of a 2 x 4 grid on 64 x 128
    xyxy = cell_boxes(boxes, (64, 128))
    # centre ((3 + 0.5)·32, (1 + 0.25)·32) = (112, 40); size (0.25·128, 0.0625·64) = (32, 4)
    assert xyxy[0, 1, 3, 0].tolist() == [96.0, 38.0, 128.0, 42.0]
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    assert paired_iou(a, b).tolist() == pytest.approx([1 / 7, 0.0, 0.0])  # 1 / (4 + 4 − 1); disjoint; both empty


def test_decode_head_sigmoids_and_one_softmax_per_cell():
    """M9: box fields go through a sigmoid, the C class scores through one softmax per cell."""
    raw = torch.randn(2, 3, 3, 2 * 5 + 4)
    pred = decode_head(raw, 2)
    torch.testing.assert_close(pred[..., :10], raw[..., :10].sigmoid())
    torch.testing.assert_close(pred[..., 10:].sum(-1), torch.ones(2, 3, 3))


# ------------------------------------------------------------------------------- detections
def test_detection_scores_are_confidence_times_class_probability():
    """M9, K2: each box is a candidate for every class with score C · Pr(class); threshold, then the best
    max_detections (class-aware NMS keeps one box for two classes)."""
    pred = torch.zeros(1, 1, 1, 12)
    pred[0, 0, 0, :5] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.9])     # 16 x 16 at (32, 32): [24, 24, 40, 40], C 0.9
    pred[0, 0, 0, 5:10] = torch.tensor([0.5, 0.5, 0.25, 0.25, 0.2])  # 4 x 4 at (32, 32): [30, 30, 34, 34], C 0.2
    pred[0, 0, 0, 10:] = torch.tensor([0.1, 0.9])
    det = yolo_v1_detections(pred, 2, 2, SIZE, PostProcess(score_threshold=0.05))[0]
    # 0.9·0.9 = 0.81 (class 1), 0.9·0.1 = 0.09 (class 0), 0.2·0.9 = 0.18 (class 1, inside the first:
    # IoU 16/256 < 0.5 keeps it), 0.2·0.1 = 0.02 (under the threshold)
    torch.testing.assert_close(det["scores"], torch.tensor([0.81, 0.18, 0.09]))
    assert det["labels"].tolist() == [1, 1, 0]
    assert det["boxes"].tolist() == [[24.0, 24.0, 40.0, 40.0], [30.0, 30.0, 34.0, 34.0], [24.0, 24.0, 40.0, 40.0]]
    high = yolo_v1_detections(pred, 2, 2, SIZE, PostProcess(score_threshold=0.5))[0]
    assert high["scores"].tolist() == pytest.approx([0.81])
    one = yolo_v1_detections(pred, 2, 2, SIZE, PostProcess(score_threshold=0.05, max_detections=2))[0]
    assert one["scores"].tolist() == pytest.approx([0.81, 0.18])


def test_forward_contract_in_each_mode():
    """K2, M9: training with targets → losses only; eval → detections; eval with targets → both; the
    thresholds come from info.extra["detection"]; a batch in which no image has a box trains."""
    torch.manual_seed(0)
    net = make(extra={"detection": {"score_threshold": 0.3, "max_detections": 3}})
    assert net.pp == PostProcess(score_threshold=0.3, max_detections=3)
    x = torch.randn(3, 3, 64, 64)
    targets = [GT, EMPTY, target([[0.0, 0.0, 64.0, 64.0], [2.0, 40.0, 10.0, 60.0]], [3, 0])]
    assert net.predict(x).shape == (3, 8, 8, 2 * 5 + 4)
    out = net(x, targets)
    assert set(out) == {"losses"} and set(out["losses"]) == {"coord", "obj", "noobj", "class"}
    none = net(x, [EMPTY] * 3)["losses"]
    assert none["noobj"] > 0 and none["coord"] == none["obj"] == none["class"] == 0
    sum(none.values()).backward()
    net.eval()
    with torch.no_grad():
        out = net(x)
        both = net(x, targets)
    assert set(out) == {"detections"} and set(both) == {"losses", "detections"}
    assert len(out["detections"]) == 3
    for d in out["detections"]:
        assert len(d["boxes"]) <= 3 and torch.all(d["scores"] > 0.3)
        assert d["boxes"].shape[1:] == (4,) and d["labels"].dtype == torch.long
        assert torch.all(d["boxes"] >= 0) and torch.all(d["boxes"] <= 64)
    # an untrained net's scores are all around 0.5 · 0.25: with the threshold at 0 every image fills up
    low = make(extra={"detection": {"score_threshold": 0.0, "max_detections": 5}}).eval()
    with torch.no_grad():
        assert [len(d["scores"]) for d in low(x)["detections"]] == [5, 5, 5]


def test_grid_option_and_other_input_sizes():
    """M9: grid S max-pools the backbone's map to S x S; grid 0 keeps the backbone's own (side / 2^depth);
    a grid finer than the map, or a bad option, is a one-line recipe error."""
    x = torch.randn(2, 3, 64, 64)
    assert make(depth=2).predict(x).shape == (2, 8, 8, 14)
    assert make(depth=2, options={"grid": 4, "boxes_per_cell": 3}).predict(x).shape == (2, 4, 4, 3 * 5 + 4)
    assert make(depth=2, options={"grid": 0}).predict(x).shape == (2, 16, 16, 14)
    assert make(side=96, depth=3, options={"grid": 0}).predict(torch.randn(1, 3, 96, 96)).shape == (1, 12, 12, 14)
    with pytest.raises(RecipeError, match="model.options.grid"):
        make(depth=4, options={"grid": 8})
    with pytest.raises(RecipeError, match="lambda_cord"):
        make(options={"lambda_cord": 1.0})
    assert YoloV1Options().grid == 8 and YoloV1Options().boxes_per_cell == 2


def test_registry_entry():
    """M9, K2: yolo_v1 is a detection model with the paper's leaky ReLU and batch norm by default."""
    net = make()
    entry = MODELS.get("yolo_v1")
    assert entry.meta["tasks"] == ("detection",)
    assert entry.meta["options"] is YoloV1Options
    assert entry.meta["default_input"] == (3, 64, 64) and entry.meta["default_classes"] == 4
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in net.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_gradients_reach_every_parameter():
    """M9, L7: the summed loss back-propagates into every layer (backbone, head) with finite values."""
    torch.manual_seed(0)
    net = make()
    out = net(torch.randn(2, 3, 64, 64), [GT, target([[4.0, 30.0, 60.0, 62.0]], [2])])
    sum(out["losses"].values()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_learns_a_tiny_fixed_batch():
    """M9, L7, K2: on 8 shapes images the loss falls to a fraction of its start within 60 Adam steps, and
    the eval-mode detections then find the objects (decoding agrees with the loss's assignment)."""
    from trainlab.data.shapes import shapes
    from trainlab.recipe import DataConfig, ShapesConfig

    source, data_info = shapes(DataConfig(name="shapes", shapes=ShapesConfig(count=8, max_objects=2)), 0)
    samples = [source.load(i) for i in range(8)]
    x = torch.stack([s[0] for s in samples]).float() / 255 - 0.5
    targets = [s[1] for s in samples]  # tv_tensors straight from the data set
    torch.manual_seed(0)
    net = make(width=16, depth=3)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        total = sum(net(x, targets)["losses"].values())
        first = first if first is not None else total.item()
        opt.zero_grad()
        total.backward()
        opt.step()
    assert total.item() < 0.02 * first  # about 0.002 over seeds 0-3: the untrained noobj term dominates the start
    net.eval()
    with torch.no_grad():
        found = net(x)["detections"]
    hits = wanted = 0
    for det, t in zip(found, targets):
        for box, label in zip(t["boxes"].as_subclass(torch.Tensor), t["labels"]):
            same = det["labels"] == label
            iou = paired_iou(det["boxes"][same], box.expand(int(same.sum()), 4))
            hits += int(bool((iou > 0.5).any()))
            wanted += 1
    assert hits >= 0.9 * wanted  # 11 of 11 over seeds 0-3
