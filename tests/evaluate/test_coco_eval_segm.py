"""E3 (issue 17): COCO mask evaluation (iouType "segm") agrees with pycocotools' COCOeval.

Randomized sets of masks (polygons, uncompressed and compressed RLEs on images of different
sizes, crowd regions, empty images, images with only detections, more than 100 detections per
image and category, ties) are evaluated by trainlab and by pycocotools; all 12 summary numbers,
the full precision / recall tables and the per-class AP agree to 1e-6. The same data goes
through the JSON route, the command line and the tensor route (``MeanAveragePrecision``).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch

from trainlab.errors import DataError
from trainlab.evaluate.coco import STAT_NAMES, MeanAveragePrecision
from trainlab.evaluate.coco_json import evaluate_coco, evaluate_files

pytest.importorskip("pycocotools")
import pycocotools.mask as mask_utils  # noqa: E402

TOL = 1e-6


def run_pycocotools_segm(gt: dict, dets: list):
    """pycocotools' COCOeval(iouType="segm") after evaluate, accumulate and summarize (silenced)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ev.summary_lines = [line for line in buf.getvalue().splitlines() if line.startswith(" Average ")]
    return ev


def assert_agrees(result, ev):
    diff = np.abs(result.stats - np.asarray(ev.stats))
    assert diff.max() <= TOL, {n: (a, b) for n, a, b, d in zip(STAT_NAMES, result.stats, ev.stats, diff) if d > TOL}
    np.testing.assert_allclose(result.precision, ev.eval["precision"], rtol=0, atol=TOL)
    np.testing.assert_allclose(result.recall, ev.eval["recall"], rtol=0, atol=TOL)
    p, r = ev.eval["precision"], ev.eval["recall"]
    assert [row["id"] for row in result.per_class()] == ev.params.catIds
    for k, row in enumerate(result.per_class()):
        ref = p[:, :, k, 0, 2]
        if (ref == -1).all():
            assert row["AP"] is None
            continue
        assert abs(row["AP"] - ref.mean()) <= TOL
        assert abs(row["AP50"] - p[0, :, k, 0, 2].mean()) <= TOL
        assert abs(row["AP75"] - p[5, :, k, 0, 2].mean()) <= TOL
        assert abs(row["AR100"] - r[:, k, 0, 2].mean()) <= TOL


# --- random masks ------------------------------------------------------------------------------


def _rle(mask: np.ndarray) -> dict:
    """A compressed RLE with a str "counts", as a results file holds it."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (crowd annotations): run lengths in column-major order, from 0."""
    flat = mask.T.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))
    counts = np.diff(np.r_[0, change]).tolist()
    return {"size": list(mask.shape), "counts": counts}


