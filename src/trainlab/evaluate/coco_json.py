"""COCO JSON in: ground-truth files and detection (results) files, checked and turned into arrays.

A problem with the input raises :class:`~trainlab.errors.DataError` with one line that names the
file, the JSON path and what was expected, e.g.
``dets.json: [3].bbox: expected 4 numbers, got 3``.

Large files are read with a fast path (one list comprehension per field, checks on whole
arrays); only when it finds something wrong does a slow, item-by-item pass run to name the first
offending item exactly.

Beyond what pycocotools checks, these are errors here (pycocotools crashes or silently drops
them): a detection or annotation whose image or category is not in the ground truth, duplicate
image or category ids, negative widths or heights, non-finite numbers, numbers beyond float64
(and ids beyond int64), JSON nested deeper than 100 levels. A ground-truth ``area``
may be omitted (the box area is used) and so may ``iscrowd`` (0).

Mask evaluation (``iou_type="segm"``) also needs every image's ``height`` and ``width``, every
annotation's ``segmentation`` (polygons ``[[x1, y1, x2, y2, x3, y3, ...], ...]`` of at least 3
points each, an uncompressed RLE ``{"size": [h, w], "counts": [n0, n1, ...]}`` or a compressed
one ``{"size": [h, w], "counts": "..."}``) and every detection's ``segmentation`` (a compressed
RLE, as COCO results files hold). An RLE's size must be its image's ``[height, width]`` (where
pycocotools silently scores masks of different sizes as not overlapping) and an uncompressed
RLE's counts must add up to height x width; compressed strings are taken as they are, as
pycocotools takes them. Polygon points may lie at most an image size outside their image, and
an image at most 2^26 pixels a side and 2^32 in all (pycocotools' rasteriser works in 32-bit
integers). Ground truth is turned into RLEs as pycocotools' ``COCO.annToRLE`` does
(polygons rasterized with ``mask.frPyObjects`` and merged), so the masks are identical. In this
mode an annotation's ``bbox`` may be omitted (a missing ``area`` is the mask area) and so may a
detection's. Detection areas (for the area ranges) follow pycocotools' ``loadRes``: where every
detection has a ``bbox`` (as detectron2 and mmdetection write them), the box area ``w * h``;
otherwise the mask area.
"""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from pathlib import Path

import numpy as np

from ..errors import DataError, shorten, show, show_path
from .coco import IOU_TYPES, Boxes, CocoParams, CocoResult, evaluate, mask_area, mask_utils


@dataclass
class GroundTruth:
    """A checked ground-truth set: sorted image and category ids, names, and the boxes (with
    their masks as RLEs, and ``image_sizes`` ``(I, 2)`` height, width, for mask evaluation)."""

    image_ids: np.ndarray
    category_ids: np.ndarray
    category_names: list[str]
    boxes: Boxes
    source: str = "ground truth"
    image_sizes: np.ndarray | None = None


# A COCO file nests 5 levels (file, list, item, polygons, polygon); anything past this is not COCO,
# and Python's own reader gives up near 1000 with a RecursionError.
JSON_MAX_DEPTH = 100


class OutOfRange(float):
    """A JSON number that does not fit a float64 (``1e400``, an integer of 400 digits): an infinity
    that every finiteness check refuses, shown in messages as it was written (cut)."""

    __slots__ = ("text",)

    def __new__(cls, text: str):
        value = super().__new__(cls, "-inf" if text.startswith("-") else "inf")
        value.text = text
        return value

    def __repr__(self) -> str:
        return f"{shorten(self.text, 40)} (beyond the float64 range)"

    __str__ = __repr__


def _parse_int(text: str):
    # Python's int() refuses more than 4300 digits with a ValueError (not a JSON error), and an
    # integer past float64 overflows every float or numpy conversion further on
    if len(text) <= 300:
        return int(text)
    value = int(text) if len(text) <= 4300 else None
    return value if value is not None and abs(value) <= sys.float_info.max else OutOfRange(text)


def _parse_float(text: str):
    value = float(text)
    return value if math.isfinite(value) else OutOfRange(text)


def _deeper_than(data, limit: int) -> bool:
    """Whether lists and objects in ``data`` nest more than ``limit`` levels; level by level, no
    recursion, and C-speed type checks on the (long) lists of numbers."""
    level = [data] if type(data) in (list, dict) else []
    for _ in range(limit):
        if not level:
            return False
        below = []
        for item in level:
            values = item.values() if type(item) is dict else item
            if {list, dict} & set(map(type, values)):
                below += [v for v in values if type(v) in (list, dict)]
        level = below
    return bool(level)


