"""Classical baselines beside the network (D13, notes S1 Q28).

The notes name two kinds of data where deep learning is not the tool: a data set too small for
it (a hundred images: use an SVM or k-NN) and tabular data without local structure, whose
features can be shuffled without changing anything (use decision trees / gradient boosting).
:func:`compare` fits scikit-learn's RBF SVM, k-NN and histogram gradient-boosted trees on
exactly the split the recipe's network trains and is tested on (the recipe's data section and
seed), with the inputs flattened to vectors, standardized with training-split statistics and
optionally reduced by PCA fitted on the training split; then it sets their test accuracy beside
the network's: of a finished run (``run``, which must have been trained on the same split), or
of a run the command trains from the recipe first.

Output: a table (accuracy, macro F1, fit time) and a verdict line; ``baseline.json`` and
``baseline.md`` in the network's run folder, and a "Classical baselines" section in its report.md.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .errors import RecipeError, RunError
from .report.markdown import BASELINE_NAMES, baseline_section
from .run import refresh_reports

# What decides which samples land in which split: a run trained with other values of these was
# tested on other samples, and its accuracy cannot stand beside the baselines'.
SPLIT_KEYS = ("name", "root", "image_size", "channels", "subset", "split", "fold", "imbalance", "shapes", "faces",
              "coco", "segmentation", "skip_corrupt")
MODELS = ("svm", "knn", "hgb")


def classical_models(seed: int) -> dict[str, Any]:
    """The three baselines, scikit-learn's defaults except where noted."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    return {
        "svm": SVC(kernel="rbf", C=1.0, gamma="scale"),
        "knn": KNeighborsClassifier(n_neighbors=5),
        "hgb": HistGradientBoostingClassifier(random_state=seed),
    }




def split_arrays(source) -> tuple[Any, Any]:
    """(inputs flattened to (N, D) float64, labels (N,)) of a split; every sample must have the
    same number of values (set data.image_size for image folders of mixed sizes)."""
    import numpy as np
    import torch

    inputs = getattr(source, "inputs", None)
    if isinstance(inputs, torch.Tensor):
        x = inputs.reshape(len(inputs), -1).double().numpy()
    else:
        rows = []
        for i in range(len(source)):
            xi = source.load(i)[0]
            rows.append(torch.as_tensor(xi).reshape(-1).double().numpy())
        sizes = {r.size for r in rows}
        if len(sizes) > 1:
            raise RecipeError(f"baseline: samples have {len(sizes)} different sizes ({', '.join(map(str, sorted(sizes)[:4]))} "
                              "values); set data.image_size so that every image becomes one vector of one length")
        x = np.stack(rows) if rows else np.zeros((0, 0))
    y = source.targets.numpy() if hasattr(source.targets, "numpy") else np.asarray(source.targets)
    return x, np.asarray(y, dtype=np.int64)


