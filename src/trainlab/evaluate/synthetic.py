"""A synthetic COCO detection set, generated deterministically from a seed.

Used by the tests and by ``benchmarks/coco_eval.py`` to exercise every branch of COCO's rules:
images without ground truth, images without detections, crowd regions, objects of all three
sizes, annotation areas that differ from box areas (as segmentation areas do), detections of
the wrong class, duplicate detections and tied scores (scores are rounded).
"""
from __future__ import annotations

import numpy as np


def synthetic_coco(
    seed: int = 0,
    num_images: int = 100,
    num_classes: int = 80,
    max_dets: int = 100,
    *,
    mean_objects: float = 7.0,
    crowd_fraction: float = 0.02,
    empty_fraction: float = 0.05,
    score_decimals: int = 2,
) -> tuple[dict, list[dict]]:
    """Return ``(ground_truth, detections)``: a COCO ground-truth dict and a results list.

    Image ids are 1..num_images, category ids 1..num_classes, annotation ids 1..G. Each image
    has up to ``max_dets`` detections (a random number, 0 for some images).
    """
    rng = np.random.default_rng(seed)
    size = np.array([640.0, 480.0])
    images = [{"id": i + 1, "width": 640, "height": 480} for i in range(num_images)]
    categories = [{"id": c + 1, "name": f"class{c + 1}"} for c in range(num_classes)]
    annotations: list[dict] = []
    detections: list[dict] = []

    def boxes(n: int, lo: float, hi: float) -> np.ndarray:
        side = np.exp(rng.uniform(np.log(lo), np.log(hi), n))  # log-uniform: all three sizes
        aspect = np.exp(rng.uniform(-0.7, 0.7, n))
        wh = np.stack([side * aspect, side / aspect], 1)
        wh = np.minimum(wh, size - 1)
        xy = rng.uniform(0, 1, (n, 2)) * (size - wh)
        return np.round(np.concatenate([xy, wh], 1), 2)

    for img in images:
        n_gt = 0 if rng.random() < empty_fraction else int(rng.poisson(mean_objects))
        present = rng.choice(num_classes, size=min(num_classes, 1 + int(rng.integers(0, 6))), replace=False)
        gcat = rng.choice(present, n_gt) + 1
        gbox = boxes(n_gt, 4.0, 400.0)
        crowd = rng.random(n_gt) < crowd_fraction
        # a segmentation mask covers part of its box
        area = np.round(gbox[:, 2] * gbox[:, 3] * rng.uniform(0.55, 1.0, n_gt), 2)
        for j in range(n_gt):
            annotations.append({
                "id": len(annotations) + 1, "image_id": img["id"], "category_id": int(gcat[j]),
                "bbox": gbox[j].tolist(), "area": float(area[j]), "iscrowd": int(crowd[j]),
            })

        n_det = 0 if rng.random() < empty_fraction else int(rng.integers(0, max_dets + 1))
        # detections near ground truth (1-3 each, jittered), then background false positives
        copies = rng.integers(1, 4, n_gt) * (rng.random(n_gt) < 0.85)
        src = np.repeat(np.arange(n_gt), copies)
        jitter = rng.normal(0, 0.08, (src.size, 4)) * np.tile(np.repeat(gbox[:, 2:], copies, 0), 2)
        near = np.round(np.abs(gbox[src] + jitter), 2)
        near_cat = gcat[src].copy()
        wrong = rng.random(src.size) < 0.1
        near_cat[wrong] = rng.integers(1, num_classes + 1, int(wrong.sum()))
        near_score = np.clip(rng.beta(5, 2, src.size), 0, 1)
        n_bg = max(0, n_det - src.size)
        bg = boxes(n_bg, 4.0, 300.0)
        bg_cat = np.where(rng.random(n_bg) < 0.7, rng.choice(present, n_bg) + 1, rng.integers(1, num_classes + 1, n_bg))
        bg_score = rng.beta(1.5, 5, n_bg)
        dbox = np.concatenate([near, bg])[:n_det]
        dcat = np.concatenate([near_cat, bg_cat])[:n_det]
        dscore = np.round(np.concatenate([near_score, bg_score])[:n_det], score_decimals)
        perm = rng.permutation(dbox.shape[0])  # file order should not follow the generator
        for j in perm:
            detections.append({
                "image_id": img["id"], "category_id": int(dcat[j]),
                "bbox": dbox[j].tolist(), "score": float(dscore[j]),
            })
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return gt, detections
