"""Paths stay inside their roots unless asked (issue 23, point 6): symbolic links leaving a folder
data set's data.root and COCO file_name values leaving the images folder are refused with one line
(data.follow_links=true reads them); a file name with a line break is quoted so that an error stays
one line; `predict` on something that is no file says what it is."""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
from helpers_data import write_coco, write_png

from trainlab.data import build_data
from trainlab.errors import DataError, RecipeError
from trainlab.inputs import gather_inputs
from trainlab.recipe import load_recipe


def tree(root, classes=("cat", "dog"), n=4):
    rng = np.random.default_rng(0)
    for c in classes:
        for i in range(n):
            write_png(root / c / f"{i}.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    return root


def folder_recipe(root, *extra):
    return load_recipe("digits-cnn", ["data.name=folder", f"data.root={root}", "data.batch_size=4", *extra])


def test_folder_symlinks_leaving_data_root_are_refused_unless_asked(tmp_path):
    """D10: a linked file or class folder outside data.root is an error naming the link and where it leads."""
    root = tree(tmp_path / "data")
    outside = tree(tmp_path / "elsewhere", classes=("eel",))
    (root / "cat" / "x.png").symlink_to(outside / "eel" / "0.png")
    with pytest.raises(DataError) as err:
        build_data(folder_recipe(root))
    line = str(err.value)
    assert line == (f"data.root: {root / 'cat' / 'x.png'} is a symbolic link to {outside / 'eel' / '0.png'}, "
                    f"outside {root}; set data.follow_links=true to read it")
    assert len(build_data(folder_recipe(root, "data.follow_links=true", "data.split.val=0",
                                        "data.split.test=0")).train) == 9
    (root / "cat" / "x.png").unlink()
    (root / "eel").symlink_to(outside / "eel", target_is_directory=True)
    with pytest.raises(DataError, match=r"data/eel is a symbolic link to .*elsewhere/eel, outside"):
        build_data(folder_recipe(root))
    assert build_data(folder_recipe(root, "data.follow_links=true")).info.num_classes == 3


def test_folder_symlinks_inside_data_root_are_read(tmp_path):
    """D10: a link that stays under data.root (also through a linked root) is an ordinary file."""
    root = tree(tmp_path / "data")
    (root / "dog" / "again.png").symlink_to(root / "cat" / "0.png")
    (tmp_path / "alias").symlink_to(root, target_is_directory=True)
    b = build_data(folder_recipe(tmp_path / "alias", "data.split.val=0", "data.split.test=0"))
    assert len(b.train) == 9


@pytest.mark.parametrize("name", ["../outside.png", "ABSOLUTE", "linked.png"])
def test_coco_file_names_leaving_the_images_folder_are_refused_unless_asked(tmp_path, name):
    """D10: '../', an absolute file_name or a symbolic link out of the images folder is an error naming
    the file, its JSON path and where it leads; data.follow_links=true reads it."""
    root = tmp_path / "coco"
    path = write_coco(root)
    write_png(tmp_path / "outside.png", np.zeros((20, 24, 3), np.uint8))
    if name == "ABSOLUTE":
        name = str(tmp_path / "outside.png")
    if name == "linked.png":
        (root / "linked.png").symlink_to(tmp_path / "outside.png")
    data = json.loads(path.read_text())
    data["images"][2]["file_name"] = name
    path.write_text(json.dumps(data))
    recipe = ["data.name=coco", f"data.root={path}", "data.split.val=0", "data.split.test=0", "data.batch_size=2"]
    with pytest.raises(DataError) as err:
        build_data(load_recipe(None, recipe))
    assert str(err.value) == (f"{path}: images[2].file_name: {name!r} leads outside the images folder {root} "
                              f"(to {tmp_path / 'outside.png'}); set data.follow_links=true to read it")
    assert len(build_data(load_recipe(None, [*recipe, "data.follow_links=true"])).train) == 2


def test_the_path_options_are_refused_where_no_data_set_reads_them():
    """D10: digits reads no files: data.follow_links and data.max_pixels set for it are errors, not ignored."""
    for option in ("data.follow_links=true", "data.max_pixels=1000"):
        with pytest.raises(RecipeError, match=rf"^{option.split('=')[0]}: the digits data set does not use it"):
            build_data(load_recipe(None, [option]))


def test_a_file_name_with_a_line_break_is_quoted(tmp_path):
    """D10: the error stays one line: the name is shown as a quoted Python string."""
    root = tree(tmp_path / "data")
    (root / "cat" / "bad\nname.png").write_bytes(b"not an image")
    with pytest.raises(DataError) as err:
        build_data(folder_recipe(root))
    line = str(err.value)
    assert "\n" not in line and line.startswith(repr(str(root / "cat" / "bad\nname.png")) + ": not a readable image")


INFO = SimpleNamespace(input_shape=(1, 8, 8), kind="image", max_value=16.0)


def test_predict_says_what_a_path_that_is_no_file_is(tmp_path):
    """`predict` on a FIFO, a device, a dangling link or a folder without images names what it is,
    never reads it (a FIFO would block) and never says "no such file" of something that exists."""
    os.mkfifo(tmp_path / "pipe.npy")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "deeper" / "inside").mkdir(parents=True)
    write_png(tmp_path / "deeper" / "inside" / "a.png", np.zeros((8, 8), np.uint8))
    cases = [
        (tmp_path / "pipe.npy", "pipe.npy: a FIFO (named pipe); expected an image or .npy file"),
        ("/dev/null", "/dev/null: a character device; expected an image or .npy file"),
        (tmp_path / "dangling.png", "dangling.png: a symbolic link to nothing; expected an image or .npy file"),
        (tmp_path / "missing.npy", "missing.npy: no such file"),
        (tmp_path / "deeper", "deeper: folder has no image or .npy files (.png, .jpg, .jpeg, .bmp, .npy) (its "
                              "sub-folders are not searched)"),
    ]
    for path, message in cases:
        with pytest.raises(DataError) as err:
            gather_inputs([path], INFO)
        assert str(err.value).endswith(message), (str(err.value), message)
    with pytest.raises(DataError) as err:
        gather_inputs([tmp_path / "odd\nname.png"], INFO)
    assert str(err.value) == repr(str(tmp_path / "odd\nname.png")) + ": no such file"
