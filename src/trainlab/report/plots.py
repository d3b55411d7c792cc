"""Curves and matrices as PNG images (V1, V4). matplotlib is imported here only."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(epochs: list[dict[str, Any]], keys: list[str], title: str, ylabel: str, path: Path,
                logy: bool = False, mark_epoch: int | None = None) -> Path | None:
    """One line per key of the epoch records against the epoch number."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    drawn, positive = False, True
    for key in keys:
        pts = [(r["epoch"], r[key]) for r in epochs if r.get(key) is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", markersize=3, label=key)
            drawn = True
            positive = positive and min(ys) > 0
    if not drawn:
        plt.close(fig)
        return None
    if mark_epoch is not None:
        ax.axvline(mark_epoch, color="grey", linestyle="--", linewidth=1, label=f"best (epoch {mark_epoch})")
    if logy and positive:  # a schedule that reaches 0 cannot be drawn on a log axis
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusion(cm: list[list[int]], class_names: list[str], path: Path, title: str = "confusion matrix") -> Path:
    """Row-normalized confusion matrix with the counts written in each cell."""
    import numpy as np

    plt = _pyplot()
    m = np.asarray(cm, dtype=float)
    rates = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(class_names)
    size = min(max(4.0, 0.5 * n + 2), 16)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90 if n > 10 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_run(run, summary: dict[str, Any]) -> list[Path]:
    """The standard plots of a run: loss, accuracy, LR, test confusion matrix."""
    run.plots.mkdir(parents=True, exist_ok=True)
    epochs = run.epochs()
    best = summary.get("best_epoch")
    out = [
        plot_curves(epochs, ["train_loss", "val_loss"], "loss", "loss", run.plots / "loss.png", mark_epoch=best),
        plot_curves(epochs, ["train_accuracy", "val_accuracy"], "accuracy", "accuracy",
                    run.plots / "accuracy.png", mark_epoch=best),
        plot_curves(epochs, ["lr"], "learning rate (end of epoch)", "lr", run.plots / "lr.png", logy=True),
    ]
    final = summary.get("test") or summary.get("val") or {}
    if "confusion" in final:
        out.append(plot_confusion(final["confusion"], summary.get("class_names", []), run.plots / "confusion.png",
                                  f"confusion matrix ({'test' if summary.get('test') else 'val'})"))
    return [p for p in out if p is not None]
