"""E3, V4: `trainlab eval-detections` run as a real command: COCO summary, per-class AP, JSON
output and precision-recall plot; malformed files exit 2 with one line naming the JSON path."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainlab.evaluate.synthetic import synthetic_coco

SRC = str(Path(__file__).resolve().parents[2] / "src")


def trainlab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "trainlab", "eval-detections", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("coco")
    gt, dets = synthetic_coco(21, num_images=60, num_classes=7)
    (d / "gt.json").write_text(json.dumps(gt))
    (d / "dets.json").write_text(json.dumps(dets))
    return d, gt, dets


def test_summary_json_and_plot(files):
    """E3, V4: prints pycocotools' 12 summary lines (same text, same numbers) and a per-class
    table, writes the 12 stats in COCO's order plus per-class AP to --json, draws --plot."""
    pytest.importorskip("pycocotools")
    from coco_oracle import run_pycocotools

    d, gt, dets = files
    out = trainlab("gt.json", "dets.json", "--json", "out/result.json", "--plot", "out/pr.png", cwd=d)
    assert out.returncode == 0, out.stderr
    ev, reference_lines = run_pycocotools(gt, dets, summarize=True)
    assert len(reference_lines) == 12
    assert out.stdout.splitlines()[:12] == reference_lines

    result = json.loads((d / "out" / "result.json").read_text())
    assert len(result["stats"]) == 12
    assert np.abs(np.array(result["stats"]) - ev.stats).max() <= 1e-6
    assert [c["id"] for c in result["per_class"]] == ev.params.catIds
    for k, row in enumerate(result["per_class"]):
        assert abs(row["AP"] - ev.eval["precision"][:, :, k, 0, 2].mean()) <= 1e-6
        assert row["name"] in out.stdout
    png = (d / "out" / "pr.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


BAD = [
    ("gt", lambda g: g["annotations"][3].update(bbox=[1, 2, 3]), "annotations[3].bbox: expected 4 numbers, got 3"),
    ("gt", lambda g: g["annotations"][5].update(image_id=999), "annotations[5].image_id: 999 is not the id"),
    ("gt", lambda g: g["annotations"][1].pop("category_id"), "annotations[1].category_id: missing"),
    ("gt", lambda g: g["images"][2].update(id="x"), 'images[2].id: expected an integer, got "x"'),
    ("gt", lambda g: g.pop("categories"), "categories: missing"),
    ("dets", lambda d: d[4].update(score=None), "[4].score: expected a number, got null"),
    ("dets", lambda d: d[6]["bbox"].__setitem__(2, -5.0), "[6].bbox: width and height must be >= 0"),
    ("dets", lambda d: d[0].update(category_id=0), "[0].category_id: 0 is not a category of gt.json"),
]


@pytest.mark.parametrize("which,mutate,message", BAD, ids=[b[2].split(":")[0] for b in BAD])
def test_malformed_input_exits_2_with_one_line(files, tmp_path, which, mutate, message):
    """E3: a malformed file is one line on stderr naming file and JSON path; exit 2, no traceback."""
    d, gt, dets = files
    data = copy.deepcopy(gt if which == "gt" else dets)
    mutate(data)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    if which == "gt":
        args = ["bad.json", str(d / "dets.json")]
    else:  # the message names the ground-truth file as given on the command line
        (tmp_path / "gt.json").write_text((d / "gt.json").read_text())
        args = ["gt.json", "bad.json"]
    out = trainlab(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"bad.json: {message}" in lines[0]


@pytest.mark.parametrize("content", [None, "{not json", "[]"])
def test_missing_or_unparsable_file_exits_2(tmp_path, files, content):
    """E3: a missing file, invalid JSON, or a ground truth that is not an object: exit 2, one line."""
    d, _, _ = files
    if content is not None:
        (tmp_path / "gt.json").write_text(content)
    out = trainlab("gt.json", str(d / "dets.json"), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "gt.json: " in out.stderr


@pytest.mark.parametrize("args,needle", [
    (["--plot", "pr.jpg"], "--plot 'pr.jpg': expected a .png file name"),
    (["--plot", "a-file/pr.png"], "--plot 'a-file/pr.png': 'a-file' is a file, not a folder"),
    (["--json", "a-file/out.json"], "--json 'a-file/out.json': 'a-file' is a file, not a folder"),
    (["--plot", "."], "--plot '.': expected a .png file name"),
])
def test_output_paths_checked_before_evaluating(tmp_path, monkeypatch, capsys, args, needle):
    """V4, E3: `--plot pr.jpg` (a PNG under a JPEG name before) and outputs that cannot be written
    are one-line errors (exit 2) found before the evaluation: the ground truth here does not even
    exist, yet the error is about the output."""
    from trainlab.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    assert main(["eval-detections", "missing-gt.json", "missing-dets.json", *args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "pr.jpg").exists()
