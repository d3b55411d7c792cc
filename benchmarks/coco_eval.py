"""Benchmark: COCO box and mask evaluation with pycocotools, faster-coco-eval and trainlab, side by side.

One synthetic set (default: 5,000 images, 80 classes, up to 100 detections per image; see
trainlab.evaluate.synthetic), generated from a seed, is evaluated by all three in this process,
first with boxes (iouType "bbox"), then with masks (iouType "segm"): the same objects drawn as
ellipses (polygons of 16 vertices inscribed in the boxes, on images scaled to 320 x 240) in the
ground truth, crowd regions as uncompressed RLEs (as COCO stores them) and the detections as
compressed RLEs without a bbox (the results format; every detection's mask area is then read).
Each timing starts from the parsed JSON (Python dicts and lists; the JSON parse is the same for
all three and is left out) and ends with the 12 summary numbers; copies that the libraries
mutate are made outside the timed region. The 12 numbers of each are compared with
pycocotools' (max abs diff printed).

    python benchmarks/coco_eval.py [--images 5000] [--classes 80] [--max-dets 100] [--seed 0] [--repeat 1]
                                   [--iou-type both|bbox|segm] [--no-faster-coco-eval]

Each kind ends with ``<kind> speedup vs pycocotools = <pycocotools time / trainlab time>``; the
last two lines are the bbox figure and the segm figure.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trainlab.evaluate.coco import mask_area  # noqa: E402
from trainlab.evaluate.coco_json import evaluate_coco  # noqa: E402
from trainlab.evaluate.synthetic import synthetic_coco  # noqa: E402


def synthetic_segm(gt: dict, dets: list, scale: float = 0.5, vertices: int = 16) -> tuple[dict, list]:
    """The synthetic box set as masks: each box (scaled by ``scale``, as the image) becomes the
    ellipse inscribed in it, a polygon in the ground truth (its area the mask area), an
    uncompressed RLE for a crowd, a compressed RLE (str counts, no bbox) for a detection."""
    import pycocotools.mask as mask_utils

    gt, dets = copy.deepcopy(gt), copy.deepcopy(dets)
    height, width = round(480 * scale), round(640 * scale)
    for img in gt["images"]:
        img["height"], img["width"] = height, width
    angle = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    cos, sin = np.cos(angle), np.sin(angle)
    by_image: dict[int, list] = {}
    for item in gt["annotations"] + dets:
        by_image.setdefault(item["image_id"], []).append(item)
    for items in by_image.values():
        b = np.array([it["bbox"] for it in items], dtype=np.float64) * scale
        cx, cy, rx, ry = b[:, :1] + b[:, 2:3] / 2, b[:, 1:2] + b[:, 3:4] / 2, b[:, 2:3] / 2, b[:, 3:4] / 2
        polys = np.round(np.stack([cx + rx * cos, cy + ry * sin], 2).reshape(len(items), -1), 2).tolist()
        rles = mask_utils.frPyObjects(polys, height, width)
        areas = mask_area(rles)
        for it, poly, rle, area, box in zip(items, polys, rles, areas.tolist(), np.round(b, 2).tolist()):
            if "score" in it:  # a detection
                it["segmentation"] = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
                del it["bbox"]
                continue
            it["bbox"], it["area"] = box, float(area)
            if it["iscrowd"]:
                flat = mask_utils.decode(rle).T.reshape(-1).astype(np.int8)
                change = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))
                it["segmentation"] = {"size": [height, width], "counts": np.diff(np.r_[0, change]).tolist()}
            else:
                it["segmentation"] = [poly]
    return gt, dets


def run_pycocotools(gt: dict, dets: list, iou_type: str = "bbox") -> tuple[float, np.ndarray]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, dets = copy.deepcopy(gt), copy.deepcopy(dets)
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        elapsed = time.perf_counter() - start
    return elapsed, np.asarray(ev.stats)


def run_faster_coco_eval(gt: dict, dets: list, iou_type: str = "bbox") -> tuple[float, np.ndarray]:
    from faster_coco_eval import COCO, COCOeval_faster

    gt, dets = copy.deepcopy(gt), copy.deepcopy(dets)
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        coco_gt = COCO(gt)
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=lambda *a, **k: None)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        elapsed = time.perf_counter() - start
    return elapsed, np.asarray(ev.stats)[:12]


def run_trainlab(gt: dict, dets: list, iou_type: str = "bbox") -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = evaluate_coco(gt, dets, iou_type=iou_type)
    elapsed = time.perf_counter() - start
    return elapsed, result.stats


def compare(kind: str, gt: dict, dets: list, repeat: int, faster: bool) -> None:
    """Time the libraries on one set with iouType ``kind`` and print times, stats and speedups."""
    runners = [("pycocotools", run_pycocotools), ("faster-coco-eval", run_faster_coco_eval), ("trainlab", run_trainlab)]
    if not faster:
        runners.pop(1)
    times, stats = {}, {}
    for name, fn in runners:
        best = None
        for _ in range(repeat):
            try:
                elapsed, s = fn(gt, dets, kind)
            except ImportError as err:
                print(f"{kind}: {name:<17} not installed ({err})")
                break
            best = elapsed if best is None else min(best, elapsed)
        if best is not None:
            times[name], stats[name] = best, s

    ref = stats.get("pycocotools")
    for name in times:
        diff = "" if ref is None else f"   max abs diff vs pycocotools = {np.abs(stats[name] - ref).max():.3g}"
        print(f"{kind}: {name:<17} {times[name]:8.3f} s{diff}")
    if ref is not None:
        print(f"{kind}: stats (pycocotools): " + " ".join(f"{v:.6f}" for v in ref))
        print(f"{kind}: stats (trainlab):    " + " ".join(f"{v:.6f}" for v in stats["trainlab"]))
    if "faster-coco-eval" in times:
        print(f"{kind}: speedup vs faster-coco-eval = {times['faster-coco-eval'] / times['trainlab']:.2f}")
    return None if ref is None else times["pycocotools"] / times["trainlab"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--max-dets", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs for each library")
    ap.add_argument("--iou-type", choices=("both", "bbox", "segm"), default="both",
                    help="boxes, masks or both (default)")
    ap.add_argument("--no-faster-coco-eval", dest="faster", action="store_false",
                    help="leave faster-coco-eval out")
    args = ap.parse_args(argv)

    gt, dets = synthetic_coco(args.seed, num_images=args.images, num_classes=args.classes, max_dets=args.max_dets)
    print(f"synthetic set: seed {args.seed}, {args.images} images, {args.classes} classes, "
          f"{len(gt['annotations'])} ground truths ({sum(a['iscrowd'] for a in gt['annotations'])} crowd), "
          f"{len(dets)} detections")
    speedups = {}
    kinds = ["bbox", "segm"] if args.iou_type == "both" else [args.iou_type]
    for kind in kinds:
        if kind == "segm":
            start = time.perf_counter()
            gt, dets = synthetic_segm(gt, dets)
            img = gt["images"][0]
            print(f"segm: the same objects as masks on {img['width']}x{img['height']} images "
                  f"(made in {time.perf_counter() - start:.1f} s)")
        speedups[kind] = compare(kind, gt, dets, args.repeat, args.faster)
    for kind in kinds:
        value = speedups[kind]
        shown = "n/a (pycocotools not installed)" if value is None else f"{value:.2f}"
        print(f"{kind} speedup vs pycocotools = {shown}")


if __name__ == "__main__":
    main()
