"""The bad-input corpus: every case is generated here, and each one is answered, not crashed on.

A case either fails with exit code 2 and one stderr line that names the file, field or value and
what was expected (no traceback, nothing already written changed), or takes a documented recovery
(images read by content, not by extension; mixed image modes converted; data.skip_corrupt=true).
`python -m pytest tests/badinput -q` prints how many cases were handled.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from conftest import FAST, assert_user_error, run_cli
from PIL import Image

from trainlab.cli import main

FOLDER = ["data.name=folder", "data.root=data", "data.batch_size=4", *FAST, "train.epochs=1", "run.dir=out"]


def image_bytes(size=(10, 10), mode="RGB", fmt="PNG", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size[0], size[1], len(mode)) if mode != "L" else size
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8).squeeze(), mode).save(buf, fmt)
    return buf.getvalue()


def tree(root: Path, classes=("a", "b"), n=5, **kw) -> Path:
    for c in classes:
        (root / "data" / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / "data" / c / f"{i}.png").write_bytes(image_bytes(seed=i, **kw))
    return root / "data"


@dataclass
class Case:
    name: str
    setup: Callable[[Path], None]
    argv: list[str]
    needles: list[str] = field(default_factory=list)
    code: int = 2


def put(rel: str, data: bytes | str, base: Callable[[Path], object] = tree):
    def setup(root: Path):
        base(root)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return setup


def recipe_file(text: str):
    return put("r.yaml", text, base=lambda root: None)


def truncated_png() -> bytes:
    data = image_bytes((64, 64))
    return data[: len(data) // 2]


def npy_header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def seg_tree(root: Path, n: int = 6, size=(10, 10)) -> Path:
    """A segmentation folder: images/ and single-channel index masks/ (ids 0 and 1)."""
    for sub in ("images", "masks"):
        (root / "seg" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / "seg" / "images" / f"{i}.png").write_bytes(image_bytes(size, seed=i))
        mask = np.zeros(size, dtype=np.uint8)
        mask[2:6, 3:7] = 1
        buf = io.BytesIO()
        Image.fromarray(mask, "L").save(buf, "PNG")
        (root / "seg" / "masks" / f"{i}.png").write_bytes(buf.getvalue())
    return root / "seg"


def mask_bytes(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, "PNG")
    return buf.getvalue()


def zeros_png(width: int, height: int, rows: int) -> bytes:
    """A grayscale PNG whose header claims width x height, with only ``rows`` rows of pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * (width + 1) * rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def turned_image_bytes(size=(12, 10), orientation: int = 6) -> bytes:
    """An RGB PNG stored as H x W = ``size`` whose EXIF orientation turns it by 90 degrees."""
    im = Image.fromarray(np.random.default_rng(3).integers(0, 255, (*size, 3), dtype=np.uint8))
    exif = im.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "PNG", exif=exif)
    return buf.getvalue()