def _shape(rng, h: int, w: int, grid: bool) -> np.ndarray:
    """A random rectangle (on a coarse grid: exact IoU ties and IoUs on the thresholds) or ellipse."""
    m = np.zeros((h, w), dtype=bool)
    if grid:
        step = max(1, min(h, w) // 8)
        y0, x0 = rng.integers(0, 6, 2) * step
        y1, x1 = y0 + rng.integers(1, 4) * step, x0 + rng.integers(1, 4) * step
        m[y0:y1, x0:x1] = True
        return m
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry = np.exp(rng.uniform(np.log(1.5), np.log(h * 0.6)))
    rx = ry * np.exp(rng.uniform(-0.6, 0.6))
    yy, xx = np.mgrid[0:h, 0:w]
    m[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = True
    return m


def _polygons(rng, h: int, w: int) -> list[list[float]]:
    """One to three random polygons (star-shaped around a centre, 3-9 vertices each)."""
    polys = []
    for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
        n = int(rng.integers(3, 10))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = np.exp(rng.uniform(np.log(2), np.log(min(h, w) * 0.5)))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = r * rng.uniform(0.4, 1.0, n)
        xs, ys = cx + rad * np.cos(ang), cy + rad * np.sin(ang)
        polys.append(np.round(np.stack([xs, ys], 1).reshape(-1), 2).tolist())
    return polys


def _perturb(rng, m: np.ndarray) -> np.ndarray:
    """A detection near a ground-truth mask: shifted by a few pixels, maybe grown or shrunk."""
    d = np.roll(m, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
    if rng.random() < 0.3:
        d = d | np.roll(d, 1, axis=int(rng.integers(0, 2)))
    elif rng.random() < 0.3:
        d = d & np.roll(d, 1, axis=int(rng.integers(0, 2)))
    return d


def random_segm_case(seed: int, n_images: int = 10, n_classes: int = 3, crowd: float = 0.15,
                     many: bool = False, with_bbox: bool = False):
    """A COCO ground truth with segmentations and a results list with RLE masks.

    Images of different sizes; the ground truth mixes polygons, compressed RLEs and (for crowds,
    as COCO stores them) uncompressed RLEs, with areas that sometimes differ from the mask area;
    some images have no ground truth, some no detections; detections are perturbed copies of the
    ground truth, exact duplicates, grid rectangles with IoUs exactly on thresholds, and
    background blobs, with rounded (tied) scores. ``many`` puts more than 100 detections of one
    class on one image; ``with_bbox`` gives every detection a bbox (pycocotools then takes the
    box area as the detection area).
    """
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        h, w = int(rng.integers(16, 220)), int(rng.integers(16, 220))
        images.append({"id": i, "height": h, "width": w, "file_name": f"{i}.jpg"})
        grid = rng.random() < 0.3
        gmasks = []
        n_gt = 0 if rng.random() < 0.2 else int(rng.integers(1, 9))
        for _ in range(n_gt):
            cat = int(rng.integers(1, n_classes + 1))
            is_crowd = rng.random() < crowd
            kind = rng.random()
            if is_crowd:
                m = _shape(rng, h, w, grid)
                segm = _uncompressed(m)
            elif kind < 0.5 and not grid:
                segm = _polygons(rng, h, w)
                m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segm, h, w))).astype(bool)
            else:
                m = _shape(rng, h, w, grid)
                segm = _rle(m) if kind < 0.8 else _uncompressed(m)
            area = float(m.sum()) * (1.0 if rng.random() < 0.7 else float(rng.choice([0.5, 1.5, 3.0])))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "segmentation": segm,
                         "area": area, "bbox": [float(v) for v in mask_utils.toBbox(_rle(m))],
                         "iscrowd": int(is_crowd)})
            gmasks.append((cat, m))
        if rng.random() < 0.15:
            continue  # no detections on this image
        for cat, m in gmasks:
            for _ in range(int(rng.integers(0, 4))):
                d = m.copy() if rng.random() < 0.2 else _perturb(rng, m)
                c = cat if rng.random() < 0.85 else int(rng.integers(1, n_classes + 1))
                dets.append({"image_id": i, "category_id": c, "segmentation": _rle(d),
                             "score": round(float(rng.beta(5, 2)), 1)})
        n_bg = int(rng.integers(0, 6))
        if many and i == 1:
            n_bg = 130
        for _ in range(n_bg):
            d = _shape(rng, h, w, grid or rng.random() < 0.3)
            c = 1 if many and i == 1 else int(rng.integers(1, n_classes + 1))
            dets.append({"image_id": i, "category_id": c, "segmentation": _rle(d),
                         "score": round(float(rng.beta(1.5, 4)), 2)})
    order = rng.permutation(len(dets))
    dets = [dets[j] for j in order]
    if with_bbox:
        for d in dets:
            d["bbox"] = [float(v) for v in mask_utils.toBbox(d["segmentation"])]
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": f"class{c}"} for c in range(1, n_classes + 1)]}
    return gt, dets


# seed, images, classes, crowd fraction, >100 detections on one image, detections carry a bbox
CASES = [
    (0, 12, 3, 0.15, False, False),
    (1, 8, 1, 0.30, True, False),
    (2, 14, 5, 0.05, False, True),
    (3, 10, 2, 0.0, True, True),
    (4, 6, 4, 0.5, False, False),
    (5, 60, 8, 0.05, True, False),
]


@pytest.mark.parametrize("seed,images,classes,crowd,many,with_bbox", CASES)
def test_random_mask_sets_agree_with_pycocotools(seed, images, classes, crowd, many, with_bbox):
    """E3 (issue 17): iou_type="segm": the 12 stats, precision/recall tables and per-class AP equal
    pycocotools' COCOeval(iouType="segm") to 1e-6 on random masks (polygons, RLEs, crowds,
    empty images, images with only detections, >100 detections per image, score ties)."""
    gt, dets = random_segm_case(seed, images, classes, crowd, many, with_bbox)
    assert any(a["iscrowd"] for a in gt["annotations"]) or crowd == 0
    if many:
        assert sum(d["image_id"] == 1 and d["category_id"] == 1 for d in dets) > 100
    assert_agrees(evaluate_coco(gt, dets, iou_type="segm"), run_pycocotools_segm(gt, dets))


