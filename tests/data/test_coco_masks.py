"""D10, E3 (issue 17): COCO masks are pycocotools' own, and bad segmentations stop a run before it starts.

The reference masks come from ``pycocotools.coco.COCO(annotation_file).annToMask(ann)`` on the
file the test writes, independently of trainlab's loader.
"""
from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pytest
from conftest import FAST
from helpers_data import write_png
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from trainlab.cli import main
from trainlab.data import build_data
from trainlab.recipe import load_recipe

H, W = 23, 31  # odd and not square, so that a transposed or shifted mask cannot pass


def _star(cx: float, cy: float, r_out: float, r_in: float, n: int = 5) -> list[float]:
    """A non-convex polygon [x1, y1, ...] with fractional vertices."""
    angles = np.arange(2 * n) * np.pi / n
    radii = np.where(np.arange(2 * n) % 2 == 0, r_out, r_in)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).round(2).flatten().tolist()


def _uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of an (H, W) 0/1 mask: column-major runs, starting with zeros."""
    flat = mask.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


def _blobs(rng) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    mask = np.zeros((H, W), np.uint8)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(2, 7)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    return mask


def _write(root, images: int = 4, *, sizes: bool = True):
    """A COCO folder of ``images`` H x W images; each image has a single-polygon star, a polygon in
    three (overlapping) parts, an uncompressed RLE and a compressed RLE, of two categories."""
    rng = np.random.default_rng(17)
    data = {"images": [], "annotations": [], "categories": [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}]}
    for i in range(images):
        write_png(root / f"im{i}.png", rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        size = {"height": H, "width": W} if sizes else {}
        data["images"].append({"id": 100 + i, "file_name": f"im{i}.png", **size})
        star = _star(*rng.uniform(8, 15, 2), 7.3, 3.1)
        parts = [_star(*rng.uniform(3, 20, 2), 4.6, 2.2, n=3) for _ in range(2)] + [[20.5, 1.2, 30.7, 3.3, 24.1, 9.8]]
        uncompressed = _uncompressed(_blobs(rng))
        compressed = {"size": [H, W], "counts": mask_utils.encode(np.asfortranarray(_blobs(rng)))["counts"].decode()}
        for k, seg in enumerate([[star], parts, uncompressed, compressed]):
            data["annotations"].append({"id": 1000 + 10 * i + k, "image_id": 100 + i, "category_id": (5, 9)[k % 2],
                                        "bbox": [0, 0, W, H], "area": 10.0, "iscrowd": 0, "segmentation": seg})
    path = root / "ann.json"
    path.write_text(json.dumps(data))
    return path


def _samples(path, *overrides):
    recipe = load_recipe(None, ["data.name=coco", f"data.root={path}", "data.split.val=0", "data.split.test=0",
                                "data.batch_size=2", *overrides])
    bundle = build_data(recipe, annotations=True, statistics=False)
    return {bundle.train.describe(i).split("/")[-1]: bundle.train.load(i) for i in range(len(bundle.train))}


@pytest.mark.parametrize("sizes", [True, False], ids=["json-sizes", "no-json-sizes"])
def test_masks_equal_pycocotools_ann_to_mask(tmp_path, sizes):
    """D10, E3 (issue 17): every instance mask (a polygon, a polygon in several parts, an uncompressed
    and a compressed RLE) equals pycocotools' COCO.annToMask of the same annotation pixel for pixel,
    and the semantic mask is painted from exactly those masks."""
    path = _write(tmp_path, sizes=sizes)
    samples = _samples(path)
    # annToMask reads the image size from the JSON: give it the file with sizes
    ref_file = _write(tmp_path / "ref", sizes=True) if not sizes else path
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ref_file))
    for image_id, img in coco.imgs.items():
        _, y = samples[img["file_name"]]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert tuple(y["masks"].shape) == (len(anns), H, W)
        for k, ann in enumerate(anns):
            ours = y["masks"][k].numpy()
            assert ours.dtype == np.uint8 and np.array_equal(ours, coco.annToMask(ann)), ann["id"]
        assert ((y["semantic"].numpy() > 0) == np.any(y["masks"].numpy(), axis=0)).all()


def test_area_of_an_annotation_without_one_is_its_mask_area(tmp_path):
    """D10 (issue 17): without an ``area``, an annotation's area (dominant class, data.coco.min_area)
    is its mask's as pycocotools.mask.area counts it, not its box's: a thin diagonal sliver with a
    big box loses to a small square."""
    rng = np.random.default_rng(0)
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "sliver"}, {"id": 2, "name": "square"}]}
    for i in range(2):
        write_png(tmp_path / f"im{i}.png", rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        data["images"].append({"id": i, "file_name": f"im{i}.png", "height": H, "width": W})
        data["annotations"] += [
            {"id": 10 * i + 1, "image_id": i, "category_id": 1, "bbox": [0, 0, 30, 22],
             "segmentation": [[0, 0, 2, 0, 30, 20, 30, 22, 28, 22, 0, 2]]},
            {"id": 10 * i + 2, "image_id": i, "category_id": 2, "bbox": [1, 10, 12, 12],
             "segmentation": [[1, 10, 13, 10, 13, 22, 1, 22]]}]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    sliver = mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(data["annotations"][0]["segmentation"], H, W)))
    square = mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(data["annotations"][1]["segmentation"], H, W)))
    assert sliver < square < 30 * 22
    for _, y in _samples(path).values():
        assert int(y["label"]) == 1  # "square"
    # min_area between the two mask areas drops the sliver
    for _, y in _samples(path, f"data.coco.min_area={(sliver + square) / 2}").values():
        assert y["labels"].tolist() == [1]


def _compressed(mask_shape) -> str:
    m = np.zeros(mask_shape, np.uint8, order="F")
    m[2:5, 3:9] = 1
    return mask_utils.encode(m)["counts"].decode()


BAD = {
    "polygon-2-points": ([[1, 1, 9, 1]],
                         "segmentation[0]: a polygon needs at least 3 points (6 numbers), got 4 numbers"),
    "polygon-odd": ([[1, 1, 9, 1, 9, 9, 1]], "segmentation[0]: a polygon needs x, y pairs (an even count of numbers), "
                                             "got 7 numbers"),
    "second-part-short": ([[1, 1, 9, 1, 9, 9], [2, 2]],
                          "segmentation[1]: a polygon needs at least 3 points (6 numbers), got 2 numbers"),
    "rle-list-sum": ({"size": [H, W], "counts": [5, 10, 600]},
                     f"segmentation.counts: run lengths sum to 615, expected height x width = {H} x {W} = {H * W}"),
    "rle-string-sum": ({"size": [H, W], "counts": _compressed((H, W - 1))},
                       f"segmentation.counts: run lengths sum to {H * (W - 1)}, expected height x width = {H} x {W} "
                       f"= {H * W}"),
    "rle-size": ({"size": [10, 12], "counts": _compressed((10, 12))},
                 f"segmentation.size: the RLE mask is 10x12 but its image im1.png is {H}x{W} (height x width)"),
}


@pytest.mark.parametrize("sizes", [True, False], ids=["json-sizes", "no-json-sizes"])
@pytest.mark.parametrize("case", list(BAD))
def test_bad_segmentation_exits_2_naming_file_annotation_and_problem(tmp_path, capsys, case, sizes):
    """D10, E3 (issue 17): a polygon of fewer than 3 points or an odd count of numbers, RLE runs
    (a list or COCO's compressed string) that do not sum to its height x width, and an RLE size
    other than its image's (whether or not the JSON states the image's size) make `trainlab fit`
    exit 2 with one line naming the file, the annotation's JSON path and id and the problem, and
    write no run."""
    seg, problem = BAD[case]
    path = _write(tmp_path, sizes=sizes)
    data = json.loads(path.read_text())
    data["annotations"][6]["segmentation"] = seg  # image im1.png, annotation id 1012
    path.write_text(json.dumps(data))
    out = tmp_path / "run"
    code = main(["fit", "--quiet", "task=segmentation", "data.name=coco", f"data.root={path}", "data.batch_size=2",
                 "data.split.val=0.25", "data.split.test=0", "model.name=unet", "model.width=4", "model.depth=2",
                 *FAST, "train.epochs=1", f"run.dir={out}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{path}: annotations[6] (id 1012).{problem}" in err, err
    assert not out.exists()


def test_good_segmentations_train(tmp_path):
    """D10 (issue 17): the same recipe on the file without the bad annotation trains (the exits above
    are the annotation's doing)."""
    path = _write(tmp_path)
    out = tmp_path / "run"
    code = main(["fit", "--quiet", "task=segmentation", "data.name=coco", f"data.root={path}", "data.batch_size=2",
                 "data.split.val=0.25", "data.split.test=0", "model.name=unet", "model.width=4", "model.depth=2",
                 *FAST, "train.epochs=1", f"run.dir={out}"])
    assert code == 0 and out.is_dir()


def test_rle_string_reader_reads_pycocotools_strings():
    """D10 (issue 17): the reader that checks compressed RLE runs before pycocotools decodes them
    (pycocotools itself trusts them) reads the runs of pycocotools' own strings."""
    from trainlab.data.coco import rle_counts_from_string

    rng = np.random.default_rng(3)
    for shape in [(37, 53), (1, 1), (300, 2)]:
        m = (rng.random(shape) > 0.6).astype(np.uint8)
        m[0, 0] = 1  # a mask starting with ones: its first run (of zeros) is 0
        runs = rle_counts_from_string(mask_utils.encode(np.asfortranarray(m))["counts"].decode())
        assert runs == _uncompressed(m)["counts"]
    with pytest.raises(ValueError, match=re.escape("character ' ' cannot appear in an RLE string")):
        rle_counts_from_string("12 3")


def test_mask_rcnn_trains_on_a_coco_file_of_polygons_and_rles(tmp_path):
    """K4/M10 (issue 17): task instance_segmentation trains Mask R-CNN on a COCO file whose
    instances are polygons (one part and several), uncompressed and compressed RLEs, and scores
    boxes and masks every epoch."""
    import trainlab

    path = _write(tmp_path, images=6)
    run = trainlab.fit(None, ["task=instance_segmentation", "data.name=coco", f"data.root={path}",
                              "data.batch_size=2", "data.split.val=0.34", "data.split.test=0", "model.name=mask_rcnn",
                              "model.width=4", "model.depth=3", "train.early_stop={patience: 5}",
                              "model.options={levels: 2, fpn_channels: 8, representation: 16, proposals_train: 32, "
                              "proposals_test: 32, rois_per_image: 16, mask_channels: 8, mask_convs: 2}",
                              *FAST, f"run.dir={tmp_path / 'run'}"], quiet=True)
    last = run.epochs()[-1]
    assert last["epoch"] == 2 and {"train_loss_mask", "val_mask_map", "val_map"} <= set(last)
