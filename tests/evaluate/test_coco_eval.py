"""E3: COCO box evaluation agrees with pycocotools' COCOeval on randomized sets.

Every test compares all 12 summary numbers (and the full precision / recall tables) with
pycocotools run on the same data; the tolerance is 1e-6.
"""
from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
import torch

from trainlab.errors import DataError
from trainlab.evaluate.coco import STAT_NAMES, MeanAveragePrecision
from trainlab.evaluate.coco_json import evaluate_coco
from trainlab.evaluate.synthetic import synthetic_coco

pytest.importorskip("pycocotools")
from coco_oracle import run_pycocotools  # noqa: E402

TOL = 1e-6


def _oracle(gt, dets):
    return run_pycocotools(gt, dets, summarize=True)[0]


def assert_agrees(result, ev):
    diff = np.abs(result.stats - np.asarray(ev.stats))
    assert diff.max() <= TOL, {n: (a, b) for n, a, b, d in zip(STAT_NAMES, result.stats, ev.stats, diff) if d > TOL}
    np.testing.assert_allclose(result.precision, ev.eval["precision"], rtol=0, atol=TOL)
    np.testing.assert_allclose(result.recall, ev.eval["recall"], rtol=0, atol=TOL)


# (seed, images, classes, max dets per image, score decimals, crowd fraction)
SYNTHETIC = [
    (0, 120, 80, 100, 2, 0.02),   # many classes, COCO-like
    (1, 80, 5, 60, 1, 0.10),      # few classes, heavy score ties, many crowds
    (2, 60, 20, 100, 3, 0.05),
    (3, 150, 2, 20, 1, 0.0),      # no crowd at all
    (4, 40, 80, 100, 2, 0.30),    # crowd-heavy
    (5, 100, 10, 8, 1, 0.02),     # few detections per image: maxDets 1/10 bite
]


@pytest.mark.parametrize("seed,images,classes,max_dets,decimals,crowd", SYNTHETIC)
def test_synthetic_sets_agree_with_pycocotools(seed, images, classes, max_dets, decimals, crowd):
    """E3: COCO summary (AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l) agrees with pycocotools
    to 1e-6 on synthetic sets with empty images, crowds, tied scores and many classes."""
    gt, dets = synthetic_coco(seed, num_images=images, num_classes=classes, max_dets=max_dets,
                              score_decimals=decimals, crowd_fraction=crowd, empty_fraction=0.1)
    assert any(not a["iscrowd"] for a in gt["annotations"])
    assert_agrees(evaluate_coco(gt, dets), _oracle(gt, dets))


def grid_case(seed: int):
    """Boxes on a coarse integer grid: exact IoU ties, IoUs exactly on thresholds, duplicates,
    empty boxes, crowds and areas in all three size ranges; few images and classes."""
    rng = np.random.default_rng(seed)
    n_img, n_cls = int(rng.integers(1, 10)), int(rng.integers(1, 4))
    grid, scale = int(rng.choice([2, 4, 8])), float(rng.choice([1, 8, 40]))
    anns, dets = [], []
    for img in range(1, n_img + 1):
        for _ in range(int(rng.integers(0, 8))):
            b = (np.r_[rng.integers(0, grid, 2), rng.integers(1, grid + 1, 2)] * scale).tolist()
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": int(rng.integers(1, n_cls + 1)),
                         "bbox": b, "area": b[2] * b[3] * float(rng.choice([1, 0.5])),
                         "iscrowd": int(rng.random() < 0.2)})
        for _ in range(int(rng.integers(0, 25))):
            b = (np.r_[rng.integers(0, grid, 2), rng.integers(0, grid + 1, 2)] * scale).tolist()
            dets.append({"image_id": img, "category_id": int(rng.integers(1, n_cls + 1)), "bbox": b,
                         "score": float(rng.integers(0, 4)) / 4})
    gt = {"images": [{"id": i} for i in range(1, n_img + 1)], "annotations": anns,
          "categories": [{"id": c} for c in range(1, n_cls + 1)]}
    return gt, dets


def test_grid_cases_agree_with_pycocotools():
    """E3: 150 small adversarial sets (ties everywhere, IoUs on the thresholds) agree to 1e-6."""
    checked = 0
    for seed in range(150):
        gt, dets = grid_case(seed)
        if not dets:  # pycocotools cannot load an empty results list
            continue
        assert_agrees(evaluate_coco(gt, dets), _oracle(gt, dets))
        checked += 1
    assert checked > 120


