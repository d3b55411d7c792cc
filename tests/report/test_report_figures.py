"""The run's PNG plots drawn fast: thinning of long series, plain log labels, light minor ticks,
margins fitted to the labels, capped per-layer lines. (That fit writes every plot is checked by
tests/test_cli.py and tests/doctor/test_doctor_report.py.)"""
from __future__ import annotations

import gc
import itertools
import math

import numpy as np
import pytest

from trainlab.doctor.history import DoctorHistory
from trainlab.doctor.report import _dead_units_figure, _layer_steps_figure
from trainlab.report import figures as fg
from trainlab.report.plots import confusion_figure, curves_figure


def _pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).astype(int)


def _inside_image(fig, slack: float = 1.0) -> bool:
    """Every artist of the axes (tick labels, axis labels, title) lies within the image."""
    fig.canvas.draw()
    box = fig.axes[0].get_tightbbox(fig.canvas.get_renderer())
    w, h = fig.bbox.width, fig.bbox.height
    return box.x0 >= -slack and box.y0 >= -slack and box.x1 <= w + slack and box.y1 <= h + slack


# ------------------------------------------------------------------------------- decimate
def test_decimate_keeps_each_runs_lowest_and_highest_point_and_the_ends():
    """V1: a long line is thinned to at most max_points points that are, per run of consecutive
    points, its lowest and highest (so a one-step spike survives), plus the first and last."""
    rng = np.random.default_rng(0)
    n, max_points = 10_007, 200
    ys = rng.normal(size=n)
    ys[4321] = 50.0  # a spike
    ys[777] = -40.0  # a dip
    xs = np.arange(n) * 10
    dx, dy = fg.decimate(xs, ys, max_points)

    runs = (max_points - 2) // 2
    width = math.ceil(n / runs)
    expected = {0, n - 1}
    for start in range(0, n, width):
        chunk = ys[start:start + width]
        expected.add(start + int(np.argmin(chunk)))
        expected.add(start + int(np.argmax(chunk)))
    assert len(dx) <= max_points
    assert list(dx) == [10 * i for i in sorted(expected)]
    assert np.array_equal(dy, ys[sorted(expected)])
    assert 50.0 in dy and -40.0 in dy


def test_decimate_leaves_short_series_alone():
    """V1: a series within the limit is drawn as it is."""
    xs, ys = [1, 2, 3], [0.5, 0.2, 0.1]
    assert fg.decimate(xs, ys, 2000) == (xs, ys)


def test_spread_picks_first_last_and_evenly_spaced():
    """X3: at most `limit` layers: the first, the last and evenly spaced ones between, in order."""
    assert fg.spread(list(range(5)), 12) == [0, 1, 2, 3, 4]
    picked = fg.spread(list(range(100)), 12)
    assert len(picked) == 12 and picked[0] == 0 and picked[-1] == 99
    assert picked == [round(k * 99 / 11) for k in range(12)]


# ------------------------------------------------------------------------------ log axis
@pytest.mark.parametrize("mathtext, plain", [
    (r"$\mathdefault{10^{-3}}$", "10⁻³"),
    (r"$\mathdefault{10^{0}}$", "10⁰"),
    (r"$\mathdefault{10^{12}}$", "10¹²"),
    (r"$\mathdefault{2\times10^{-3}}$", "2×10⁻³"),
    (r"$\mathdefault{-10^{2}}$", "−10²"),
    (r"$\mathdefault{3.08\times10^{-3}}$", "3.08×10⁻³"),
    ("", ""),
])
def test_plain_log_label(mathtext, plain):
    """V1: matplotlib's mathtext log labels written as plain text with superscript digits."""
    assert fg.plain_log_label(mathtext) == plain


