"""Object detection (K2, M9, E2, E3, V4, I4): the task, its post-processing, backbones, models and commands."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FAST, shapes_as_coco, stopped_and_resumed
from PIL import Image

import trainlab
from trainlab.cli import main
from trainlab.data import build_data
from trainlab.errors import DataError, RecipeError
from trainlab.models.detector import PostProcess, postprocess
from trainlab.recipe import load_recipe
from trainlab.tasks import build_task

SHAPES = ["task=detection", "data.name=shapes", "data.shapes.image_size=32", "data.shapes.count=32",
          "data.batch_size=8", "model.width=4", "model.depth=3", "train.early_stop={patience: 5}", *FAST]
# the smallest instance of each detector that still trains (a smoke test, not a quality test)
MODELS = {
    "faster_rcnn": ["model.name=faster_rcnn", "model.options={levels: 2, fpn_channels: 8, representation: 16, "
                    "proposals_train: 32, proposals_test: 32, rois_per_image: 16}"],
    "retinanet": ["model.name=retinanet", "model.options={levels: 2, fpn_channels: 8}"],
    "yolo_v1": ["model.name=yolo_v1", "model.options={grid: 0}"],
    "ssd": ["model.name=ssd", "model.depth=1"],
}


def _task(args):
    r = load_recipe(None, args)
    return build_task(r, build_data(r, statistics=False).info)


# --------------------------------------------------------------------------- post-processing
def test_postprocess_is_torchvision_batched_nms_after_the_score_threshold():
    """E2 (issue 15): post-processing keeps (box, class) pairs above the score threshold, clips
    them to the image, runs class-aware NMS (torchvision.ops.batched_nms) and keeps the best
    max_detections; boxes of different classes never suppress each other."""
    from torchvision.ops import batched_nms

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 4 + torch.rand(300, 2, generator=g) * 20], 1)
    scores = torch.rand(300, 3, generator=g)
    pp = PostProcess(score_threshold=0.3, nms_iou=0.45, max_detections=40)
    out = postprocess(boxes, scores, (64, 64), pp)
    # the reference, written out: every pair, threshold, clip, torchvision's batched NMS, top 40
    b = boxes[:, None].expand(300, 3, 4).reshape(-1, 4).clamp(0, 64)
    s, lab = scores.reshape(-1), torch.arange(3).repeat(300)
    k = s > 0.3
    keep = batched_nms(b[k], s[k], lab[k], 0.45)[:40]
    assert torch.equal(out["boxes"], b[k][keep]) and torch.equal(out["labels"], lab[k][keep])
    assert torch.equal(out["scores"], s[k][keep]) and len(out["scores"]) == 40
    # two identical boxes of two classes both survive; of one class, one does
    same = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    two = postprocess(same, torch.tensor([0.9, 0.8]), (20, 20), pp, labels=torch.tensor([0, 1]))
    one = postprocess(same, torch.tensor([0.9, 0.8]), (20, 20), pp, labels=torch.tensor([1, 1]))
    assert len(two["scores"]) == 2 and len(one["scores"]) == 1 and float(one["scores"][0]) == pytest.approx(0.9)


def test_boxes_reach_the_model_as_plain_tensors_and_bad_class_ids_are_refused():
    """K2: a batch holds each image's own number of boxes (none allowed); boxes pushed past the
    border by augmentation are clipped, boxes left without area are dropped, and a class id the
    model has no output for is a DataError naming the sample and the box."""
    from torchvision import tv_tensors

    task = _task([*SHAPES, *MODELS["retinanet"]])

    def sample(boxes, labels):
        target = {"label": torch.tensor(0), "labels": torch.tensor(labels, dtype=torch.long),
                  "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float).reshape(-1, 4),
                                                    format="XYXY", canvas_size=(32, 32))}
        return torch.zeros(3, 32, 32, dtype=torch.uint8), target

    batch = task.collate([sample([[1, 2, 10, 12], [-3, 20, 8, 40], [5, 5, 5, 9]], [0, 3, 1]), sample([], [])])
    assert batch["input"].shape == (2, 3, 32, 32)
    t0, t1 = batch["targets"]
    assert type(t0["boxes"]) is torch.Tensor and t0["boxes"].tolist() == [[1, 2, 10, 12], [0, 20, 8, 32]]
    assert t0["labels"].tolist() == [0, 3] and t1["boxes"].shape == (0, 4) and t1["labels"].shape == (0,)
    with pytest.raises(DataError, match=r"sample 0 of the batch: box 1 \[1.0, 1.0, 4.0, 4.0\] has class id 4; "
                                        r"expected 0..3"):
        task.collate([sample([[0, 0, 3, 3], [1, 1, 4, 4]], [2, 4])])


def test_detection_declares_its_metrics_and_refuses_what_does_not_apply():
    """E3 (issue 15): val_map, val_map50, val_map75, val_mar100 are higher-is-better and the
    default monitor is val_map; the model's loss terms are lower-is-better; a classifier, a data
    set without boxes and label mixing are refused with one line each."""
    task = _task([*SHAPES, *MODELS["retinanet"]])
    assert task.monitor == "val_map"
    assert {task.metric_mode(m) for m in ("val_map", "val_map50", "val_map75", "val_mar100")} == {"max"}
    assert task.metric_mode("val_loss") == task.metric_mode("train_loss_classifier") == "min"
    # torchvision's detectors compute no loss in eval mode: watching val_loss is refused, not ignored
    assert "loss" not in task.val_metrics
    with pytest.raises(RecipeError, match="train.early_stop.monitor: unknown metric 'val_loss'"):
        trainlab.fit(None, [*SHAPES, *MODELS["retinanet"], "train.early_stop.monitor=val_loss", "run.dir=/nonexistent/x"],
                     quiet=True)
    with pytest.raises(RecipeError, match="model.name: 'cnn' does not detect objects; task detection takes "
                                          ".*faster_rcnn.*retinanet"):
        _task([*SHAPES, "model.name=cnn"])
    with pytest.raises(RecipeError, match="task: detection needs a data set with boxes"):
        _task(["task=detection", "model.name=retinanet", "data.name=digits"])
    with pytest.raises(RecipeError, match=r"data.batch_augment\[0\]: mixup blends class labels"):
        _task([*SHAPES, *MODELS["retinanet"], "data.batch_augment=[mixup]"])


# ---------------------------------------------------------------------------------- backbones
@pytest.mark.parametrize("name,options,strides", [("cnn", {}, [4, 8]), ("resnet18", {}, [4, 8]),
                                                  ("resnet18", {"stem": "imagenet"}, [16, 32]),
                                                  ("mobilenet_v2", {"stem": "imagenet"}, [16, 32])])
def test_any_zoo_cnn_gives_its_feature_maps(name, options, strides):
    """M9/K2 (issue 15): a zoo classifier cut to its trunk returns the maps of its deepest
    ``levels`` strides, with the channels its detector head is built for."""
    from trainlab.data.bundle import DataInfo
    from trainlab.models.backbone import build_backbone
    from trainlab.recipe import ModelConfig

    info = DataInfo(input_shape=(3, 64, 64), num_classes=4, class_names=list("abcd"))
    body = build_backbone(ModelConfig(width=8, depth=3), info, name, options, None, 2)
    assert body.strides == strides
    maps = body(torch.zeros(2, 3, 64, 64))
    assert [m.shape[1] for m in maps.values()] == body.out_channels
    assert [64 // m.shape[-1] for m in maps.values()] == strides


def test_backbone_weights_come_from_a_local_classifier_checkpoint(tmp_path, capsys):
    """I4 (issue 15): model.options.backbone_weights loads a trainlab classification run's
    weights into the detector's backbone; a missing file is one line naming the option."""
    cls = trainlab.fit(None, ["data.name=shapes", "data.shapes.image_size=32", "data.shapes.count=32",
                              "model.name=cnn", "model.width=4", "model.depth=3", "train.epochs=1", "data.batch_size=8",
                              "run.tensorboard=false", "run.plots=false", "train.progress=false", "doctor=null",
                              f"run.dir={tmp_path / 'cls'}"], quiet=True)
    weights = cls.checkpoints / "best.safetensors"
    from trainlab.models import build_model
    from safetensors.torch import load_file

    r = load_recipe(None, [*SHAPES, "model.name=retinanet",
                           f"model.options={{levels: 2, fpn_channels: 8, backbone_weights: {weights}}}"])
    task = build_task(r, build_data(r, statistics=False).info)
    model = build_model(r, task.model_info(build_data(r, statistics=False).info))
    assert "backbone weights" in capsys.readouterr().out
    trained = load_file(weights)["model.net.0.0.weight"]
    assert torch.equal(model.net.model.backbone.body.body[0][0].weight, trained)
    with pytest.raises(RecipeError, match="model.options.backbone_weights: file '/nope.pt' does not exist"):
        build_model(load_recipe(None, [*SHAPES, "model.name=retinanet",
                                       "model.options={levels: 2, backbone_weights: /nope.pt}"]), task.info)


