"""The run report: numbers, plots and findings in one Markdown file (V5)."""
from __future__ import annotations

from typing import Any

from ..atomic import write_text
from ..tasks.base import scalar_metrics
from .html import inside_plots
from .plots import plot_names


def _num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def metrics_table(summary: dict[str, Any]) -> str:
    """The val/test metrics: one column per scalar metric the splits report (loss first)."""
    keys: list[str] = []
    for split in ("val", "test"):
        keys += [k for k in scalar_metrics(summary.get(split)) if k != "n" and k not in keys]
    if "loss" in keys:
        keys.insert(0, keys.pop(keys.index("loss")))
    rows = ["| split | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for split in ("val", "test"):
        m = summary.get(split)
        if m:
            rows.append(f"| {split} | " + " | ".join(_num(m.get(k, "")) for k in keys) + " |")
    return "\n".join(rows)


def bias_variance_section(summary: dict[str, Any], recipe, history: list[dict[str, Any]], task) -> list[str]:
    """E6: train, validation and test error side by side with the notes' reading. The training
    error is the task's score on the training batches of the epoch whose weights were evaluated
    (measured while training, dropout and augmentation on); `trainlab evaluate --bias-variance`
    measures it on the training split with the final weights. Nothing for a task without a score."""
    from ..evaluate.bias_variance import errors_from_metrics, markdown_section, read_bias_variance

    q = task.quality
    epochs = [r for r in history if "event" not in r]
    if q is None or not epochs:
        return []
    epoch = summary.get("best_epoch") if summary.get("checkpoint") == "best" else None
    record = next((r for r in epochs if r.get("epoch") == epoch), epochs[-1])
    errors = errors_from_metrics({q: record.get(f"train_{q}")}, summary.get("val"), summary.get("test"), q)
    if errors is None:
        return []
    reading = read_bias_variance(*errors, target_error=recipe.eval.target_error,
                                 margin=recipe.eval.bias_variance_margin)
    source = (f"1 − train {q} over the training batches of epoch {record['epoch']} (while training; "
              f"`trainlab evaluate RUN --bias-variance` measures it on the training split)")
    return markdown_section(reading, source)


def write_report(run, summary: dict[str, Any], recipe=None, history: list[dict[str, Any]] | None = None,
                 task=None, sections: list[str] = ()) -> None:
    """Write report.md. ``recipe``, ``history`` (epoch records and events, as metrics.jsonl
    holds them) and the run's ``task`` are read from the run directory when not given.
    ``sections``: Markdown lines of other stages (the doctor's) placed after the plots."""
    recipe = run.recipe() if recipe is None else recipe
    task = run.task(recipe) if task is None else task
    lines = [
        f"# Run report: {recipe.name}",
        "",
        f"- run directory: `{run.dir}`",
        f"- task: {recipe.task}; data: {recipe.data.name}; model: {recipe.model.name}; "
        f"optimizer: {recipe.optim.name} (lr {recipe.optim.lr}); schedule: {recipe.schedule.name}",
        f"- epochs run: {summary['epochs_run']} of {recipe.train.epochs}; best epoch: {summary.get('best_epoch')} "
        f"({summary.get('monitor')} = {_num(summary.get('best_value'))}); evaluated with the "
        f"{summary.get('checkpoint')} weights",
        f"- training time: {summary.get('train_time_s', 0):.1f} s; wall time of the last process: {summary['wall_s']:.1f} s",
    ]
    if summary.get("stop_reason"):
        lines.append(f"- stopped: {summary['stop_reason']}")
    lines += ["", "## Metrics", "", metrics_table(summary), ""]
    lines += task.report_sections(summary)
    lines += bias_variance_section(summary, recipe, run.metrics() if history is None else history, task)
    lines += snapshot_section(summary)
    names = [*plot_names(task), *[f.name for f in task.figures(summary)]]
    plots = [p for p in names if (run.plots / f"{p}.png").exists()]
    plots += [p.stem for p in inside_plots(run)]  # what `trainlab show` drew (V3)
    if plots:
        lines += ["## Plots", ""] + [f"![{p}](plots/{p}.png)" for p in plots] + [""]
    lines += list(sections)
    events = [r for r in (run.metrics() if history is None else history) if "event" in r]
    if events:
        lines += ["## Actions taken during training", ""]
        lines += [f"- epoch {e['epoch']}, step {e['step']}: **{e['event']}**: {e.get('message', '')}" for e in events]
        lines.append("")
    write_text(run.report_path, "\n".join(lines))


def snapshot_section(summary: dict[str, Any]) -> list[str]:
    """The snapshot ensemble (T4, ``train.snapshots``): the cycle-end snapshots averaged, per split,
    beside the best single snapshot; nothing for a run without snapshots."""
    snap = summary.get("snapshot_ensemble")
    if not snap:
        return []
    rows = ["| split | ensemble accuracy | best snapshot | gain (points) | snapshots' accuracies |", "|---|---|---|---|---|"]
    for split in ("val", "test"):
        m = snap.get(split)
        if m:
            accs = ", ".join(f"{a:.4f}" for a in m["members"])
            rows.append(f"| {split} | {m['accuracy']:.4f} | {max(m['members']):.4f} | {100 * m['gain']:+.2f} | {accs} |")
    return ["## Snapshot ensemble", "",
            f"The {snap['snapshots']} snapshots saved at the end of each warm-restart cycle, their class "
            "probabilities averaged (`train.snapshots`; `trainlab ensemble RUN --snapshots` for other methods).",
            "", *rows, ""]


# `trainlab baseline` (D13): the classical models, by the keys baseline.json uses
BASELINE_NAMES = {"svm": "SVM (RBF kernel)", "knn": "k-NN (k=5)", "hgb": "gradient-boosted trees (histogram)"}


def baseline_section(result: dict[str, Any]) -> list[str]:
    """The `trainlab baseline` section (D13) of a run's reports, from its baseline.json result."""
    how = f"flattened to {result['features']} values, standardized" + (f", PCA to {result['pca']}" if result["pca"] else "")
    rows = ["| model | test accuracy | macro F1 | fit time (s) |", "|---|---|---|---|"]
    for name, m in [(f"network ({result['recipe']})", result["network"])] + \
            [(BASELINE_NAMES[k], v) for k, v in result["classical"].items()]:
        f1 = f"{m['macro_f1']:.4f}" if m.get("macro_f1") is not None else "–"
        fit_s = f"{m['fit_s']:.2f}" if m.get("fit_s") is not None else "–"
        rows.append(f"| {name} | {m['accuracy']:.4f} | {f1} | {fit_s} |")
    return ["## Classical baselines", "",
            f"Same split as the network: {result['train_samples']} training and {result['test_samples']} test "
            f"samples, {how} (`trainlab baseline`, D13).", "", *rows, "", f"**{result['verdict']}**", ""]
