"""D6, L3: MixUp and CutMix on batches (soft targets, weights summing to 1, boxes of both images),
Mosaic's tiles, and the loss on soft targets."""
from __future__ import annotations

import pytest
import torch
from helpers_data import shapes_recipe

from trainlab.data import build_data
from trainlab.data.batch import build_batch_transforms
from trainlab.data.bundle import DataInfo
from trainlab.data.samples import collate

INFO = DataInfo(input_shape=(3, 12, 12), num_classes=5, class_names=list("abcde"))


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"input": torch.randint(0, 256, (n, 3, 12, 12), dtype=torch.uint8, generator=g),
            "target": torch.randint(0, 5, (n,), generator=g)}


def test_mixup_is_a_convex_blend_of_inputs_and_labels():
    """D6, L3: x = λ·a + (1 − λ)·b for a partner b of the batch (uint8 images stay uint8, rounded to
    nearest); the soft target is λ·onehot(a) + (1 − λ)·onehot(b), so its rows sum to 1."""
    batch = _batch()
    x, y = batch["input"].float(), batch["target"]
    out = build_batch_transforms([{"name": "mixup", "alpha": 0.4}], INFO)(dict(batch), torch.Generator().manual_seed(3))
    lam = out["mix_lambda"]
    assert out["input"].dtype == torch.uint8 and out["target"].shape == (16, 5)
    assert torch.allclose(out["target"].sum(1), torch.ones(16))
    onehot = torch.nn.functional.one_hot(y, 5).float()
    for i in range(16):
        errors = [float((out["input"][i] - (lam[i] * x[i] + (1 - lam[i]) * x[j])).abs().max()) for j in range(16)]
        partners = [j for j in range(16) if errors[j] <= 0.5 + 1e-3]  # λ near 1: several fit the pixels
        assert any(torch.allclose(out["target"][i], lam[i] * onehot[i] + (1 - lam[i]) * onehot[j]) for j in partners)


def test_mixup_lambda_follows_beta():
    """D6: λ ~ Beta(α, α) (Kolmogorov-Smirnov test against scipy)."""
    from scipy import stats

    from trainlab.data.mixing import beta_draws

    lam = beta_draws(0.4, 4000, torch.Generator().manual_seed(0), "cpu").numpy()
    assert stats.kstest(lam, "beta", args=(0.4, 0.4)).pvalue > 0.01


def test_cutmix_pastes_a_rectangle_and_weights_labels_by_area():
    """D6: the pasted pixels form one rectangle copied from a partner; λ = 1 − area / HW and the
    soft target rows sum to 1; an image left unchanged (its own partner) keeps its own label."""
    batch = _batch(seed=1)
    x, y = batch["input"], batch["target"]
    out = build_batch_transforms(["cutmix"], INFO)({"input": x.clone(), "target": y}, torch.Generator().manual_seed(4))
    assert out["input"].dtype == torch.uint8
    onehot = torch.nn.functional.one_hot(y, 5).float()
    assert torch.allclose(out["target"].sum(1), torch.ones(16))
    pasted = 0
    for i in range(16):
        changed = (out["input"][i] != x[i]).any(0)
        if not changed.any():  # nothing pasted, so nothing of another label mixed in
            assert torch.allclose(out["target"][i], onehot[i]), i
            continue
        pasted += 1
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        assert abs(float(out["mix_lambda"][i]) - (1 - (y1 - y0) * (x1 - x0) / 144)) < 1e-6
        patch = out["input"][i, :, y0:y1, x0:x1]
        j = next(j for j in range(16) if torch.equal(x[j, :, y0:y1, x0:x1], patch))
        lam = out["mix_lambda"][i]
        assert torch.allclose(out["target"][i], lam * onehot[i] + (1 - lam) * onehot[j])
    assert pasted >= 12  # 15 of the 16 images with this seed (the other drew itself as its partner)