def test_log_axis_labels_are_plain_text_with_the_same_values():
    """V1: on a real log axis the labels are matplotlib's (same ticks, same values), without mathtext."""
    fig, ax = fg.new_axes(6, 4)
    ax.plot([1, 2, 3], [1e-3, 1e-1, 10.0])
    fg.log_scale(ax)
    fg.finish(fig, ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert "10⁻³" in labels and "10⁻¹" in labels and "10¹" in labels
    assert not any("$" in t for t in labels)


# --------------------------------------------------------------------------- minor ticks
def _log_figure(light: bool):
    fig, ax = fg.new_axes(5, 3)
    x = np.arange(300)
    ax.plot(x, 10 ** (-6 + 6 * np.exp(-x / 80)), label="a")
    ax.axhline(1e-4, color="grey", linestyle="--", label="ref")
    fg.log_scale(ax)
    ax.set_title("t")
    ax.set_ylabel("y")
    ax.legend()
    (fg.finish if light else fg.fit_margins)(fig, ax)
    return fig, ax


def test_light_minor_ticks_draw_the_same_image_as_matplotlib_ticks():
    """V1: the unlabelled minor ticks of a 6-decade log axis, drawn as one line of markers, give the
    image matplotlib's Tick objects give (a blend rounding of 1/255 at most)."""
    from matplotlib.ticker import NullLocator

    light, ax = _log_figure(light=True)
    assert isinstance(ax.yaxis.get_minor_locator(), NullLocator)
    ticks, ref_ax = _log_figure(light=False)
    assert len(ref_ax.yaxis.get_minorticklocs()) > 30
    a, b = _pixels(light), _pixels(ticks)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1
    # the comparison can fail: without the minor ticks the image differs
    none, none_ax = _log_figure(light=False)
    none_ax.yaxis.set_minor_locator(NullLocator())
    assert (np.abs(_pixels(none) - b).max(-1) > 0).sum() > 20


def test_labelled_minor_ticks_stay_matplotlib_ticks():
    """V1: on an axis spanning less than a decade the minor ticks carry labels; they are kept."""
    from matplotlib.ticker import NullLocator

    fig, ax = fg.new_axes(6, 4)
    ax.plot([1, 2, 3], [3.0e-3, 3.05e-3, 3.1e-3])
    fg.log_scale(ax)
    fg.finish(fig, ax)
    fig.canvas.draw()
    assert not isinstance(ax.yaxis.get_minor_locator(), NullLocator)
    minor = [t.get_text() for t in ax.yaxis.get_minorticklabels() if t.get_text()]
    assert minor and all("×10⁻³" in t for t in minor)


# ------------------------------------------------------------------------------- margins
@pytest.mark.parametrize("epochs, keys, logy", [
    ([{"epoch": e, "lr": 0.0031 - 0.0001 * e / 20} for e in range(1, 21)], ["lr"], True),  # "3.08×10⁻³" labels
    ([{"epoch": e, "loss": 123456.0 / e} for e in range(1, 21)], ["loss"], False),  # "120000" labels
])
def test_curve_labels_stay_inside_the_image(epochs, keys, logy):
    """V1: tick labels of any width, axis labels and title fit in the image (what tight_layout did)."""
    fig = curves_figure(epochs, keys, "title", "a rather long y label", logy=logy, mark_epoch=3)
    assert _inside_image(fig)
    # and the margin is no wider than needed: the y label sits close to the left edge
    box = fig.axes[0].get_tightbbox(fig.canvas.get_renderer())
    assert box.x0 < 0.25 * fig.dpi
    # the check can fail: with a narrow left margin the labels are cut off
    fig.subplots_adjust(left=0.02)
    assert not _inside_image(fig)


@pytest.mark.parametrize("names", [
    [str(i) for i in range(10)],
    ["cat", "dog", "a_rather_long_class_name"],
])
def test_confusion_matrix_names_fit_and_do_not_overlap(names):
    """V4: class names of any length are inside the image; too wide for their column, they are
    written vertically (always beyond 10 classes), and the matrix keeps its counts in the cells."""
    n = len(names)
    cm = (np.eye(n, dtype=int) * 9).tolist()
    cm[0][1] = cm[n - 1][0] = 2
    fig = confusion_figure(cm, names)
    ax = fig.axes[0]
    assert _inside_image(fig)
    rotations = {t.get_rotation() for t in ax.get_xticklabels()}
    assert rotations == ({0.0} if names[0] == "0" else {90.0})
    cells = sorted(int(t.get_text()) for t in ax.texts)
    assert cells == sorted(v for row in cm for v in row if v)
    # neighbouring x labels do not overlap
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels()]
    assert all(a.x1 <= b.x0 + 0.5 for a, b in itertools.pairwise(boxes))


# ---------------------------------------------------------------------------- doctor plots
def _history(n_layers: int, n_steps: int, n_acts: int) -> DoctorHistory:
    """Per-step columns as DoctorHistory stores them (None for a non-finite number)."""
    rng = np.random.default_rng(1)
    grads = 10.0 ** (-np.arange(n_layers) / 10) * rng.uniform(0.5, 1.5, (n_steps, n_layers))
    grads[1234, 0] = 1e4  # a spike in the first layer
    layer_grad = grads.tolist()
    layer_grad[10][0] = None  # a non-finite sample: not drawn
    h = DoctorHistory(every=10)
    h.layers = [{"name": f"blocks.{i}.conv", "type": "Conv2d", "params": 10, "weight": True} for i in range(n_layers)]
    h.activations = [{"name": f"blocks.{i}.act", "type": "ReLU", "units": 8} for i in range(n_acts)]
    h.steps = {"step": list(range(0, 10 * n_steps, 10)), "epoch": [1] * n_steps, "loss": [1.0] * n_steps,
               "lr": [0.1] * n_steps, "grad_norm": [1.0] * n_steps, "layer_grad": layer_grad,
               "update_ratio": rng.uniform(1e-4, 1e-2, (n_steps, n_layers)).tolist()}
    h.liveness = [{"epoch": e, "batches": 2, "dead": [i / n_acts for i in range(n_acts)]} for e in range(1, 11)]
    return h


def test_doctor_plots_cap_layers_and_thin_long_step_series():
    """X3/V5: with 30 layers all are drawn, 12 (first, last, spread) named in the legend and the
    others grey, as its title says;
    a 2,400-step series is thinned to MAX_POINTS points and its spike is still drawn."""
    history = _history(n_layers=30, n_steps=2_400, n_acts=20)
    fig = _layer_steps_figure(history, "layer_grad", "gradient norm per layer", "norm", [], ())
    ax = fig.axes[0]
    legend = ax.get_legend()
    names = [t.get_text() for t in legend.get_texts()]
    assert names[0] == "blocks.0.conv" and "blocks.29.conv" in names and names[-1] == "global"
    assert len(names) == 13
    assert legend.get_title().get_text() == "12 of 30 layers named; the other 18 in grey"
    assert len([line for line in ax.lines if line.get_color() == "0.75"]) == 18
    first = next(line for line in ax.lines if line.get_label() == "blocks.0.conv")
    xs, ys = first.get_xdata(), first.get_ydata()
    assert len(xs) <= fg.MAX_POINTS
    assert 1e4 in ys and 12340 in xs  # the spike survives the thinning
    assert 100 not in xs  # the non-finite sample is not drawn

    dead = _dead_units_figure(history).axes[0].get_legend()
    assert dead.get_title().get_text() == "12 of 20 ReLU layers named; the others in grey"
    assert len(dead.get_texts()) == 12


def test_gc_paused_restores_the_collector():
    """V1: drawing pauses the garbage collector and gives back the state it found."""
    assert gc.isenabled()
    with fg.gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with fg.gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
