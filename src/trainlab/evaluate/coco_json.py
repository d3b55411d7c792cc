"""COCO JSON in: ground-truth files and detection (results) files, checked and turned into arrays.

A problem with the input raises :class:`~trainlab.errors.DataError` with one line that names the
file, the JSON path and what was expected, e.g.
``dets.json: [3].bbox: expected 4 numbers, got 3``.

Large files are read with a fast path (one list comprehension per field, checks on whole
arrays); only when it finds something wrong does a slow, item-by-item pass run to name the first
offending item exactly.

Beyond what pycocotools checks, these are errors here (pycocotools crashes or silently drops
them): a detection or annotation whose image or category is not in the ground truth, duplicate
image or category ids, negative widths or heights, non-finite numbers. A ground-truth ``area``
may be omitted (the box area is used) and so may ``iscrowd`` (0).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from ..errors import DataError
from .coco import Boxes, CocoParams, CocoResult, evaluate


@dataclass
class GroundTruth:
    """A checked ground-truth set: sorted image and category ids, names, and the boxes."""

    image_ids: np.ndarray
    category_ids: np.ndarray
    category_names: list[str]
    boxes: Boxes
    source: str = "ground truth"


def read_json(path: str | Path):
    """Parse a JSON file; a missing or unparsable file is a DataError naming it."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a JSON file") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid JSON (not UTF-8 text)") from None


# --- item-by-item checks: slow, exact messages ------------------------------------------------


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value) if len(value) <= 30 else "a string"
    if isinstance(value, (int, float)):
        return repr(value)
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def is_int(v) -> bool:
    """A JSON integer (true and false are not)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    """A finite JSON number. Python's json reads the non-standard NaN and Infinity literals, and
    no COCO field (coordinate, area, score) may hold them."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fail(source: str, path: str, problem: str) -> DataError:
    return DataError(f"{source}: {path}: {problem}")


def _need_object(source: str, path: str, item) -> dict:
    if not isinstance(item, dict):
        raise _fail(source, path, f"expected an object, got {_kind(item)}")
    return item


def _need_int(source: str, path: str, item: dict, key: str) -> int:
    if key not in item:
        raise _fail(source, f"{path}.{key}", "missing")
    v = item[key]
    if not is_int(v):
        raise _fail(source, f"{path}.{key}", f"expected an integer, got {_kind(v)}")
    return v


def _need_number(source: str, path: str, v, what: str = "a number") -> float:
    if not is_number(v):
        if isinstance(v, float):  # NaN or an infinity
            raise _fail(source, path, f"expected a finite number, got {v}")
        raise _fail(source, path, f"expected {what}, got {_kind(v)}")
    return float(v)


def _check_bbox(source: str, path: str, item: dict) -> None:
    if "bbox" not in item:
        raise _fail(source, f"{path}.bbox", "missing")
    bb = item["bbox"]
    if not isinstance(bb, list):
        raise _fail(source, f"{path}.bbox", f"expected 4 numbers [x, y, width, height], got {_kind(bb)}")
    if len(bb) != 4:
        raise _fail(source, f"{path}.bbox", f"expected 4 numbers, got {len(bb)}")
    for j, v in enumerate(bb):
        _need_number(source, f"{path}.bbox[{j}]", v)
    if bb[2] < 0 or bb[3] < 0:
        raise _fail(source, f"{path}.bbox", f"width and height must be >= 0, got {bb}")


def _check_ref(source: str, path: str, value: int, known: set, what: str) -> None:
    if value not in known:
        raise _fail(source, path, f"{value} is not the id of any entry in {what}")


