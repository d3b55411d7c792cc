"""E1: accuracy, top-k, per-class precision/recall/F1, macro averages and the confusion matrix,
checked against scikit-learn on random predictions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from trainlab.evaluate.classification import (
    ClassificationMeter,
    confusion_matrix,
    metrics_from_confusion,
    topk_correct,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    """E1: every number agrees with sklearn, including classes never predicted."""
    g = torch.Generator().manual_seed(seed)
    n, c = 300, 7
    logits = torch.randn(n, c, generator=g)
    target = torch.randint(0, c, (n,), generator=g)
    logits[:, 6] -= 100  # class 6 is never predicted: precision 0 by convention
    pred = logits.argmax(1)
    cm = confusion_matrix(pred, target, c)
    assert np.array_equal(cm.numpy(), skm.confusion_matrix(target, pred, labels=range(c)))
    m = metrics_from_confusion(cm)
    p, r, f, s = skm.precision_recall_fscore_support(target, pred, labels=range(c), zero_division=0)
    assert np.allclose(m["per_class"]["precision"], p) and np.allclose(m["per_class"]["recall"], r)
    assert np.allclose(m["per_class"]["f1"], f) and m["per_class"]["support"] == s.tolist()
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(target, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(target, pred, average="macro", zero_division=0))
    assert m["macro_precision"] == pytest.approx(skm.precision_score(target, pred, average="macro", zero_division=0))
    for k in (1, 3, 5):
        want = skm.top_k_accuracy_score(target, logits.numpy(), k=k, labels=range(c))
        assert int(topk_correct(logits, target, k)) / n == pytest.approx(want)


def test_meter_accumulates_exact_counts_over_batches():
    """E1: metrics over batches equal metrics over the whole split (counts, not averages)."""
    g = torch.Generator().manual_seed(5)
    logits, target = torch.randn(101, 4, generator=g), torch.randint(0, 4, (101,), generator=g)
    meter = ClassificationMeter(4, topk=2)
    for i in range(0, 101, 17):
        meter.update(logits[i : i + 17], target[i : i + 17], torch.tensor(1.0))
    out = meter.compute()
    assert out["n"] == 101 and out["loss"] == pytest.approx(1.0)
    assert out["accuracy"] == pytest.approx(float((logits.argmax(1) == target).double().mean()))
    assert out["top2_accuracy"] == pytest.approx(skm.top_k_accuracy_score(target, logits.numpy(), k=2))
    soft = torch.nn.functional.one_hot(target, 4).float() * 0.7 + 0.075
    meter2 = ClassificationMeter(4)
    meter2.update(logits, soft)
    assert meter2.compute()["accuracy"] == pytest.approx(out["accuracy"])