def test_cap_of_100_detections_per_image_and_class():
    """E3: only the 100 best detections of an image and class count (COCO's maxDets)."""
    rng = np.random.default_rng(0)
    gt = {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 1}, {"id": 2}], "annotations": []}
    dets = []
    for j in range(40):
        b = [float(v) for v in rng.integers(0, 200, 2)] + [float(v) for v in rng.integers(10, 80, 2)]
        gt["annotations"].append({"id": j + 1, "image_id": 1 + j % 2, "category_id": 1 + j % 2 * (j % 3 == 0),
                                  "bbox": b, "area": b[2] * b[3], "iscrowd": 0})
        for _ in range(6):
            jit = (np.array(b) + rng.normal(0, 4, 4)).round(1).tolist()
            dets.append({"image_id": 1 + j % 2, "category_id": 1 + j % 2 * (j % 3 == 0),
                         "bbox": [jit[0], jit[1], abs(jit[2]), abs(jit[3])], "score": round(float(rng.random()), 2)})
    assert sum(d["image_id"] == 1 and d["category_id"] == 1 for d in dets) > 100
    assert_agrees(evaluate_coco(gt, dets), _oracle(gt, dets))


def test_no_detections_and_no_ground_truth():
    """E3: an empty results list gives AP 0 where there is ground truth (pycocotools cannot load an
    empty list, so it gets one detection of a class without ground truth, which counts nowhere);
    a set without any ground truth gives -1 everywhere, as in pycocotools."""
    gt, dets = synthetic_coco(9, num_images=30, num_classes=4)
    gt["categories"].append({"id": 99, "name": "unused"})
    stray = {"image_id": 1, "category_id": 99, "bbox": [0, 0, 5, 5], "score": 0.5}
    assert_agrees(evaluate_coco(gt, []), _oracle(gt, [stray]))
    empty_gt = dict(gt, annotations=[])
    result = evaluate_coco(empty_gt, dets)
    assert_agrees(result, _oracle(empty_gt, dets))
    assert (result.stats == -1).all()


def test_missing_area_and_iscrowd_default_like_box_area_and_zero():
    """E3: without "area" the box area is used, without "iscrowd" 0; an "ignore" field has no
    effect (pycocotools overwrites it with iscrowd)."""
    gt, dets = synthetic_coco(11, num_images=50, num_classes=6, crowd_fraction=0.0)
    explicit = copy.deepcopy(gt)
    for a in explicit["annotations"]:
        a["area"] = a["bbox"][2] * a["bbox"][3]
    bare = copy.deepcopy(gt)
    for i, a in enumerate(bare["annotations"]):
        del a["area"], a["iscrowd"]
        a["ignore"] = i % 2
    assert_agrees(evaluate_coco(bare, dets), _oracle(explicit, dets))


def test_per_class_numbers_agree_with_pycocotools():
    """E3: per-class AP, AP50, AP75 and AR100 equal pycocotools' tables sliced per class."""
    gt, dets = synthetic_coco(12, num_images=80, num_classes=8)
    gt["categories"].append({"id": 50, "name": "never annotated"})
    result = evaluate_coco(gt, dets)
    ev = _oracle(gt, dets)
    p, r = ev.eval["precision"], ev.eval["recall"]
    rows = result.per_class()
    assert [row["id"] for row in rows] == ev.params.catIds
    for k, row in enumerate(rows):
        if row["id"] == 50:
            assert row["AP"] is None and row["AP50"] is None and row["num_gt"] == 0
            continue
        assert abs(row["AP"] - p[:, :, k, 0, 2].mean()) <= TOL
        assert abs(row["AP50"] - p[0, :, k, 0, 2].mean()) <= TOL
        assert abs(row["AP75"] - p[5, :, k, 0, 2].mean()) <= TOL
        assert abs(row["AR100"] - r[:, k, 0, 2].mean()) <= TOL
        assert 0 <= row["AP50_voc"] <= 1


def test_faster_coco_eval_agrees_too():
    """E3: the same numbers as faster-coco-eval (a second, independent implementation)."""
    fce = pytest.importorskip("faster_coco_eval")
    gt, dets = synthetic_coco(13, num_images=100, num_classes=20)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = fce.COCO(copy.deepcopy(gt))
        ev = fce.COCOeval_faster(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox",
                                 print_function=lambda *a, **k: None)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert np.abs(evaluate_coco(gt, dets).stats - np.asarray(ev.stats)[:12]).max() <= TOL