def read_json(path: str | Path):
    """Parse a JSON file; a missing or unparsable file is a DataError naming it, as is one that
    nests deeper than JSON_MAX_DEPTH or holds a number beyond float64 (:class:`OutOfRange`, so that
    the checks name its JSON path)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = json.load(f, parse_int=_parse_int, parse_float=_parse_float)
    except FileNotFoundError:
        raise DataError(f"{show_path(path)}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{show_path(path)}: is a directory, expected a JSON file") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{show_path(path)}: not valid JSON (line {err.lineno}, column {err.colno}: "
                        f"{err.msg})") from None
    except UnicodeDecodeError:
        raise DataError(f"{show_path(path)}: not valid JSON (not UTF-8 text)") from None
    except RecursionError:
        raise DataError(f"{show_path(path)}: JSON nested deeper than {JSON_MAX_DEPTH} levels (a COCO file nests "
                        "5)") from None
    if _deeper_than(data, JSON_MAX_DEPTH):
        raise DataError(f"{show_path(path)}: JSON nested deeper than {JSON_MAX_DEPTH} levels (a COCO file nests 5)")
    return data


# --- item-by-item checks: slow, exact messages ------------------------------------------------


def describe_value(value) -> str:
    """A JSON value as an error message shows it: null, true, a short string or number as written
    (cut), or what it is (an object, a list)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value) if len(value) <= 30 else "a string"
    if isinstance(value, int) and not is_int(value):
        return f"{show(value, 40)} (beyond 64-bit integers)"
    if isinstance(value, (int, float)):
        return show(value)
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


_kind = describe_value
INT64 = (-(2**63), 2**63 - 1)


def is_int(v) -> bool:
    """A JSON integer that fits 64 bits, as numpy and pycocotools hold ids (true and false are not)."""
    return isinstance(v, int) and not isinstance(v, bool) and INT64[0] <= v <= INT64[1]


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


def check_annotation(source, i, a, image_set, category_set, image_sizes: dict | None = None) -> None:
    """Annotation ``i`` of a ground-truth file: an object whose image_id and category_id are
    integers in ``image_set`` and ``category_set``, a bbox of 4 finite numbers with width and
    height >= 0, an optional finite area >= 0 and an optional iscrowd of 0 or 1. Raises a
    DataError ``{source}: annotations[i].field: problem``.

    With ``image_sizes`` (image id -> (height, width); mask evaluation) the bbox may be missing
    and a ``segmentation`` is needed (see :func:`check_segmentation`)."""
    path = f"annotations[{i}]"
    a = _need_object(source, path, a)
    image = _need_int(source, path, a, "image_id")
    _check_ref(source, f"{path}.image_id", image, image_set, "images")
    _check_ref(source, f"{path}.category_id", _need_int(source, path, a, "category_id"), category_set, "categories")
    if image_sizes is None or "bbox" in a:
        _check_bbox(source, path, a)
    if image_sizes is not None:
        if "segmentation" not in a:
            raise _fail(source, f"{path}.segmentation", "missing")
        check_segmentation(source, f"{path}.segmentation", a["segmentation"], image, image_sizes[image])
    if "area" in a:
        if _need_number(source, f"{path}.area", a["area"]) < 0:
            raise _fail(source, f"{path}.area", f"must be >= 0, got {a['area']}")
    if "iscrowd" in a and a["iscrowd"] not in (0, 1):  # also admits false/true
        raise _fail(source, f"{path}.iscrowd", f"expected 0 or 1, got {_kind(a['iscrowd'])}")


# pycocotools rasterises a polygon at 5x its coordinates in 32-bit ints and indexes pixels in 32
# bits: beyond these it overflows (a point at 1e9 is a segmentation fault) or allocates in
# proportion to a point's distance. Points may lie up to an image size outside their image.
MAX_SIDE = 2**26
MAX_PIXELS = 2**32 - 1


def _polygon_outside(poly: list, hw: tuple[int, int]) -> tuple[float, float] | None:
    """The first point (x, y) of a polygon of finite numbers lying more than its image's size
    outside the (height, width) image ``hw``; None if there is none."""
    h, w = hw
    for x, y in zip(poly[0::2], poly[1::2]):
        if not (-w <= x <= 2 * w and -h <= y <= 2 * h):
            return x, y
    return None


