"""The built-in segmentation recipes as a user runs them: `trainlab fit shapes-fcn`, `shapes-unet`, `shapes-maskrcnn`.

    python benchmarks/segmentation.py [--recipes shapes-fcn shapes-unet] [--keep DIR] [key=value ...]

Each recipe runs as a whole process (start-up, training, evaluation, plots and report included)
on this machine's CPU. Printed per recipe: the validation mIoU curve by epoch, the validation mIoU
and pixel accuracy of the weights the run keeps (its best checkpoint), the per-class IoU, the
epochs run and the wall time. Goals (issue 14): fcn >= 0.85 and unet >= 0.90 mIoU on the shapes
validation split, each in under 10 minutes on 2 cores; shapes-maskrcnn (issue 17): mask AP50 >= 0.80
(COCO's segm evaluation) in under 15 minutes. Last lines: ``<recipe> val mIoU = <value>`` (``val mask
AP50`` for instance segmentation).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from recipe_runs import run_recipe

GOALS = {"shapes-fcn": 0.85, "shapes-unet": 0.90}
LIMIT_S = 600.0
INSTANCE_GOALS = {"shapes-maskrcnn": 0.80}  # issue 17: mask AP50 in under 15 minutes
INSTANCE_LIMIT_S = 900.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=[*GOALS, *INSTANCE_GOALS])
    ap.add_argument("--keep", metavar="DIR", help="keep the runs in DIR (default: a temporary folder)")
    ap.add_argument("overrides", nargs="*", help="recipe overrides for every run (e.g. train.epochs=5)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        results = {}
        for name in args.recipes:
            r = run_recipe(name, args.overrides, folder)
            s, val = r["summary"], r["summary"]["val"]
            if "mask_map50" in val:  # instance segmentation: the mask AP, COCO's segm evaluation
                curve = " ".join(f"{e['val_mask_map50']:.3f}" for e in r["epochs"] if "val_mask_map50" in e)
                goal = INSTANCE_GOALS.get(name)
                verdict = "" if goal is None else (
                    f" (goal mask AP50 >= {goal} in < {INSTANCE_LIMIT_S / 60:.0f} min: "
                    f"{'met' if val['mask_map50'] >= goal and r['wall'] < INSTANCE_LIMIT_S else 'NOT met'})")
                print(f"{name}: val mask AP50 by epoch: {curve}")
                print(f"{name}: best epoch {s['best_epoch']} of {s['epochs_run']} ({s['monitor']}), val mask AP50 "
                      f"{val['mask_map50']:.4f}, mask AP {val['mask_map']:.4f}, box AP50 {val['map50']:.4f}; test mask "
                      f"AP50 {s['test']['mask_map50']:.4f}; training {s['train_time_s']:.0f} s, process "
                      f"{r['wall']:.0f} s{verdict}")
                results[name] = ("mask AP50", val["mask_map50"])
                continue
            curve = " ".join(f"{e['val_miou']:.3f}" for e in r["epochs"] if e.get("val_miou") is not None)
            ious = ", ".join(f"{c} {v:.3f}" if v is not None else f"{c} -"
                             for c, v in zip(s["class_names"], val["per_class"]["iou"]))
            goal = GOALS.get(name)
            verdict = "" if goal is None else (
                f" (goal >= {goal} in < {LIMIT_S / 60:.0f} min: "
                f"{'met' if val['miou'] >= goal and r['wall'] < LIMIT_S else 'NOT met'})")
            print(f"{name}: val mIoU by epoch: {curve}")
            print(f"{name}: best epoch {s['best_epoch']} of {s['epochs_run']} ({s['monitor']}), val mIoU "
                  f"{val['miou']:.4f}, pixel accuracy {val['pixel_accuracy']:.4f}, test mIoU {s['test']['miou']:.4f}, "
                  f"training {s['train_time_s']:.0f} s, process {r['wall']:.0f} s{verdict}")
            print(f"{name}: per-class val IoU: {ious}")
            results[name] = ("mIoU", val["miou"])
        for name, (metric, value) in results.items():
            print(f"{name} val {metric} = {value:.4f}")


if __name__ == "__main__":
    main()
