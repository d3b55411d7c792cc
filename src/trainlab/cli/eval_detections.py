"""``trainlab eval-detections GT.json DETS.json``: COCO box or mask evaluation of a results file.

Prints COCO's 12-line summary and a per-class table; ``--json`` writes the numbers, ``--plot``
draws the precision–recall curves. ``--iou-type segm`` evaluates the results' masks (compressed
RLEs in "segmentation") against the ground truth's segmentations instead of the boxes. Malformed
input exits 2 with one line naming the JSON path.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("gt", metavar="GT.json", help="COCO ground truth (images, annotations, categories)")
    parser.add_argument("dets", metavar="DETS.json",
                        help="COCO results: a list of {image_id, category_id, bbox [x,y,w,h], score}; "
                             "with --iou-type segm each has a segmentation (compressed RLE)")
    parser.add_argument("--iou-type", choices=("bbox", "segm"), default="bbox",
                        help="what is matched: boxes (bbox, the default) or masks (segm: the ground "
                             "truth's segmentation against the results' RLE masks), as pycocotools' iouType")
    parser.add_argument("--json", metavar="OUT", type=Path,
                        help="write {stats: the 12 numbers in COCO's order, per_class: [...]} here; "
                             "missing folders are created")
    parser.add_argument("--plot", metavar="PNG", type=Path,
                        help="draw precision-recall curves to this .png file; missing folders are created")


def _fmt(value) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


def run(args: argparse.Namespace) -> int:
    from ..atomic import dumps, write_text
    from ..evaluate.coco_json import evaluate_files
    from .outputs import check_output, make_parent

    # checked before the evaluation, which can take a while on a large file
    if args.json is not None:
        check_output(args.json, "--json", suffix=None)
    if args.plot is not None:
        check_output(args.plot, "--plot")
    result = evaluate_files(args.gt, args.dets, iou_type=args.iou_type)
    print("\n".join(result.summary_lines()))
    rows = result.per_class()
    width = max([len("name")] + [len(r["name"]) for r in rows])
    print()
    print(f"per class (area=all, maxDets={result.params.max_dets[-1]}):")
    print(f"{'id':>5}  {'name':<{width}}  {'AP':>6} {'AP50':>6} {'AP75':>6} {'AR100':>6} "
          f"{'AP50voc':>7} {'gt':>6} {'dets':>6}")
    for r in rows:
        print(f"{r['id']:>5}  {r['name']:<{width}}  {_fmt(r['AP'])} {_fmt(r['AP50'])} {_fmt(r['AP75'])} "
              f"{_fmt(r['AR100'])}  {_fmt(r['AP50_voc'])} {r['num_gt']:>6} {r['num_det']:>6}")
    if args.json is not None:
        out = {"gt": str(args.gt), "detections": str(args.dets), **result.to_dict()}
        try:
            write_text(make_parent(args.json, "--json"), dumps(out, indent=1) + "\n")
        except OSError as err:
            raise DataError(f"{args.json}: cannot write ({err.strerror or err})") from None
        print(f"\nwrote {args.json}")
    if args.plot is not None:
        from ..evaluate.pr_plot import plot_pr_curves

        plot_pr_curves(result, make_parent(args.plot, "--plot"))
        print(f"wrote {args.plot}")
    return 0