def to_tensors(gt, dets, fmt):
    """Per-image prediction / target dicts of torch tensors, as a detection model gives them."""
    preds, targets = [], []
    for img in gt["images"]:
        g = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
        d = [x for x in dets if x["image_id"] == img["id"]]

        def boxes(items):
            b = torch.tensor([x["bbox"] for x in items], dtype=torch.float64).reshape(-1, 4)
            if fmt == "xyxy":
                b = torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], 1)
            return b

        preds.append({"boxes": boxes(d), "scores": torch.tensor([x["score"] for x in d], dtype=torch.float64),
                      "labels": torch.tensor([x["category_id"] for x in d], dtype=torch.int64)})
        targets.append({"boxes": boxes(g), "labels": torch.tensor([x["category_id"] for x in g], dtype=torch.int64),
                        "iscrowd": torch.tensor([x["iscrowd"] for x in g]),
                        "area": torch.tensor([x["area"] for x in g], dtype=torch.float64)})
    return preds, targets


@pytest.mark.parametrize("fmt", ["xywh", "xyxy"])
def test_tensor_evaluator_in_batches_agrees_with_pycocotools(fmt):
    """E3: MeanAveragePrecision fed tensors in uneven batches gives pycocotools' numbers for the
    whole set (no JSON round-trip); reset() starts over."""
    gt, dets = synthetic_coco(14, num_images=70, num_classes=12)
    if fmt == "xyxy":  # integer coordinates so that x + w - x == w exactly
        for item in gt["annotations"] + dets:
            item["bbox"] = [float(round(v)) for v in item["bbox"]]
    # the tensor API numbers images 0..n-1 in update order and names categories by label
    gt_ref = copy.deepcopy(gt)
    for i, img in enumerate(gt_ref["images"]):
        img["id"] = i
    for item in gt_ref["annotations"] + dets:
        item["image_id"] -= 1
    dets_ref = copy.deepcopy(dets)
    preds, targets = to_tensors(gt_ref, dets_ref, fmt)
    metric = MeanAveragePrecision(box_format=fmt, class_names={c["id"]: c["name"] for c in gt["categories"]})
    metric.update(preds[:1], targets[:1])
    metric.reset()
    cuts = [0, 3, 4, 20, 41, 70]
    for a, b in zip(cuts[:-1], cuts[1:]):
        metric.update(preds[a:b], targets[a:b])
    result = metric.compute()
    assert_agrees(result, _oracle(gt_ref, dets_ref))
    assert result.category_names[0] == "class1"


def test_tensor_evaluator_checks_its_input():
    """E3: mismatched lengths and bad shapes are reported, not silently evaluated."""
    metric = MeanAveragePrecision()
    one = {"boxes": torch.zeros(2, 4), "scores": torch.zeros(2), "labels": torch.zeros(2, dtype=torch.long)}
    with pytest.raises(ValueError, match="predictions"):
        metric.update([one, one], [one])
    with pytest.raises(ValueError, match="differ in length"):
        metric.update([dict(one, scores=torch.zeros(3))], [one])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        metric.update([dict(one, boxes=torch.zeros(2, 5))], [one])
    with pytest.raises(ValueError, match="box format"):
        MeanAveragePrecision(box_format="yolo")


def test_detection_on_unknown_image_is_a_data_error():
    """E3: a detection for an image or class the ground truth does not have is named, not dropped."""
    gt, dets = synthetic_coco(15, num_images=5, num_classes=3)
    bad = copy.deepcopy(dets)
    bad[2]["image_id"] = 77
    with pytest.raises(DataError, match=r"^dets\.json: \[2\]\.image_id: 77 is not an image of gt\.json$"):
        evaluate_coco(gt, bad, gt_source="gt.json", dets_source="dets.json")


@pytest.mark.parametrize("where, value, line", [
    ("dets", float("inf"), r"^dets\.json: \[1\]\.bbox\[2\]: expected a finite number, got inf$"),
    ("dets", float("nan"), r"^dets\.json: \[1\]\.bbox\[2\]: expected a finite number, got nan$"),
    ("gt", float("-inf"), r"^gt\.json: annotations\[1\]\.bbox\[2\]: expected a finite number, got -inf$"),
    ("gt", "wide", r'^gt\.json: annotations\[1\]\.bbox\[2\]: expected a number, got "wide"$'),
])
def test_non_finite_numbers_are_data_errors(where, value, line):
    """E3: NaN and infinities (Python's json reads them from NaN/Infinity) are refused with the JSON path, in the
    ground truth and in the detections, by the same check the coco data set uses (D10)."""
    gt, dets = synthetic_coco(16, num_images=5, num_classes=3)
    gt, dets = copy.deepcopy(gt), copy.deepcopy(dets)
    (dets[1] if where == "dets" else gt["annotations"][1])["bbox"][2] = value
    with pytest.raises(DataError, match=line):
        evaluate_coco(gt, dets, gt_source="gt.json", dets_source="dets.json")
