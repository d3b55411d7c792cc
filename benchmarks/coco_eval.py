"""Benchmark: COCO box evaluation with pycocotools, faster-coco-eval and trainlab, side by side.

One synthetic set (default: 5,000 images, 80 classes, up to 100 detections per image; see
trainlab.evaluate.synthetic), generated from a seed, is evaluated by all three in this process.
Each timing starts from the parsed JSON (Python dicts and lists; the JSON parse is the same for
all three and is left out) and ends with the 12 summary numbers; copies that the libraries
mutate are made outside the timed region. The 12 numbers of each are compared with
pycocotools' (max abs diff printed).

    python benchmarks/coco_eval.py [--images 5000] [--classes 80] [--max-dets 100] [--seed 0] [--repeat 1]

The last line is ``speedup vs pycocotools = <pycocotools time / trainlab time>``.
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

from trainlab.evaluate.coco_json import evaluate_coco  # noqa: E402
from trainlab.evaluate.synthetic import synthetic_coco  # noqa: E402


def run_pycocotools(gt: dict, dets: list) -> tuple[float, np.ndarray]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, dets = copy.deepcopy(gt), copy.deepcopy(dets)
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        elapsed = time.perf_counter() - start
    return elapsed, np.asarray(ev.stats)


def run_faster_coco_eval(gt: dict, dets: list) -> tuple[float, np.ndarray]:
    from faster_coco_eval import COCO, COCOeval_faster

    gt, dets = copy.deepcopy(gt), copy.deepcopy(dets)
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        coco_gt = COCO(gt)
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *a, **k: None)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        elapsed = time.perf_counter() - start
    return elapsed, np.asarray(ev.stats)[:12]


def run_trainlab(gt: dict, dets: list) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = evaluate_coco(gt, dets)
    elapsed = time.perf_counter() - start
    return elapsed, result.stats


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--max-dets", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs for each library")
    args = ap.parse_args(argv)

    gt, dets = synthetic_coco(args.seed, num_images=args.images, num_classes=args.classes, max_dets=args.max_dets)
    print(f"synthetic set: seed {args.seed}, {args.images} images, {args.classes} classes, "
          f"{len(gt['annotations'])} ground truths ({sum(a['iscrowd'] for a in gt['annotations'])} crowd), "
          f"{len(dets)} detections")

    runners = [("pycocotools", run_pycocotools), ("faster-coco-eval", run_faster_coco_eval), ("trainlab", run_trainlab)]
    times, stats = {}, {}
    for name, fn in runners:
        best = None
        for _ in range(args.repeat):
            try:
                elapsed, s = fn(gt, dets)
            except ImportError as err:
                print(f"{name:<17} not installed ({err})")
                break
            best = elapsed if best is None else min(best, elapsed)
        if best is not None:
            times[name], stats[name] = best, s

    ref = stats.get("pycocotools")
    for name in times:
        diff = "" if ref is None else f"   max abs diff vs pycocotools = {np.abs(stats[name] - ref).max():.3g}"
        print(f"{name:<17} {times[name]:8.3f} s{diff}")
    if ref is not None:
        print("stats (pycocotools): " + " ".join(f"{v:.6f}" for v in ref))
        print("stats (trainlab):    " + " ".join(f"{v:.6f}" for v in stats["trainlab"]))
    if "faster-coco-eval" in times:
        print(f"speedup vs faster-coco-eval = {times['faster-coco-eval'] / times['trainlab']:.2f}")
    if ref is None:
        print("speedup vs pycocotools = n/a (pycocotools not installed)")
    else:
        print(f"speedup vs pycocotools = {times['pycocotools'] / times['trainlab']:.2f}")


if __name__ == "__main__":
    main()
