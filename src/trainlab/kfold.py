"""K-fold cross-validation for model selection and evaluation (D9).

The test split is held out as usual (``data.split.test``); the rest is cut into K stratified folds
(:func:`trainlab.data.splits.stratified_kfold`). Fold k is an ordinary run of the recipe with
``data.fold={k: K, index: k}``: trained on the other K − 1 folds, validated on fold k. The
per-fold validation metric is summarized as mean ± std (population std, as numpy and
scikit-learn report cross-validation scores) and, with several recipes, the recipes are ranked
by that mean: the notes' model selection. With ``data.split.test=0`` every sample lies in
exactly one validation fold, which is the notes' n-fold evaluation of a single model.

Output: ``<run.dir>/<recipe name>/fold-<k>/`` (ordinary run directories) and
``<run.dir>/kfold.json`` with every fold's metrics, the means, the stds and the ranking.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import RecipeError


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation."""
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def _check_recipe(recipe, name: str, metric: str | None) -> tuple[str, str]:
    """Check that ``recipe`` (its first fold) can be built and reports ``metric`` (None: the
    task's headline score, accuracy or mIoU, else its loss); returns (metric, direction).

    Building the first fold's data refuses a data set that cannot be folded and a fold count
    larger than the data; a metric the recipe's task does not report is a RecipeError naming the
    recipe and listing the known ones.
    """
    from .data import build_data
    from .engine.trainer import check_watched_metric
    from .tasks import build_task

    task = build_task(recipe, build_data(recipe, statistics=False).info)
    if metric is None:
        metric = task.quality or "loss"
    try:  # every fold validates on its held-out fold
        check_watched_metric("--metric", metric, task, has_val=True, split="val")
    except RecipeError as err:
        raise RecipeError(f"{err} (recipe {name!r}, task {recipe.task!r})") from None
    return metric, task.metric_mode(metric)


def cross_validate(
    recipes: list,
    folds: int,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    metric: str | None = None,
    force: bool = False,
    progress: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Train every fold of every recipe; returns (and writes as kfold.json) the summary.

    ``recipes``: built-in names, YAML paths, dicts or Recipe objects; ``overrides`` apply to all
    of them (``run.dir`` names the output folder, default ``runs/kfold-<time>``).
    """
    from .api import fit
    from .atomic import write_json
    from .recipe import check_names, load_recipe, override_pairs
    from .run import check_writable_target
    from .tasks.base import scalar_metrics

    if folds < 2:
        raise RecipeError(f"--folds: expected at least 2 folds, got {folds}")
    if not recipes:
        raise RecipeError("kfold: give at least one recipe")
    pairs = override_pairs(overrides)
    if "data.fold" in pairs or any(k.startswith("data.fold.") for k in pairs):
        raise RecipeError("data.fold: kfold sets the fold of each run itself; remove the override")
    loaded = []
    for source in recipes:
        recipe = load_recipe(source, {**pairs, "data.fold": {"k": folds, "index": 0}})
        check_names(recipe)
        loaded.append(recipe)
    # Every recipe is checked before the first fold trains: a metric or a data set that fails for
    # the last recipe must not cost the training of all the others.
    metric, mode = _check_recipe(loaded[0], loaded[0].name, metric)
    for r in loaded[1:]:
        _check_recipe(r, r.name, metric)
    first = loaded[0]
    out = Path(first.run.dir) if first.run.dir else Path("runs") / f"kfold-{time.strftime('%Y%m%d-%H%M%S')}"
    check_writable_target(out, force)
    names: list[str] = []
    for r in loaded:
        name, i = r.name, 2
        while name in names:
            name, i = f"{r.name}-{i}", i + 1
        names.append(name)

    say = progress or (lambda line: None)
    entries = []
    for name, recipe in zip(names, loaded):
        per_fold = []
        for k in range(folds):
            run_dir = out / name / f"fold-{k}"
            fold = {"data.fold": {"k": folds, "index": k}, "run.dir": str(run_dir)}
            run = fit(recipe, quiet=True, force=force, **fold)
            summary = run.summary()
            val, test = scalar_metrics(summary.get("val")), scalar_metrics(summary.get("test"))
            per_fold.append({"fold": k, "run": str(run_dir), "val": val, "test": test or None})
            line = f"{name} fold {k + 1}/{folds}: val {metric} {val[metric]:.4f}"
            if test:
                line += f"  test {metric} {test[metric]:.4f}"
            say(line)
        vals = [f["val"][metric] for f in per_fold]
        tests = [f["test"][metric] for f in per_fold if f["test"]]
        entry = {"name": name, "recipe": recipe.name, "folds": per_fold, "val": vals,
                 "val_mean": mean_std(vals)[0], "val_std": mean_std(vals)[1]}
        if tests:
            entry.update(test=tests, test_mean=mean_std(tests)[0], test_std=mean_std(tests)[1])
        entries.append(entry)
    ranked = sorted(entries, key=lambda e: e["val_mean"], reverse=(mode == "max"))
    result = {
        "folds": folds, "metric": metric, "mode": mode, "dir": str(out),
        "recipes": entries, "ranking": [e["name"] for e in ranked],
    }
    write_json(out / "kfold.json", result)
    return result


def format_report(result: dict[str, Any]) -> str:
    """The summary table: mean ± std per recipe, best first."""
    metric, mode = result["metric"], result["mode"]
    better = "higher" if mode == "max" else "lower"
    lines = [f"{result['folds']}-fold cross-validation, val {metric} ({better} is better)"]
    by_name = {e["name"]: e for e in result["recipes"]}
    width = max(len(n) for n in by_name)
    for rank, name in enumerate(result["ranking"], 1):
        e = by_name[name]
        line = f"{rank}. {name:<{width}}  val {metric} {e['val_mean']:.4f} ± {e['val_std']:.4f}"
        if "test_mean" in e:
            line += f"   test {e['test_mean']:.4f} ± {e['test_std']:.4f}"
        lines.append(line)
    if len(result["ranking"]) > 1:
        lines.append(f"selected: {result['ranking'][0]}")
    lines.append(f"summary: {Path(result['dir']) / 'kfold.json'}")
    return "\n".join(lines)
