"""``trainlab compare``: several runs side by side on one self-contained HTML page (V5).

Curves of all runs overlaid (one colour per run; training dashed, validation solid), one metrics
table (a row per metric, a column per run, the best value of each row in bold by the metric's
declared direction), and the recipes' differences (rows that differ highlighted, identical
settings folded away). Images are embedded; the page links to each run's own report.html.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from .html import COLORS, Markup, anchor, esc, facts, num, page, png_size, table


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Dotted key -> value text of a nested recipe dict (lists and scalars as compact JSON)."""
    if isinstance(tree, dict) and tree:
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.dumps(tree, default=str)}


def recipe_differences(recipes: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(keys whose values differ between the recipes, keys equal in all), in recipe order; a key
    missing from some recipe counts as differing. The run's name is not a setting."""
    flat = [flatten(r) for r in recipes]
    keys: list[str] = []
    for f in flat:
        keys += [k for k in f if k not in keys and k != "name"]
    differ = [k for k in keys if len({f.get(k, "(absent)") for f in flat}) > 1]
    return differ, [k for k in keys if k not in differ]


def _labels(runs) -> list[str]:
    """A short, distinct label per run: its folder name (its path where two share a name)."""
    names = [r.dir.name or str(r.dir) for r in runs]
    return [str(r.dir) if names.count(n) > 1 else n for r, n in zip(runs, names)]


def _png_uri(fig) -> tuple[str, int, int]:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = buffer.getvalue()
    width, height = png_size(data)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii"), width, height


def overlay_figure(labels: list[str], histories: list[list[dict[str, Any]]], keys: list[str], title: str,
                   ylabel: str, log: bool | str = False):
    """One axes: for every run (one colour each) a line per key (``train_*`` dashed, the rest
    solid) against the epoch; None when no run has any of the keys."""
    from .figures import decimate, finish, log_scale, new_axes, range_scale

    fig, ax = new_axes(7, 4.2)
    values: list[float] = []
    for i, (label, epochs) in enumerate(zip(labels, histories)):
        for key in keys:
            pts = [(r["epoch"], r[key]) for r in epochs
                   if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
            if not pts:
                continue
            xs, ys = zip(*pts)
            values += ys
            ax.plot(*decimate(xs, ys), color=COLORS[i % len(COLORS)], marker="o", markersize=2.5,
                    linestyle="--" if key.startswith("train_") else "-", label=f"{label}: {key}")
    if not values:
        return None
    if log == "auto":
        ylabel += range_scale(ax, values)
    elif log and min(values) > 0:
        log_scale(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    finish(fig, ax)
    return fig


def _summary(run) -> dict[str, Any] | None:
    try:
        return run.summary()
    except Exception:  # noqa: BLE001 - an unfinished (or unreadable) run is shown without its evaluation
        return None


def _direction(task, metric: str) -> str | None:
    try:
        return task.metric_mode(metric)
    except Exception:  # noqa: BLE001 - undeclared by this task: no "best" for the row
        return None


def render_compare(runs, out: Path) -> str:
    """The HTML text of the comparison page of ``runs`` (opened Run objects) written at ``out``
    (links to the runs' own reports are relative to it)."""
    from ..tasks.base import scalar_metrics
    from .figures import gc_paused

    labels = _labels(runs)
    recipes = [r.recipe() for r in runs]
    tasks = [r.task(rec) for r, rec in zip(runs, recipes)]
    summaries = [_summary(r) for r in runs]
    histories = [r.epochs() for r in runs]

    def link(run) -> Markup:
        target = run.dir / "report.html"
        if not target.exists():
            return Markup(f"<code>{esc(run.dir)}</code>")
        href = Path(os.path.relpath(target.resolve(), out.resolve().parent)).as_posix()
        return Markup(f'<a href="{esc(href)}">{esc(run.dir)}</a>')

    body = ['<section id="runs"><h2>Runs</h2>']
    rows = []
    for i, (run, rec, s, h) in enumerate(zip(runs, recipes, summaries, histories)):
        colour = Markup(f'<span style="color:{COLORS[i % len(COLORS)]}">&#9632;</span> {esc(labels[i])}')
        state = (f"{s['epochs_run']} of {rec.train.epochs} epochs" if s
                 else f"unfinished ({len(h)} of {rec.train.epochs} epochs)")
        rows.append([colour, link(run), rec.task, rec.model.name, rec.data.name, state])
    body += [table(["run", "report", "task", "model", "data", "trained"], rows), "</section>"]

    # metrics: a row per (split, metric), a column per run, the best of a row in bold
    metric_rows, classes, keys = [], [], []
    for split in ("val", "test"):
        for s in summaries:
            keys += [(split, k) for k in scalar_metrics((s or {}).get(split)) if k != "n" and (split, k) not in keys]
    head = ["metric", *labels]
    extra = [("best epoch", "best_epoch"), ("training time (s)", "train_time_s")]
    for title, key in extra:
        metric_rows.append([title, *[(s or {}).get(key) for s in summaries]])
        classes.append("")
    for split, key in keys:
        values = [((s or {}).get(split) or {}).get(key) for s in summaries]
        modes = {_direction(t, key) for t in tasks}
        best = None
        finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        if len(modes) == 1 and None not in modes and len(finite) > 1:
            best = (max if modes == {"max"} else min)(finite)
        cells = [Markup(f'<strong>{esc(num(v))}</strong>') if best is not None and v == best else v for v in values]
        metric_rows.append([f"{split} {key}", *cells])
        classes.append("")
    body += ['<section id="metrics"><h2>Metrics</h2>', table(head, metric_rows, classes),
             '<p class="note">Best value of a row in bold, by the direction the task declares for the metric.</p>',
             "</section>"]

    # curves overlaid
    names: list[tuple[str, list[str], str, bool | str]] = [("loss", ["train_loss", "val_loss"], "loss", "auto")]
    for t in tasks:
        for name, ks in t.curves():
            if name not in [n for n, *_ in names]:
                names.append((name, ks, name, False))
    names.append(("lr", ["lr"], "learning rate (end of epoch)", True))
    figures = []
    with gc_paused():
        for name, ks, title, log in names:
            fig = overlay_figure(labels, histories, ks, title, name, log)
            if fig is None:
                continue
            uri, w, h = _png_uri(fig)
            figures.append(f'<figure id="curve-{anchor(name)}"><img src="{uri}" width="{w}" height="{h}" '
                           f'alt="{esc(title)}"><figcaption>{esc(title)}: training dashed, validation solid'
                           "</figcaption></figure>")
    body += ['<section id="curves"><h2>Curves</h2><div class="grid">', *figures, "</div></section>"]

    # recipe differences
    dicts = [r.to_dict() for r in recipes]
    differ, same = recipe_differences(dicts)
    flat = [flatten(d) for d in dicts]
    body.append('<section id="recipes"><h2>Recipe differences</h2>')
    if differ:
        body.append(table(["setting", *labels], [[k, *[f.get(k, "(absent)") for f in flat]] for k in differ],
                          ["diff"] * len(differ)))
    else:
        body.append("<p>The recipes are the same (but for their names).</p>")
    body.append(f"<details><summary>{len(same)} settings the same in every run</summary>"
                + table(["setting", "value"], [[k, flat[0][k]] for k in same]) + "</details>")
    body.append('<p><a href="#top">back to the top</a></p></section>')
    toc = [("runs", "runs"), ("metrics", "metrics"), ("curves", "curves"), ("recipes", "recipe differences")]
    intro = facts([("runs", len(runs)), ("recipe settings that differ", len(differ))])
    return page(f"Comparison of {len(runs)} runs", toc, [intro, *body])


def write_compare(runs, out: str | Path) -> Path:
    """Render the comparison page and write it at ``out`` atomically."""
    from ..atomic import write_text
    from ..errors import RunError

    out = Path(out)
    text = render_compare(runs, out)
    try:
        write_text(out, text)
    except OSError as err:
        raise RunError(f"could not write {out}: {err.strerror or err}") from None
    return out
