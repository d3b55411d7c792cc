"""The ``coco`` data set: a COCO-style JSON file and its images (D10).

``data.root`` is the JSON file; image files are looked up by ``file_name`` in ``data.coco.images``
(default: the JSON file's folder). The file is checked before anything runs, and every problem
names the file and its JSON path, e.g. ``ann.json: annotations[3].bbox: expected 4 numbers, got 3``.

Each sample carries the annotations as tv_tensors (see :mod:`trainlab.data.samples`): boxes
(COCO's [x, y, w, h] becomes XYXY in the same pixel-edge coordinates), one label per box, instance
masks (when every annotation has a segmentation) and a semantic mask. The masks are those of
``pycocotools.coco.COCO.annToMask``: pycocotools.mask rasterises polygons and decodes RLE (issue
17). A polygon of fewer than 3 points, RLE runs that do not sum to its height x width and an RLE
size other than its image's are errors naming the file, the annotation and its id, e.g.
``ann.json: annotations[3] (id 17).segmentation[0]: a polygon needs at least 3 points (6 numbers),
got 4 numbers``.

For classification, an image's class is its dominant category: the one covering the largest total
area (the annotation's ``area``, else its mask or box area). Images without annotations have no
class: classification skips them (and says how many); detection and segmentation train on them as
background. A box or polygon point reaching more than a pixel outside its image is an error naming
the annotation and the image. A ``file_name`` that leads outside the images folder (``../``, an
absolute path, a symbolic link) is an error unless ``data.follow_links=true``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from ..errors import DataError, show, show_path
from ..registry import DATASETS
from .bundle import DataInfo, SampleSource
from .images import DEFAULT_MAX_PIXELS, common_shape, inspect_image, read_image
from .samples import dominant_class, make_target


# ----------------------------------------------------------------------------- masks
# The masks are COCO's own: pycocotools.mask rasterises the polygons and encodes and decodes the
# RLE, as pycocotools.coco.COCO.annToRLE and annToMask do, so that trainlab trains on exactly the
# masks that COCO's evaluation scores.
def segmentation_rle(seg: Any, height: int, width: int) -> dict[str, Any]:
    """COCO's compressed RLE ``{"size": [H, W], "counts": str | bytes}`` of a checked segmentation
    of an (H, W) image: polygons ``[[x1, y1, x2, y2, ...], ...]`` (pixel-edge coordinates)
    rasterised and merged into their union, uncompressed RLE ``{"size", "counts": [runs]}``
    compressed, compressed RLE (counts a string) as it is."""
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg["counts"], list):
        return mask_utils.frPyObjects(seg, height, width)
    return seg


def segmentation_to_mask(seg: Any, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 mask (1 inside) of a checked segmentation of an (H, W) image."""
    return mask_utils.decode(segmentation_rle(seg, height, width))