def test_cutmix_keeps_the_boxes_of_both_images():
    """D6: after CutMix an image holds its own objects outside the patch and the partner's objects
    inside it; every box is the extent of its mask."""
    from torchvision.ops import masks_to_boxes

    bundle = build_data(shapes_recipe(count=24, size=32), annotations=True)
    batch = collate([bundle.train.load(i) for i in range(8)])
    before = [dict(a) for a in batch["annotations"]]
    x = batch["input"].clone()
    out = build_batch_transforms([{"name": "cutmix", "alpha": 1.0}], bundle.info)(batch, torch.Generator().manual_seed(2))
    kept_partner = 0
    for i in range(8):
        ann = out["annotations"][i]
        changed = (out["input"][i] != x[i]).any(0)
        masks = ann["masks"].bool()
        assert len(ann["boxes"]) == len(ann["labels"]) == len(masks)
        for k in range(len(masks)):
            ref = masks_to_boxes(masks[k][None])[0] + torch.tensor([0.0, 0.0, 1.0, 1.0])
            assert torch.equal(ann["boxes"][k].as_subclass(torch.Tensor), ref)
        own = sum(int((m.bool() & ~changed).any()) for m in before[i]["masks"]) if changed.any() else len(before[i]["masks"])
        assert len(masks) >= own
        kept_partner += len(masks) - own
    assert kept_partner > 0


def test_soft_target_loss_is_the_lambda_weighted_loss():
    """L3: cross-entropy against λ·onehot(a) + (1 − λ)·onehot(b) = λ·CE(a) + (1 − λ)·CE(b)."""
    import torch.nn.functional as F

    from trainlab.losses import LOSSES
    from trainlab.recipe import load_recipe

    loss = LOSSES.get("cross_entropy").fn(load_recipe(None, ["loss.label_smoothing=0"]).loss, INFO)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g)
    a, b = torch.randint(0, 5, (6,), generator=g), torch.randint(0, 5, (6,), generator=g)
    lam = torch.rand(6, generator=g)
    soft = lam[:, None] * F.one_hot(a, 5) + (1 - lam[:, None]) * F.one_hot(b, 5)
    ref = (lam * F.cross_entropy(logits, a, reduction="none") + (1 - lam) * F.cross_entropy(logits, b, reduction="none")).mean()
    assert torch.allclose(loss(logits, soft), ref, atol=1e-6)


def test_mosaic_tiles_four_samples_and_drops_tiny_boxes():
    """D6: mosaic keeps the size, takes its label from one of its tiles, keeps boxes inside the
    canvas and drops boxes smaller than min_size."""
    from trainlab.data.transforms import build_transforms

    bundle = build_data(shapes_recipe("data.augment=[{name: mosaic, min_size: 3}]", count=30, size=32))
    pipe = build_transforms([{"name": "mosaic", "min_size": 3}], bundle.info, source=bundle.train)
    labels_seen = set()
    for i in range(10):
        x, y = bundle.train.load(i)
        torch.manual_seed(i)
        x2, y2 = pipe(x, y)
        boxes = y2["boxes"].as_subclass(torch.Tensor)
        assert x2.shape == x.shape and len(boxes) > 0
        assert bool(((boxes[:, 2:] - boxes[:, :2]) >= 3).all())
        assert bool((boxes >= 0).all() and (boxes[:, 2] <= 32).all() and (boxes[:, 3] <= 32).all())
        assert int(y2["label"]) in range(4)
        labels_seen.add(len(boxes))
    assert max(labels_seen) > 3  # several tiles contribute objects


def test_train_accuracy_scores_soft_targets_by_their_argmax():
    """L3: the classification task counts a mixed sample correct when the prediction is the
    dominant class of its soft target."""
    from trainlab.recipe import load_recipe
    from trainlab.tasks import build_task
    from trainlab.tasks.base import TrainMeter

    task = build_task(load_recipe(None, []), INFO)
    meter = TrainMeter()
    logits = torch.tensor([[5.0, 0, 0, 0, 0], [0, 5.0, 0, 0, 0]])
    soft = torch.tensor([[0.7, 0.3, 0, 0, 0], [0.6, 0.4, 0, 0, 0]])
    task.train_update(meter, logits, {"target": soft}, torch.tensor(1.0))
    assert task.train_summary(meter)["accuracy"] == pytest.approx(0.5)