def _check_rle_size(source: str, path: str, rle: dict, image: int, hw: tuple[int, int]) -> None:
    if "size" not in rle:
        raise _fail(source, f"{path}.size", "missing")
    size = rle["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(map(is_int, size))):
        shown = json.dumps(size) if isinstance(size, list) and len(size) <= 4 else _kind(size)
        raise _fail(source, f"{path}.size", f"expected [height, width] (two integers), got {shown}")
    if tuple(size) != tuple(hw):
        raise _fail(source, f"{path}.size",
                    f"{size} is not the size of image {image}, [height, width] = {list(hw)}")
    if "counts" not in rle:
        raise _fail(source, f"{path}.counts", "missing")


def check_segmentation(source: str, path: str, segm, image: int, hw: tuple[int, int]) -> None:
    """A ground-truth ``segmentation`` of image ``image`` of size ``hw`` (height, width): a
    non-empty list of polygons (each at least 3 points: an even number, at least 6, of finite
    numbers; pycocotools cannot rasterize a first polygon of 2 points), or an RLE of the image's
    size: ``counts`` a string (compressed; taken as it is, as pycocotools does) or non-negative
    integers adding up to height x width (uncompressed). Raises a one-line DataError naming
    ``path``, worded as the coco data set's checks (D10)."""
    if isinstance(segm, list):
        if not segm:
            raise _fail(source, path, "empty polygon list (expected [[x1, y1, x2, y2, x3, y3, ...], ...])")
        for j, poly in enumerate(segm):
            if not isinstance(poly, list):
                raise _fail(source, f"{path}[{j}]",
                            f"expected a polygon [x1, y1, x2, y2, x3, y3, ...], got {_kind(poly)}")
            for k, v in enumerate(poly):
                _need_number(source, f"{path}[{j}][{k}]", v)
            if len(poly) < 6:
                raise _fail(source, f"{path}[{j}]",
                            f"a polygon needs at least 3 points (6 numbers), got {len(poly)} numbers")
            if len(poly) % 2:
                raise _fail(source, f"{path}[{j}]",
                            f"a polygon needs x, y pairs (an even count of numbers), got {len(poly)} numbers")
            outside = _polygon_outside(poly, hw)
            if outside is not None:
                raise _fail(source, f"{path}[{j}]", f"point ({outside[0]:g}, {outside[1]:g}) lies more than the "
                            f"image's size outside image {image} ({hw[1]}x{hw[0]}, width x height)")
        return
    if not isinstance(segm, dict):
        raise _fail(source, path,
                    f"expected polygons [[x1, y1, ...], ...] or an RLE {{size, counts}}, got {_kind(segm)}")
    _check_rle_size(source, path, segm, image, hw)
    counts = segm["counts"]
    if isinstance(counts, str):
        return
    if not isinstance(counts, list):
        raise _fail(source, f"{path}.counts", f"expected a string or a list of integers, got {_kind(counts)}")
    for k, v in enumerate(counts):
        if not is_int(v) or v < 0:
            raise _fail(source, f"{path}.counts[{k}]", f"expected an integer >= 0, got {_kind(v)}")
    if sum(counts) != hw[0] * hw[1]:
        raise _fail(source, f"{path}.counts", f"add up to {sum(counts)}, expected height x width = {hw[0] * hw[1]}")


def _check_detection(source, i, d, image_set, category_set, gt_source, image_sizes: dict | None = None) -> None:
    path = f"[{i}]"
    d = _need_object(source, path, d)
    img = _need_int(source, path, d, "image_id")
    if img not in image_set:
        raise _fail(source, f"{path}.image_id", f"{img} is not an image of {gt_source}")
    cat = _need_int(source, path, d, "category_id")
    if cat not in category_set:
        raise _fail(source, f"{path}.category_id", f"{cat} is not a category of {gt_source}")
    if image_sizes is None or "bbox" in d:
        _check_bbox(source, path, d)
    if "score" not in d:
        raise _fail(source, f"{path}.score", "missing")
    _need_number(source, f"{path}.score", d["score"])
    if image_sizes is not None:
        if "segmentation" not in d:
            raise _fail(source, f"{path}.segmentation", "missing")
        rle = d["segmentation"]
        if not isinstance(rle, dict):
            raise _fail(source, f"{path}.segmentation",
                        f'expected a compressed RLE {{"size": [height, width], "counts": "..."}}, got {_kind(rle)}')
        _check_rle_size(source, f"{path}.segmentation", rle, img, image_sizes[img])
        if not isinstance(rle["counts"], str):
            raise _fail(source, f"{path}.segmentation.counts",
                        f"expected a string (a compressed RLE), got {_kind(rle['counts'])}")


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


def _image_sizes(source: str, images: list, image_ids: np.ndarray) -> np.ndarray:
    """``(I, 2)`` height, width of the images in ``image_ids`` order; each must be a positive integer."""
    by_id = {}
    for i, img in enumerate(images):
        hw = []
        for key in ("height", "width"):
            v = _need_int(source, f"images[{i}]", img, key)
            if v <= 0:
                raise _fail(source, f"images[{i}].{key}", f"expected a positive integer, got {v}")
            if v > MAX_SIDE:
                raise _fail(source, f"images[{i}].{key}", f"{v} pixels is more than pycocotools rasterises "
                                                          f"({MAX_SIDE})")
            hw.append(v)
        if hw[0] * hw[1] > MAX_PIXELS:
            raise _fail(source, f"images[{i}]", f"height x width = {hw[0] * hw[1]} pixels is more than "
                                                f"pycocotools' 32-bit pixel index holds ({MAX_PIXELS})")
        by_id[img["id"]] = hw
    return np.array([by_id[v] for v in image_ids.tolist()], dtype=np.int64).reshape(-1, 2)


def _gt_masks(anns: list, img_idx: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The annotations' segmentations as compressed RLEs, as ``COCO.annToRLE`` makes them.

    Polygons of all annotations of one image size are rasterized in one ``frPyObjects`` call and
    merged per annotation (``merge`` of one RLE returns it unchanged); all uncompressed RLEs are
    compressed in one call. ValueError on anything that is not well-formed (the caller then scans
    item by item for the message).
    """
    mu = mask_utils()
    rles = np.empty(len(anns), dtype=object)
    segs = [a["segmentation"] for a in anns]
    kind = np.array([k is list or 2 * (k is dict) for k in map(type, segs)], dtype=np.int8).reshape(-1)
    if (kind == 0).any():
        raise ValueError("segmentation")
    hs, ws = sizes[:, 0].tolist(), sizes[:, 1].tolist()

    # polygons: a non-empty list of lists of an even number (>= 6) of finite numbers
    p_ann = np.flatnonzero(kind == 1)
    p_segs = [segs[i] for i in p_ann.tolist()]
    n_poly = np.fromiter(map(len, p_segs), dtype=np.int64, count=len(p_segs))
    polys = list(chain.from_iterable(p_segs))
    if (n_poly == 0).any() or not set(map(type, polys)) <= {list}:
        raise ValueError("segmentation")
    length = np.fromiter(map(len, polys), dtype=np.int64, count=len(polys))
    if (length < 6).any() or (length % 2).any():
        raise ValueError("polygon")
    flat = list(chain.from_iterable(polys))
    coords = np.array(flat, dtype=np.float64)
    if not set(map(type, flat)) <= {int, float} or not np.isfinite(coords).all():
        raise ValueError("polygon")
    first = np.cumsum(n_poly) - n_poly  # each annotation's first polygon
    hw = sizes[img_idx[p_ann]] if p_ann.size else np.zeros((0, 2), dtype=np.int64)
    # every point within an image size of its image (see MAX_SIDE)
    wh = np.repeat(np.repeat(hw, n_poly, axis=0), length // 2, axis=0)[:, ::-1]
    xy = coords.reshape(-1, 2)
    if ((xy < -wh) | (xy > 2 * wh)).any():
        raise ValueError("polygon")
    key = hw[:, 0] * (int(sizes[:, 1].max(initial=0)) + 1) + hw[:, 1]
    for k in np.unique(key).tolist():
        sel = np.flatnonzero(key == k)  # positions in p_ann
        h, w = hw[sel[0]].tolist()
        if sel.size == p_ann.size:
            group = polys
        else:
            n = n_poly[sel]
            pos = np.repeat(first[sel] - np.cumsum(n) + n, n) + np.arange(n.sum())  # their polygons
            group = [polys[j] for j in pos.tolist()]
        out = np.fromiter(mu.frPyObjects(group, h, w), dtype=object, count=len(group))
        at = np.cumsum(n_poly[sel]) - n_poly[sel]
        single = n_poly[sel] == 1
        rles[p_ann[sel[single]]] = out[at[single]]
        for i, a, c in zip(p_ann[sel[~single]].tolist(), at[~single].tolist(), n_poly[sel[~single]].tolist()):
            rles[i] = mu.merge(out[a:a + c].tolist())

    # RLEs: {"size": the image's [height, width], "counts": a string, or integers adding up to h * w}
    uncompressed = []
    for i in np.flatnonzero(kind == 2).tolist():
        s = segs[i]
        size, counts = s["size"], s["counts"]
        h, w = hs[img_idx[i]], ws[img_idx[i]]
        if type(size) is not list or len(size) != 2 or not set(map(type, size)) <= {int} or size != [h, w]:
            raise ValueError("size")
        if type(counts) is str:
            rles[i] = s
        elif type(counts) is list:
            if not set(map(type, counts)) <= {int} or min(counts, default=0) < 0 or sum(counts) != h * w:
                raise ValueError("counts")
            uncompressed.append(i)
        else:
            raise ValueError("counts")
    if uncompressed:
        plain = [{"size": segs[i]["size"], "counts": segs[i]["counts"]} for i in uncompressed]
        for i, rle in zip(uncompressed, mu.frPyObjects(plain, hs[0], ws[0])):  # each uses its own size
            rles[i] = rle
    return rles


def ground_truth_from_dict(data, source: str = "ground truth", iou_type: str = "bbox") -> GroundTruth:
    """Check a COCO ground-truth dict (``images``, ``annotations``, ``categories``) and index it.

    With ``iou_type="segm"`` the images need ``height`` and ``width``, the annotations a
    ``segmentation``, which becomes an RLE in ``boxes.masks``."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"unknown iou_type {iou_type!r}; known: {', '.join(IOU_TYPES)}")
    segm = iou_type == "segm"
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a JSON object with images, annotations and categories, got {_kind(data)}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise _fail(source, key, "missing")
    image_ids, _ = _sorted_ids(source, data["images"], "images")
    category_ids, cats = _sorted_ids(source, data["categories"], "categories")
    sizes = _image_sizes(source, data["images"], image_ids) if segm else None
    names = []
    for c in cats:
        name = c.get("name", str(c["id"]))
        names.append(name if isinstance(name, str) else str(name))
    anns = data["annotations"]
    if not isinstance(anns, list):
        raise _fail(source, "annotations", f"expected a list, got {_kind(anns)}")
    masks = None
    try:
        img_idx = _index_of(image_ids, _int_column(anns, "image_id"))
        cat_idx = _index_of(category_ids, _int_column(anns, "category_id"))
        if segm:
            masks = _gt_masks(anns, img_idx, sizes)
            bbox = _optional_bbox_column(anns, masks)
        else:
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
        # where the annotation gives none: the box area, or for masks the mask area
        if segm and not present.all():
            area = np.zeros(len(anns))
            area[~present] = mask_area(masks[~present])
        else:
            area = bbox[:, 2] * bbox[:, 3]
        area[present] = values
        if not np.isfinite(area).all() or (area < 0).any():
            raise ValueError("area")
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, OverflowError):
        hw = {int(i): (int(h), int(w)) for i, (h, w) in zip(image_ids, sizes)} if segm else None
        raise _slow_scan(check_annotation, anns, source, set(image_ids.tolist()), set(category_ids.tolist()),
                         hw) from None
    boxes = Boxes(image=img_idx, category=cat_idx, boxes=bbox, area=area, crowd=crowd, masks=masks)
    return GroundTruth(image_ids, category_ids, names, boxes, source, sizes)


def _optional_bbox_column(items: list, masks: np.ndarray) -> np.ndarray:
    """The items' bboxes; where one has none, its mask's bounding box."""
    has = np.array(["bbox" in it for it in items], dtype=bool)
    if has.all():
        return _bbox_column(items)
    bbox = np.zeros((len(items), 4))
    bbox[has] = _bbox_column([it for it in items if "bbox" in it]).reshape(-1, 4)
    bbox[~has] = np.asarray(mask_utils().toBbox(masks[~has].tolist()), dtype=np.float64).reshape(-1, 4)
    return bbox


def _det_masks(data: list, img_idx: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The detections' compressed RLEs as an object array; ValueError unless each is
    ``{"size": [height, width] of its image, "counts": str}``."""
    segs = [d["segmentation"] for d in data]
    if not segs:
        return np.empty(0, dtype=object)
    if not set(map(type, segs)) <= {dict} or not set(map(type, map(itemgetter("counts"), segs))) <= {str}:
        raise ValueError("segmentation")
    size = list(map(itemgetter("size"), segs))
    # two ints each (a size that is not a list has no len, or yields no ints)
    if set(map(len, size)) != {2} or not set(map(type, chain.from_iterable(size))) <= {int}:
        raise ValueError("size")
    size = np.fromiter(chain.from_iterable(size), dtype=np.int64, count=2 * len(size)).reshape(-1, 2)
    if (size != sizes[img_idx]).any():
        raise ValueError("size")
    return np.fromiter(segs, dtype=object, count=len(segs))


def detections_from_list(data, gt: GroundTruth, source: str = "detections", iou_type: str = "bbox") -> Boxes:
    """Check a COCO results list (image_id, category_id, bbox, score per item) against ``gt``.

    With ``iou_type="segm"`` each item needs a ``segmentation`` (a compressed RLE of its image's
    size, in ``masks``) and ``bbox`` may be omitted; the area is the box area where every item has
    a bbox, else the mask area (pycocotools' ``loadRes`` rule), and ``boxes`` is then None (the
    boxes are not needed to match masks)."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"unknown iou_type {iou_type!r}; known: {', '.join(IOU_TYPES)}")
    if not isinstance(data, list):
        raise DataError(f"{source}: expected a JSON list of detections, got {_kind(data)}")
    images, cats = gt.image_ids, gt.category_ids
    segm = iou_type == "segm"
    if segm and gt.image_sizes is None:
        raise ValueError("mask evaluation needs a ground truth read with iou_type='segm'")
    masks = None
    try:
        img_idx = _index_of(images, _int_column(data, "image_id"))
        cat_idx = _index_of(cats, _int_column(data, "category_id"))
        if segm:
            masks = _det_masks(data, img_idx, gt.image_sizes)
            has_bbox = ["bbox" in d for d in data]
            if all(has_bbox):
                bbox = _bbox_column(data)
            else:  # checked where given, not used: the area is the mask area then
                _bbox_column([d for d, has in zip(data, has_bbox) if has])
                bbox = None
        else:
            bbox = _bbox_column(data)
        score = _number_column(data, "score")
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, OverflowError):
        hw = {int(i): (int(h), int(w)) for i, (h, w) in zip(images, gt.image_sizes)} if segm else None
        raise _slow_scan(_check_detection, data, source, set(images.tolist()), set(cats.tolist()), gt.source,
                         hw) from None
    area = mask_area(masks) if bbox is None else bbox[:, 2] * bbox[:, 3]
    return Boxes(image=img_idx, category=cat_idx, boxes=bbox, area=area, scores=score, masks=masks)


def evaluate_coco(gt_data, dets_data, params: CocoParams | None = None, *,
                  gt_source: str = "ground truth", dets_source: str = "detections",
                  iou_type: str = "bbox") -> CocoResult:
    """COCO evaluation of parsed JSON, a ground-truth dict and a results list: boxes
    (``iou_type="bbox"``) or masks (``"segm"``)."""
    gt = ground_truth_from_dict(gt_data, gt_source, iou_type)
    dt = detections_from_list(dets_data, gt, dets_source, iou_type)
    return evaluate(gt.boxes, dt, gt.image_ids.size, gt.category_ids, gt.category_names, params, iou_type)


def evaluate_files(gt_path: str | Path, dets_path: str | Path, params: CocoParams | None = None,
                   iou_type: str = "bbox") -> CocoResult:
    """COCO evaluation of a ground-truth JSON file and a detections (results) JSON file:
    boxes (``iou_type="bbox"``) or masks (``"segm"``)."""
    if iou_type not in IOU_TYPES:  # before reading what may be large files
        raise ValueError(f"unknown iou_type {iou_type!r}; known: {', '.join(IOU_TYPES)}")
    gt_data = read_json(gt_path)
    dets_data = read_json(dets_path)
    return evaluate_coco(gt_data, dets_data, params, gt_source=str(gt_path), dets_source=str(dets_path),
                         iou_type=iou_type)
