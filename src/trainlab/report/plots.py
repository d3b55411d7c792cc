"""Curves and matrices as PNG images (V1, V4). matplotlib is imported inside the functions only
(through ``figures``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .figures import decimate, finish, gc_paused, log_scale, new_axes, range_scale, save, widest_text


def plot_curves(epochs: list[dict[str, Any]], keys: list[str], title: str, ylabel: str, path: Path,
                logy: bool | str = False, mark_epoch: int | None = None) -> Path | None:
    """One line per key of the epoch records against the epoch number; ``logy``: True for a log
    axis, "auto" for one when the values span orders of magnitude (:func:`range_scale`)."""
    with gc_paused():
        fig = curves_figure(epochs, keys, title, ylabel, logy, mark_epoch)
        return None if fig is None else save(fig, path)


def curves_figure(epochs: list[dict[str, Any]], keys: list[str], title: str, ylabel: str,
                  logy: bool | str = False, mark_epoch: int | None = None):
    """The figure of ``plot_curves`` (None when no key has a value)."""
    series = []
    for key in keys:
        pts = [(r["epoch"], r[key]) for r in epochs if r.get(key) is not None]
        if pts:
            series.append((key, *zip(*pts)))
    if not series:
        return None
    fig, ax = new_axes(6, 4)
    for key, xs, ys in series:
        ax.plot(*decimate(xs, ys), marker="o", markersize=3, label=key)
    if mark_epoch is not None:
        ax.axvline(mark_epoch, color="grey", linestyle="--", linewidth=1, label=f"best (epoch {mark_epoch})")
    if logy == "auto":
        ylabel += range_scale(ax, [y for _, _, ys in series for y in ys])
    elif logy and all(min(ys) > 0 for _, _, ys in series):  # a schedule that reaches 0 cannot be drawn on a log axis
        log_scale(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    finish(fig, ax)
    return fig


def plot_confusion(cm: list[list[int]], class_names: list[str], path: Path, title: str = "confusion matrix") -> Path:
    """Row-normalized confusion matrix with the counts written in each cell."""
    with gc_paused():
        return save(confusion_figure(cm, class_names, title), path)


def confusion_figure(cm: list[list[int]], class_names: list[str], title: str = "confusion matrix"):
    import numpy as np

    m = np.asarray(cm, dtype=float)
    rates = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(class_names)
    size = min(max(4.0, 0.5 * n + 2), 16)
    fig, ax = new_axes(size, size)
    # names wider than their column would overlap: write them vertically (always beyond 10 classes);
    # vertical names take their length below the matrix as well as left of it, so the figure grows
    widest = widest_text(fig, class_names)
    vertical = n > 10 or widest > 0.9 * (size - widest - 1.0) / max(n, 1)
    if vertical:
        fig.set_size_inches(size + min(widest, 4.0), size + min(widest, 4.0))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90 if vertical else 0)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        for i, j in zip(*np.nonzero(m)):
            ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    finish(fig, ax)
    return fig


def plot_bars(values: list[float], labels: list[str], path: Path, title: str) -> Path:
    """One bar per label on a 0..1 axis, its value written above it (per-class IoU, recall)."""
    with gc_paused():
        n = len(labels)
        fig, ax = new_axes(min(max(4.0, 0.6 * n + 2), 16), 4)
        bars = ax.bar(range(n), values, color="tab:blue")
        for rect, v in zip(bars, values):
            ax.text(rect.get_x() + rect.get_width() / 2, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(n), labels, rotation=90 if n > 10 else 0)
        ax.set_ylim(0, 1.05)
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
        finish(fig, ax)
        return save(fig, path)


def scatter_figure(x: list[float], y: list[float], labels: list[int], names: list[str] | None, title: str):
    """2-D points coloured by their label (an embedding view), a legend of the label names."""
    import numpy as np

    fig, ax = new_axes(6, 5)
    labels_arr = np.asarray(labels)
    groups = sorted(set(labels))
    cmap = __import__("matplotlib").colormaps["tab20" if len(groups) > 10 else "tab10"]
    for i, lab in enumerate(groups):
        m = labels_arr == lab
        name = names[lab] if names is not None and lab < len(names) else str(lab)
        ax.scatter(np.asarray(x)[m], np.asarray(y)[m], s=10, color=cmap(i % cmap.N), label=name)
    if len(groups) <= 20:
        ax.legend(fontsize=7, markerscale=1.5, ncol=2 if len(groups) > 10 else 1)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_title(title)
    finish(fig, ax)
    return fig


def curve_figure(data: dict[str, Any], title: str):
    """One curve (an ROC): ``x``, ``y``, ``xlabel``, ``ylabel``, ``logx``; ``marks``: label -> an x
    value drawn as a vertical line."""
    fig, ax = new_axes(6, 4.5)
    x, y = data["x"], data["y"]
    if data.get("logx"):
        pts = [(a, b) for a, b in zip(x, y) if a > 0]
        if pts:
            x, y = [a for a, _ in pts], [b for _, b in pts]
            log_scale(ax, "x")
    ax.plot(x, y, linewidth=1.5)
    for label, value in (data.get("marks") or {}).items():
        if value is not None and (value > 0 or not data.get("logx")):
            ax.axvline(value, color="grey", linestyle="--", linewidth=1, label=label)
    if data.get("marks"):
        ax.legend(fontsize=8)
    ax.set_xlabel(data.get("xlabel", ""))
    ax.set_ylabel(data.get("ylabel", ""))
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    finish(fig, ax)
    return fig


def histograms_figure(data: dict[str, Any], title: str):
    """Counts over shared bin ``edges``, one outlined histogram per ``series`` entry; ``marks``:
    label -> x value drawn as a vertical line (a decision threshold)."""
    fig, ax = new_axes(6, 4)
    edges = data["edges"]
    for label, counts in data["series"].items():
        total = max(sum(counts), 1)
        ax.stairs([c / total for c in counts], edges, fill=True, alpha=0.35, label=f"{label} ({sum(counts)})")
    for label, value in (data.get("marks") or {}).items():
        ax.axvline(value, color="black", linestyle="--", linewidth=1, label=f"{label} {value:.3f}")
    ax.set_xlabel("distance")
    ax.set_ylabel("share of pairs")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    finish(fig, ax)
    return fig


def draw_figure(figure, folder: Path) -> Path:
    """A task's :class:`~trainlab.tasks.base.Figure` as ``folder/<name>.png``."""
    path = folder / f"{figure.name}.png"
    if figure.kind == "matrix":
        return plot_confusion(figure.data["matrix"], figure.data["labels"], path, figure.title)
    if figure.kind == "bars":
        return plot_bars(figure.data["values"], figure.data["labels"], path, figure.title)
    d = figure.data
    with gc_paused():
        if figure.kind == "scatter":
            return save(scatter_figure(d["x"], d["y"], d["labels"], d.get("names"), figure.title), path)
        if figure.kind == "curve":
            return save(curve_figure(d, figure.title), path)
        if figure.kind == "histograms":
            return save(histograms_figure(d, figure.title), path)
    raise ValueError(f"figure {figure.name!r}: unknown kind {figure.kind!r} (matrix, bars, scatter, curve or "
                     "histograms)")