def pipeline(model, pca: int | None, seed: int):
    """Standardize (training-split statistics) → optional PCA → ``model``."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [StandardScaler()]
    if pca:
        steps.append(PCA(n_components=pca, random_state=seed))
    return make_pipeline(*steps, model)


def fit_classical(x_train, y_train, x_test, y_test, pca: int | None = None, seed: int = 0,
                  models: tuple[str, ...] = MODELS) -> dict[str, dict[str, float]]:
    """Fit each baseline on the training split; its test accuracy, macro F1 and fit time."""
    from sklearn.metrics import accuracy_score, f1_score

    out = {}
    for name, model in classical_models(seed).items():
        if name not in models:
            continue
        pipe = pipeline(model, pca, seed)
        t0 = time.perf_counter()
        pipe.fit(x_train, y_train)
        fit_s = time.perf_counter() - t0
        pred = pipe.predict(x_test)
        out[name] = {"accuracy": float(accuracy_score(y_test, pred)),
                     "macro_f1": float(f1_score(y_test, pred, average="macro")), "fit_s": fit_s}
    return out


def check_same_split(recipe, run_recipe, run_dir) -> None:
    a, b = recipe.data.model_dump(), run_recipe.data.model_dump()
    for key in SPLIT_KEYS:
        if a.get(key) != b.get(key):
            raise RecipeError(f"--run {run_dir}: trained with data.{key}={b.get(key)!r}, the recipe has "
                              f"{a.get(key)!r}: not the same split, so its test accuracy cannot be compared")
    if recipe.seed != run_recipe.seed:
        raise RecipeError(f"--run {run_dir}: trained with seed {run_recipe.seed}, the recipe has {recipe.seed}: "
                          "the seed draws the split")


def verdict(rows: dict[str, dict[str, float]], network: dict[str, float] | None, tabular: bool, small: bool,
            n_train: int, per_class: float) -> str:
    """One line: which wins, and when a classical model wins, whether the notes say it is the better tool."""
    best = max(rows, key=lambda k: rows[k]["accuracy"])
    b = rows[best]["accuracy"]
    if network is None:
        return f"best classical model: {BASELINE_NAMES[best]} ({100 * b:.2f}% test accuracy)"
    net = network["accuracy"]
    if net >= b:
        return (f"the network wins: {100 * net:.2f}% test accuracy vs {100 * b:.2f}% for the best classical model, "
                f"{BASELINE_NAMES[best]} ({100 * (net - b):+.2f} points)")
    line = f"{BASELINE_NAMES[best]} beats the network: {100 * b:.2f}% vs {100 * net:.2f}% test accuracy"
    if tabular:
        return (line + "; on tabular data without local structure (shuffling the features changes nothing a "
                "convolution could use) a classical model is the better tool here")
    if small:
        return (line + f"; with {n_train} training samples ({per_class:.0f} per class) the data set is too small for "
                "deep learning: a classical model is the better tool here")
    return line + "; the network may still improve with tuning (trainlab tune), but the classical model is the " \
                  "one to beat"


def compare(recipe, overrides: list[str] | dict[str, Any] | None = None, *, pca: int | None = None,
            run: str | Path | None = None, quiet: bool = True, progress=None) -> dict[str, Any]:
    """Fit the baselines on the recipe's split and set them beside the network's test metrics;
    returns (and writes into the network's run folder) the comparison."""
    from .api import fit
    from .atomic import write_json, write_text
    from .data import build_data
    from .recipe import check_names, load_recipe
    from .run import open_run

    say = progress or (lambda line: None)
    base = load_recipe(recipe, overrides or None)
    check_names(base)
    if base.task != "classification":
        raise RecipeError(f"baseline: classification recipes only (task {base.task!r}); the baselines predict "
                          "one class per sample")
    if pca is not None and pca < 1:
        raise RecipeError(f"--pca: expected a number of components >= 1, got {pca}")
    network_run = None
    if run is not None:
        network_run = open_run(run)
        check_same_split(base, network_run.recipe(), network_run.dir)
        if not network_run.summary_path.is_file():
            raise RunError(f"--run {network_run.dir}: not finished (no summary.json); finish it with "
                           f"trainlab fit --resume {network_run.dir}")
    bundle = build_data(base, statistics=False)
    if bundle.test is None or len(bundle.test) == 0:
        raise RecipeError("data.split.test: the baselines are compared on the test split; it is empty")
    x_train, y_train = split_arrays(bundle.train)
    x_test, y_test = split_arrays(bundle.test)
    if pca is not None and pca > min(x_train.shape):
        raise RecipeError(f"--pca: {pca} components, but the training split is {x_train.shape[0]} samples of "
                          f"{x_train.shape[1]} values (at most {min(x_train.shape)})")
    if network_run is None:
        say(f"training the network ({base.name}) on the same split")
        network_run = fit(base, quiet=quiet)
    summary = network_run.summary()
    test = summary.get("test") or {}
    network = {"accuracy": test.get("accuracy"), "macro_f1": test.get("macro_f1"),
               "fit_s": summary.get("train_time_s")}
    if network["accuracy"] is None:
        raise RunError(f"{network_run.dir}: its summary has no test accuracy")
    say(f"fitting {', '.join(BASELINE_NAMES[m] for m in MODELS)} on {len(x_train)} training samples of {x_train.shape[1]} "
        f"values" + (f", PCA to {pca}" if pca else ""))
    rows = fit_classical(x_train, y_train, x_test, y_test, pca, base.seed)
    info = bundle.info
    per_class = len(x_train) / info.num_classes
    limit = base.doctor.small_dataset_per_class if base.doctor is not None else 30
    tabular, small = info.kind == "flat", per_class < limit
    result = {"recipe": base.name, "run": str(network_run.dir), "pca": pca, "train_samples": len(x_train),
              "test_samples": len(x_test), "features": int(x_train.shape[1]), "kind": info.kind,
              "tabular": tabular, "small": small, "classical": rows, "network": network,
              "best_classical": max(rows, key=lambda k: rows[k]["accuracy"]),
              "classical_wins": max(r["accuracy"] for r in rows.values()) > network["accuracy"],
              "verdict": verdict(rows, network, tabular, small, len(x_train), per_class)}
    lines = baseline_section(result)
    write_json(network_run.dir / "baseline.json", result)
    write_text(network_run.dir / "baseline.md", "\n".join(["# Classical baselines", *lines[1:]]))
    refresh_reports(network_run)  # report.md and report.html, with the doctor's section kept
    return result


def table(result: dict[str, Any]) -> list[str]:
    rows = [("network (" + result["recipe"] + ")", result["network"])] + \
        [(BASELINE_NAMES[k], v) for k, v in result["classical"].items()]
    width = max(len(n) for n, _ in rows)
    out = [f"{'model':<{width}}  test acc  macro F1   fit s"]
    for name, m in rows:
        f1 = f"{m['macro_f1']:.4f}" if m.get("macro_f1") is not None else "     -"
        fit_s = f"{m['fit_s']:7.2f}" if m.get("fit_s") is not None else "      -"
        out.append(f"{name:<{width}}  {m['accuracy']:.4f}    {f1}  {fit_s}")
    return out


def format_result(result: dict[str, Any]) -> str:
    return "\n".join([*table(result), "", result["verdict"], f"written: {Path(result['run']) / 'baseline.md'}"])
