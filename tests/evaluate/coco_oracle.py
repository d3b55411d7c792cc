"""pycocotools as the reference oracle of the evaluation tests (not a test module)."""
from __future__ import annotations

import contextlib
import copy
import io


def run_pycocotools(gt: dict, dets: list, summarize: bool = False):
    """pycocotools' COCOeval (bbox) after evaluate + accumulate (+ summarize), its printing silenced.

    Returns the COCOeval object, and with ``summarize`` also the 12 summary lines it printed.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
    if not summarize:
        return ev
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ev.summarize()
    return ev, [line for line in buf.getvalue().splitlines() if line.strip()]
