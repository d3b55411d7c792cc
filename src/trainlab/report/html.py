"""report.html (V5): one self-contained page per run, beside report.md.

Everything is in the file: PNG plots are embedded as base64 data URIs, the curves of a run in
progress are inline SVG drawn here (no matplotlib, so refreshing the page at every epoch end costs
a few milliseconds), the CSS is inline and there is no script at all. The layout is one column
whose images shrink to the screen and whose tables and code scroll inside their own box, so the
page itself never scrolls sideways, on a laptop or a 390-pixel-wide phone.

The page has the same parts as report.md (summary, metrics, the task's sections, plots, the
doctor's findings with their evidence plots, actions taken) plus the recipe and the environment,
and a table of contents linking them. The doctor's section arrives as the Markdown lines report.md
gets (``sections``): the report never imports the doctor, so a small Markdown subset is rendered
here (headings, tables, lists, images, paragraphs, ``code`` and ``**bold**``).
"""
from __future__ import annotations

import base64
import html
import math
import re
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_text

HTML_NAME = "report.html"

# Plots of `trainlab show` (V3), in report order; feature maps carry the layer in their name.
INSIDE_PLOTS = ("filters", "features-*", "saliency", "embeddings")

CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0 auto;padding:0 12px 40px;max-width:1000px;font:15px/1.5 system-ui,-apple-system,"Segoe UI",
Roboto,sans-serif;color:#1b1f24;background:#fff;overflow-wrap:anywhere}
h1{font-size:1.5em;margin:.8em 0 .3em}h2{font-size:1.25em;margin:1.4em 0 .4em;padding-top:.3em;
border-top:1px solid #d8dee4}h3{font-size:1.05em}
nav.toc{display:flex;flex-wrap:wrap;gap:4px 12px;padding:6px 0;border-bottom:1px solid #d8dee4;
position:sticky;top:0;background:#fff;z-index:1;font-size:.9em}
a{color:#0b5cad}
.scroll{overflow-x:auto;max-width:100%;margin:.5em 0}
table{border-collapse:collapse;font-size:.9em;font-variant-numeric:tabular-nums;overflow-wrap:normal}
th,td{border:1px solid #d8dee4;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}
td.num{text-align:right}
tr.diff td{background:#fff6d6}
td.best{font-weight:bold;background:#e3f4e1}
pre{overflow-x:auto;max-width:100%;background:#f6f8fa;padding:8px;font-size:.85em;line-height:1.35}
code{font-size:.9em;background:#f3f5f7;padding:0 3px;border-radius:3px}
pre code{background:none;padding:0}
figure{margin:1em 0}
figure img,figure svg{display:block;max-width:100%;height:auto}
figcaption{font-size:.85em;color:#57606a}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,420px),1fr));gap:8px 16px}
.note{color:#57606a;font-size:.9em}
.live{background:#fff6d6;padding:4px 8px;border-radius:4px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:.5em 0}
dl.facts dt{font-weight:600}dl.facts dd{margin:0}
@media (max-width:480px){body{font-size:14px}dl.facts{grid-template-columns:1fr}dl.facts dd{margin-bottom:4px}}
"""

LIVE_ROWS = 50  # epoch records in the table of a run in progress (newest first)

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")


# ------------------------------------------------------------------------------------ small parts
def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(value: Any) -> str:
    """A metric as the tables show it: 4 decimals for floats, '-' for a missing value."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.3g}" if value != 0 and abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


def anchor(name: str) -> str:
    """An id for ``name`` that is valid in HTML and in a URL fragment."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "x"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; ValueError for anything else."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    return struct.unpack(">II", data[16:24])


def png_figure(path: Path, caption: str, fid: str) -> str:
    """A <figure> with the PNG at ``path`` embedded (its natural size as width/height, so the page
    does not jump while it loads); a note instead when the file is unreadable or not a PNG."""
    try:
        data = Path(path).read_bytes()
        width, height = png_size(data)
    except (OSError, ValueError) as err:
        why = getattr(err, "strerror", None) or err
        return f'<p class="note" id="{fid}">{esc(path.name)}: not shown ({esc(why)})</p>'
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure id="{fid}"><img src="{uri}" width="{width}" height="{height}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)} <span class=\"note\">(plots/{esc(path.name)})</span></figcaption></figure>")


def table(head: Sequence[str], rows: Sequence[Sequence[Any]], classes: Sequence[str] = ()) -> str:
    """An HTML table in a box that scrolls sideways by itself; cells are escaped unless they are
    given as ``Markup``; ``classes``: one class per row ("" for none)."""
    out = ['<div class="scroll"><table><thead><tr>', *(f"<th>{_cell(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = classes[i] if i < len(classes) and classes[i] else ""
        out.append(f'<tr class="{cls}">' if cls else "<tr>")
        for value in row:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            out.append(f'<td class="num">{esc(num(value))}</td>' if numeric else f"<td>{_cell(value)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


class Markup(str):
    """HTML that is inserted as it is (already escaped)."""


def _cell(value: Any) -> str:
    return value if isinstance(value, Markup) else esc(num(value) if value is None else value)


# ---------------------------------------------------------------------------------- Markdown
_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*")
_RULE = re.compile(r"\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*")  # a table's |---|---| line
_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")


def inline(text: str) -> str:
    """Escape ``text`` and render its ``code`` spans and **bold** runs."""
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(esc(text[pos:m.start()]))
        code, bold = m.groups()
        out.append(f"<code>{esc(code)}</code>" if code is not None else f"<strong>{inline(bold)}</strong>")
        pos = m.end()
    out.append(esc(text[pos:]))
    return "".join(out)


def _table_cells(line: str) -> list[str]:
    body = line.strip()[1:-1] if line.strip().endswith("|") else line.strip()[1:]
    cells = re.split(r"(?<!\\)\|", body)
    return [c.strip().replace("\\|", "|") for c in cells]


def markdown_html(lines: Sequence[str], image: Callable[[str, str], str]) -> str:
    """The Markdown subset report.md's sections use, as HTML: ``#`` headings (one level down, the
    page has its own title), ``|`` tables, ``- `` lists, image lines ``![alt](path)`` (``image(path,
    alt)`` returns their HTML) and paragraphs."""
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
            continue
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            text = line.lstrip("#").strip()
            out.append(f'<h{level} id="{anchor(text)}">{inline(text)}</h{level}>')
            i += 1
        elif line.startswith("|"):
            block = []
            while i < n and lines[i].strip().startswith("|"):
                block.append(lines[i])
                i += 1
            head = _table_cells(block[0])
            body = [_table_cells(r) for r in block[1:] if not _RULE.fullmatch(r.strip())]
            out.append(table([Markup(inline(h)) for h in head], [[Markup(inline(c)) for c in r] for r in body]))
        elif line.startswith("- "):
            items = []
            while i < n and lines[i].startswith("- "):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        elif _IMAGE.match(line.strip()):
            figs = []
            while i < n and _IMAGE.match(lines[i].strip()):
                alt, path = _IMAGE.match(lines[i].strip()).groups()
                figs.append(image(path, alt))
                i += 1
            out.append('<div class="grid">' + "".join(figs) + "</div>")
        else:
            para = []
            while i < n and lines[i].strip() and not lines[i].startswith(("#", "|", "- ")) \
                    and not _IMAGE.match(lines[i].strip()):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{inline(' '.join(para))}</p>")
    return "\n".join(out)


# --------------------------------------------------------------------------------------- SVG
def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 × 10^k) from one at or below ``lo``
    to one at or above ``hi``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def svg_chart(series: Sequence[tuple[str, Sequence[float], Sequence[float | None]]], title: str, xlabel: str,
              ylabel: str, log: bool = False, mark_x: float | None = None, width: int = 600,
              height: int = 320) -> str | None:
    """An inline SVG line chart: one polyline (with dots) per ``(label, xs, ys)``; None values and
    non-finite ones are gaps. ``log``: a log10 y axis when every drawn value is positive.
    ``mark_x``: a dashed vertical line (the best epoch). None when nothing can be drawn.

    The drawing scales with its box (``viewBox``), so it fits any screen width.
    """
    pts = [[(x, y) for x, y in zip(xs, ys) if isinstance(y, (int, float)) and math.isfinite(y)]
           for _, xs, ys in series]
    values = [y for p in pts for _, y in p]
    if not values:
        return None
    log = log and min(values) > 0
    fy = (lambda v: math.log10(v)) if log else (lambda v: v)
    xs_all = [x for p in pts for x, _ in p]
    x0, x1 = min(xs_all), max(xs_all)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if log:
        y0, y1 = math.floor(fy(min(values))), math.ceil(fy(max(values)))
        if y1 == y0:
            y1 += 1
        yticks = list(range(int(y0), int(y1) + 1))
    else:
        yticks = nice_ticks(min(values), max(values))
        y0, y1 = yticks[0], yticks[-1] if yticks[-1] > yticks[0] else yticks[0] + 1
    left, right, top, bottom = 64, 12, 28, 44 + 18 * math.ceil(len(series) / 3)
    pw, ph = width - left - right, height - top - bottom

    def px(x):
        return left + (x - x0) / (x1 - x0) * pw

    def py(v):
        return top + ph - (fy(v) - y0) / (y1 - y0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="{esc(title)}" font-family="sans-serif" font-size="12">',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{esc(title)}</text>']
    for t in yticks:
        y = top + ph - (t - y0) / (y1 - y0) * ph
        label = f"1e{t}" if log else f"{t:g}"
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{esc(label)}</text>')
    xticks = [t for t in nice_ticks(x0, x1, 6) if x0 <= t <= x1 and (x1 - x0 > 5 or float(t).is_integer())]
    for t in xticks:
        x = px(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="#f0f1f3"/>'
                   f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{t:g}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#8c959f"/>')
    out.append(f'<text x="{left + pw / 2}" y="{top + ph + 32}" text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
               f'{esc(ylabel + (" (log scale)" if log else ""))}</text>')
    if mark_x is not None and x0 <= mark_x <= x1:
        out.append(f'<line x1="{px(mark_x):.1f}" x2="{px(mark_x):.1f}" y1="{top}" y2="{top + ph}" stroke="#6e7781" '
                   f'stroke-dasharray="5 4"><title>best epoch {mark_x:g}</title></line>')
    for k, ((label, _, _), p) in enumerate(zip(series, pts)):
        color = COLORS[k % len(COLORS)]
        runs, run = [], []
        for x, y in zip(series[k][1], series[k][2]):  # gaps where a value is missing
            if isinstance(y, (int, float)) and math.isfinite(y) and (not log or y > 0):
                run.append(f"{px(x):.1f},{py(y):.1f}")
            elif run:
                runs.append(run)
                run = []
        if run:
            runs.append(run)
        for r in runs:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(r)}"/>')
        if len(p) <= 60:
            out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{color}"/>' for x, y in p
                    if not log or y > 0]
        lx, ly = left + (k % 3) * (pw / 3), top + ph + 50 + 18 * (k // 3)
        out.append(f'<rect x="{lx:.1f}" y="{ly - 9}" width="14" height="4" fill="{color}"/>'
                   f'<text x="{lx + 18:.1f}" y="{ly - 4}">{esc(label)}</text>')
    out.append("</svg>")
    return "".join(out)


# ----------------------------------------------------------------------------------- the page
def environment(device=None) -> dict[str, str]:
    """What the run was computed with: versions and the device (for the report's environment)."""
    import platform
    import sys

    from importlib import metadata

    import numpy
    import torch

    try:  # the package's own __init__ sits in a higher layer: its version comes from the install
        version = metadata.version("trainlab")
    except metadata.PackageNotFoundError:
        version = "not installed"
    env = {"trainlab": version, "python": sys.version.split()[0], "torch": torch.__version__,
           "numpy": numpy.__version__, "platform": platform.platform()}
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - a dependency, listed for completeness
        pass
    if device is not None:
        dev = torch.device(device)
        env["device"] = str(dev)
        if dev.type == "cuda" and torch.cuda.is_available():
            env["device"] += f" ({torch.cuda.get_device_name(dev)}, CUDA {torch.version.cuda})"
        elif dev.type == "cpu":
            env["device"] += f" ({torch.get_num_threads()} threads)"
    return env


def page(title: str, toc: Sequence[tuple[str, str]], body: Sequence[str]) -> str:
    """A whole HTML document: title, sticky table of contents (anchor, label), the body parts."""
    nav = "".join(f'<a href="#{a}">{esc(label)}</a>' for a, label in toc)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f'<h1 id="top">{esc(title)}</h1><nav class="toc">{nav}</nav>\n' + "\n".join(body) + "\n</body></html>\n")


def facts(items: Sequence[tuple[str, Any]]) -> str:
    """A definition list of (name, value); values given as Markup stay HTML."""
    return '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{_cell(v)}</dd>" for k, v in items) + "</dl>"


def inside_plots(run) -> list[Path]:
    """The PNGs `trainlab show` wrote into the run's plots/, in report order."""
    out: list[Path] = []
    for pattern in INSIDE_PLOTS:
        out += sorted(run.plots.glob(f"{pattern}.png"))
    return out


def _curve_series(epochs: list[dict[str, Any]], keys: Sequence[str]):
    return [(k, [r["epoch"] for r in epochs], [r.get(k) for r in epochs]) for k in keys
            if any(r.get(k) is not None for r in epochs)]


def render_report(run, recipe, task, history: list[dict[str, Any]], summary: dict[str, Any] | None = None,
                  sections: Sequence[str] = (), env: dict[str, str] | None = None,
                  recipe_text: str | None = None, status: str | None = None,
                  best: tuple[int, str, float] | None = None) -> str:
    """The HTML text of a run's report. ``summary`` None: a run in progress (its curves drawn here
    as SVG from ``history``; no evaluation yet); otherwise the finished run, with the PNG plots of
    its plots/ folder. ``sections``: Markdown lines of other stages (the doctor's, the classical
    baselines'), one page section per ``## `` heading; ``env``: what
    :func:`environment` returned for the training process (or summary["environment"]);
    ``recipe_text``: the recipe as YAML (default: :func:`recipe_yaml`); ``status``: what the
    banner of a run in progress says instead of "in progress" (an interruption); ``best``: the
    trainer's (best epoch, monitored metric, value) of a run in progress (default: the best epoch
    of ``history`` by the task's monitor)."""
    from .markdown import metrics_table

    epochs = [r for r in history if "event" not in r]
    events = [r for r in history if "event" in r]
    env = env or (summary or {}).get("environment")
    live = summary is None
    used: set[str] = set()

    def image(path: str, alt: str) -> str:
        name = Path(path).name
        used.add(name)
        return png_figure(run.dir / path, alt, "fig-" + anchor(Path(path).stem))

    toc = [("summary", "summary")]
    body = ['<section id="summary"><h2>Summary</h2>']
    if live:
        last = epochs[-1] if epochs else {}
        done = f"epoch {last.get('epoch', 0)} of {recipe.train.epochs} done"
        if status:
            body.append(f'<p class="live">{inline(status)} ({done}).</p>')
        else:
            body.append(f'<p class="live">Training in progress: {done}. This page is rewritten at the end of every '
                        "epoch; reload it to see the run so far. The evaluation, the plots and the doctor's "
                        "diagnosis appear when the run finishes.</p>")
    items: list[tuple[str, Any]] = [
        ("run directory", Markup(f"<code>{esc(run.dir)}</code>")),
        ("task", recipe.task), ("data", recipe.data.name), ("model", recipe.model.name),
        ("optimizer", f"{recipe.optim.name} (lr {recipe.optim.lr})"), ("schedule", recipe.schedule.name),
    ]
    if live:
        best = best or _best_so_far(epochs, task)
        items.append(("epochs run", f"{len(epochs)} of {recipe.train.epochs}"))
        if best:
            items.append(("best so far", Markup(f'epoch {best[0]} ({esc(best[1])} = {esc(num(best[2]))}), '
                                               f'<a href="#curves">curves</a>')))
    else:
        items += [
            ("epochs run", f"{summary['epochs_run']} of {recipe.train.epochs}"),
            ("best epoch", Markup(f"{esc(summary.get('best_epoch'))} ({esc(summary.get('monitor'))} = "
                                  f"{esc(num(summary.get('best_value')))}); evaluated with the "
                                  f"{esc(summary.get('checkpoint'))} weights; <a href=\"#metrics\">metrics</a>")),
            ("training time", f"{summary.get('train_time_s', 0):.1f} s (wall time of the last process "
                              f"{summary.get('wall_s', 0):.1f} s)"),
        ]
        if summary.get("stop_reason"):
            items.append(("stopped", summary["stop_reason"]))
    parts = split_sections(sections)
    for heading, lines in parts:
        if heading == "Doctor":
            items.append(("doctor", Markup(f'<a href="#doctor">{esc(_doctor_line(lines))}</a>')))
    if events:
        items.append(("actions taken", Markup(f'<a href="#events">{len(events)} during training</a>')))
    items.append(("recipe", Markup('<a href="#recipe">recipe.yaml</a>; <a href="#environment">environment</a>')))
    body += [facts(items), "</section>"]

    if not live:
        toc.append(("metrics", "metrics"))
        body.append('<section id="metrics"><h2>Metrics</h2>'
                    + markdown_html(metrics_table(summary).splitlines(), image) + "</section>")
        from .markdown import bias_variance_section, snapshot_section

        extra = [*task.report_sections(summary), *bias_variance_section(summary, recipe, history, task),
                 *snapshot_section(summary)]
        if extra:
            body.append('<section id="task">' + markdown_html(extra, image) + "</section>")

    # curves: the finished run's PNGs; SVG drawn here for a run in progress (or without plots)
    toc.append(("curves", "curves"))
    body.append('<section id="curves"><h2>Curves</h2><div class="grid">')
    best_epoch = (summary or {}).get("best_epoch") if not live else (best or (None,))[0]
    curves = [("loss", ["train_loss", "val_loss"], "loss", False), *[(n, k, n, False) for n, k in task.curves()],
              ("lr", ["lr"], "learning rate (end of epoch)", True)]
    for name, keys, title, log in curves:
        png = run.plots / f"{name}.png"
        if not live and png.exists():
            body.append(image(f"plots/{name}.png", title))
            continue
        svg = svg_chart(_curve_series(epochs, keys), title, "epoch", name, log=log, mark_x=best_epoch)
        if svg:
            body.append(f'<figure id="fig-{anchor(name)}">{svg}<figcaption>{esc(title)}</figcaption></figure>')
    body.append("</div>")
    if epochs:
        keys = ["epoch"] + [k for k in epochs[-1] if k not in ("epoch", "step", "optimizer", "partial")
                            and isinstance(epochs[-1][k], (int, float))]
        # a run in progress shows its latest rows, so that the page costs the same at every epoch end
        rows = epochs[-LIVE_ROWS:] if live else epochs
        what = f"the last {len(rows)} of {len(epochs)}" if len(rows) < len(epochs) else str(len(epochs))
        body.append(f"<details{' open' if live else ''}><summary>epoch records ({what})</summary>"
                    + table(keys, [[r.get(k) for k in keys] for r in reversed(rows)] if live
                            else [[r.get(k) for k in keys] for r in rows]) + "</details>")
    body.append("</section>")

    if not live:
        names = [f.name for f in task.figures(summary)]
        figures = [image(f"plots/{n}.png", n) for n in names if (run.plots / f"{n}.png").exists()]
        figures += [image(f"plots/{p.name}", p.stem) for p in inside_plots(run)]
        if figures:
            toc.append(("plots", "plots"))
            body.append('<section id="plots"><h2>Plots</h2><div class="grid">' + "".join(figures) + "</div></section>")
    for heading, lines in parts:  # the doctor's findings with their evidence plots, other stages' sections
        sid = anchor(heading)
        toc.append((sid, heading.lower()))
        body.append(f'<section id="{sid}"><h2>{inline(heading)}</h2>' + markdown_html(lines, image) + "</section>")
    if events:
        toc.append(("events", "actions"))
        body.append('<section id="events"><h2>Actions taken during training</h2><ul>'
                    + "".join(f"<li>epoch {esc(e['epoch'])}, step {esc(e['step'])}: <strong>{esc(e['event'])}"
                              f"</strong>: {esc(e.get('message', ''))}</li>" for e in events) + "</ul></section>")
    toc += [("recipe", "recipe"), ("environment", "environment")]
    text = recipe_yaml(run, recipe) if recipe_text is None else recipe_text
    body.append(f'<section id="recipe"><h2>Recipe</h2><pre><code>{esc(text)}</code></pre></section>')
    body.append('<section id="environment"><h2>Environment</h2>'
                + (facts(list(env.items())) if env else '<p class="note">not recorded for this run</p>')
                + '<p><a href="#top">back to the top</a></p></section>')
    state = "" if not live else " (stopped)" if status else " (in progress)"
    return page(f"Run report: {recipe.name}{state}", toc, body)


def recipe_yaml(run, recipe) -> str:
    """The run's recipe.yaml as written (the resolved recipe), or ``recipe`` as YAML where the
    run has none: dumping YAML is most of the page's rendering time."""
    try:
        return run.recipe_path.read_text()
    except OSError:
        return recipe.to_yaml()


def _best_so_far(epochs: list[dict[str, Any]], task) -> tuple[int, str, float] | None:
    """(epoch, metric, value) of the best epoch so far by the task's monitored metric."""
    monitor = getattr(task, "monitor", "val_loss")
    if monitor not in {k for r in epochs for k in r}:
        monitor = "train_loss"
    try:
        sign = 1 if task.metric_mode(monitor) == "min" else -1
    except Exception:  # noqa: BLE001 - an undeclared metric: the loss direction
        sign = 1
    vals = [(r["epoch"], r[monitor]) for r in epochs
            if isinstance(r.get(monitor), (int, float)) and math.isfinite(r[monitor])]
    if not vals:
        return None
    epoch, value = min(vals, key=lambda ev: sign * ev[1])
    return epoch, monitor, value


def split_sections(lines: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Markdown lines cut at their ``## `` headings: (heading, the lines under it); lines before
    the first heading go under "Notes"."""
    parts: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("## "):
            parts.append((line[3:].strip(), []))
        elif parts or line.strip():
            if not parts:
                parts.append(("Notes", []))
            parts[-1][1].append(line)
    return parts


def _doctor_line(sections: Sequence[str]) -> str:
    rows = [line for line in sections if line.startswith("| ") and not line.startswith("| severity")]
    return f"{len(rows)} finding{'s' if len(rows) != 1 else ''}" if rows else "no findings"


def write_html_report(run, recipe, task, history: list[dict[str, Any]], summary: dict[str, Any] | None = None,
                      sections: Sequence[str] = (), env: dict[str, str] | None = None) -> Path:
    """Render and write ``report.html`` atomically (:mod:`trainlab.atomic`); returns its path."""
    from ..errors import RunError

    path = run.dir / HTML_NAME
    try:
        write_text(path, render_report(run, recipe, task, history, summary, sections, env))
    except OSError as err:
        raise RunError(f"could not write {path}: {err.strerror or err}") from None
    return path
