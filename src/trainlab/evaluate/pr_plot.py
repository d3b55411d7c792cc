"""Precision–recall curves of a COCO evaluation, drawn to an image file (V4).

matplotlib is imported inside the function, with the Agg backend, so that importing this module
(or any evaluation module) stays cheap and works without a display.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..atomic import write_bytes
from ..errors import DataError
from .coco import CocoResult

_LABELLED = 10  # more classes than this and the legend names only the mean curves


def plot_pr_curves(result: CocoResult, path: str | Path, iou: float = 0.5) -> Path:
    """Draw each class's interpolated PR curve at ``iou`` (area all, most detections) and the
    class mean at IoU 0.50 and 0.75; write the figure to ``path`` (format from the suffix).

    Classes without ground truth are left out. Returns the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 6))
    curves = []
    for k, name in enumerate(result.category_names):
        recall, precision = result.pr_curve(k, iou)
        if precision[0] < 0:  # no ground truth for this class
            continue
        curves.append(precision)
        label = f"{name} (AP{round(iou * 100)} {result.average_precision(iou=iou, k=k):.3f})"
        ax.plot(recall, precision, lw=1, alpha=0.8 if len(result.category_names) <= _LABELLED else 0.35,
                label=label if len(result.category_names) <= _LABELLED else None)
    for thr, style in ((0.5, "-"), (0.75, "--")):
        if thr not in result.params.iou_thresholds:
            continue
        per_class = (result.pr_curve(k, thr)[1] for k in range(len(result.category_names)))
        valid = [c for c in per_class if c[0] >= 0]
        if valid:
            mean = np.mean(valid, axis=0)
            ax.plot(result.params.recall_thresholds, mean, "k" + style, lw=2.5,
                    label=f"mean over classes, IoU={thr:.2f} (mAP {result.average_precision(iou=thr):.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision (interpolated)",
           title=f"Precision–recall, IoU={iou:.2f}, area=all, maxDets={result.params.max_dets[-1]}"
                 f"  ({len(curves)} classes)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    try:
        # Rendered in memory, then written atomically: an interrupted write leaves no torn file.
        image = io.BytesIO()
        fig.savefig(image, format=path.suffix[1:].lower() or "png", dpi=110)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, image.getvalue())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot write the plot ({err})") from None
    finally:
        plt.close(fig)
    return path
