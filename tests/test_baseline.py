"""D13: classical baselines (SVM, k-NN, gradient-boosted trees) on the recipe's own split, beside the
network; the doctor's small_dataset finding points to them; on tabular data a winning classical model is
named the better tool."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FAST

import trainlab
from trainlab.cli import main
from trainlab.data import build_data
from trainlab.recipe import load_recipe

SMALL = [*FAST, "data.subset=100"]  # 10 training digits per class: the doctor's small_dataset


def _arrays(source):
    return source.inputs.reshape(len(source), -1).double().numpy(), source.targets.numpy()


def _sklearn_reference(recipe, pca=None):
    """scikit-learn run directly on the recipe's split: standardize, optional PCA, then each model."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    bundle = build_data(recipe, statistics=False)
    xtr, ytr = _arrays(bundle.train)
    xte, yte = _arrays(bundle.test)
    out = {}
    for name, model in (("svm", SVC()), ("knn", KNeighborsClassifier()),
                        ("hgb", HistGradientBoostingClassifier(random_state=recipe.seed))):
        steps = [StandardScaler()] + ([PCA(pca, random_state=recipe.seed)] if pca else []) + [model]
        out[name] = float((make_pipeline(*steps).fit(xtr, ytr).predict(xte) == yte).mean())
    return out, len(ytr), len(yte)


def test_small_dataset_points_to_the_baseline_which_matches_sklearn_on_the_same_split(tmp_path, capsys):
    """D13 / X8: a digits run on 100 training samples gets the doctor's small_dataset finding, whose
    remedies name `trainlab baseline`; that command, given the run, reports the test accuracy scikit-learn
    gets on exactly that split (with and without PCA) beside the run's own test accuracy, and the verdict
    follows which is higher."""
    run = trainlab.fit("digits-mlp", [*SMALL, f"run.dir={tmp_path / 'run'}"], quiet=True)
    doctor = json.loads((run.dir / "doctor.json").read_text())
    [small] = [f for f in doctor["findings"] if f["code"] == "small_dataset"]
    assert any("trainlab baseline RECIPE" in r for r in small["remedies"])
    recipe = load_recipe("digits-mlp", SMALL)
    for pca in (None, 12):
        capsys.readouterr()
        extra = ["--pca", str(pca)] if pca else []
        assert main(["baseline", "digits-mlp", *SMALL, "--run", str(run.dir), *extra]) == 0
        out = capsys.readouterr().out
        result = json.loads((run.dir / "baseline.json").read_text())
        ref, n_train, n_test = _sklearn_reference(recipe, pca)
        assert (result["train_samples"], result["test_samples"]) == (n_train, n_test) == (100, run.summary()["test"]["n"])
        for name in ("svm", "knn", "hgb"):
            assert result["classical"][name]["accuracy"] == pytest.approx(ref[name]), name
        net = run.summary()["test"]["accuracy"]
        assert result["network"]["accuracy"] == net
        assert result["small"] and not result["tabular"]
        if max(ref.values()) > net:
            assert "too small for deep learning: a classical model is the better tool here" in result["verdict"]
        else:
            assert result["verdict"].startswith("the network wins")
        assert result["verdict"] in out and "SVM (RBF kernel)" in out
    report = (run.dir / "report.md").read_text()
    assert "## Classical baselines" in report and "## Doctor" in report and result["verdict"] in report
    page = (run.dir / "report.html").read_text()  # the browser report says the same
    assert "Classical baselines" in page and "SVM (RBF kernel)" in page


def test_bad_baseline_input_is_one_line_and_changes_nothing(tmp_path, capsys):
    """D13 / bad input: a run trained on another split, too many PCA components, a task other than
    classification: exit 2, one line, the run folder untouched."""
    run = trainlab.fit("digits-mlp", [*SMALL, f"run.dir={tmp_path / 'run'}"], quiet=True)
    before = {p.name: p.read_bytes() for p in run.dir.iterdir() if p.is_file()}
    cases = [(["digits-mlp", *SMALL, "data.split.test=0.2", "--run", str(run.dir)], "data.split"),
             (["digits-mlp", *SMALL, "seed=3", "--run", str(run.dir)], "seed"),
             (["digits-mlp", *SMALL, "--run", str(run.dir), "--pca", "500"], "--pca"),
             (["shapes-unet", "--run", str(run.dir)], "classification")]
    for args, needle in cases:
        capsys.readouterr()
        assert main(["baseline", *args]) == 2, args
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and needle in err[0], (args, err)
    assert {p.name: p.read_bytes() for p in run.dir.iterdir() if p.is_file()} == before


def test_on_tabular_data_a_winning_classical_model_is_named_the_better_tool(tmp_path, capsys):
    """D13 (S1 Q28): flat features without local structure, label = an interaction of thresholds (the kind
    of rule trees split on). The command trains the network itself (2 epochs of a small MLP); gradient-
    boosted trees win, and the verdict says a classical model is the better tool on tabular data."""
    from trainlab.data.bundle import DataInfo, TensorSource
    from trainlab.registry import DATASETS

    def tabular(cfg, seed):
        g = np.random.default_rng(0)
        x = g.uniform(0, 1, size=(1200, 6)).astype(np.float32)
        y = ((x[:, 0] > 0.5) ^ (x[:, 3] > 0.3)).astype(np.int64)
        return TensorSource(torch.from_numpy(x), torch.from_numpy(y)), DataInfo((6,), 2, ["a", "b"], kind="flat")

    DATASETS.register("test-tabular", help="throwaway tabular data set")(tabular)
    try:
        args = ["baseline", "digits-mlp", "data.name=test-tabular", "model.width=8", "model.dropout=0.0",
                "optim.lr=0.01", *FAST, "train.epochs=1", f"run.dir={tmp_path / 'net'}"]
        assert main(args) == 0
        result = json.loads((tmp_path / "net" / "baseline.json").read_text())
        assert result["tabular"] and result["classical_wins"] and result["best_classical"] == "hgb"
        assert "a classical model is the better tool here" in result["verdict"]
        assert result["classical"]["hgb"]["accuracy"] > 0.95
        assert result["verdict"] in (tmp_path / "net" / "report.md").read_text()
    finally:
        DATASETS._entries.pop("test-tabular", None)
