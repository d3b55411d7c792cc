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
