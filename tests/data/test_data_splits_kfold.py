"""D9: stratified k-fold splits, the data.fold recipe field and cross-validation of recipes."""
from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch
from conftest import FAST

from trainlab.data import build_data
from trainlab.data.splits import stratified_kfold
from trainlab.errors import RecipeError
from trainlab.recipe import load_recipe


def test_stratified_kfold_balances_folds_and_classes():
    """D9: every sample is in one fold, fold sizes differ by at most one, and so do the counts of each
    class across folds (the property scikit-learn's StratifiedKFold guarantees)."""
    from sklearn.model_selection import StratifiedKFold

    targets = torch.tensor([0] * 23 + [1] * 9 + [2] * 41 + [3] * 5)
    folds = stratified_kfold(targets, 4, seed=0)
    assert torch.equal(folds, stratified_kfold(targets, 4, seed=0))
    sizes = torch.bincount(folds, minlength=4)
    assert int(sizes.max() - sizes.min()) <= 1
    ref = [Counter(targets[test].tolist()) for _, test in StratifiedKFold(4).split(targets.numpy()[:, None], targets.numpy())]
    for c in range(4):
        ours = [int(((folds == k) & (targets == c)).sum()) for k in range(4)]
        assert max(ours) - min(ours) <= 1
        assert sorted(ours) == sorted(r[c] for r in ref)


def test_data_fold_makes_fold_k_the_validation_split():
    """D9: with data.fold the test split stays held out and the validation folds partition the rest."""
    seen, tests = [], []
    for k in range(3):
        b = build_data(load_recipe(None, ["data.fold={k: 3, index: %d}" % k]))
        ids = lambda s: {tuple(row.flatten().tolist()) for row in s.inputs}  # noqa: E731
        seen.append(ids(b.val))
        tests.append(ids(b.test))
        assert not ids(b.val) & ids(b.train) and not ids(b.test) & (ids(b.train) | ids(b.val))
    assert tests[0] == tests[1] == tests[2]
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
    with pytest.raises(RecipeError, match="data.fold: index must be < k"):
        load_recipe(None, ["data.fold={k: 3, index: 3}"])


def test_cross_validate_reports_mean_std_and_ranks(tmp_path):
    """D9: each fold is an ordinary run; the summary holds per-fold metrics, mean ± std (population
    std) and the recipes ranked by the mean validation metric."""
    from trainlab.kfold import cross_validate, format_report

    small = {"name": "small-mlp", "data": {"name": "digits", "batch_size": 64}, "model": {"name": "mlp", "width": 4}}
    lines = []
    result = cross_validate(["digits-mlp", small], 2, [*FAST, "train.epochs=1", "data.subset=300",
                                                       f"run.dir={tmp_path / 'cv'}"], progress=lines.append)
    written = json.loads((tmp_path / "cv" / "kfold.json").read_text())
    assert written["ranking"] == result["ranking"] and len(lines) == 4
    for entry in result["recipes"]:
        vals = [f["val"]["accuracy"] for f in entry["folds"]]
        mean = sum(vals) / 2
        assert entry["val_mean"] == pytest.approx(mean)
        assert entry["val_std"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in vals) / 2))
        for f in entry["folds"]:
            assert (tmp_path / "cv" / entry["name"] / f"fold-{f['fold']}" / "summary.json").exists()
    means = [e["val_mean"] for e in sorted(result["recipes"], key=lambda e: result["ranking"].index(e["name"]))]
    assert means == sorted(means, reverse=True)
    assert "±" in format_report(result) and "selected:" in format_report(result)
    with pytest.raises(RecipeError, match="--folds: expected at least 2"):
        cross_validate(["digits-mlp"], 1)
    with pytest.raises(RecipeError, match="--metric: unknown metric 'acc'"):
        cross_validate(["digits-mlp"], 2, [f"run.dir={tmp_path / 'x'}"], metric="acc")
