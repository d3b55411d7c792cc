"""Evaluation: classification metrics, box operations, COCO AP/mAP, segmentation, ensembles."""