def plot_run(run, summary: dict[str, Any], epochs: list[dict[str, Any]] | None = None, task=None) -> list[Path]:
    """The plots of a run: loss and LR for every task, then the task's own curves and figures
    (accuracy and the confusion matrix for classification, mIoU and per-class IoU for
    segmentation).

    ``epochs``: the epoch records as metrics.jsonl holds them (non-finite values as None); read
    from the run directory when not given. ``task``: the run's task (rebuilt from the run when
    not given).
    """
    run.plots.mkdir(parents=True, exist_ok=True)
    epochs = run.epochs() if epochs is None else epochs
    task = run.task() if task is None else task
    best = summary.get("best_epoch")
    out = [
        plot_curves(epochs, ["train_loss", "val_loss"], "loss", "loss", run.plots / "loss.png", logy="auto",
                    mark_epoch=best),
        plot_curves(epochs, ["lr"], "learning rate (end of epoch)", "lr", run.plots / "lr.png", logy=True),
    ]
    out += [plot_curves(epochs, keys, name, name, run.plots / f"{name}.png", mark_epoch=best)
            for name, keys in task.curves()]
    out += [draw_figure(f, run.plots) for f in task.figures(summary)]
    return [p for p in out if p is not None]


def plot_names(task) -> list[str]:
    """The plot files of a run of ``task``, in report order (without .png)."""
    return ["loss", *[name for name, _ in task.curves()], "lr"]
