"""E3: precision-recall curves and AP (COCO 101-point, VOC all-point) against references:
pycocotools' own matches and precision table, and the VOC devkit's all-point formula."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from trainlab.evaluate import ap
from trainlab.evaluate.synthetic import synthetic_coco

pycocotools = pytest.importorskip("pycocotools")
from coco_oracle import run_pycocotools  # noqa: E402


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_101_equals_pycocotools_from_its_own_matches(seed):
    """E3: fed pycocotools' per-detection matches (one class, area all, 100 dets), our PR curve
    and 101-point sampling reproduce pycocotools' precision table at every IoU threshold."""
    gt, dets = synthetic_coco(seed, num_images=40, num_classes=1, max_dets=30, score_decimals=2)
    ev = run_pycocotools(gt, dets)
    n_img = len(ev.params.imgIds)
    per_image = [e for e in ev.evalImgs[:n_img] if e is not None]  # category 0, area "all"
    scores = torch.tensor(np.concatenate([e["dtScores"] for e in per_image]))
    num_gt = int(sum((e["gtIgnore"] == 0).sum() for e in per_image))
    for t in range(10):
        is_tp = torch.tensor(np.concatenate([e["dtMatches"][t] for e in per_image]) > 0)
        ignore = torch.tensor(np.concatenate([e["dtIgnore"][t] for e in per_image]).astype(bool))
        precision, recall, _ = ap.precision_recall(scores, is_tp, num_gt, ignore)
        ref = ev.eval["precision"][t, :, 0, 0, 2]
        got = ap.sampled_precision(precision, recall, ap.COCO_RECALL_THRESHOLDS).numpy()
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
        assert abs(ap.ap_101(precision, recall).item() - ref.mean()) < 1e-12
        assert abs(ap.average_precision(scores, is_tp, num_gt, "coco", ignore).item() - ref.mean()) < 1e-12
        assert abs(recall[-1].item() - ev.eval["recall"][t, 0, 0, 2]) < 1e-12


def voc_devkit_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """The all-point AP of the PASCAL VOC devkit (2010 onwards), transcribed from its definition."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def test_worked_example():
    """E3: 4 objects; detections TP FP TP FP FP TP (best first). Precision 1, 1/2, 2/3, 1/2, 2/5,
    1/2 at recall 1/4, 1/4, 1/2, 1/2, 1/2, 3/4. All-point AP = (1 + 2/3 + 1/2) / 4; the 101-point
    AP samples 26 levels at 1, 25 at 2/3, 25 at 1/2 and 25 unreached levels at 0."""
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    is_tp = torch.tensor([True, False, True, False, False, True])
    precision, recall, _ = ap.precision_recall(scores, is_tp, 4)
    assert precision.tolist() == pytest.approx([1, 1 / 2, 2 / 3, 1 / 2, 2 / 5, 1 / 2])
    assert recall.tolist() == pytest.approx([0.25, 0.25, 0.5, 0.5, 0.5, 0.75])
    assert ap.interpolated_precision(precision).tolist() == pytest.approx([1, 2 / 3, 2 / 3, 1 / 2, 1 / 2, 1 / 2])
    assert ap.ap_all_points(precision, recall).item() == pytest.approx((1 + 2 / 3 + 1 / 2) / 4)
    assert ap.ap_all_points(precision, recall).item() == pytest.approx(voc_devkit_ap(recall.numpy(), precision.numpy()))
    assert ap.ap_101(precision, recall).item() == pytest.approx((26 + 25 * 2 / 3 + 25 / 2) / 101)
    # input order does not matter, only scores do
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    assert ap.average_precision(scores[perm], is_tp[perm], 4, "voc").item() == pytest.approx((1 + 2 / 3 + 1 / 2) / 4)


@pytest.mark.parametrize("seed", range(20))
def test_all_points_matches_voc_devkit(seed):
    """E3: VOC all-point AP equals the devkit formula on random curves."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    scores = torch.tensor(rng.random(n))
    is_tp = torch.tensor(rng.random(n) < rng.random())
    num_gt = int(is_tp.sum()) + int(rng.integers(0, 5)) or 1
    precision, recall, _ = ap.precision_recall(scores, is_tp, num_gt)
    got = ap.ap_all_points(precision, recall).item()
    assert got == pytest.approx(voc_devkit_ap(recall.numpy(), precision.numpy()), abs=1e-12)


def test_average_precision_rejects_bad_arguments():
    """E3: no ground truth or an unknown method are errors."""
    with pytest.raises(ValueError):
        ap.precision_recall(torch.ones(1), torch.ones(1, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match="coco, voc"):
        ap.average_precision(torch.ones(1), torch.ones(1, dtype=torch.bool), 1, "auc")