def check_annotation(source, i, a, image_set, category_set) -> None:
    """Annotation ``i`` of a ground-truth file: an object whose image_id and category_id are
    integers in ``image_set`` and ``category_set``, a bbox of 4 finite numbers with width and
    height >= 0, an optional finite area >= 0 and an optional iscrowd of 0 or 1. Raises a
    DataError ``{source}: annotations[i].field: problem``."""
    path = f"annotations[{i}]"
    a = _need_object(source, path, a)
    _check_ref(source, f"{path}.image_id", _need_int(source, path, a, "image_id"), image_set, "images")
    _check_ref(source, f"{path}.category_id", _need_int(source, path, a, "category_id"), category_set, "categories")
    _check_bbox(source, path, a)
    if "area" in a:
        if _need_number(source, f"{path}.area", a["area"]) < 0:
            raise _fail(source, f"{path}.area", f"must be >= 0, got {a['area']}")
    if "iscrowd" in a and a["iscrowd"] not in (0, 1):  # also admits false/true
        raise _fail(source, f"{path}.iscrowd", f"expected 0 or 1, got {_kind(a['iscrowd'])}")


def _check_detection(source, i, d, image_set, category_set, gt_source) -> None:
    path = f"[{i}]"
    d = _need_object(source, path, d)
    img = _need_int(source, path, d, "image_id")
    if img not in image_set:
        raise _fail(source, f"{path}.image_id", f"{img} is not an image of {gt_source}")
    cat = _need_int(source, path, d, "category_id")
    if cat not in category_set:
        raise _fail(source, f"{path}.category_id", f"{cat} is not a category of {gt_source}")
    _check_bbox(source, path, d)
    if "score" not in d:
        raise _fail(source, f"{path}.score", "missing")
    _need_number(source, f"{path}.score", d["score"])


def _slow_scan(check, items: Sequence, *args) -> DataError:
    for i, item in enumerate(items):
        check(*args[:1], i, item, *args[1:])
    # the fast path saw a problem the item checks do not: should not happen, but say something
    return DataError(f"{args[0]}: malformed entries (could not locate the first one)")


# --- fast path ---------------------------------------------------------------------------------


def _int_column(items: list, key: str) -> np.ndarray:
    values = [it[key] for it in items]
    if not set(map(type, values)) <= {int}:
        raise ValueError(key)
    return np.array(values, dtype=np.int64)


def _bbox_column(items: list) -> np.ndarray:
    boxes = [it["bbox"] for it in items]
    if not set(map(type, boxes)) <= {list} or not set(map(type, chain.from_iterable(boxes))) <= {int, float}:
        raise ValueError("bbox")
    arr = np.array(boxes, dtype=np.float64) if boxes else np.zeros((0, 4))
    if arr.ndim != 2 or arr.shape[1] != 4 or not np.isfinite(arr).all() or (arr[:, 2:] < 0).any():
        raise ValueError("bbox")
    return arr


_MISSING = object()


