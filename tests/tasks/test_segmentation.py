"""Semantic segmentation (K3, L7, E4, V4): the task, its metrics, its data and its commands."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FAST, stopped_and_resumed
from PIL import Image

import trainlab
from trainlab.cli import main
from trainlab.data import build_data
from trainlab.data.transforms import build_transforms
from trainlab.evaluate.segmentation import confusion_matrix, segmentation_metrics
from trainlab.losses import cross_entropy
from trainlab.recipe import LossConfig, load_recipe
from trainlab.tasks import build_task

SHAPES = ["task=segmentation", "data.name=shapes", "data.shapes.image_size=24", "data.shapes.count=48",
          "data.batch_size=8", "model.name=unet", "model.width=4", "model.depth=2", *FAST]


# ------------------------------------------------------------------------------------ metrics
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_a_direct_computation_on_random_masks(seed):
    """E4: pixel accuracy, per-class IoU and mIoU from one confusion matrix equal the set
    definitions computed class by class on the masks (ignored pixels left out)."""
    g = torch.Generator().manual_seed(seed)
    k, ignore = 5, 255
    target = torch.randint(0, k, (3, 17, 13), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.1] = ignore
    target[target == 3] = 4  # class 3 absent from the labels...
    pred = torch.randint(0, k, target.shape, generator=g)
    pred[pred == 3] = 2  # ...and from the predictions: no IoU for it
    # accumulate in two batches, as an epoch does
    cm = confusion_matrix(pred[:1], target[:1], k, ignore) + confusion_matrix(pred[1:], target[1:], k, ignore)
    m = segmentation_metrics(cm)
    valid = target != ignore
    assert m["pixel_accuracy"] == pytest.approx(float((pred[valid] == target[valid]).double().mean()))
    ious = []
    for c in range(k):
        t, p = (target == c) & valid, (pred == c) & valid
        union = int((t | p).sum())
        if union == 0:
            assert m["per_class"]["iou"][c] is None
            continue
        iou = int((t & p).sum()) / union
        ious.append(iou)
        assert m["per_class"]["iou"][c] == pytest.approx(iou)
        assert m["per_class"]["pixels"][c] == int(t.sum())
    assert m["per_class"]["iou"][3] is None and len(ious) == 4
    assert m["miou"] == pytest.approx(sum(ious) / len(ious))
    assert sum(map(sum, m["confusion"])) == int(valid.sum())


def test_confusion_matrix_against_sklearn():
    """E4: the pixel confusion matrix is sklearn's confusion_matrix of the flattened maps."""
    from sklearn.metrics import confusion_matrix as sk

    g = torch.Generator().manual_seed(3)
    t, p = torch.randint(0, 4, (2, 9, 9), generator=g), torch.randint(0, 4, (2, 9, 9), generator=g)
    assert confusion_matrix(p, t, 4).tolist() == sk(t.flatten(), p.flatten(), labels=range(4)).tolist()