# --------------------------------------------------------------------- training and commands
@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_detector_fits_two_epochs(name, tmp_path):
    """M9/K2 (issue 15): each registered detector trains two epochs on the shapes and records
    its loss terms and COCO mAP every epoch."""
    run = trainlab.fit(None, [*SHAPES, *MODELS[name], f"run.dir={tmp_path / name}"], quiet=True)
    last = run.epochs()[-1]
    assert last["epoch"] == 2 and np.isfinite(last["train_loss"])
    assert {"val_map", "val_map50", "val_map75", "val_mar100"} <= set(last)
    assert any(k.startswith("train_loss_") for k in last)
    assert 0.0 <= last["val_map"] <= last["val_map50"] <= 1.0
    # yolo_v1 and ssd compute their loss in eval mode too; torchvision's detectors do not
    assert ("val_loss" in last) == (name in ("yolo_v1", "ssd"))
    s = run.summary()
    assert s["monitor"] == "val_map" and len(s["test"]["coco"]["stats"]) == 12


@pytest.fixture(scope="module")
def det_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    return trainlab.fit(None, [*SHAPES, *MODELS["faster_rcnn"], "run.plots=true", "train.epochs=2",
                               "train.early_stop={monitor: val_map50, patience: 3}", f"run.dir={root / 'run'}",
                               "data.augment=[hflip, mosaic]"], quiet=True)