# ------------------------------------------------------------------------------ checks
# The reading of the file and the checks of each annotation (references, bbox, area, iscrowd) are
# those of the COCO evaluation (trainlab.evaluate.coco_json); this module adds what training
# needs besides: image file names and sizes, category names, unique ids and segmentations.
def rle_counts_from_string(text: str) -> list[int]:
    """Run lengths of COCO's compressed RLE string, read only to check them (pycocotools' decoder
    trusts them: runs that do not sum to H x W make it write outside its mask).

    Each run length is written in 5-bit groups, least significant first, as characters offset by
    48; bit 0x20 of a character says another group follows, bit 0x10 of the last group is the sign.
    From the third run on, the value is stored as the difference to the run two places before.
    """
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise ValueError("truncated RLE string")
            c = ord(text[pos]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {text[pos]!r} cannot appear in an RLE string")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and (c & 0x10):
                value -= 1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def _annotation_path(i: int, ann: dict[str, Any]) -> str:
    """``annotations[i] (id N)``: the JSON path of an annotation and, where it has one, its id."""
    return f"annotations[{i}]" + (f" (id {ann['id']})" if "id" in ann else "")


def _check_segmentation(seg: Any, source: str, where: str) -> None:
    """Raise DataError ``{source}: {where}...: problem`` unless ``seg`` is a list of polygons of at
    least 3 finite points or an RLE ``{size: [H, W], counts}`` whose runs sum to H x W (that the
    size is its image's is checked where the image is read)."""
    from ..evaluate.coco_json import describe_value, is_int, is_number

    def fail(path: str, problem: str) -> DataError:
        return DataError(f"{source}: {path}: {problem}")

    if isinstance(seg, list):
        if not seg:
            raise fail(where, "empty polygon list (expected [[x1, y1, x2, y2, x3, y3, ...], ...])")
        for j, poly in enumerate(seg):
            if not isinstance(poly, list):
                raise fail(f"{where}[{j}]", "expected a polygon [x1, y1, x2, y2, x3, y3, ...]")
            for k, v in enumerate(poly):
                if not is_number(v):
                    raise fail(f"{where}[{j}][{k}]", f"expected a finite number, got {describe_value(v)}")
            if len(poly) < 6:
                raise fail(f"{where}[{j}]", f"a polygon needs at least 3 points (6 numbers), got {len(poly)} numbers")
            if len(poly) % 2:
                raise fail(f"{where}[{j}]", f"a polygon needs x, y pairs (an even count of numbers), got "
                                            f"{len(poly)} numbers")
        return
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(is_int(v) and v > 0 for v in size)):
            raise fail(f"{where}.size", "expected [height, width] of the RLE mask")
        if isinstance(counts, str):
            try:
                runs = rle_counts_from_string(counts)
            except ValueError as err:
                raise fail(f"{where}.counts", str(err)) from None
        elif isinstance(counts, list) and all(is_int(v) for v in counts):
            runs = counts
        else:
            raise fail(f"{where}.counts", "expected an RLE string or a list of run lengths")
        negative = next((k for k, r in enumerate(runs) if r < 0), None)
        if negative is not None:
            raise fail(f"{where}.counts", f"run {negative} has length {runs[negative]} (must be >= 0)")
        h, w = size
        if sum(runs) != h * w:
            raise fail(f"{where}.counts", f"run lengths sum to {sum(runs)}, expected height x width = {h} x {w} "
                                          f"= {h * w}")
        return
    raise fail(where, "expected polygons (list of [x1, y1, ...]) or RLE {size, counts}")


def check_coco(data: Any, path: Path) -> None:
    """Raise DataError naming the file and the JSON path of the first problem in a COCO-style mapping."""
    from ..evaluate.coco_json import check_annotation, describe_value, is_int

    source = show_path(path)

    def fail(where: str, problem: str) -> DataError:
        return DataError(f"{source}: {where}: {problem}")

    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise fail(key, "expected a list" + ("" if key in data else " (missing)"))
    if not data["images"]:
        raise fail("images", "the list is empty")
    if not data["categories"]:
        raise fail("categories", "the list is empty")
    images: dict[int, dict[str, Any]] = {}
    for i, im in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(im, dict):
            raise fail(where, "expected an object with id and file_name")
        if not is_int(im.get("id")):
            got = " (missing)" if "id" not in im else f", got {describe_value(im['id'])}"
            raise fail(f"{where}.id", f"expected an integer{got}")
        if im["id"] in images:
            raise fail(f"{where}.id", f"duplicate image id {im['id']}")
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise fail(f"{where}.file_name", "expected a file name")
        for key in ("width", "height"):
            if key in im and not (is_int(im[key]) and im[key] > 0):
                raise fail(f"{where}.{key}", f"expected a positive integer, got {describe_value(im[key])}")
        images[im["id"]] = im
    cats: set[int] = set()
    for i, cat in enumerate(data["categories"]):
        where = f"categories[{i}]"
        if not isinstance(cat, dict) or not is_int(cat.get("id")):
            raise fail(f"{where}.id", "expected an integer")
        if cat["id"] in cats:
            raise fail(f"{where}.id", f"duplicate category id {cat['id']}")
        if not isinstance(cat.get("name"), str) or not cat["name"]:
            raise fail(f"{where}.name", "expected a name")
        cats.add(cat["id"])
    ids: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        check_annotation(source, i, ann, images, cats)
        where = f"annotations[{i}]"
        if "id" in ann:
            if not is_int(ann["id"]):
                raise fail(f"{where}.id", f"expected an integer, got {describe_value(ann['id'])}")
            if ann["id"] in ids:
                raise fail(f"{where}.id", f"duplicate annotation id {ann['id']}")
            ids.add(ann["id"])
        if ann.get("segmentation") is not None:
            _check_segmentation(ann["segmentation"], source, f"{_annotation_path(i, ann)}.segmentation")


