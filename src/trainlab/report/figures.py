"""What every PNG plot of a run shares: a figure without pyplot, margins fitted to the labels, plain-text
log-axis labels, light minor ticks, long-series thinning, and the garbage collector paused while drawing.

Why: the end of ``trainlab fit`` draws eight small figures. Their cost was mostly matplotlib's
bookkeeping, not drawing pixels: ``tight_layout`` measuring every artist once more, ~50 ``Tick``
objects per log axis, the mathtext parser behind the default log labels, and full garbage
collections (each walks every object torch created). ``matplotlib.figure.Figure`` with its own Agg
canvas needs no pyplot: no global figure registry to close figures in and no backend switch (that
global state is what makes pyplot unsafe to use from several threads). matplotlib is imported inside
the functions only, so that ``import trainlab`` stays light.
"""
from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

MAX_POINTS = 2000  # per line; a 700-pixel-wide axes cannot show more, and "best" legend placement is O(points)
MAX_LINES = 12  # per-layer lines per plot; more make the legend unreadable and the colours repeat

PAD = 0.15  # inches of white around the outermost text: tight_layout's default (1.08 × 10 pt)

_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause automatic garbage collection while drawing.

    Figures allocate enough container objects to trigger full collections, and after ``import
    torch`` each one walks a quarter of a million objects or more (0.1-0.2 s on a 2-core machine).
    The figures' own reference cycles are left to the collector's next runs once it is back on.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def new_axes(width: float, height: float, dpi: int = 100):
    """A (figure, axes) pair on an Agg canvas; call ``finish`` once everything is on it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def finish(fig, ax) -> None:
    """The last step of every figure, once everything is on the axes: margins fitted to the labels,
    and the unlabelled minor ticks of a log y axis drawn as light marks (``minor_tick_marks``)."""
    from matplotlib.ticker import NullLocator

    locator = None
    if ax.get_yscale() == "log" and not _minor_labels(ax):
        # taken away while the margins are measured, so that no minor Tick is ever created
        locator = ax.yaxis.get_minor_locator()
        ax.yaxis.set_minor_locator(NullLocator())
    fit_margins(fig, ax)
    if locator is not None:
        minor_tick_marks(ax, locator)


def fit_margins(fig, ax) -> None:
    """Margins that just hold the axes' tick labels, axis labels and title (what ``tight_layout``
    gives for a single axes, at a fraction of its cost).

    ``tight_layout`` and constrained layout measure every artist of the figure (lines, legend,
    cell texts) in an extra pass; only the two axes and the title can reach outside the axes box,
    and the tick objects and text sizes measured here are reused by the drawing that follows.
    The x axis is fitted first: the figure height it leaves decides how many y ticks there are.
    """
    from matplotlib import rcParams

    renderer = fig.canvas.get_renderer()
    width, height, pad = fig.bbox.width, fig.bbox.height, PAD * fig.dpi
    box = ax.get_position()
    xaxis = ax.xaxis.get_tightbbox(renderer)
    title = ax.title.get_window_extent(renderer).height if ax.get_title() else 0.0
    top = pad + title + rcParams["axes.titlepad"] * fig.dpi / 72
    bottom = box.y0 * height - xaxis.y0 + pad
    right = max(xaxis.x1 - box.x1 * width, 0.0) + pad  # the last tick label may stick out
    fig.subplots_adjust(bottom=bottom / height, top=1 - top / height, right=1 - right / width)
    yaxis = ax.yaxis.get_tightbbox(renderer)
    left = ax.get_position().x0 * width - yaxis.x0 + pad
    fig.subplots_adjust(left=left / width)


def widest_text(fig, texts: Sequence[str], size: str = "xtick.labelsize") -> float:
    """Width in inches of the widest of ``texts`` in the font of rcParams[``size``]."""
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    renderer, prop = fig.canvas.get_renderer(), FontProperties(size=rcParams[size])
    return max((renderer.get_text_width_height_descent(str(t), prop, ismath=False)[0] for t in texts),
               default=0.0) / fig.dpi


def save(fig, path: Path) -> Path:
    """Draw once and write the PNG, durably (:mod:`trainlab.atomic`: a full disk leaves the old
    file, not a torn one); an OS error is a one-line RunError naming the file."""
    import io

    from ..atomic import write_bytes
    from ..errors import RunError

    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".").lower() or "png")
    try:
        write_bytes(path, buffer.getvalue())
    except OSError as err:
        raise RunError(f"could not write {path}: {err.strerror or err}") from None
    return path


def log_scale(ax, axis: str = "y") -> None:
    """A log axis whose tick labels are plain text ("10⁻³", "2×10⁻³"): they read as the default
    mathtext labels, but do not go through the (slow) mathtext parser and renderer."""
    formatter = _plain_log_formatter()
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    # the same major/minor formatter arguments as matplotlib's LogScale defaults
    target.set_major_formatter(formatter(10))
    target.set_minor_formatter(formatter(10, labelOnlyBase=False))


LOG_SPAN = 100.0  # max/min of a curve's positive values above which it goes on a log axis


def range_scale(ax, values) -> str:
    """Put values spanning more than ``LOG_SPAN`` (max/min of the positive ones) on a log y axis,
    or a symlog one if some are 0 or negative, so that a loss that blew up to 1e10 does not flatten
    the rest of its curve into a line at zero; returns what the axis label should add
    ("", " (log scale)", " (symlog scale)")."""
    import math

    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    pos = [v for v in vals if v > 0]
    if not pos or max(pos) <= LOG_SPAN * min(pos):
        return ""
    if len(pos) == len(vals):
        log_scale(ax)
        return " (log scale)"
    ax.set_yscale("symlog", linthresh=min(pos))
    return " (symlog scale)"


def _minor_labels(ax) -> bool:
    """Whether the y axis's minor ticks in the current view carry labels (a log axis spanning about
    one decade labels some of them; a wider one labels none)."""
    return any(ax.yaxis.get_minor_formatter().format_ticks(_minor_locs(ax)))


def _minor_locs(ax):
    import numpy as np

    lo, hi = sorted(ax.get_ylim())
    locs = np.asarray(ax.yaxis.get_minorticklocs())  # without the ones under major ticks
    return locs[(locs >= lo * (1 - 1e-9)) & (locs <= hi * (1 + 1e-9))]


def minor_tick_marks(ax, locator) -> None:
    """Draw the minor ticks that ``locator`` places on the y axis as one line of tick-shaped markers.

    A five-decade log axis has about 50 minor ticks, each a matplotlib ``Tick`` of five artists
    that is re-positioned at every layout query: about a third of such a plot's cost, for marks
    that come out pixel for pixel the same drawn as markers. For unlabelled ticks only: call it
    once the margins are final (which major ticks there are depends on the axes' height).
    """
    import numpy as np
    from matplotlib import markers, rcParams
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullLocator

    ax.yaxis.set_minor_locator(locator)
    locs = _minor_locs(ax)
    ax.yaxis.set_minor_locator(NullLocator())
    if not len(locs):
        return
    marker = {"out": markers.TICKLEFT, "in": markers.TICKRIGHT}.get(rcParams["ytick.direction"], "_")
    # add_artist, not plot: the marks do not enter the data limits; at x = 0 they lie outside every
    # place a legend can take inside the axes, so "best" placement is not changed by them either
    ax.add_artist(Line2D(np.zeros(len(locs)), locs, transform=ax.get_yaxis_transform(which="tick1"),
                         linestyle="none", marker=marker, markersize=rcParams["ytick.minor.size"],
                         markeredgewidth=rcParams["ytick.minor.width"], color=rcParams["ytick.color"],
                         clip_on=False, zorder=1.5))


def plain_log_label(label: str) -> str:
    r"""``$\mathdefault{2\times10^{-3}}$`` -> ``2×10⁻³`` (labels without ``$`` pass through)."""
    if not (label.startswith("$") and label.endswith("$")):
        return label
    body = label[1:-1]
    if body.startswith("\\mathdefault{") and body.endswith("}"):
        body = body[len("\\mathdefault{"):-1]
    body = body.replace("\\times", "×")
    if body.startswith("-"):
        body = "−" + body[1:]  # the minus sign mathtext would have drawn
    mantissa, power, exponent = body.partition("^{")
    return mantissa + exponent.rstrip("}").translate(_SUPERSCRIPT) if power else mantissa


@functools.cache
def _plain_log_formatter():
    from matplotlib.ticker import LogFormatterSciNotation

    class PlainLogFormatter(LogFormatterSciNotation):
        def __call__(self, x, pos=None):
            return plain_log_label(super().__call__(x, pos))

    return PlainLogFormatter


def decimate(xs: Sequence[float], ys: Sequence[float], max_points: int = MAX_POINTS) -> tuple[Any, Any]:
    """Thin a line to at most ``max_points`` points for drawing, keeping its shape.

    The series (n points, x in drawing order) is cut into equal runs of consecutive points; each run
    keeps the points holding its lowest and its highest y (in x order), so that a one-step spike
    survives; the first and last points are kept too. Shorter series are returned unchanged.
    Returns two numpy arrays (or the inputs when nothing is removed).
    """
    import numpy as np

    n = len(ys)
    if n <= max(max_points, 4):
        return xs, ys
    x = np.asarray(xs)
    y = np.asarray(ys, dtype=float)
    runs = max((max_points - 2) // 2, 1)
    width = -(-n // runs)  # ceil: every run but the last is full
    pad = width * -(-n // width) - n
    starts = np.arange(0, n, width)
    lowest = np.pad(y, (0, pad), constant_values=np.inf).reshape(-1, width).argmin(1) + starts
    highest = np.pad(y, (0, pad), constant_values=-np.inf).reshape(-1, width).argmax(1) + starts
    keep = np.unique(np.concatenate(([0, n - 1], lowest, highest)))
    return x[keep], y[keep]


def spread(items: Sequence[Any], limit: int = MAX_LINES) -> list[Any]:
    """At most ``limit`` items: the first, the last and evenly spaced ones between, in order."""
    if len(items) <= limit:
        return list(items)
    return [items[i] for i in sorted({round(k * (len(items) - 1) / (limit - 1)) for k in range(limit)})]


def line_colors(ax, n: int) -> None:
    """Distinct colours for up to 20 lines (the default cycle repeats after 10)."""
    if n > 10:
        from matplotlib import colormaps

        ax.set_prop_cycle(color=[colormaps["tab20"](i) for i in range(20)])
