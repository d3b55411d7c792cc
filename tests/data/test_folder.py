"""D10: the folder data set reads class-per-subfolder PNG/JPEG trees."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from trainlab.data import build_data
from trainlab.errors import DataError
from trainlab.recipe import load_recipe


def make_tree(root, classes=("cat", "dog"), n=6, size=(12, 10), mode="RGB", fmt="png"):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[0], size[1], 3) if mode == "RGB" else size
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(root / c / f"{i}.{fmt}")
    return root


def folder_recipe(root, *extra):
    return load_recipe("digits-cnn", ["data.name=folder", f"data.root={root}", "data.batch_size=4", *extra])


def test_folder_loads_classes_images_and_splits(tmp_path):
    """D10: classes from sub-folder names, uint8 images, a stratified split."""
    root = make_tree(tmp_path / "data", classes=("cat", "dog", "eel"), n=10)
    b = build_data(folder_recipe(root))
    assert b.info.class_names == ["cat", "dog", "eel"]
    assert b.info.input_shape == (3, 12, 10)
    x, y = b.train.load(0)
    assert x.dtype == torch.uint8 and x.shape == (3, 12, 10)
    assert len(b.train) + len(b.val) + len(b.test) == 30
    assert sorted(set(b.test.targets.tolist())) == [0, 1, 2]


def test_folder_resizes_mixed_sizes_and_modes_with_image_size(tmp_path):
    root = make_tree(tmp_path / "d", n=4)
    Image.fromarray(np.zeros((20, 30), np.uint8), "L").save(root / "cat" / "gray.png")
    Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA").save(root / "dog" / "alpha.png")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "dog" / "photo.jpg")
    b = build_data(folder_recipe(root, "data.image_size=16"))
    assert b.info.input_shape == (3, 16, 16)
    shapes = {tuple(b.train.load(i)[0].shape) for i in range(len(b.train))}
    assert shapes == {(3, 16, 16)}


def test_folder_errors_name_the_file_or_folder(tmp_path):
    root = make_tree(tmp_path / "d", n=4)
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(root / "cat" / "small.png")
    with pytest.raises(DataError, match=r"small.png: image is 5x5 .* set data.image_size"):
        build_data(folder_recipe(root))
    with pytest.raises(DataError, match="data.root: folder .* does not exist"):
        build_data(folder_recipe(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        build_data(folder_recipe(tmp_path / "empty"))
    with pytest.raises(DataError, match="needs data.root"):
        build_data(load_recipe("digits-cnn", ["data.name=folder"]))


def test_one_common_image_size_and_channel_count(tmp_path):
    """D10: folder, coco and segmentation share one rule: data.image_size and data.channels win; without them
    every image must have the first one's size (the first that differs is named) and the data set is
    grayscale only when every file is."""
    import json

    from helpers_data import write_coco, write_png

    from trainlab.data.images import common_shape

    headers = [("L", (8, 8)), ("1", (8, 8)), ("I;16", (8, 8))]
    assert common_shape(None, None, headers, ["a", "b", "c"]) == (1, (8, 8))
    assert common_shape(None, None, headers + [("RGB", (8, 8))], list("abcd")) == (3, (8, 8))
    assert common_shape(12, 3, headers, list("abc")) == (3, (12, 12))
    assert common_shape((6, 10), None, headers + [("L", (5, 5))], list("abcd")) == (1, (6, 10))
    with pytest.raises(DataError, match=r"^d: image is 5x7 but a is 8x8; set data.image_size"):
        common_shape(None, None, headers + [("L", (5, 7))], list("abcd"))

    path = write_coco(tmp_path / "coco")
    write_png(tmp_path / "coco" / "im1.png", np.zeros((10, 12, 3), np.uint8))
    data = json.loads(path.read_text())
    del data["images"][1]["height"], data["images"][1]["width"]
    path.write_text(json.dumps(data))
    coco = ["data.name=coco", f"data.root={path}", "data.split.val=0", "data.split.test=0", "data.batch_size=2"]
    with pytest.raises(DataError, match=r"^images\[1\] \(im1.png\): image is 10x12 but images\[0\] \(im0.png\) is "
                                        r"20x24; set data.image_size"):
        build_data(load_recipe(None, coco))
    assert build_data(load_recipe(None, [*coco, "data.image_size=16", "data.channels=1"])).info.input_shape == (1, 16, 16)

    seg = tmp_path / "seg"
    for i, hw in enumerate([(16, 16), (16, 16), (12, 16)]):
        write_png(seg / "images" / f"{i}.png", np.zeros((*hw, 3), np.uint8))
        write_png(seg / "masks" / f"{i}.png", np.ones(hw, np.uint8))
    recipe = ["data.name=segmentation", f"data.root={seg}", "data.split.val=0", "data.split.test=0",
              "data.batch_size=2"]
    with pytest.raises(DataError, match=r"2.png: image is 12x16 but .*0.png is 16x16; set data.image_size"):
        build_data(load_recipe(None, [*recipe, "data.segmentation={classes: [bg, fg]}"]))
    b = build_data(load_recipe(None, [*recipe, "data.segmentation={classes: [bg, fg]}", "data.image_size=[8, 4]"]))
    assert b.info.input_shape == (3, 8, 4)
