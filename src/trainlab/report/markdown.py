"""The run report: numbers, plots and findings in one Markdown file (V5)."""
from __future__ import annotations

from typing import Any

from ..atomic import write_text
from ..tasks.base import scalar_metrics
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
    names = [*plot_names(task), *[f.name for f in task.figures(summary)]]
    plots = [p for p in names if (run.plots / f"{p}.png").exists()]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}](plots/{p}.png)" for p in plots] + [""]
    lines += list(sections)
    events = [r for r in (run.metrics() if history is None else history) if "event" in r]
    if events:
        lines += ["## Actions taken during training", ""]
        lines += [f"- epoch {e['epoch']}, step {e['step']}: **{e['event']}**: {e.get('message', '')}" for e in events]
        lines.append("")
    write_text(run.report_path, "\n".join(lines))
