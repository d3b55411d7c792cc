"""Instance segmentation (K4, M10, E3, V4): Mask R-CNN, box and mask mAP, predicted instances drawn."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST, shapes_as_coco
from PIL import Image

import trainlab
from trainlab.cli import main
from trainlab.data import build_data
from trainlab.errors import RecipeError
from trainlab.recipe import load_recipe
from trainlab.tasks import build_task

SHAPES = ["task=instance_segmentation", "data.name=shapes", "data.shapes.image_size=32", "data.shapes.count=32",
          "data.batch_size=8", "model.name=mask_rcnn", "model.width=4", "model.depth=3",
          "model.options={levels: 2, fpn_channels: 8, representation: 16, proposals_train: 32, proposals_test: 32, "
          "rois_per_image: 16, mask_channels: 8, mask_convs: 2}", "train.early_stop={patience: 5}", *FAST]


def test_the_task_takes_mask_models_and_declares_mask_metrics():
    """K4/E3 (issue 17): the task monitors the mask mAP by default, declares every box and mask
    metric higher-is-better, and refuses a box-only detector or a data set without instance masks."""
    r = load_recipe(None, SHAPES)
    task = build_task(r, build_data(r, statistics=False).info)
    assert task.monitor == "val_mask_map" and task.quality == "mask_map"
    assert {task.metric_mode(f"val_{m}") for m in ("map", "map50", "mask_map", "mask_map50", "mask_map75")} == {"max"}
    with pytest.raises(RecipeError, match="model.name: 'faster_rcnn' does not predict instance masks; task "
                                          "instance_segmentation takes mask_rcnn"):
        r = load_recipe(None, [*SHAPES, "model.name=faster_rcnn", "model.options={}"])
        build_task(r, build_data(r, statistics=False).info)
    with pytest.raises(RecipeError, match="model.name: 'mask_rcnn' does not detect objects; task detection takes"):
        trainlab.fit(None, [*SHAPES, "task=detection", "run.dir=/nonexistent/x"], quiet=True)


def test_collate_keeps_each_boxs_mask():
    """K4: the batch's targets carry each kept box's mask (K, H, W); a box dropped for having no
    area takes its mask with it."""
    from torchvision import tv_tensors

    r = load_recipe(None, SHAPES)
    task = build_task(r, build_data(r, statistics=False).info)
    masks = torch.zeros(3, 32, 32, dtype=torch.uint8)
    masks[0, 2:10, 1:10] = 1
    masks[2, 20:30, 0:8] = 1
    target = {"label": torch.tensor(0), "labels": torch.tensor([0, 1, 2]),
              "boxes": tv_tensors.BoundingBoxes(torch.tensor([[1.0, 2, 10, 10], [5, 5, 5, 9], [0, 20, 8, 30]]),
                                                format="XYXY", canvas_size=(32, 32)),
              "masks": tv_tensors.Mask(masks)}
    t = task.collate([(torch.zeros(3, 32, 32, dtype=torch.uint8), target)])["targets"][0]
    assert t["labels"].tolist() == [0, 2] and torch.equal(t["masks"], masks[[0, 2]])


@pytest.fixture(scope="module")
def inst_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("inst")
    return trainlab.fit(None, [*SHAPES, "run.plots=true", f"run.dir={root / 'run'}"], quiet=True)


def test_mask_rcnn_trains_and_reports_box_and_mask_map(inst_run, capsys):
    """M10/E3 (issue 17): two epochs of Mask R-CNN record the box and the mask mAP every epoch;
    `trainlab evaluate` prints COCO's summary for boxes and for masks and the per-class tables;
    the report and the plots show the mask mAP."""
    last = inst_run.epochs()[-1]
    assert {"val_map", "val_map50", "val_mask_map", "val_mask_map50", "train_loss_mask"} <= set(last)
    assert 0.0 <= last["val_mask_map"] <= last["val_mask_map50"] <= 1.0
    assert inst_run.summary()["monitor"] == "val_mask_map"
    assert main(["evaluate", str(inst_run.dir), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "boxes:" in out and "masks:" in out
    assert sum("Average Precision" in line for line in out.splitlines()) == 12
    report = inst_run.report_path.read_text()
    assert "## COCO mask evaluation" in report and "| class | mask AP |" in report
    assert {"mask_map.png", "per_class_mask_ap.png"} <= {p.name for p in inst_run.plots.iterdir()}


def test_predict_overlays_instances_and_writes_rle_results(inst_run, tmp_path, capsys):
    """V4/E3 (issue 17): `trainlab predict` draws each instance's mask, box, class and score and
    writes COCO results with RLE masks that `trainlab eval-detections --iou-type segm` reads."""
    paths, gt = shapes_as_coco(build_data(inst_run.recipe(), statistics=False).test, tmp_path, masks=True)
    out = tmp_path / "pred"
    assert main(["predict", str(inst_run.dir), *paths, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "1.instances.png") in printed
    assert Image.open(out / "1.instances.png").mode == "RGB"
    results = json.loads((out / "detections.json").read_text())
    assert all(r["segmentation"]["size"] == [32, 32] for r in results)
    assert main(["eval-detections", str(gt), str(out / "detections.json"), "--iou-type", "segm"]) == 0