def test_pixel_cross_entropy_with_ignore_index_and_class_weights():
    """L7: the loss is Σ w[y]·(−log softmax(s)[y]) / Σ w[y] over the labelled pixels only; a batch
    with no labelled pixel gives 0 (no 0/0), and soft targets have nothing to ignore."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 3, 4, 5, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5), generator=g)
    target[0, 0, :3] = 7  # unlabelled
    w = [1.0, 2.0, 0.5]
    info = type("I", (), {"extra": {}})()
    got = cross_entropy(LossConfig(class_weights=w, ignore_index=7), info)(scores, target)
    logp = F.log_softmax(scores.detach(), 1).permute(0, 2, 3, 1).reshape(-1, 3)
    y = target.reshape(-1)
    keep = y != 7
    weights = torch.tensor(w)[y[keep]]
    expect = -(weights * logp[keep].gather(1, y[keep, None]).squeeze(1)).sum() / weights.sum()
    assert got.item() == pytest.approx(expect.item(), rel=1e-6)
    smooth = cross_entropy(LossConfig(ignore_index=7, label_smoothing=0.1), info)(scores, target)
    ref = F.cross_entropy(scores, target, ignore_index=7, label_smoothing=0.1)  # torch's mean, same formula
    assert smooth.item() == pytest.approx(ref.item(), rel=1e-6)
    empty = cross_entropy(LossConfig(ignore_index=7), info)(scores, torch.full_like(target, 7))
    empty.backward()
    assert empty.item() == 0.0 and bool((scores.grad == 0).all())
    soft = torch.softmax(torch.randn(2, 3, generator=g), 1)
    mixed = cross_entropy(LossConfig(ignore_index=7), info)(torch.randn(2, 3, generator=g), soft)
    assert torch.isfinite(mixed)


def test_one_ignore_value_for_loss_metrics_and_padding():
    """K3/L7: the task uses one ignore value (the recipe's or the data set's, else 255) for the
    loss, the confusion matrix and the padding of mixed sizes; the two settings may not disagree."""
    from trainlab.errors import RecipeError
    from trainlab.tasks.segmentation import ignore_value

    classes = ["bg", "a", "b"]
    assert ignore_value(None, None, classes) == 255 and ignore_value(None, 200, classes) == 200
    assert ignore_value(9, None, classes) == 9 and ignore_value(9, 9, classes) == 9
    with pytest.raises(RecipeError, match="loss.ignore_index: 254 differs from the data set's ignore index 255"):
        ignore_value(254, 255, classes)
    with pytest.raises(RecipeError, match=r"loss.ignore_index: 1 is a class id \(a\)"):
        ignore_value(1, None, classes)
    r = load_recipe(None, [*SHAPES])
    task = build_task(r, build_data(r, statistics=False).info)
    img = torch.zeros(3, 4, 4, dtype=torch.uint8)
    from trainlab.data.samples import make_target

    small = (img[:, :2, :3], make_target(0, None, None, (2, 3), semantic=torch.ones(2, 3, dtype=torch.uint8)))
    big = (img, make_target(0, None, None, (4, 4), semantic=torch.full((4, 4), 2, dtype=torch.uint8)))
    batch = task.collate([small, big])
    assert batch["target"].shape == (2, 4, 4) and int((batch["target"][0] == 255).sum()) == 16 - 6
    scores = torch.randn(2, 5, 4, 4, requires_grad=True)
    loss = task.loss(scores, batch)
    keep = batch["target"] != 255
    ref = F.cross_entropy(scores.permute(0, 2, 3, 1)[keep], batch["target"][keep],
                          label_smoothing=r.loss.label_smoothing)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    meter = task.eval_meter()
    meter.update(scores, batch, loss)
    assert sum(map(sum, meter.compute()["confusion"])) == 6 + 16


# --------------------------------------------------------------------------------- the data
def test_masks_follow_every_geometric_transform_with_nearest_sampling():
    """K3/D3: a mask goes through each geometric transform with its image, resampled nearest
    (its values stay class ids), and stays aligned: an image painted by the mask's class still
    matches the mask after the transform."""
    recipe = load_recipe(None, [*SHAPES])
    info = build_data(recipe, statistics=False).info
    mask = torch.zeros(32, 32, dtype=torch.uint8)
    mask[4:20, 6:14] = 1
    mask[18:30, 16:30] = 3
    image = (mask * 60).expand(3, -1, -1).clone()
    from trainlab.data.samples import make_target

    target = make_target(0, None, None, (32, 32), semantic=mask)
    specs = [{"name": "hflip", "p": 1.0}, {"name": "vflip", "p": 1.0}, {"name": "rotate", "degrees": 30},
             {"name": "affine", "degrees": 10, "translate": 0.1, "scale": [0.8, 1.2]},
             {"name": "random_resized_crop", "size": 32}, {"name": "random_crop", "padding": 4}]
    for spec in specs:
        pipe = build_transforms([spec], info)
        torch.manual_seed(1)
        x, y = pipe(image, target)
        m = y["semantic"].as_subclass(torch.Tensor)
        assert m.shape == x.shape[1:], spec
        assert set(torch.unique(m).tolist()) <= {0, 1, 3}, spec  # nearest: no blended ids
        agree = (x[0].float() / 60).round() == m.float()
        assert agree.float().mean() > 0.9, (spec, agree.float().mean())


def test_segmentation_task_needs_masks_and_a_dense_model():
    """K3/D6: the task refuses a data set without masks, a model without per-pixel output, label
    mixing it cannot apply to masks, and class weights that do not match its classes."""
    from trainlab.errors import RecipeError

    with pytest.raises(RecipeError, match="per-pixel masks"):
        r = load_recipe(None, ["task=segmentation", "model.name=unet"])
        build_task(r, build_data(r, statistics=False).info)
    with pytest.raises(RecipeError, match="does not predict a class per pixel.*fcn.*segnet.*unet"):
        r = load_recipe(None, [*SHAPES, "model.name=cnn"])
        build_task(r, build_data(r, statistics=False).info)
    with pytest.raises(RecipeError, match=r"data.batch_augment\[1\]: cutmix blends class labels"):
        r = load_recipe(None, [*SHAPES, "data.batch_augment=[cutout, cutmix]"])
        build_task(r, build_data(r, statistics=False).info)
    with pytest.raises(RecipeError, match="loss.class_weights: 2 weights for 5 classes"):
        r = load_recipe(None, [*SHAPES, "loss.class_weights=[1, 2]"])
        build_task(r, build_data(r, statistics=False).info)


# ------------------------------------------------------------------ training, report, CLI
@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    run = trainlab.fit(None, [*SHAPES, "run.plots=true", "train.epochs=3", f"run.dir={root / 'run'}",
                              "data.augment=[hflip, {name: rotate, degrees: 10}]"], quiet=True)
    return run


def test_shapes_segmentation_trains_and_reports_its_own_metrics(shapes_run):
    """K3/E4/V5 (issue 14): a segmentation run has mIoU columns, not classification ones, in its
    epoch records, summary, plots and report; the doctor judges it by its declared metrics."""
    run = shapes_run
    epochs = run.epochs()
    assert {"train_miou", "val_miou", "val_pixel_accuracy", "val_mean_accuracy"} <= set(epochs[-1])
    assert not any("accuracy" == k.split("_", 1)[-1] for r in epochs for k in r)
    s = run.summary()
    assert s["monitor"] == "val_loss" and 0 <= s["test"]["miou"] <= 1
    assert len(s["test"]["per_class"]["iou"]) == 5  # background + 4 shapes
    assert 0 <= s["val"]["pixel_accuracy"] <= 1 and s["val"]["miou"] <= s["val"]["pixel_accuracy"] + 1
    plots = {p.name for p in run.plots.iterdir()}
    assert {"loss.png", "lr.png", "miou.png", "per_class_iou.png", "confusion.png"} <= plots
    assert "accuracy.png" not in plots
    report = run.report_path.read_text()
    assert "| class | IoU | accuracy | pixels |" in report and "![per_class_iou](plots/per_class_iou.png)" in report
    assert "precision" not in report
    doctor = json.loads((run.dir / "doctor.json").read_text())
    data = doctor["history"]["data"]
    assert data["quality"] == "miou" and data["labels_per_sample"] is False and "class_counts" not in data
    for f in doctor["findings"]:
        assert "accuracy" not in f["message"], f


def test_evaluate_prints_the_per_class_table(shapes_run, capsys):
    """E4: `trainlab evaluate` on a segmentation run prints IoU per class and mIoU."""
    assert main(["evaluate", str(shapes_run.dir), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "miou" in out and "pixel_accuracy" in out
    lines = [line.split() for line in out.splitlines()]
    header = next(i for i, parts in enumerate(lines) if parts[:3] == ["class", "IoU", "accuracy"])
    assert [parts[0] for parts in lines[header + 1: header + 6]] == ["background", "circle", "square", "triangle",
                                                                     "star"]
    saved = json.loads((shapes_run.dir / "eval-val-best.json").read_text())
    assert saved["miou"] == pytest.approx(float(next(p[1] for p in lines if p and p[0] == "miou")), abs=1e-4)


def test_predict_writes_a_mask_and_an_overlay(shapes_run, tmp_path, capsys):
    """V4/K3: `trainlab predict RUN IMAGE...` writes each image's mask (class ids) and overlay."""
    recipe = shapes_run.recipe()
    source = build_data(recipe, statistics=False).test
    x, _ = source.load(0)
    Image.fromarray(x.permute(1, 2, 0).numpy()).save(tmp_path / "a.png")
    np.save(tmp_path / "b.npy", source.load(1)[0].numpy())
    out = tmp_path / "pred"
    assert main(["predict", str(shapes_run.dir), str(tmp_path / "a.png"), str(tmp_path / "b.npy"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{tmp_path / 'a.png'}: ") and "%" in printed and str(out / "a.mask.png") in printed
    mask = np.asarray(Image.open(out / "a.mask.png"))
    assert mask.shape == (24, 24) and mask.max() < 5
    p = shapes_run.predict([tmp_path / "a.png"])  # issue 22: named fields, probs as NumPy
    assert np.array_equal(mask, p.probs.argmax(1)[0]) and p.class_names[0] == "background"
    assert p.classes is None and p.inputs == [str(tmp_path / "a.png")]
    overlay = Image.open(out / "b.overlay.png")
    assert overlay.mode == "RGB" and min(overlay.size) >= 24


def test_segmentation_resumes_bit_for_bit(tmp_path):
    """T3 (issue 14): a segmentation run stopped after an epoch and resumed ends with the same
    weights as the run that was never stopped (confusion-matrix meter and all)."""
    # a constant LR: a cosine schedule would depend on train.epochs, which differs between the two
    args = [*SHAPES, "train.checkpoint_every_steps=2", "model.dropout=0.2", "data.augment=[hflip]",
            "schedule.name=none"]
    full, resumed = stopped_and_resumed(args, tmp_path)
    assert full.epochs()[-1]["train_miou"] == resumed.epochs()[-1]["train_miou"]


# ------------------------------------------------------------------- the folder data set
def _folder(root, n=8, size=(20, 24)):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.zeros(size, dtype=np.uint8)
        r, c = rng.integers(2, 10), rng.integers(2, 12)
        mask[r:r + 8, c:c + 8] = 1 + i % 2
        mask[0, :] = 255  # an unlabelled row
        img = np.stack([mask * 100, 255 - mask * 80, np.full(size, 30)], -1).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"{i:02d}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{i:02d}.png")
    return root


def test_segmentation_folder_trains_the_same_way(tmp_path):
    """K3/D10: images/ + index-PNG masks/ train with the segmentation task; 255 is ignored."""
    root = _folder(tmp_path / "data")
    run = trainlab.fit(None, ["task=segmentation", "data.name=segmentation", f"data.root={root}",
                              "data.segmentation.classes=[bg, a, b]", "data.batch_size=2", "model.name=fcn",
                              "model.width=4", *FAST, f"run.dir={tmp_path / 'run'}"], quiet=True)
    s = run.summary()
    assert s["class_names"] == ["bg", "a", "b"]
    pixels = s["test"]["per_class"]["pixels"]
    assert sum(pixels) == 1 * 19 * 24  # one test image (15% of 8); its unlabelled row counts nowhere


def test_preview_and_predict_refuse_what_does_not_apply(tmp_path, capsys):
    """D11/V4: `trainlab augment` refuses a segmentation recipe with label mixing as `fit` does,
    and `predict --out` on a classification run says its predictions are printed; exit 2, one
    line, nothing written."""
    code = main(["augment", *SHAPES, "data.batch_augment=[mixup]", "--out", str(tmp_path / "g.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "data.batch_augment[0]: mixup blends class labels" in err[0]
    assert not (tmp_path / "g.png").exists()
    run = trainlab.fit("digits-mlp", [*FAST, "train.epochs=1", f"run.dir={tmp_path / 'c'}"], quiet=True)
    np.save(tmp_path / "x.npy", np.zeros((8, 8)))
    code = main(["predict", str(run.dir), str(tmp_path / "x.npy"), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--out" in err[0] and "printed" in err[0]
    assert not (tmp_path / "p").exists()


def test_ignored_targets_with_small_class_weights_match_torch():
    """L7: with an ignore index and class weights summing below 1 over the counted targets, the
    loss is torch's weighted mean (the denominator was once clamped to 1, shrinking it)."""
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1, 2, 255, 0])
    loss = cross_entropy(LossConfig(ignore_index=255, class_weights=[0.1, 0.2, 0.1]), None)
    ref = F.cross_entropy(x, t, weight=torch.tensor([0.1, 0.2, 0.1]), ignore_index=255)
    assert float(loss(x, t)) == pytest.approx(float(ref), rel=1e-6)
