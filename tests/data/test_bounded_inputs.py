"""Bounded inputs (issue 23, point 5): what a small file can claim — alias expansions, nesting,
gigapixels, terabyte arrays, numbers past float64, far-away polygon points — is checked before it
is expanded, allocated or decoded, and refused with one short line naming the file and the place.
EXIF orientation (point 7) is checked against torchvision.io's own reading."""
from __future__ import annotations

import io
import json
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
import torch
from helpers_data import write_png
from PIL import Image

from trainlab.data.images import inspect_image, read_image
from trainlab.errors import DataError, RecipeError, show, show_path
from trainlab.evaluate.coco_json import evaluate_coco, evaluate_files, read_json
from trainlab.inputs import load_npy
from trainlab.recipe import load_recipe, load_yaml, parse_override


# ------------------------------------------------------------------------------------------ YAML
def alias_bomb(levels: int = 9) -> str:
    """The billion laughs: each level a list of nine aliases of the level before (9^levels values)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(alias_bomb() + "data:\n  augment: *a8\n")
    start = time.perf_counter()
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert time.perf_counter() - start < 5
    line = str(err.value)
    assert "r.yaml" in line and "aliases expand" in line and "100000" in line and "\n" not in line
    assert len(line) < 300


def test_aliases_and_merge_keys_within_the_bound_still_work():
    text = "base: &b {lr: 0.1, momentum: 0.9}\noptim: {<<: *b, lr: 0.2}\nlists: &l [1, 2]\nagain: *l\n"
    assert load_yaml(text) == {"base": {"lr": 0.1, "momentum": 0.9}, "optim": {"lr": 0.2, "momentum": 0.9},
                               "lists": [1, 2], "again": [1, 2]}
    assert load_yaml(alias_bomb(5))["a4"][0][0][0][0] == ["x"] * 9  # 9^5 = 59049 values: allowed


@pytest.mark.parametrize("text, needle", [
    ("data:\n  augment: &a [*a]\n", "a cycle"),
    ("data:\n  augment: " + "[" * 3000 + "]" * 3000 + "\n", "nested deeper than 50 levels"),
    ("a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n", "deeper than 50 levels"),
    ("train:\n  epochs: " + "9" * 5000 + "\n", "integer of 5000 digits"),
])
def test_recursive_deep_or_huge_yaml_is_one_line(tmp_path, text, needle):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=r"^recipe file .*r\.yaml: line \d+ column \d+: YAML refused: ") as err:
        load_recipe(path)
    assert needle in str(err.value) and len(str(err.value)) < 300


def test_nesting_within_the_bound_loads():
    value = load_yaml("a: " + "[" * 49 + "]" * 49)["a"]  # the mapping and 49 lists: 50 levels
    for _ in range(48):
        (value,) = value
    assert value == []


@pytest.mark.parametrize("override, needle", [
    ("data.augment=" + "[" * 3000 + "]" * 3000, "nested deeper than 50 levels"),
    ("data.augment=&a [*a]", "a cycle"),
    ("train.epochs=" + "9" * 5000, "integer of 5000 digits"),
])
def test_override_values_have_the_same_bounds(override, needle):
    with pytest.raises(RecipeError) as err:
        parse_override(override)
    line = str(err.value)
    assert line.startswith(f"override {override.split('=')[0]}: value ") and needle in line and len(line) < 300


def test_a_long_value_is_cut_in_the_validation_message():
    with pytest.raises(RecipeError) as err:
        load_recipe(None, {"train.epochs": "x" * 1_000_000})
    line = str(err.value)
    assert line.startswith("train.epochs: ") and "xxx...xxx" in line and len(line) < 200


def test_show_cuts_values_and_quotes_file_names_with_line_breaks():
    assert "x..." in show("x" * 1000) and show("x" * 10) == "'xxxxxxxxxx'"
    assert len(show("x" * 1000)) <= 80 and show(["x" * 100] * 8).endswith("…") and len(show(list(range(10**5)))) <= 80
    deep: list = []
    for _ in range(10_000):
        deep = [deep]
    assert len(show(deep)) <= 80  # no RecursionError
    assert show(10**5000).startswith("<int")  # past Python's int -> str limit
    assert show_path("a/b.png") == "a/b.png" and show_path("é.png") == "é.png"
    assert show_path("a/bad\nname.png") == "'a/bad\\nname.png'"


# ------------------------------------------------------------------------------------------ JSON
def coco_gt(**image) -> dict:
    return {"images": [{"id": 1, "file_name": "1.png", "height": 10, "width": 10, **image}],
            "categories": [{"id": 1, "name": "a"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3], "area": 9, "iscrowd": 0,
                             "segmentation": [[1, 1, 4, 1, 4, 4, 1, 4]]}]}


@pytest.mark.parametrize("depth", [150, 5000])
def test_json_nesting_is_bounded(tmp_path, depth):
    """D10, E3: JSON past 100 levels is refused in one line (5000 levels was a RecursionError traceback)."""
    path = tmp_path / "gt.json"
    path.write_text('{"info": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(DataError, match=r"gt\.json: JSON nested deeper than 100 levels"):
        read_json(path)
    path.write_text('{"info": ' + "[" * 90 + "]" * 90 + "}")
    assert read_json(path)["info"]


@pytest.mark.parametrize("number, shown", [
    ("1e400", "1e400 (beyond the float64 range)"),
    ("9" * 400, "9" * 30),
    ("-" + "9" * 5000, "-" + "9" * 30),  # past Python's 4300-digit limit: a ValueError traceback before
])
def test_json_numbers_beyond_float64_name_their_path(tmp_path, number, shown):
    """E3: a number that does not fit a float64 is an error naming the file and its JSON path."""
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco_gt()).replace('"bbox": [1, 1, 3, 3]', f'"bbox": [1, 1, {number}, 3]'))
    path.with_name("dets.json").write_text("[]")
    with pytest.raises(DataError) as err:
        evaluate_files(path, path.with_name("dets.json"))
    line = str(err.value)
    assert line.startswith(f"{path}: annotations[0].bbox[2]: expected a finite number, got {shown}")
    assert "float64" in line and len(line) < 300


def test_ids_beyond_64_bits_are_named_not_an_overflow_traceback():
    """E3: numpy holds ids in int64; a larger one is a DataError naming where it is."""
    gt = coco_gt(id=2**70)
    gt["annotations"][0]["image_id"] = 2**70
    with pytest.raises(DataError, match=r"^gt\.json: images\[0\]\.id: expected an integer, got 1180591620717411303424 "
                                        r"\(beyond 64-bit integers\)$"):
        evaluate_coco(gt, [], gt_source="gt.json")


@pytest.mark.parametrize("where, value, needle", [
    ("point", 1e4, "annotations[0].segmentation[0]: point (10000, 1) lies more than the image's size outside"),
    ("width", 10**9, "images[0].width: 1000000000 pixels is more than pycocotools rasterises"),
])
def test_mask_evaluation_bounds_what_pycocotools_rasterises(where, value, needle):
    """E3: polygon points far outside their image (1e9 is a segmentation fault in pycocotools) and
    image sizes past its 32-bit arithmetic are refused before rasterising."""
    gt = coco_gt()
    if where == "point":
        gt["annotations"][0]["segmentation"][0][2] = value
    else:
        gt["images"][0]["width"] = value
    with pytest.raises(DataError) as err:
        evaluate_coco(gt, [], gt_source="gt.json", iou_type="segm")
    assert needle in str(err.value)


# ---------------------------------------------------------------------------------------- images
def zeros_png(width: int, height: int, rows: int | None = None) -> bytes:
    """A grayscale PNG of zeros whose header says width x height, with ``rows`` rows of pixel data
    (all of them by default: a valid file), compressed row by row (a few hundred KB at most)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pack = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte 0, then the pixels
    body = b"".join(pack.compress(row) for _ in range(height if rows is None else rows)) + pack.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_pixels_are_checked_from_the_header_before_decoding(tmp_path):
    """D10: a tiny file claiming 10^10 pixels is refused from its header, naming data.max_pixels."""
    path = tmp_path / "bomb.png"
    path.write_bytes(zeros_png(100_000, 100_000, rows=1))
    for read in (lambda: inspect_image(path), lambda: read_image(path, 3)):
        with pytest.raises(DataError, match=r"bomb\.png: image .*data\.max_pixels = 89478485"):
            read()
    write_png(tmp_path / "small.png", np.zeros((10, 12), np.uint8))
    with pytest.raises(DataError, match=r"small\.png: image of 12x10 = 120 pixels \(width x height\) is larger than "
                                        r"data\.max_pixels = 100; raise data\.max_pixels to read it"):
        inspect_image(tmp_path / "small.png", max_pixels=100)
    assert inspect_image(tmp_path / "small.png", max_pixels=120) == ("L", (10, 12))


