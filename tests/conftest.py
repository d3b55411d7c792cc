"""Shared test helpers: run the real CLI in a subprocess, and small fast recipe overrides."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Tests run torch on one thread: their tensors are small, and on a 2-core machine shared with other
# processes two threads spend more time handing work over than computing (10-50x slower here).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# What file data sets cache at start-up (issue 25) goes to a folder of this test session, never the
# user's ~/.cache/trainlab; tests of the cache itself point it at their tmp_path.
os.environ.setdefault("TRAINLAB_CACHE", tempfile.mkdtemp(prefix="trainlab-test-cache-"))
import torch  # noqa: E402

torch.set_num_threads(1)

SRC = Path(__file__).resolve().parents[1] / "src"

# Overrides that make a digits run take about a second: tests check behaviour, not accuracy.
FAST = ["train.epochs=2", "run.tensorboard=false", "run.plots=false", "train.progress=false"]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(*args: str, cwd: str | Path | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m trainlab ARGS`` and return the completed process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "trainlab", *map(str, args)],
        cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout, **kwargs,
    )


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, one line on stderr naming what is wrong, no traceback. Returns the line."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def cli():
    return run_cli


def stopped_and_resumed(args: list[str], folder: Path, epochs: int = 2):
    """(never-stopped run, run stopped after epoch 1 and resumed to ``epochs``) of the same
    recipe overrides ``args``, after checking that both end with bit-identical model weights."""
    import trainlab
    from safetensors.torch import load_file

    full = trainlab.fit(None, [*args, f"train.epochs={epochs}", f"run.dir={folder / 'full'}"], quiet=True)
    part = trainlab.fit(None, [*args, "train.epochs=1", f"run.dir={folder / 'part'}"], quiet=True)
    resumed = trainlab.fit(resume=part.dir, overrides=[f"train.epochs={epochs}"], quiet=True)
    a = load_file(full.checkpoints / "last.safetensors")
    b = load_file(resumed.checkpoints / "last.safetensors")
    for k in (k for k in a if k.startswith("model.")):
        assert torch.equal(a[k], b[k]), k
    return full, resumed


def shapes_as_coco(source, folder: Path, n: int = 2, masks: bool = False) -> tuple[list[str], Path]:
    """The first ``n`` images of a shapes split written as ``folder/1.png``... and their COCO
    ground truth ``folder/gt.json`` (category id = class + 1; with ``masks``, each object's mask
    as a compressed RLE): what `trainlab predict` and `eval-detections` are checked against."""
    import json

    import numpy as np
    from PIL import Image

    names = ["circle", "square", "triangle", "star"]
    gt = {"images": [], "annotations": [], "categories": [{"id": k + 1, "name": c} for k, c in enumerate(names)]}
    paths = []
    for i in range(n):
        x, t = source.load(i)
        h, w = x.shape[1:]
        path = folder / f"{i + 1}.png"
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(path)
        paths.append(str(path))
        gt["images"].append({"id": i + 1, "file_name": path.name, "width": w, "height": h})
        for k, (b, c) in enumerate(zip(t["boxes"].tolist(), t["labels"].tolist())):
            ann = {"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": c + 1, "iscrowd": 0,
                   "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])}
            if masks:
                import pycocotools.mask as mask_utils

                m = t["masks"][k].numpy().astype(np.uint8)
                rle = mask_utils.encode(np.asfortranarray(m))
                ann.update(area=float(m.sum()), segmentation={"size": [h, w], "counts": rle["counts"].decode()})
            gt["annotations"].append(ann)
    (folder / "gt.json").write_text(json.dumps(gt))
    return paths, folder / "gt.json"