# ------------------------------------------------------------------------------ source
class CocoSource(SampleSource):
    """Images of a COCO file with their annotations, decoded on demand."""

    def __init__(self, records: list[dict[str, Any]], channels: int, size: tuple[int, int] | None, masks: bool,
                 annotated: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.records = records
        self.annotated = annotated
        self.max_pixels = max_pixels
        self.channels = channels
        self.size = size
        self.masks = masks
        # an unannotated (background) image is stratified with class 0
        self.targets = torch.tensor([r["label"] or 0 for r in records], dtype=torch.long)

    def load(self, index: int):
        r = self.records[index]
        if not self.annotated:
            return read_image(r["path"], self.channels, self.size, self.max_pixels), torch.tensor(r["label"])
        image = read_image(r["path"], self.channels, max_pixels=self.max_pixels)
        h, w = image.shape[1:]
        anns = r["annotations"]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        labels = torch.tensor([a["class"] for a in anns], dtype=torch.long)
        masks = semantic = None
        if self.masks:
            decoded = [segmentation_to_mask(a["segmentation"], h, w) for a in anns]
            masks = torch.from_numpy(np.stack(decoded) if anns else np.zeros((0, h, w), np.uint8))
            semantic = torch.zeros(h, w, dtype=torch.uint8)
            # Paint large objects first so that small ones on top of them stay visible.
            for k in sorted(range(len(anns)), key=lambda k: -float(masks[k].sum())):
                semantic[masks[k].bool()] = int(labels[k]) + 1
        target = make_target(r["label"] or 0, boxes, labels, (h, w), masks=masks, semantic=semantic)
        if self.size is not None and (h, w) != tuple(self.size):
            from .samples import resize_sample

            image, target = resize_sample(image, target, self.size)
        return image, target

    def subset(self, indices: torch.Tensor) -> CocoSource:
        return CocoSource([self.records[int(i)] for i in indices], self.channels, self.size, self.masks,
                          self.annotated, self.max_pixels)

    def labelled(self) -> CocoSource:
        keep = [r for r in self.records if r["label"] is not None]
        if len(keep) < len(self.records):
            print(f"data: skipped {len(self.records) - len(keep)} image(s) without annotations (they have no class "
                  "to classify by)", file=sys.stderr)
        return CocoSource(keep, self.channels, self.size, self.masks, self.annotated, self.max_pixels)

    def labels_only(self) -> CocoSource:
        return CocoSource(self.records, self.channels, self.size, self.masks, False, self.max_pixels)

    def describe(self, index: int) -> str:
        return show_path(self.records[index]["path"])


def _polygon_outside(seg: Any, height: int, width: int) -> tuple[int, float, float] | None:
    """(polygon index, x, y) of the first point of a checked segmentation lying more than a pixel
    outside an (H, W) image, as boxes may not; None if there is none, or it is an RLE. Besides
    being no part of the image, such a point costs pycocotools' rasteriser memory in proportion
    to its distance (a point at 1e9 is a segmentation fault)."""
    if not isinstance(seg, list):
        return None
    for j, poly in enumerate(seg):
        xs, ys = np.asarray(poly[0::2], dtype=np.float64), np.asarray(poly[1::2], dtype=np.float64)
        out = (xs < -1) | (xs > width + 1) | (ys < -1) | (ys > height + 1)
        if out.any():
            k = int(np.argmax(out))
            return j, float(xs[k]), float(ys[k])
    return None


def _area(ann: dict[str, Any], height: int, width: int) -> float:
    """An annotation's area in an (H, W) image: its ``area``, else its mask's, else its box's."""
    if "area" in ann:
        return float(ann["area"])
    if ann.get("segmentation") is not None:
        return float(mask_utils.area(segmentation_rle(ann["segmentation"], height, width)))
    return float(ann["bbox"][2] * ann["bbox"][3])


@DATASETS.register("coco", help="COCO-style JSON (data.root) with boxes and polygon/RLE masks; class = dominant",
                   uses=("root", "image_size", "channels", "coco", "max_pixels", "follow_links"))
def coco(cfg, seed: int):
    from ..recipe import CocoConfig

    from ..evaluate.coco_json import read_json

    cc = cfg.coco or CocoConfig()
    if not cfg.root:
        raise DataError("data.root: the coco data set needs data.root=<annotations JSON file>")
    path = Path(cfg.root).expanduser()
    if not path.is_file():
        raise DataError(f"data.root: {str(path)!r} is not a file (expected a COCO-style JSON file)")
    data = read_json(path)
    check_coco(data, path)
    src = show_path(path)
    folder = Path(cc.images).expanduser() if cc.images else path.parent
    if not folder.is_dir():
        raise DataError(f"data.coco.images: {str(folder)!r} is not a folder")
    inside = folder.resolve()
    cats = sorted(data["categories"], key=lambda c: c["id"])
    class_of = {c["id"]: k for k, c in enumerate(cats)}
    names = [c["name"] for c in cats]
    by_image: dict[int, list[dict[str, Any]]] = {}
    for j, ann in enumerate(data["annotations"]):
        record = {**ann, "class": class_of[ann["category_id"]], "where": f"annotations[{j}]",
                  "segmentation_path": f"{_annotation_path(j, ann)}.segmentation"}
        by_image.setdefault(ann["image_id"], []).append(record)
    with_masks = bool(data["annotations"]) and all(a.get("segmentation") is not None for a in data["annotations"])
    records, headers, where, skipped = [], [], [], 0
    for i, im in enumerate(data["images"]):
        file = folder / im["file_name"]
        # '../', an absolute name or a symbolic link would read any file the user can: not unasked
        if not cfg.follow_links and not file.resolve().is_relative_to(inside):
            raise DataError(f"{src}: images[{i}].file_name: {show(im['file_name'])} leads outside the images folder "
                            f"{show_path(folder)} (to {show_path(file.resolve())}); set data.follow_links=true to "
                            "read it")
        if not file.is_file():
            raise DataError(f"{src}: images[{i}].file_name: {show(im['file_name'])} not found in {show_path(folder)}")
        mode, hw = inspect_image(file, cfg.max_pixels)
        if "height" in im and "width" in im and (im["height"], im["width"]) != hw:
            raise DataError(
                f"{src}: images[{i}]: {show_path(file)} is {hw[0]}x{hw[1]} but the JSON says height "
                f"{im['height']}, width {im['width']}"
            )
        anns, areas = [], []
        for a in by_image.get(im["id"], []):
            seg = a.get("segmentation")
            if isinstance(seg, dict) and tuple(seg["size"]) != hw:
                raise DataError(f"{src}: {a['segmentation_path']}.size: the RLE mask is {seg['size'][0]}x"
                                f"{seg['size'][1]} but its image {show_path(im['file_name'])} is {hw[0]}x{hw[1]} "
                                "(height x width)")
            outside = _polygon_outside(seg, *hw)
            if outside is not None:
                j, x, y = outside
                raise DataError(f"{src}: {a['segmentation_path']}[{j}]: point ({x:g}, {y:g}) lies outside image "
                                f"{show_path(im['file_name'])} ({hw[1]}x{hw[0]}, width x height)")
            area = _area(a, *hw)
            if area >= cc.min_area:
                anns.append(a)
                areas.append(area)
        for a in anns:
            x, y, bw, bh = a["bbox"]
            # COCO's own files overshoot by a fraction of a pixel now and then: that is clipped
            if x < -1 or y < -1 or x + bw > hw[1] + 1 or y + bh > hw[0] + 1:
                raise DataError(f"{src}: {a['where']}.bbox: box {a['bbox']} lies outside image "
                                f"{show_path(im['file_name'])} ({hw[1]}x{hw[0]}, width x height)")
        if not anns:
            skipped += 1
        # an image without annotations is background: a detector or a segmenter learns from it,
        # a classifier has no class for it (CocoSource.labelled drops it)
        label = dominant_class(torch.tensor([a["class"] for a in anns]), torch.tensor(areas)) \
            if anns else None
        records.append({"path": file, "annotations": anns, "label": label})
        headers.append((mode, hw))
        where.append(f"images[{i}] ({show_path(im['file_name'])})")
    if len(records) - skipped < 2:
        raise DataError(f"{src}: {len(records) - skipped} image(s) have annotations; at least 2 are needed")
    channels, size = common_shape(cfg.image_size, cfg.channels, headers, where)
    info = DataInfo(
        input_shape=(channels, size[0], size[1]),
        num_classes=len(names),
        class_names=names,
        annotations=("boxes", "masks", "semantic") if with_masks else ("boxes",),
        max_value=255.0,
        extra={"root": str(path), "semantic_classes": ["background", *names], "unannotated_skipped": skipped,
               "category_ids": [c["id"] for c in cats],
               "label": "dominant category by area"},
    )
    return CocoSource(records, channels, size, with_masks, max_pixels=cfg.max_pixels), info
