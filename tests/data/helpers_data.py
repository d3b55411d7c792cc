"""Small data sets written by the tests (COCO JSON, segmentation folders) and recipe shortcuts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def shapes_recipe(*overrides: str, count: int = 48, size: int = 32):
    from trainlab.recipe import load_recipe

    return load_recipe(None, ["data.name=shapes", f"data.shapes.count={count}", f"data.shapes.image_size={size}",
                              "data.shapes.max_objects=3", "data.batch_size=16", *overrides])


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_coco(root: Path, *, annotations=None, images=None, categories=None) -> Path:
    """Three 20x24 images; image 1 has a polygon cat and a box-only... see the returned JSON."""
    rng = np.random.default_rng(0)
    for i in range(3):
        write_png(root / f"im{i}.png", rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
    data = {
        "images": images if images is not None else [
            {"id": 10 + i, "file_name": f"im{i}.png", "height": 20, "width": 24} for i in range(3)],
        "categories": categories if categories is not None else [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
        "annotations": annotations if annotations is not None else [
            # image 10: a small dog and a big cat -> class "cat" (index 1: categories sorted by id)
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [2, 2, 4, 4],
             "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]]},
            {"id": 2, "image_id": 10, "category_id": 7, "bbox": [8, 4, 12, 10],
             "segmentation": [[8, 4, 20, 4, 20, 14, 8, 14]]},
            # image 11: one dog
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [1, 1, 10, 10],
             "segmentation": [[1, 1, 11, 1, 11, 11, 1, 11]]},
            # image 12: one cat (RLE filled in by the test)
        ],
    }
    path = root / "ann.json"
    path.write_text(json.dumps(data))
    return path
