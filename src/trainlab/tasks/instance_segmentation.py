"""Instance segmentation (K4, M10, E3, V4): a box, a class and a mask for every object.

Detection (:mod:`trainlab.tasks.detection`) with one more target per object: its mask. A batch's
targets carry ``masks`` (K, H, W) uint8 beside the boxes and labels; the model (``mask_rcnn``)
returns per-instance masks (M, H, W) uint8 in the image with its detections. Validation scores
the boxes and the masks with the project's COCO evaluator: ``val_map``/``val_map50`` (boxes) and
``val_mask_map``/``val_mask_map50``/``val_mask_map75`` (masks, COCO's ``iouType=segm``: IoU of
run-length encoded masks through ``pycocotools.mask``), all higher-is-better; the default monitor
and the quality the doctor reads are the mask mAP.
"""
from __future__ import annotations

from typing import Any

import torch

from ..registry import TASKS
from .base import Figure
from .detection import DetectionEvalMeter, DetectionTask, confident


class InstanceEvalMeter(DetectionEvalMeter):
    """COCO box and mask evaluation of a split's detections."""

    def __init__(self, class_names: list[str]):
        super().__init__(class_names)
        from ..evaluate.coco import MeanAveragePrecision

        self.segm = MeanAveragePrecision(class_names=class_names, iou_type="segm")

    def update(self, outputs, batch, loss) -> None:
        super().update(outputs, batch, loss)
        self.segm.update(outputs["detections"], batch["targets"])

    def compute(self) -> dict[str, Any]:
        out = super().compute()
        result = self.segm.compute()
        s = [max(float(v), 0.0) for v in result.stats]
        out.update({"mask_map": s[0], "mask_map50": s[1], "mask_map75": s[2], "mask_mar100": s[8],
                    "mask_coco": result.to_dict(), "mask_coco_summary": result.summary_lines()})
        return out


class InstanceSegmentationTask(DetectionTask):
    name = "instance_segmentation"
    model_task = "instance_segmentation"
    monitor = "val_mask_map"
    val_metrics = ("loss", "map", "map50", "map75", "mar100", "mask_map", "mask_map50", "mask_map75", "mask_mar100")
    metrics = {"loss": "min", **{m: "max" for m in val_metrics[1:]}}
    quality = "mask_map"
    quality_words = "mask mAP"
    needs = "masks"

    def eval_meter(self):
        return InstanceEvalMeter(self.classes)

    def predict(self, outputs):
        """One dict per image: ``boxes``, ``scores``, ``labels`` and ``masks`` (M, H, W) uint8."""
        return [{k: v.detach().cpu() for k, v in d.items()} for d in outputs["detections"]]

    def prediction_images(self, inputs, predictions, info):
        """Per input: ``instances``, each instance's mask, box, class and score drawn (V4)."""
        from ..data.preview import draw_detections

        return [{"instances": draw_detections(x, confident(p), self.classes, info)}
                for x, p in zip(inputs.cpu(), predictions)]

    def prediction_files(self, predictions, labels, info):
        """``detections.json`` as detection writes it, each result with its mask as a COCO
        compressed RLE (`trainlab eval-detections GT detections.json --iou-type segm`)."""
        import pycocotools.mask as mask_utils

        files = super().prediction_files(predictions, labels, info)
        results = iter(files["detections.json"])
        for p in predictions:
            for mask in p["masks"]:
                rle = mask_utils.encode(mask.numpy().astype("uint8", order="F"))
                next(results)["segmentation"] = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
        return files

    # ------------------------------------------------------------------ what a user sees
    def table_columns(self):
        cols = [("train_loss", "train_loss"), ("val_loss", "val_loss"), ("val_map50", "val_mAP50"),
                ("val_mask_map50", "val_mask50"), ("val_mask_map", "val_mask_mAP")]
        return [c for c in cols if not c[0].startswith("val_") or c[0][4:] in self.val_metrics]

    def curves(self):
        return [("mask_map", ["val_mask_map", "val_mask_map50", "val_mask_map75"]),
                ("map", ["val_map", "val_map50", "val_map75"])]

    def figures(self, summary):
        split, final = self._final(summary)
        rows = (final.get("mask_coco") or {}).get("per_class")
        if not rows:
            return super().figures(summary)
        return [Figure("per_class_mask_ap", "bars", f"mask AP@[.5:.95] per class ({split}), mask mAP "
                       f"{final['mask_map']:.3f}", {"values": [r["AP"] or 0.0 for r in rows],
                                                    "labels": [r["name"] for r in rows]}), *super().figures(summary)]

    def report_sections(self, summary):
        split, final = self._final(summary)
        out = super().report_sections(summary)
        masks = {**final, "coco": final.get("mask_coco"), "coco_summary": final.get("mask_coco_summary", [])}
        rows = self.class_rows(masks)
        if rows:
            out += [f"## COCO mask evaluation ({split})", "", "```", *masks["coco_summary"], "```", "",
                    "| class | mask AP | AP50 | AP75 | objects | detections |", "|---|---|---|---|---|---|"]
            out += [f"| {c} | {ap} | {ap50} | {ap75} | {g} | {d} |" for c, ap, ap50, ap75, g, d in rows] + [""]
        return out

    def describe_metrics(self, m):
        lines = ["", "boxes:", *super().describe_metrics(m)[1:]]
        masks = {**m, "coco": m.get("mask_coco"), "coco_summary": m.get("mask_coco_summary", [])}
        return lines + ["", "masks:", *super().describe_metrics(masks)[1:]]


@TASKS.register("instance_segmentation", help="instance segmentation: a box, class and mask per object, COCO box "
                "and mask mAP")
def instance_segmentation(recipe, info):
    return InstanceSegmentationTask(recipe, info)