def test_many_small_random_sets_agree_with_pycocotools():
    """E3 (issue 17): 120 small sets (grid masks: IoU ties, IoUs on the thresholds) agree to 1e-6."""
    checked = 0
    for seed in range(100, 220):
        gt, dets = random_segm_case(seed, n_images=3, n_classes=2, crowd=0.2)
        if not dets:  # pycocotools cannot load an empty results list
            continue
        assert_agrees(evaluate_coco(gt, dets, iou_type="segm"), run_pycocotools_segm(gt, dets))
        checked += 1
    assert checked > 90


def test_missing_area_is_the_mask_area_and_box_is_optional():
    """E3 (issue 17): in segm mode an annotation without "area" gets its mask area, and neither
    annotations nor detections need a bbox."""
    gt, dets = random_segm_case(7, 8, 2, 0.1)
    explicit = copy.deepcopy(gt)
    for a in explicit["annotations"]:
        h, w = gt["images"][a["image_id"] - 1]["height"], gt["images"][a["image_id"] - 1]["width"]
        s = a["segmentation"]
        rle = mask_utils.merge(mask_utils.frPyObjects(s, h, w)) if isinstance(s, list) else \
            (mask_utils.frPyObjects(s, h, w) if isinstance(s["counts"], list) else s)
        a["area"] = float(mask_utils.area(rle))
    bare = copy.deepcopy(gt)
    for a in bare["annotations"]:
        del a["area"], a["bbox"]
    assert_agrees(evaluate_coco(bare, dets, iou_type="segm"), run_pycocotools_segm(explicit, dets))


def test_mask_area_of_many_masks():
    """E3 (issue 17): mask areas of more than 255 RLEs at once (pycocotools' mask.area overflows
    there under numpy 2, so trainlab calls it in chunks)."""
    from trainlab.evaluate.coco import mask_area

    rng = np.random.default_rng(0)
    masks = [_rle(rng.random((9, 7)) < 0.4) for _ in range(600)]
    expected = [float(mask_utils.area(m)) for m in masks]
    np.testing.assert_array_equal(mask_area(masks), expected)


