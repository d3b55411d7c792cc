"""Evaluation: metrics that turn predictions and targets into numbers.

Submodules load on demand so that importing one metric does not pull in the others:

- :mod:`trainlab.evaluate.classification` — accuracy, top-k, precision/recall/F1, confusion (E1)
- :mod:`trainlab.evaluate.boxes` — box formats, IoU, NMS, batched NMS, Soft-NMS (E2)
- :mod:`trainlab.evaluate.ap` — precision–recall curves and AP (101-point and all-point) (E3)
- :mod:`trainlab.evaluate.coco` — COCO box evaluation: mAP@[.5:.95], mAP@0.5, AR, per class (E3)
- :mod:`trainlab.evaluate.pr_plot` — precision–recall curves drawn to PNG (V4)
"""