def test_evaluate_prints_cocos_summary_and_per_class_ap(det_run, capsys):
    """E3 (issue 15): `trainlab evaluate RUN` prints COCO's 12-number summary and AP per class;
    the report and the plots show mAP; early stopping can follow val_map50."""
    assert main(["evaluate", str(det_run.dir), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert sum("Average Precision" in line for line in out.splitlines()) == 6
    assert sum("Average Recall" in line for line in out.splitlines()) == 6
    lines = [line.split() for line in out.splitlines()]
    header = next(i for i, parts in enumerate(lines) if parts[:3] == ["class", "AP", "AP50"])
    assert [p[0] for p in lines[header + 1: header + 5]] == ["circle", "square", "triangle", "star"]
    assert det_run.summary()["monitor"] == "val_map50"
    report = det_run.report_path.read_text()
    assert "## COCO evaluation" in report and "| class | AP | AP50 | AP75 | objects | detections |" in report
    assert {"map.png", "per_class_ap.png"} <= {p.name for p in det_run.plots.iterdir()}


def test_predict_draws_boxes_and_writes_coco_results(det_run, tmp_path, capsys):
    """V4 (issue 15): `trainlab predict RUN IMAGE...` draws each image's boxes with class names
    and scores and writes COCO results that `trainlab eval-detections` accepts."""
    paths, gt = shapes_as_coco(build_data(det_run.recipe(), statistics=False).test, tmp_path)
    out = tmp_path / "pred"
    assert main(["predict", str(det_run.dir), *paths, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{paths[0]}: ") and str(out / "1.boxes.png") in printed
    picture = Image.open(out / "1.boxes.png")
    assert picture.mode == "RGB" and min(picture.size) >= 32
    results = json.loads((out / "detections.json").read_text())
    assert results and {r["image_id"] for r in results} <= {1, 2}
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in results)
    assert main(["eval-detections", str(gt), str(out / "detections.json")]) == 0
    assert "Average Precision" in capsys.readouterr().out


def test_export_refuses_a_detection_run_in_one_line(det_run, tmp_path, capsys):
    """K2: `trainlab export` on a detection run is a one-line error (exit 2), nothing written."""
    out = tmp_path / "m.onnx"
    assert main(["export", str(det_run.dir), "--format", "onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "a detection model returns a list of results per image" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_detection_resumes_bit_for_bit(tmp_path):
    """T3 (issue 15): a detection run stopped after an epoch and resumed ends with the same
    weights and loss terms as the run that was never stopped."""
    args = [*SHAPES, *MODELS["faster_rcnn"], "train.checkpoint_every_steps=2", "data.augment=[hflip]",
            "schedule.name=none"]
    full, resumed = stopped_and_resumed(args, tmp_path)
    fa, fb = full.epochs()[-1], resumed.epochs()[-1]
    assert {k: v for k, v in fa.items() if k != "time_s"} == {k: v for k, v in fb.items() if k != "time_s"}


# ----------------------------------------------------------------------------- COCO files
def _coco(root, boxes_per_image, size=32):
    """A COCO folder: one image per entry of ``boxes_per_image`` (a list of (bbox, category))."""
    root.mkdir(parents=True, exist_ok=True)
    data = {"images": [], "annotations": [], "categories": [{"id": 7, "name": "box"}, {"id": 9, "name": "disc"}]}
    for i, anns in enumerate(boxes_per_image):
        img = np.full((size, size, 3), 20, np.uint8)
        for (x, y, w, h), _ in anns:
            img[int(y):int(y + h), int(x):int(x + w)] = 200
        Image.fromarray(img).save(root / f"{i}.png")
        data["images"].append({"id": 100 + i, "file_name": f"{i}.png", "width": size, "height": size})
        for bbox, cat in anns:
            data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": 100 + i,
                                        "category_id": cat, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})
    (root / "ann.json").write_text(json.dumps(data))
    return root / "ann.json"


def test_coco_detection_trains_on_background_images_and_refuses_bad_boxes(tmp_path, capsys):
    """K2 (issue 15): an image with no boxes trains as background; a box outside its image, a
    negative size or an unknown category exits 2 naming the file, the annotation and the image,
    and writes no run."""
    good = [[([2, 3, 10, 8], 7)], [([10, 10, 12, 12], 9), ([1, 1, 6, 6], 7)], [], [([4, 4, 20, 20], 9)]] * 3
    ann = _coco(tmp_path / "ok", good)
    base = ["task=detection", "data.name=coco", f"data.root={ann}", "data.batch_size=4", "data.split.test=0",
            "data.split.val=0.25", *MODELS["retinanet"], "model.width=4", "model.depth=3",
            "train.early_stop={patience: 5}", *FAST]
    bundle = build_data(load_recipe(None, base), statistics=False)
    assert len(bundle.train) + len(bundle.val) == 12  # the three background images are kept
    run = trainlab.fit(None, [*base, f"run.dir={tmp_path / 'run'}"], quiet=True)
    assert run.epochs()[-1]["epoch"] == 2
    cases = {
        "outside": ([([25, 2, 10, 8], 7)], r"annotations\[0\].bbox: box \[25, 2, 10, 8\] lies outside image 0.png"),
        "negative": ([([2, 2, -3, 8], 7)], r"annotations\[0\].bbox: width and height must be >= 0"),
        "unknown": ([([2, 2, 3, 8], 8)], r"annotations\[0\].category_id: 8 is not the id of any entry in categories"),
    }
    for name, (first, message) in cases.items():
        bad = _coco(tmp_path / name, [first, *good[:3]])
        out = tmp_path / f"run-{name}"
        code = main(["fit", "--quiet", *[a for a in base if not a.startswith("data.root")], f"data.root={bad}",
                     f"run.dir={out}"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert str(bad) in err and __import__("re").search(message, err), err
        assert not out.exists()