def test_files_and_command_line(tmp_path, capsys):
    """E3 (issue 17): `trainlab eval-detections GT DETS --iou-type segm` on COCO-format files (RLE
    results) prints pycocotools' 12 numbers; a results entry without a segmentation is exit 2 with
    one line naming the file and the JSON path; without --iou-type it is still box evaluation."""
    from trainlab.cli import main

    gt, dets = random_segm_case(5, 10, 3, 0.2, with_bbox=True)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    ev = run_pycocotools_segm(gt, dets)
    result = evaluate_files(tmp_path / "gt.json", tmp_path / "dets.json", iou_type="segm")
    assert_agrees(result, ev)

    assert main(["eval-detections", str(tmp_path / "gt.json"), str(tmp_path / "dets.json"),
                 "--iou-type", "segm", "--json", str(tmp_path / "out.json")]) == 0
    out = capsys.readouterr().out
    assert len(ev.summary_lines) == 12
    assert out.splitlines()[:12] == ev.summary_lines  # the same text and numbers as pycocotools'
    stats = json.loads((tmp_path / "out.json").read_text())["stats"]
    assert np.abs(np.array(stats) - ev.stats).max() <= TOL
    assert main(["eval-detections", str(tmp_path / "gt.json"), str(tmp_path / "dets.json")]) == 0
    box_stats = evaluate_files(tmp_path / "gt.json", tmp_path / "dets.json").stats
    assert not np.allclose(box_stats, ev.stats)
    capsys.readouterr()

    bad = copy.deepcopy(dets)
    del bad[3]["segmentation"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["eval-detections", str(tmp_path / "gt.json"), str(tmp_path / "bad.json"),
                 "--iou-type", "segm"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].endswith("bad.json: [3].segmentation: missing"), err


def _bad_dets(dets, i, change):
    bad = copy.deepcopy(dets)
    change(bad[i])
    return bad


@pytest.mark.parametrize("where,change,line", [
    ("dets", lambda d: d.pop("segmentation"), r"^dets\.json: \[2\]\.segmentation: missing$"),
    ("dets", lambda d: d.update(segmentation=[[1, 2, 3, 4, 5, 6]]),
     r'^dets\.json: \[2\]\.segmentation: expected a compressed RLE \{"size": \[height, width\], "counts": "\.\.\."\}, '
     r"got a list$"),
    ("dets", lambda d: d["segmentation"].update(size=[7, 9]),
     r"^dets\.json: \[2\]\.segmentation\.size: \[7, 9\] is not the size of image \d+, "
     r"\[height, width\] = \[\d+, \d+\]$"),
    ("dets", lambda d: d["segmentation"].update(size=[7]),
     r"^dets\.json: \[2\]\.segmentation\.size: expected \[height, width\] \(two integers\), got \[7\]$"),
    ("dets", lambda d: d["segmentation"].update(counts=[1, 2]),
     r"^dets\.json: \[2\]\.segmentation\.counts: expected a string \(a compressed RLE\), got a list$"),
    ("dets", lambda d: d.update(bbox=[1, 2, 3]), r"^dets\.json: \[2\]\.bbox: expected 4 numbers, got 3$"),
    ("gt", lambda a: a.pop("segmentation"), r"^gt\.json: annotations\[2\]\.segmentation: missing$"),
    ("gt", lambda a: a.update(segmentation=[]),
     r"^gt\.json: annotations\[2\]\.segmentation: empty polygon list "
     r"\(expected \[\[x1, y1, x2, y2, x3, y3, \.\.\.\], \.\.\.\]\)$"),
    ("gt", lambda a: a.update(segmentation=[[1, 2, 3, 4, 5, 6, 7]]),
     r"^gt\.json: annotations\[2\]\.segmentation\[0\]: a polygon needs x, y pairs "
     r"\(an even count of numbers\), got 7 numbers$"),
    ("gt", lambda a: a.update(segmentation=[[1, 2, 3, 4]]),  # pycocotools fails on it (reads it as a box)
     r"^gt\.json: annotations\[2\]\.segmentation\[0\]: a polygon needs at least 3 points "
     r"\(6 numbers\), got 4 numbers$"),
    ("gt", lambda a: a.update(segmentation=[[1, 2, 3, 4, 5, 6], [1, 2, 3, 4]]),
     r"^gt\.json: annotations\[2\]\.segmentation\[1\]: a polygon needs at least 3 points "
     r"\(6 numbers\), got 4 numbers$"),
    ("gt", lambda a: a.update(segmentation=[[1, 2, 3, float("nan"), 5, 6]]),
     r"^gt\.json: annotations\[2\]\.segmentation\[0\]\[3\]: expected a finite number, got nan$"),
    ("gt", lambda a: a.update(segmentation={"size": [3, 3], "counts": [4, 4]}),
     r"^gt\.json: annotations\[2\]\.segmentation\.size: \[3, 3\] is not the size of image"),
    ("gt", lambda a: a.update(segmentation="x"),
     r'^gt\.json: annotations\[2\]\.segmentation: expected polygons \[\[x1, y1, \.\.\.\], \.\.\.\] or an RLE'),
    ("image", lambda img: img.pop("height"), r"^gt\.json: images\[2\]\.height: missing$"),
])
def test_malformed_masks_are_one_line_data_errors(where, change, line):
    """E3 (issue 17): what mask evaluation cannot use is a one-line DataError naming the file and
    the JSON path: a result without a segmentation, or with an RLE of the wrong size or kind; a
    ground truth with an empty polygon list, a polygon of an odd count or fewer than 3 points
    or a non-finite number, an RLE of another size, an image without height."""
    gt, dets = random_segm_case(11, 6, 2, 0.0)
    gt = copy.deepcopy(gt)
    if where == "dets":
        dets = _bad_dets(dets, 2, change)
    else:
        change(gt["annotations"][2] if where == "gt" else gt["images"][2])
    with pytest.raises(DataError, match=line):
        evaluate_coco(gt, dets, iou_type="segm", gt_source="gt.json", dets_source="dets.json")


def test_uncompressed_counts_must_fill_the_image():
    """E3 (issue 17): an uncompressed RLE whose counts do not add up to height x width is refused."""
    gt, dets = random_segm_case(12, 4, 2, 0.0)
    gt = copy.deepcopy(gt)
    a = gt["annotations"][0]
    h, w = gt["images"][a["image_id"] - 1]["height"], gt["images"][a["image_id"] - 1]["width"]
    a["segmentation"] = {"size": [h, w], "counts": [5, 3]}
    with pytest.raises(DataError, match=rf"segmentation\.counts: add up to 8, expected height x width = {h * w}$"):
        evaluate_coco(gt, dets, iou_type="segm", gt_source="gt.json", dets_source="dets.json")


def test_tensor_masks_equal_the_json_route():
    """E3 (issue 17): MeanAveragePrecision(iou_type="segm") fed (N, H, W) mask tensors in batches
    (bool predictions, uint8 targets, crowd flags, areas given for some images) gives the same
    numbers as the JSON route and as pycocotools."""
    gt, dets = random_segm_case(21, 9, 3, 0.2)
    # the tensor API numbers images 0..n-1 in update order and names categories by label
    gt = copy.deepcopy(gt)
    for i, img in enumerate(gt["images"]):
        img["id"] = i
    for item in gt["annotations"] + dets:
        item["image_id"] -= 1
    preds, targets = [], []
    for img in gt["images"]:
        h, w = img["height"], img["width"]
        g = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
        d = [x for x in dets if x["image_id"] == img["id"]]

        def decode(segm):
            if isinstance(segm, list):
                segm = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
            elif isinstance(segm["counts"], list):
                segm = mask_utils.frPyObjects(segm, h, w)
            return mask_utils.decode(segm)

        gm = np.stack([decode(a["segmentation"]) for a in g]) if g else np.zeros((0, h, w), np.uint8)
        dm = np.stack([decode(x["segmentation"]) for x in d]) if d else np.zeros((0, h, w), np.uint8)
        preds.append({"masks": torch.from_numpy(dm).bool(), "scores": torch.tensor([x["score"] for x in d]),
                      "labels": torch.tensor([x["category_id"] for x in d], dtype=torch.int64)})
        target = {"masks": torch.from_numpy(gm),
                  "labels": torch.tensor([a["category_id"] for a in g], dtype=torch.int64),
                  "iscrowd": torch.tensor([a["iscrowd"] for a in g])}
        if img["id"] % 2:
            target["area"] = torch.tensor([a["area"] for a in g], dtype=torch.float64)
        else:  # without "area", the mask area; make the JSON say so too
            for a in g:
                a["area"] = float(gm[g.index(a)].sum())
        targets.append(target)
    metric = MeanAveragePrecision(iou_type="segm", class_names={c["id"]: c["name"] for c in gt["categories"]})
    for a, b in [(0, 2), (2, 3), (3, 9)]:
        metric.update(preds[a:b], targets[a:b])
    result = metric.compute()
    json_result = evaluate_coco(gt, dets, iou_type="segm")
    np.testing.assert_array_equal(result.stats, json_result.stats)
    np.testing.assert_array_equal(result.precision, json_result.precision)
    assert_agrees(result, run_pycocotools_segm(gt, dets))
    assert result.category_names[0] == "class1"


def test_tensor_masks_are_checked():
    """E3 (issue 17): a segm metric without masks, with masks of the wrong shape, or with
    prediction and target masks of different sizes is a ValueError naming what is wrong."""
    metric = MeanAveragePrecision(iou_type="segm")
    labels = torch.zeros(2, dtype=torch.long)
    pred = {"masks": torch.zeros(2, 8, 9, dtype=torch.bool), "scores": torch.zeros(2), "labels": labels}
    target = {"masks": torch.zeros(2, 8, 9, dtype=torch.uint8), "labels": labels}
    with pytest.raises(ValueError, match="has no 'masks'"):
        metric.update([{"boxes": torch.zeros(2, 4), "scores": torch.zeros(2), "labels": labels}], [target])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        metric.update([dict(pred, masks=torch.zeros(2, 8))], [target])
    with pytest.raises(ValueError, match="8x9 but target masks 8x10"):
        metric.update([pred], [dict(target, masks=torch.zeros(2, 8, 10))])
    with pytest.raises(ValueError, match="iou_type"):
        MeanAveragePrecision(iou_type="keypoints")
    metric.update([pred], [target])  # (N, 1, H, W) float probabilities work too
    metric.update([dict(pred, masks=torch.rand(2, 1, 8, 9))], [target])
    assert metric.compute().num_gt[:, 0].sum() == 4
