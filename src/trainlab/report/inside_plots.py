"""The figures of ``trainlab show`` (V3): filters, feature maps, saliency, t-SNE of features.

Each function returns a matplotlib Figure (no pyplot) for ``figures.save``; matplotlib is imported
inside the functions only.
"""
from __future__ import annotations

import torch

from .inside import normalize_tiles, tile_grid

MAX_MAPS = 64  # feature maps drawn per layer: more become too small to read


def _figure(width: float, height: float, panels: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def display_image(x: torch.Tensor):
    """An input (C, H, W) as a NumPy image in [0, 1] for imshow: colour for 3 channels, grey
    otherwise (the first channel), scaled to its own range."""
    img = normalize_tiles(x[None].float())[0]
    return (img.permute(1, 2, 0) if img.shape[0] == 3 else img[0]).cpu().numpy()


def filters_figure(image: torch.Tensor, layer: str, shape: tuple[int, ...]):
    """The grid image (h, w, 3) of :func:`~trainlab.report.inside.filter_image`."""
    size = min(max(3.0, image.shape[1] / 12), 9.0)
    fig, (ax,) = _figure(size, size * image.shape[0] / image.shape[1] + 0.5)
    ax.imshow(image.numpy(), interpolation="nearest")
    o, c, kh, kw = shape
    ax.set_title(f"first-layer filters: {layer} ({o} filters, {c}×{kh}×{kw})", fontsize=9)
    fig.tight_layout()
    return fig


def features_figure(maps: torch.Tensor, x: torch.Tensor, layer: str, input_name: str):
    """The input beside up to ``MAX_MAPS`` channels of ``maps`` (C, h, w), each in its own range."""
    shown = maps[:MAX_MAPS]
    grid = tile_grid(normalize_tiles(shown[:, None]), fill=float("nan"))[0]
    fig, axes = _figure(9, 4.8, 2)
    fig.subplots_adjust(wspace=0.05)
    axes[0].imshow(display_image(x), cmap="gray", interpolation="nearest")
    axes[0].set_title(f"input: {input_name}", fontsize=9)
    axes[1].imshow(grid.numpy(), cmap="viridis", interpolation="nearest")
    more = f", first {len(shown)} of {len(maps)}" if len(maps) > len(shown) else ""
    axes[1].set_title(f"feature maps of {layer} ({len(maps)}×{maps.shape[1]}×{maps.shape[2]}{more})", fontsize=9)
    fig.tight_layout()
    return fig


def saliency_figure(x: torch.Tensor, gradient: torch.Tensor, cam: torch.Tensor | None, label: str,
                    cam_layer: str | None, input_name: str):
    """Input, vanilla-gradient saliency and (when there is a conv layer) the Grad-CAM map over the
    input, for the class ``label``."""
    panels = 3 if cam is not None else 2
    fig, axes = _figure(3.2 * panels, 3.6, panels)
    img = display_image(x)
    axes[0].imshow(img, cmap="gray", interpolation="nearest")
    axes[0].set_title(f"input: {input_name}", fontsize=9)
    axes[1].imshow(gradient.numpy(), cmap="hot", interpolation="nearest")
    axes[1].set_title(f"|gradient| of '{label}'", fontsize=9)
    if cam is not None:
        axes[2].imshow(img, cmap="gray", interpolation="nearest")
        peak = float(cam.max())
        axes[2].imshow((cam / peak if peak > 0 else cam).numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1,
                       interpolation="bilinear")
        axes[2].set_title(f"Grad-CAM of '{label}' at {cam_layer}", fontsize=9)
    fig.tight_layout()
    return fig