def alias_bomb(levels: int = 9) -> str:
    """The billion laughs: each level a list of nine aliases of the level before (9^9 values)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def coco(edit: Callable[[dict, Path], None] = lambda data, root: None, text: Callable[[str], str] = lambda s: s):
    """Setup of coco/ann.json with eight 10x10 images, one square polygon each, two categories
    (and an image outside/: outside.png), after ``edit`` of the data and ``text`` of the JSON."""
    def setup(root: Path):
        (root / "coco").mkdir(parents=True, exist_ok=True)
        (root / "outside.png").write_bytes(image_bytes(seed=9))
        data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
        for i in range(8):
            (root / "coco" / f"{i}.png").write_bytes(image_bytes(seed=i))
            data["images"].append({"id": i, "file_name": f"{i}.png", "height": 10, "width": 10})
            data["annotations"].append({"id": i, "image_id": i, "category_id": 1 + i % 2, "bbox": [1, 1, 4, 4],
                                        "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]})
        edit(data, root)
        (root / "coco" / "ann.json").write_text(text(json.dumps(data)))

    return setup


def file_name(name: str) -> Callable[[dict, Path], None]:
    def edit(data: dict, root: Path):
        data["images"][0]["file_name"] = name.replace("ROOT", str(root))

    return edit


def link(rel: str, target: str, base: Callable[[Path], object] = tree):
    def setup(root: Path):
        base(root)
        (root / "elsewhere").mkdir(exist_ok=True)
        (root / "elsewhere" / "0.png").write_bytes(image_bytes(seed=7))
        (root / rel).symlink_to(root / target)

    return setup


COCO = ["data.name=coco", "data.root=coco/ann.json", "data.batch_size=2", *FAST, "train.epochs=1", "run.dir=out"]
SEG = ["task=segmentation", "data.name=segmentation", "data.root=seg", "data.batch_size=2", "model.name=unet",
       "model.width=4", "model.depth=1", *FAST, "train.epochs=1", "run.dir=out"]

CASES = [
    # ------------------------------------------------------- segmentation masks (issue 14)
    Case("a mask whose size differs from its image",
         put("seg/masks/3.png", mask_bytes(np.zeros((10, 12), np.uint8), "L"), base=seg_tree),
         ["fit", *SEG], ["seg/masks/3.png", "10x12", "seg/images/3.png", "10x10"]),
    Case("a class id outside the declared classes",
         put("seg/masks/2.png", mask_bytes(np.full((10, 10), 7, np.uint8), "L"), base=seg_tree),
         ["fit", *SEG, "data.segmentation.classes=[bg, thing]"], ["seg/masks/2.png", "class id 7", "ids 0..1"]),
    Case("a mask that is not single-channel",
         put("seg/masks/1.png", mask_bytes(np.zeros((10, 10, 3), np.uint8), "RGB"), base=seg_tree),
         ["fit", *SEG], ["seg/masks/1.png", "mode RGB", "single-channel"]),
    Case("an image without its mask", lambda root: (seg_tree(root), (root / "seg/masks/4.png").unlink()),
         ["fit", *SEG], ["seg/images/4.png", "no mask"]),
    Case("a segmentation folder trains", seg_tree, ["fit", *SEG], code=0),

    # ---------------------------------------------------------------- image files (folder data set)
    Case("corrupt image", put("data/a/bad.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4),
         ["fit", *FOLDER], ["bad.png", "image"]),
    Case("truncated image", put("data/b/cut.png", truncated_png()), ["fit", *FOLDER], ["cut.png", "truncated"]),
    Case("zero-byte image", put("data/a/empty.png", b""), ["fit", *FOLDER], ["empty.png", "not a readable image"]),
    Case("text file with an image extension", put("data/b/notes.jpg", "just some text\n"),
         ["fit", *FOLDER], ["notes.jpg", "not a readable image"]),
    Case("image with the wrong extension is read by its content",
         put("data/a/really_a_jpeg.png", image_bytes(fmt="JPEG")), ["fit", *FOLDER], code=0),
    Case("mixed grayscale/RGBA/RGB images are converted to RGB",
         lambda root: (tree(root, mode="L"), (root / "data/a/x.png").write_bytes(image_bytes(mode="RGBA")),
                       (root / "data/b/y.png").write_bytes(image_bytes(mode="RGB"))),
         ["fit", *FOLDER], code=0),
    Case("images of different sizes", put("data/b/big.png", image_bytes((20, 30))),
         ["fit", *FOLDER], ["big.png", "20x30", "data.image_size"]),
    Case("images of different sizes with data.image_size", put("data/b/big.png", image_bytes((20, 30))),
         ["fit", *FOLDER, "data.image_size=12"], code=0),
    Case("empty class folder", lambda root: (tree(root), (root / "data" / "c").mkdir()),
         ["fit", *FOLDER], ["data/c", "has no images"]),
    Case("a data set with one class", lambda root: tree(root, classes=("only",)),
         ["fit", *FOLDER], ["one class", "at least 2"]),
    Case("empty data root", lambda root: (root / "data").mkdir(), ["fit", *FOLDER], ["data.root", "no class"]),
    Case("missing data root", lambda root: None, ["fit", *FOLDER], ["data.root", "does not exist"]),
    Case("corrupt files skipped with data.skip_corrupt", put("data/a/bad.png", b"garbage"),
         ["fit", *FOLDER, "data.skip_corrupt=true"], code=0),
    # ------------------------------------------------- bounded and rooted image files (issue 23)
    Case("an image larger than data.max_pixels", tree, ["fit", *FOLDER, "data.max_pixels=50"],
         ["data/a/0.png", "10x10 = 100 pixels", "data.max_pixels = 50"]),
    Case("a tiny PNG whose header claims 10^10 pixels", put("data/a/bomb.png", zeros_png(100_000, 100_000, 1)),
         ["fit", *FOLDER], ["bomb.png", "data.max_pixels = 89478485"]),
    Case("an image turned by its EXIF orientation is read upright",
         lambda root: (tree(root, size=(10, 12)), (root / "data/a/turned.png").write_bytes(turned_image_bytes())),
         ["fit", *FOLDER], code=0),
    Case("a symbolic link leaving data.root", link("data/a/x.png", "elsewhere/0.png"), ["fit", *FOLDER],
         ["data/a/x.png is a symbolic link to", "elsewhere/0.png, outside", "data.follow_links=true"]),
    Case("a class folder linked from outside data.root", link("data/c", "elsewhere"), ["fit", *FOLDER],
         ["data/c is a symbolic link to", "elsewhere, outside", "data.follow_links=true"]),
    Case("a symbolic link leaving data.root with data.follow_links", link("data/a/x.png", "elsewhere/0.png"),
         ["fit", *FOLDER, "data.follow_links=true"], code=0),
    Case("a file name with a line break is quoted", put("data/a/bad\nname.png", b"garbage"), ["fit", *FOLDER],
         ["'data/a/bad\\nname.png': not a readable image"]),
    # --------------------------------------------------------------------- COCO files (issue 23)
    Case("a COCO file_name with ../", coco(file_name("../outside.png")), ["fit", *COCO],
         ["coco/ann.json: images[0].file_name: '../outside.png' leads outside the images folder coco",
          "data.follow_links=true"]),
    Case("an absolute COCO file_name", coco(file_name("ROOT/outside.png")), ["fit", *COCO],
         ["images[0].file_name:", "outside.png' leads outside the images folder coco", "data.follow_links=true"]),
    Case("a COCO file_name outside with data.follow_links", coco(file_name("../outside.png")),
         ["fit", *COCO, "data.follow_links=true"], code=0),
    Case("a COCO number beyond float64", coco(text=lambda s: s.replace("[1, 1, 4, 4]", "[1, 1, 1e400, 4]", 1)),
         ["fit", *COCO], ["coco/ann.json: annotations[0].bbox[2]: expected a finite number, got 1e400 (beyond the "
                          "float64 range)"]),
    Case("a COCO integer of 5000 digits", coco(text=lambda s: s.replace("[1, 1, 4, 4]", f"[1, 1, {'9' * 5000}, 4]", 1)),
         ["fit", *COCO], ["annotations[0].bbox[2]: expected a finite number, got 99999", "(beyond the float64 range)"]),
    Case("a COCO id beyond 64 bits", coco(lambda data, root: data["images"][0].update(id=2**70)), ["fit", *COCO],
         ["images[0].id: expected an integer, got 1180591620717411303424 (beyond 64-bit integers)"]),
    Case("COCO JSON nested deeper than 100 levels",
         coco(text=lambda s: s[:-1] + ', "info": ' + "[" * 5000 + "]" * 5000 + "}"), ["fit", *COCO],
         ["coco/ann.json: JSON nested deeper than 100 levels"]),
    Case("a COCO polygon point far outside its image",
         coco(lambda data, root: data["annotations"][0]["segmentation"][0].__setitem__(2, 1e9)), ["fit", *COCO],
         ["annotations[0] (id 0).segmentation[0]: point (1e+09, 1) lies outside image 0.png"]),
    Case("a COCO RLE of another size than its image",
         coco(lambda data, root: data["annotations"][0].update(segmentation={"size": [20, 5], "counts": [100]})),
         ["fit", *COCO], ["annotations[0] (id 0).segmentation.size: the RLE mask is 20x5 but its image 0.png is "
                          "10x10"]),
    # ------------------------------------------------------------------------------------ recipes
    Case("YAML syntax error", recipe_file("train:\n  epochs: [3\n"), ["fit", "r.yaml"],
         ["r.yaml", "line", "YAML syntax error"]),
    Case("unknown key (typo)", recipe_file("optim:\n  learning_rate: 0.1\n"), ["fit", "r.yaml"],
         ["optim.learning_rate", "unknown key"]),
    Case("unknown key suggests the closest", recipe_file("trian:\n  epochs: 3\n"), ["fit", "r.yaml"],
         ["trian", "did you mean train"]),
    Case("wrong type (text for a number)", recipe_file("train:\n  epochs: ten\n"), ["fit", "r.yaml"],
         ["train.epochs", "integer", "'ten'"]),
    Case("wrong type (number for a list)", recipe_file("data:\n  augment: 5\n"), ["fit", "r.yaml"],
         ["data.augment", "list"]),
    Case("wrong type (section given a value)", recipe_file("optim: 0.1\n"), ["fit", "r.yaml"], ["optim"]),
    Case("NaN learning rate", recipe_file("optim:\n  lr: .nan\n"), ["fit", "r.yaml"], ["optim.lr"]),
    Case("infinite weight decay", recipe_file("optim:\n  weight_decay: .inf\n"), ["fit", "r.yaml"],
         ["optim.weight_decay", "finite"]),
    Case("negative epochs", recipe_file("train:\n  epochs: -3\n"), ["fit", "r.yaml"], ["train.epochs", "-3"]),
    Case("negative dropout", lambda root: None, ["fit", "model.dropout=-0.1"], ["model.dropout", "-0.1"]),
    Case("NaN from the command line", lambda root: None, ["fit", "optim.momentum=nan"], ["optim.momentum"]),
    Case("override value that is not YAML", lambda root: None, ["fit", "data.augment=[hflip"],
         ["data.augment=[hflip", "not valid YAML"]),
    Case("recipe path is a directory", lambda root: (root / "rdir.yaml").mkdir(), ["fit", "rdir.yaml"],
         ["is a directory"]),
    Case("recipe file is not text", put("r.yaml", b"\xff\xfe\x00\x81", base=lambda r: None),
         ["fit", "r.yaml"], ["r.yaml", "UTF-8"]),
    Case("a YAML alias bomb", recipe_file(alias_bomb() + "data:\n  augment: *a8\n"), ["fit", "r.yaml"],
         ["r.yaml: line", "YAML refused: aliases expand this to more than 100000 values"]),
    Case("YAML nested deeper than 50 levels", recipe_file("data:\n  augment: " + "[" * 3000 + "]" * 3000 + "\n"),
         ["fit", "r.yaml"], ["r.yaml: line 2", "YAML refused: nested deeper than 50 levels"]),
    Case("a YAML alias inside its own anchor", recipe_file("data:\n  augment: &a [*a]\n"), ["fit", "r.yaml"],
         ["r.yaml: line 2", "a cycle"]),
    Case("a YAML integer of 5000 digits", recipe_file("train:\n  epochs: " + "9" * 5000 + "\n"), ["fit", "r.yaml"],
         ["r.yaml: line 2", "integer of 5000 digits"]),
    Case("an override nested deeper than 50 levels", lambda root: None,
         ["fit", "data.augment=" + "[" * 3000 + "]" * 3000], ["override data.augment: value", "deeper than 50"]),
    Case("a long value is cut in the message", lambda root: None, ["fit", "train.epochs=" + "x" * 100_000],
         ["train.epochs", "xxx...xxx"]),
    # ------------------------------------------------------------------------------------ data sizes
    Case("a subset larger than the training split", lambda root: None, ["fit", "data.subset=5000"],
         ["data.subset=5000", "larger than the training split"]),
    Case("no CUDA device", lambda root: None, ["fit", "train.device=cuda"], ["train.device", "no CUDA"]),
    Case("unwritable run directory", lambda root: (root / "afile").write_text("x"),
         ["fit", *FAST, "run.dir=afile/run"], ["run.dir", "afile/run"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fit_inputs(case: Case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    case.setup(tmp_path)
    code = main(case.argv)
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    if case.code == 0:
        assert code == 0, out.err
        if "skip_corrupt" in case.name:
            assert any("skipped 1 unreadable" in line for line in lines), out.err
        return
    assert code == 2, (code, out.err[-2000:])
    assert len(lines) == 1 and "Traceback" not in out.err, out.err[-2000:]
    assert len(lines[0]) < 1000, lines[0][:2000]  # long values are cut
    for needle in case.needles:
        assert needle in lines[0], (needle, lines[0])
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------- runs and predictions
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("badrun")
    assert main(["fit", *FAST, f"run.dir={root / 'run'}", "--quiet"]) == 0
    return root / "run"


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


RUN_CASES = [
    ("NaN in a .npy input", "x.npy", npy_bytes(np.full((8, 8), np.nan)), ["x.npy", "NaN or infinite"]),
    ("inf in a .npy input", "x.npy", npy_bytes(np.array([[np.inf] * 8] * 8)), ["x.npy", "NaN or infinite"]),
    ("a .npy of the wrong shape", "x.npy", npy_bytes(np.zeros((3, 5))), ["x.npy", "[3, 5]", "1x8x8"]),
    ("a file that is not .npy", "x.npy", b"not numpy at all", ["x.npy", "not a readable .npy"]),
    ("a .npy of strings", "x.npy", npy_bytes(np.array(["a", "b"])), ["x.npy", "numeric"]),
    ("a missing input file", None, None, ["missing.npy", "no such file"]),
    ("a .npy header claiming 727 TiB", "x.npy", npy_header((10**7, 10**7)) + bytes(8),
     ["x.npy: the .npy header claims shape [10000000, 10000000] of float64", "holds 8 bytes after its header"]),
    ("a truncated .npy", "x.npy", npy_bytes(np.zeros((8, 8)))[:-8], ["x.npy", "claims shape [8, 8]", "holds 504"]),
    ("a FIFO", "x.npy", os.mkfifo, ["x.npy: a FIFO (named pipe); expected an image or .npy file"]),
    ("a folder of folders", "sub", lambda path: (path / "inner").mkdir(parents=True),
     ["sub: folder has no image or .npy files", "its sub-folders are not searched"]),
    ("an image above data.max_pixels", "bomb.png", zeros_png(100_000, 100_000, 1), ["bomb.png", "data.max_pixels"]),
    ("a file name with a line break", "odd\nname.png", b"garbage", ["odd\\nname.png': not a readable image"]),
]


@pytest.mark.parametrize("name, rel, data, needles", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_predict_inputs(name, rel, data, needles, run_dir, tmp_path, capsys):
    before = digest(run_dir)
    if callable(data):
        data(tmp_path / rel)
    elif rel:
        (tmp_path / rel).write_bytes(data)
    target = tmp_path / (rel or "missing.npy")
    assert main(["predict", str(run_dir), str(target)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert digest(run_dir) == before


def test_damaged_checkpoints_and_mismatched_recipes(run_dir, tmp_path, capsys):
    """T3: a truncated or tampered checkpoint names the file; a changed model lists the keys."""
    import shutil

    for label, damage in [
        ("truncated", lambda b: b[: len(b) // 3]),
        ("tampered", lambda b: b.replace(b'"epoch"', b'"epoc!"', 1).replace(b"trainlab-checkpoint", b"xxxxxxxx-checkpoint")),
        ("flipped bytes", lambda b: b[:8] + b"\x00" * 16 + b[24:]),
    ]:
        copy = tmp_path / label
        shutil.copytree(run_dir, copy)
        ckpt = copy / "checkpoints" / "best.safetensors"
        ckpt.write_bytes(damage(ckpt.read_bytes()))
        assert main(["evaluate", str(copy)]) == 2, label
        line = capsys.readouterr().err.strip()
        assert "best.safetensors" in line and "\n" not in line, (label, line)
    copy = tmp_path / "resized"
    shutil.copytree(run_dir, copy)
    before = digest(copy)
    assert main(["fit", "--resume", str(copy), "model.width=16", "--quiet"]) == 2
    line = capsys.readouterr().err.strip()
    assert "model.width: cannot be changed when resuming" in line
    assert digest(copy) == before
    # A recipe edited by hand so that it no longer fits the checkpoint: the keys are listed.
    recipe = copy / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("width: 32", "width: 16"))
    before = digest(copy / "checkpoints")
    assert main(["fit", "--resume", str(copy), "--quiet"]) == 2
    line = capsys.readouterr().err.strip()
    assert "last.safetensors does not match" in line and "shape mismatch" in line and "net.0.0.weight" in line
    assert digest(copy / "checkpoints") == before


def test_existing_run_is_never_overwritten_without_force(run_dir, tmp_path, capsys):
    before = digest(run_dir)
    assert main(["fit", *FAST, f"run.dir={run_dir}"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert digest(run_dir) == before
    assert main(["fit", "--resume", str(tmp_path / "nothing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_real_processes_give_one_line_and_exit_2(tmp_path):
    """The same contract through the console entry point, for a data error and a run error."""
    tree(tmp_path)
    (tmp_path / "data" / "a" / "bad.png").write_bytes(b"oops")
    assert_user_error(run_cli("fit", *FOLDER, cwd=tmp_path), "bad.png")
    assert_user_error(run_cli("predict", tmp_path, "x.npy", cwd=tmp_path), "not a run directory")