def _index_of(known_sorted: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Positions of ``values`` in the sorted id array; ValueError if any is not there."""
    idx = np.searchsorted(known_sorted, values)
    if values.size and (known_sorted.size == 0 or (idx >= known_sorted.size).any()
                        or (known_sorted[np.minimum(idx, known_sorted.size - 1)] != values).any()):
        raise ValueError("unknown id")
    return idx


def _number_column(items: list, key: str) -> np.ndarray:
    values = [it[key] for it in items]
    if not set(map(type, values)) <= {int, float}:
        raise ValueError(key)
    arr = np.array(values, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(key)
    return arr


def _sorted_ids(source: str, items, list_name: str) -> tuple[np.ndarray, list]:
    if not isinstance(items, list):
        raise _fail(source, list_name, f"expected a list, got {_kind(items)}")
    seen: dict[int, int] = {}
    for i, it in enumerate(items):
        v = _need_int(source, f"{list_name}[{i}]", _need_object(source, f"{list_name}[{i}]", it), "id")
        if v in seen:
            raise _fail(source, f"{list_name}[{i}].id", f"duplicate id {v} (also {list_name}[{seen[v]}])")
        seen[v] = i
    ids = np.array(sorted(seen), dtype=np.int64)
    return ids, [items[seen[v]] for v in ids.tolist()]


def ground_truth_from_dict(data, source: str = "ground truth") -> GroundTruth:
    """Check a COCO ground-truth dict (``images``, ``annotations``, ``categories``) and index it."""
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a JSON object with images, annotations and categories, got {_kind(data)}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise _fail(source, key, "missing")
    image_ids, _ = _sorted_ids(source, data["images"], "images")
    category_ids, cats = _sorted_ids(source, data["categories"], "categories")
    names = []
    for c in cats:
        name = c.get("name", str(c["id"]))
        names.append(name if isinstance(name, str) else str(name))
    anns = data["annotations"]
    if not isinstance(anns, list):
        raise _fail(source, "annotations", f"expected a list, got {_kind(anns)}")
    try:
        img_idx = _index_of(image_ids, _int_column(anns, "image_id"))
        cat_idx = _index_of(category_ids, _int_column(anns, "category_id"))
        bbox = _bbox_column(anns)
        crowd_raw = [a.get("iscrowd", 0) for a in anns]
        if not set(crowd_raw) <= {0, 1}:  # True == 1 and False == 0 pass too
            raise ValueError("iscrowd")
        crowd = np.array(crowd_raw, dtype=bool)
        given = [a.get("area", _MISSING) for a in anns]
        present = np.array([v is not _MISSING for v in given], dtype=bool)
        values = [v for v in given if v is not _MISSING]
        if not set(map(type, values)) <= {int, float}:
            raise ValueError("area")
        area = bbox[:, 2] * bbox[:, 3]  # box area where the annotation gives none
        area[present] = values
        if not np.isfinite(area).all() or (area < 0).any():
            raise ValueError("area")
    except (KeyError, TypeError, AttributeError, ValueError, IndexError):
        raise _slow_scan(check_annotation, anns, source, set(image_ids.tolist()), set(category_ids.tolist())) from None
    boxes = Boxes(image=img_idx, category=cat_idx, boxes=bbox, area=area, crowd=crowd)
    return GroundTruth(image_ids, category_ids, names, boxes, source)


def detections_from_list(data, gt: GroundTruth, source: str = "detections") -> Boxes:
    """Check a COCO results list (image_id, category_id, bbox, score per item) against ``gt``."""
    if not isinstance(data, list):
        raise DataError(f"{source}: expected a JSON list of detections, got {_kind(data)}")
    images, cats = gt.image_ids, gt.category_ids
    try:
        img_idx = _index_of(images, _int_column(data, "image_id"))
        cat_idx = _index_of(cats, _int_column(data, "category_id"))
        bbox = _bbox_column(data)
        score = _number_column(data, "score")
    except (KeyError, TypeError, AttributeError, ValueError, IndexError):
        raise _slow_scan(_check_detection, data, source, set(images.tolist()), set(cats.tolist()), gt.source) from None
    return Boxes(image=img_idx, category=cat_idx, boxes=bbox, area=bbox[:, 2] * bbox[:, 3], scores=score)


def evaluate_coco(gt_data, dets_data, params: CocoParams | None = None, *,
                  gt_source: str = "ground truth", dets_source: str = "detections") -> CocoResult:
    """COCO box evaluation of parsed JSON: a ground-truth dict and a results list."""
    gt = ground_truth_from_dict(gt_data, gt_source)
    dt = detections_from_list(dets_data, gt, dets_source)
    return evaluate(gt.boxes, dt, gt.image_ids.size, gt.category_ids, gt.category_names, params)


def evaluate_files(gt_path: str | Path, dets_path: str | Path, params: CocoParams | None = None) -> CocoResult:
    """COCO box evaluation of a ground-truth JSON file and a detections JSON file."""
    gt_data = read_json(gt_path)
    dets_data = read_json(dets_path)
    return evaluate_coco(gt_data, dets_data, params, gt_source=str(gt_path), dets_source=str(dets_path))
