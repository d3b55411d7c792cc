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


def test_cross_validate_checks_every_recipe_before_training(tmp_path):
    """D9: the metric is checked against every recipe's task before the first fold trains (macro_f1 exists for
    digits, not for the sequence task of char-rnn: it used to train every digits fold, then end in a KeyError)."""
    from trainlab.kfold import cross_validate

    with pytest.raises(RecipeError, match=r"--metric: unknown metric 'macro_f1'.*\(recipe 'char-rnn', task 'sequence'\)"):
        cross_validate(["digits-mlp", "char-rnn"], 2, [*FAST, "train.epochs=1", f"run.dir={tmp_path / 'cv'}"],
                       metric="macro_f1")
    assert not (tmp_path / "cv").exists()


def test_cross_validate_refuses_data_sets_that_cannot_be_folded(tmp_path):
    """D9: a data set that ships its own splits and does not implement data.fold is refused before training (it
    would train the same split k times and report a std of 0); so are options it would ignore."""
    import torch

    from trainlab.data.bundle import DataBundle, DataInfo, TensorSource
    from trainlab.kfold import cross_validate
    from trainlab.registry import DATASETS

    def shipped(cfg, seed):
        x, y = torch.randn(40, 4), torch.arange(40) % 2
        split = TensorSource(x, y)
        return DataBundle(split, split, None, DataInfo((4,), 2, ["a", "b"], kind="flat"), torch.zeros(4), torch.ones(4))

    DATASETS.register("test-shipped-splits", help="throwaway data set with fixed splits")(shipped)
    try:
        recipe = {"name": "shipped", "data": {"name": "test-shipped-splits"}, "model": {"name": "mlp"}}
        with pytest.raises(RecipeError, match="data.fold: data set 'test-shipped-splits' ships its own splits and "
                                              r"does not support it \(supported: none of them\)"):
            cross_validate(["digits-mlp", recipe], 2, [*FAST, f"run.dir={tmp_path / 'cv'}"])
        assert not (tmp_path / "cv").exists()
        with pytest.raises(RecipeError, match="data.subset: data set 'test-shipped-splits' ships its own splits"):
            build_data(load_recipe({**recipe, "data": {"name": "test-shipped-splits", "subset": 10}}))
        # Issue 22: a batch larger than the split (the default 64 > 40 samples) is not refused, for
        # data sets with their own splits too: training uses one batch of the 40.
        assert len(build_data(load_recipe(recipe)).train) == 40
        assert len(build_data(load_recipe({**recipe, "data": {"name": "test-shipped-splits", "batch_size": 40}})).train) == 40
    finally:
        DATASETS._entries.pop("test-shipped-splits", None)


def test_kfold_cli_checks_the_metric_of_every_recipe_first(tmp_path):
    """D9: `trainlab kfold digits-mlp char-rnn --metric macro_f1` exits 2 with one line before training anything."""
    from conftest import assert_user_error, run_cli

    proc = run_cli("kfold", "digits-mlp", "char-rnn", "--folds", "2", "--metric", "macro_f1", *FAST,
                   "train.epochs=1", f"run.dir={tmp_path / 'cv'}")
    assert_user_error(proc, "--metric: unknown metric 'macro_f1'", "char-rnn")
    assert not (tmp_path / "cv").exists()