def test_pils_decompression_bomb_warning_is_an_error():
    """D10: between PIL's limit and twice it PIL only warns and decodes (a 329 KB PNG reached 5 GB):
    here it is an error, before decoding, and nothing is printed as a warning."""
    data = zeros_png(9500, 9500)  # 90.25 M pixels: above PIL's 89,478,485, below twice that
    assert len(data) < 400_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would fail the test
        with pytest.raises(DataError, match=r"data\.max_pixels = 89478485"):
            inspect_image(io.BytesIO(data))


def test_a_max_pixels_above_pils_limit_is_honoured(tmp_path, monkeypatch):
    """D10: data.max_pixels, not PIL's global, decides (PIL's limit is raised to it)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # restored after the test
    write_png(tmp_path / "a.png", np.full((10, 10), 7, np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert int(read_image(tmp_path / "a.png", 1, max_pixels=200).sum()) == 700
    with pytest.raises(DataError, match="data.max_pixels = 60"):
        read_image(tmp_path / "a.png", 1, max_pixels=60)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_torchvision_io_applies_it(tmp_path, orientation, fmt):
    """D10 (issue 23 point 7): the image is turned as its EXIF orientation says, pixel for pixel
    as torchvision.io.decode_image(apply_exif_orientation=True) reads it, and inspect_image reports
    the turned size (so data sets check the size they will load)."""
    from torchvision.io import ImageReadMode, decode_image

    rng = np.random.default_rng(orientation)
    im = Image.fromarray(rng.integers(0, 255, (4, 6, 3), dtype=np.uint8))
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o.{fmt}"
    im.save(path, exif=exif, **({"quality": 95} if fmt == "jpg" else {}))
    reference = decode_image(str(path), ImageReadMode.RGB, apply_exif_orientation=True)
    got = read_image(path, 3)
    assert torch.equal(got, reference)
    assert inspect_image(path)[1] == tuple(reference.shape[1:]) == ((6, 4) if orientation >= 5 else (4, 6))


# ------------------------------------------------------------------------------------------- .npy
def npy_claiming(shape: tuple[int, ...], payload: bytes = b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


def test_a_npy_header_is_checked_against_the_file_size_before_loading(tmp_path):
    """A 136-byte .npy claiming hundreds of TiB, and a truncated one, are refused from the header."""
    path = tmp_path / "x.npy"
    path.write_bytes(npy_claiming((10**7, 10**7), b"\x00" * 8))
    assert len(path.read_bytes()) == 136
    with pytest.raises(DataError, match=r"x\.npy: the \.npy header claims shape \[10000000, 10000000\] of float64 "
                                        r"\(800000000000000 bytes\) but the file holds 8 bytes after its header"):
        load_npy(path, (1, 8, 8))
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 8, 8)))
    path.write_bytes(buf.getvalue()[:-100])
    with pytest.raises(DataError, match=r"claims shape \[2, 8, 8\] of float64 \(1024 bytes\) but the file holds 924"):
        load_npy(path, (1, 8, 8))
    path.write_bytes(buf.getvalue())
    assert load_npy(path, (1, 8, 8)).shape == (2, 1, 8, 8)
