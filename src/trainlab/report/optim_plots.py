"""Drawings of the optimization tools: a recipe's LR schedule (O6) and the LR range test (O9).

matplotlib is imported inside each function only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .figures import save


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_schedule(curve: dict[str, Any], steps_per_epoch: int, title: str, path: str | Path,
                  notes: list[str] = (), marks: list[tuple[int, str]] = ()) -> Path:
    """LR per optimizer step (top x axis in epochs), plus a momentum panel when there is a curve.

    ``marks`` are (step, label) vertical lines, e.g. an optimizer switch; ``notes`` are written on
    the plot (assumptions the drawing makes).
    """
    plt = _pyplot()
    momentum = curve.get("momentum")
    rows = 2 if momentum is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(7, 3.2 * rows + 0.4), dpi=100, sharex=True, squeeze=False)
    steps = curve["step"]
    ax = axes[0][0]
    ax.plot(steps, curve["lr"], color="tab:blue", linewidth=1.5)
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if momentum is not None:
        mx = axes[1][0]
        mx.plot(steps, momentum, color="tab:orange", linewidth=1.5)
        mx.set_ylabel("momentum / beta1")
        mx.grid(alpha=0.3)
    for row in axes:
        for step, label in marks:
            row[0].axvline(step, color="grey", linestyle="--", linewidth=1)
    for step, label in marks:
        ax.annotate(label, (step, ax.get_ylim()[1]), xytext=(3, -12), textcoords="offset points", fontsize=8,
                    color="dimgrey")
    axes[-1][0].set_xlabel("optimizer step")
    top = ax.secondary_xaxis("top", functions=(lambda s: s / steps_per_epoch, lambda e: e * steps_per_epoch))
    top.set_xlabel("epoch")
    if notes:
        ax.text(0.99, 0.97, "\n".join(notes), transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox={"boxstyle": "round", "facecolor": "lightyellow", "alpha": 0.9})
    fig.tight_layout()
    try:
        return save(fig, Path(path))
    finally:
        plt.close(fig)


def plot_lr_find(result, title: str, path: str | Path) -> Path:
    """Raw and smoothed loss against the LR (log x), with the suggested and minimum-loss LRs marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    ax.plot(result.lrs, result.losses, color="tab:blue", alpha=0.3, linewidth=1, label="mini-batch loss")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", linewidth=2, label="smoothed loss")
    if result.min_loss_lr is not None:
        ax.axvline(result.min_loss_lr, color="tab:red", linestyle=":", linewidth=1,
                   label=f"lowest loss {result.min_loss_lr:.2g}")
        ax.axvline(result.suggested, color="tab:green", linestyle="--", linewidth=1.5,
                   label=f"suggested {result.suggested:.2g}")
    if result.steepest_lr is not None:
        ax.axvline(result.steepest_lr, color="tab:purple", linestyle="-.", linewidth=1,
                   label=f"steepest descent {result.steepest_lr:.2g}")
    if result.smoothed:  # show the descent; the divergence only needs to be seen leaving the plot
        low = min(min(result.losses), min(result.smoothed))
        high = max(result.smoothed[: max(1, len(result.smoothed) // 5)])
        ax.set_ylim(low - 0.05 * (high - low) - 1e-3, high + 0.5 * (high - low) + 1e-3)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.text(0.01, 0.02, result.stop_reason, transform=ax.transAxes, fontsize=8, color="dimgrey")
    fig.tight_layout()
    try:
        return save(fig, Path(path))
    finally:
        plt.close(fig)
