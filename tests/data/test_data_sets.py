"""D10: the shapes, coco and segmentation data sets and their sample format."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from helpers_data import shapes_recipe, write_coco, write_png

from trainlab.data import build_data
from trainlab.errors import DataError, RecipeError
from trainlab.recipe import load_recipe


def test_shapes_samples_carry_boxes_and_masks_as_tv_tensors():
    """D10: shapes yields uint8 images and targets with BoundingBoxes, instance Masks and a semantic Mask;
    each box is the extent of its mask (torchvision.ops.masks_to_boxes, +1 for pixel edges)."""
    from torchvision import tv_tensors
    from torchvision.ops import masks_to_boxes

    bundle = build_data(shapes_recipe(), annotations=True)
    assert bundle.info.input_shape == (3, 32, 32) and bundle.info.num_classes == 4
    assert bundle.info.class_names == ["circle", "square", "triangle", "star"]
    for i in range(10):
        x, y = bundle.train.load(i)
        assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)
        assert isinstance(y["boxes"], tv_tensors.BoundingBoxes) and tuple(y["boxes"].canvas_size) == (32, 32)
        assert isinstance(y["masks"], tv_tensors.Mask) and isinstance(y["semantic"], tv_tensors.Mask)
        masks = y["masks"].bool()
        assert masks.shape[0] == len(y["boxes"]) == len(y["labels"]) >= 1
        ref = masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])
        assert torch.equal(y["boxes"].as_subclass(torch.Tensor), ref)
        assert int(masks.sum(0).max()) == 1, "instance masks overlap"
        for k in range(len(masks)):  # semantic = class + 1 on every instance pixel, 0 elsewhere
            assert bool((y["semantic"][masks[k]] == y["labels"][k] + 1).all())
        assert bool((y["semantic"][~masks.any(0)] == 0).all())
        assert int(y["label"]) in y["labels"].tolist()
        assert int(y["label"]) == int(bundle.train.targets[i])


def test_shapes_are_deterministic_from_the_seed():
    """D10: the same seed draws the same images, another seed other images."""
    a = build_data(shapes_recipe()).train
    b = build_data(shapes_recipe()).train
    c = build_data(shapes_recipe("seed=5")).train
    assert all(torch.equal(a.load(i)[0], b.load(i)[0]) for i in range(5))
    assert not all(torch.equal(a.load(i)[0], c.load(i)[0]) for i in range(5))
    assert len({int(t) for t in a.targets}) == 4  # every class appears


def test_shapes_classification_drops_annotations_unless_needed():
    """D10: classification loads (image, label); mosaic or annotations=True keep the target dict."""
    plain = build_data(shapes_recipe())
    assert plain.train.load(0)[1].dim() == 0
    assert isinstance(build_data(shapes_recipe("data.augment=[mosaic]")).train.load(0)[1], dict)


def test_shapes_options_are_validated():
    """D10: typed data.shapes options fail with the field named."""
    with pytest.raises(RecipeError, match="data.shapes"):
        load_recipe(None, ["data.name=shapes", "data.shapes.min_objects=4", "data.shapes.max_objects=2"])
    with pytest.raises(RecipeError, match="data.shapes.noise"):
        load_recipe(None, ["data.name=shapes", "data.shapes.noise=2"])
    with pytest.raises(RecipeError, match="data.shapes.image_size"):
        build_data(load_recipe(None, ["data.name=shapes", "data.image_size=16"]))


@pytest.mark.parametrize("overrides, line", [
    (["data.name=shapes", "data.root=somewhere"],
     "data.root: the shapes data set does not use it (it uses: data.channels, data.shapes)"),
    (["data.name=shapes", "data.image_size=16"],
     "data.image_size: the shapes data set does not use it (it uses: data.channels, data.shapes); it draws its "
     "images at data.shapes.image_size; set that instead"),
    (["data.coco={}"], "data.coco: the digits data set does not use it (it uses no data-set option)"),
    (["data.channels=3"], "data.channels: the digits data set does not use it (it uses no data-set option)"),
    (["data.name=coco", "data.root=x.json", "data.skip_corrupt=true"],
     "data.skip_corrupt: the coco data set does not use it (it uses: data.root, data.image_size, data.channels, "
     "data.coco, data.max_pixels, data.follow_links)"),
    (["data.name=segmentation", "data.root=nowhere", "data.skip_corrupt=true"],
     "data.skip_corrupt: the segmentation data set does not use it (it uses: data.root, data.image_size, "
     "data.channels, data.segmentation)"),
    (["data.name=folder", "data.root=nowhere", "data.shapes={count: 10}"],
     "data.shapes: the folder data set does not use it (it uses: data.root, data.image_size, data.channels, "
     "data.skip_corrupt, data.max_pixels, data.follow_links, data.eval_resize, data.eval_crop_pct, "
     "data.stats_sample)"),
    (["data.name=text", "data.segmentation={}"],
     "data.segmentation: the text data set does not use it (it uses: data.root, data.text)"),
])
def test_data_set_options_it_does_not_use_are_refused(overrides, line):
    """D10: a data-set option the chosen data set would ignore (data.root for shapes, another data set's
    section, data.skip_corrupt where nothing is skipped) is one RecipeError line, raised before the data
    set is read (the roots above do not exist)."""
    with pytest.raises(RecipeError) as err:
        build_data(load_recipe(None, overrides))
    assert str(err.value) == line


def test_coco_boxes_masks_and_dominant_label(tmp_path):
    """D10: COCO bbox [x, y, w, h] becomes XYXY, polygons and RLE become masks (pycocotools as the
    oracle), the image label is the category with the largest area."""
    from pycocotools import mask as mask_utils

    rle_mask = np.zeros((20, 24), np.uint8, order="F")
    rle_mask[3:9, 5:17] = 1
    rle_mask[12:15, 2:4] = 1
    rle = mask_utils.encode(rle_mask)
    path = write_coco(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"].append({"id": 4, "image_id": 12, "category_id": 7, "bbox": [2, 3, 15, 12],
                                "segmentation": {"size": [20, 24], "counts": rle["counts"].decode()}})
    path.write_text(json.dumps(data))
    recipe = load_recipe(None, ["data.name=coco", f"data.root={path}", "data.split.val=0", "data.split.test=0", "data.batch_size=2"])
    bundle = build_data(recipe, annotations=True)
    info = bundle.info
    assert info.class_names == ["dog", "cat"] and info.input_shape == (3, 20, 24)
    samples = {bundle.train.describe(i).split("/")[-1]: bundle.train.load(i) for i in range(len(bundle.train))}
    x, y = samples["im0.png"]
    assert int(y["label"]) == 1  # the cat covers 120 px, the dog 16 px
    assert y["boxes"].as_subclass(torch.Tensor).tolist() == [[2, 2, 6, 6], [8, 4, 20, 14]]
    assert y["labels"].tolist() == [0, 1]
    ref = mask_utils.decode(mask_utils.frPyObjects(data["annotations"][1]["segmentation"], 20, 24)).max(2)
    assert np.array_equal(y["masks"][1].numpy(), ref)  # pycocotools' own rasterisation
    _, y = samples["im2.png"]
    assert np.array_equal(y["masks"][0].numpy(), mask_utils.decode(rle))  # RLE decoding is exact


@pytest.mark.parametrize("change, message", [
    (lambda d: d["annotations"][1].update(bbox=[1, 2, 3]), "annotations[1].bbox: expected 4 numbers"),
    (lambda d: d["annotations"][0].update(image_id=99),
     "annotations[0].image_id: 99 is not the id of any entry in images"),
    (lambda d: d["annotations"][1].update(bbox=[1, 2, float("inf"), 3]),
     "annotations[1].bbox[2]: expected a finite number, got inf"),
    (lambda d: d["annotations"][1].update(area=float("nan")), "annotations[1].area: expected a finite number, got nan"),
    (lambda d: d["annotations"][0].update(segmentation=[[2, 2, 6, 2, float("-inf"), 6]]),
     "annotations[0] (id 1).segmentation[0][4]: expected a finite number, got -inf"),
    (lambda d: d["annotations"][1].update(id=1), "annotations[1].id: duplicate annotation id 1"),
    (lambda d: d["annotations"][2].update(category_id=5), "annotations[2].category_id"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [20, 24], "counts": [5, 5]}),
     "annotations[0] (id 1).segmentation.counts: run lengths sum to 10, expected height x width = 20 x 24 = 480"),
    (lambda d: d["categories"].append({"id": 3, "name": "x"}), "categories[2].id: duplicate category id 3"),
    (lambda d: d["images"][1].pop("file_name"), "images[1].file_name"),
    (lambda d: d["images"][0].update(file_name="missing.png"), "images[0].file_name: 'missing.png' not found"),
])
def test_coco_errors_name_the_json_path(tmp_path, change, message):
    """D10: a broken COCO file fails with the file and the JSON path of the problem; NaN and infinities
    (which Python's json reads from NaN/Infinity) are refused as in the COCO evaluation (E3)."""
    path = write_coco(tmp_path)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    recipe = load_recipe(None, ["data.name=coco", f"data.root={path}"])
    with pytest.raises(DataError, match=re.escape(message)) as err:
        build_data(recipe)
    assert str(err.value).startswith(f"{path}: ")


def test_coco_json_reading_errors(tmp_path):
    """D10: the coco data set reads its file like `trainlab eval-detections` does: errors name the file."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(DataError, match=r"bad.json: not valid JSON \(line 1, column 13"):
        build_data(load_recipe(None, ["data.name=coco", f"data.root={bad}"]))
    bad.write_bytes(b'{"images": "\xff"}')
    with pytest.raises(DataError, match=r"bad.json: not valid JSON \(not UTF-8 text\)"):
        build_data(load_recipe(None, ["data.name=coco", f"data.root={bad}"]))
    with pytest.raises(DataError, match=r"data.root: .* is not a file"):
        build_data(load_recipe(None, ["data.name=coco", f"data.root={tmp_path}"]))


def test_segmentation_folders(tmp_path):
    """D10: images/ and masks/ PNG: semantic Mask per sample, label = dominant non-background class."""
    rng = np.random.default_rng(0)
    for i in range(4):
        write_png(tmp_path / "images" / f"{i}.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        mask = np.zeros((16, 16), np.uint8)
        mask[:8, :] = 1 + i % 2
        mask[8:10, :3] = 255
        write_png(tmp_path / "masks" / f"{i}.png", mask)
    recipe = load_recipe(None, ["data.name=segmentation", f"data.root={tmp_path}", "data.split.val=0",
                                "data.split.test=0", "data.batch_size=2"])
    bundle = build_data(recipe, annotations=True)
    assert bundle.info.class_names == ["class_0", "class_1", "class_2"]
    assert sorted(bundle.train.targets.tolist()) == [1, 1, 2, 2]
    x, y = bundle.train.load(0)
    assert x.shape == (3, 16, 16) and y["semantic"].shape == (16, 16)
    (tmp_path / "masks" / "3.png").unlink()
    with pytest.raises(DataError, match="3.png: no mask"):
        build_data(recipe)
    write_png(tmp_path / "masks" / "3.png", np.zeros((8, 16), np.uint8))
    with pytest.raises(DataError, match="mask is 8x16 but"):
        build_data(recipe)
