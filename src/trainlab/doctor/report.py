"""The diagnosis for people: a text table, a report.md section, evidence plots, re-diagnosis of a run."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import RecipeError, RunError
from .findings import CODES, Finding
from .history import DoctorHistory

PLOTS = (("doctor-gradients", "gradient norm per layer"), ("doctor-update-ratio", "update/weight ratio per layer"),
         ("doctor-dead-units", "dead fraction per ReLU layer"), ("doctor-curves", "train/val curves"))


# ------------------------------------------------------------------------------------ text table
def format_table(findings: list[Finding], title: str = "doctor") -> str:
    """One row per finding (most severe first), each followed by its remedies."""
    if not findings:
        return f"{title}: no findings; the monitored numbers look healthy"
    counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
    summary = ", ".join(f"{n} {s}{'s' if n > 1 else ''}" for s, n in counts.items() if n)
    code_w = max(len(f.code) for f in findings)
    lines = [f"{title}: {len(findings)} finding{'s' if len(findings) > 1 else ''} ({summary})",
             f"  {'severity':<8} {'code':<{code_w}} {'feature':<7} {'epoch':>5} {'step':>6}  finding"]
    for f in findings:
        lines.append(f"  {f.severity:<8} {f.code:<{code_w}} {f.feature:<7} {_cell(f.epoch):>5} {_cell(f.step):>6}  "
                     f"{f.message}")
        lines.append(f"  {'':<8} {'':<{code_w}} {'':<7} {'':>5} {'':>6}  try: {'; '.join(f.remedies[:3])}")
    return "\n".join(lines)


def _cell(v: Any) -> str:
    return "-" if v is None else str(v)


# --------------------------------------------------------------------------------- re-diagnosis
def read_doctor_file(run) -> dict[str, Any]:
    path = Path(run.dir) / "doctor.json"
    if not path.is_file():
        raise RunError(f"run {run.dir} has no doctor.json (it was trained with doctor.enabled=false or "
                       "doctor=null, or did not reach the end of its first epoch)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunError(f"{path} is not valid JSON (damaged?)") from None
    if not isinstance(data, dict) or "history" not in data:
        raise RunError(f"{path} holds no doctor history (written by another program?)")
    return data


def diagnose_run(run, overrides: list[str] | dict[str, Any] | None = None) -> tuple[list[Finding], DoctorHistory]:
    """Apply the rules again to a finished (or interrupted) run's recorded numbers; ``run`` is an
    opened run directory (:func:`trainlab.open_run`).

    ``overrides`` may change ``doctor.*`` thresholds (``["doctor.dead_fraction=0.1"]``) to see the
    same numbers judged differently; nothing in the run is modified.
    """
    from ..recipe import DoctorConfig, load_recipe, parse_override
    from .rules import diagnose

    if isinstance(run, (str, Path)):
        raise TypeError(f"diagnose_run takes an opened run: diagnose_run(trainlab.open_run({str(run)!r}))")
    data = read_doctor_file(run)
    history = DoctorHistory.from_dict(data["history"], str(Path(run.dir) / "doctor.json"))
    pairs: dict[str, Any] = {}
    if isinstance(overrides, dict):
        pairs = dict(overrides)
    else:
        for text in overrides or []:
            parts, value = parse_override(text)
            pairs[".".join(parts)] = value
    for key in pairs:
        if not key.startswith("doctor."):
            raise RecipeError(f"override {key!r}: only doctor.* thresholds can change when re-diagnosing a run")
    recipe = load_recipe(run.recipe_path, pairs or None)
    cfg = recipe.doctor if recipe.doctor is not None else DoctorConfig()
    return diagnose(history, run.epochs(), cfg, done=history.finished), history


# -------------------------------------------------------------------------------- report.md
def markdown_section(run) -> list[str]:
    """Lines of the report's doctor section: findings table, remedies, evidence plots."""
    try:
        data = read_doctor_file(run)
    except RunError as err:
        return ["## Doctor", "", f"(doctor.json unreadable: {err})", ""]
    findings = [Finding.from_dict(f) for f in data.get("findings", [])]
    history = data.get("history", {})
    lines = ["## Doctor", ""]
    every = history.get("every")
    n = len(history.get("steps", {}).get("step", []))
    lines.append(f"Monitors sampled {n} steps (every {every} steps and the first of each epoch); "
                 "`trainlab doctor RUN` prints this diagnosis again.")
    lines.append("")
    if not findings:
        lines += ["No findings: the monitored numbers look healthy.", ""]
    else:
        lines += ["| severity | code | feature | epoch | step | finding |", "|---|---|---|---|---|---|"]
        for f in findings:
            msg = f.message.replace("|", "\\|")
            lines.append(f"| {f.severity} | `{f.code}` | {f.feature} | {_cell(f.epoch)} | {_cell(f.step)} | {msg} |")
        lines += ["", "Remedies from the notes:", ""]
        for f in findings:
            lines.append(f"- `{f.code}` ({CODES[f.code][1]}): " + "; ".join(f.remedies))
        lines.append("")
    plots = [(p, t) for p, t in PLOTS if (run.plots / f"{p}.png").exists()]
    if plots:
        lines += ["Evidence:", ""] + [f"![{t}](plots/{p}.png)" for p, t in plots] + [""]
    return lines


# ------------------------------------------------------------------------------------ plots
def plot_doctor(run, history: DoctorHistory, epochs: list[dict[str, Any]], findings: list[Finding],
                cfg=None) -> list[Path]:
    """The evidence plots under ``run.plots``: gradient norms and update ratios per layer over the
    sampled steps, dead fraction per ReLU layer per epoch, loss curves with the overfitting onset."""
    from ..report.figures import gc_paused, save

    run.plots.mkdir(parents=True, exist_ok=True)
    out = []
    with gc_paused():
        for name, fig in doctor_figures(history, epochs, findings, cfg):
            out.append(save(fig, run.plots / f"{name}.png"))
    return out


def doctor_figures(history: DoctorHistory, epochs: list[dict[str, Any]], findings: list[Finding], cfg=None):
    """(name, figure) for each evidence plot that has something to show, in ``PLOTS`` order."""
    by_code = {f.code: f for f in findings}
    if history.steps["step"]:
        marks = [e["step"] for e in history.nonfinite][:1]
        if "exploding_gradients" in by_code and by_code["exploding_gradients"].step is not None:
            marks.append(by_code["exploding_gradients"].step)
        refs = ((cfg.lr_high_ratio, "too high above doctor.lr_high_ratio"),
                (cfg.lr_low_ratio, "too low below doctor.lr_low_ratio")) if cfg else ()
        named = tuple(name for f in findings for name in f.layers)
        for key, name, ylabel, key_refs in (
            ("layer_grad", "doctor-gradients", "gradient norm (before clipping)", ()),
            ("update_ratio", "doctor-update-ratio", "||update|| / ||weights||", refs),
        ):
            fig = _layer_steps_figure(history, key, dict(PLOTS)[name], ylabel, marks, key_refs, named)
            if fig is not None:
                yield name, fig
    if history.liveness and history.activations:
        named = tuple(name for f in findings for name in f.layers)
        yield "doctor-dead-units", _dead_units_figure(history, cfg, named)
    if epochs:
        yield "doctor-curves", _curves_figure(history, epochs, by_code.get("overfitting"))


def _layer_steps_figure(history: DoctorHistory, key: str, title: str, ylabel: str, marks: list[int],
                        refs: tuple[tuple[float, str], ...], named: tuple[str, ...] = ()):
    """One line per measured layer (conv, linear, LSTM, normalization...) of a per-step column, the
    global gradient norm for ``layer_grad``; log y. Every layer is drawn; at most ``MAX_LINES`` get a
    colour and a legend entry (the layers a finding names, then the first, the last and evenly
    spaced ones), the rest are thin grey lines. None when no layer has a positive value."""
    import numpy as np

    from ..report import figures as fg

    steps, rows = np.asarray(history.steps["step"]), history.steps[key]
    every = list(range(len(history.layers)))
    names = [layer["name"] for layer in history.layers]
    forced = [j for j in every if names[j] in named][: fg.MAX_LINES]
    rest = [j for j in every if j not in forced]
    labelled = sorted(forced + (fg.spread(rest, fg.MAX_LINES - len(forced)) if len(forced) < fg.MAX_LINES else []))
    fig, ax = fg.new_axes(7, 4)
    fg.line_colors(ax, len(labelled))
    drawn = False
    for j in [j for j in every if j not in labelled] + labelled:  # grey ones first, underneath
        # one column of the per-step rows; None (non-finite when recorded) and missing entries -> NaN
        ys = np.array([row[j] if j < len(row) else None for row in rows], dtype=float)
        ok = np.isfinite(ys) & (ys > 0)
        if not ok.any():
            continue
        drawn = True
        if j in labelled:
            ax.plot(*fg.decimate(steps[ok], ys[ok]), linewidth=1, label=names[j])
        else:
            ax.plot(*fg.decimate(steps[ok], ys[ok]), linewidth=0.6, color="0.75", zorder=1)
    if not drawn:
        return None
    if key == "layer_grad":
        ys = np.array(history.steps["grad_norm"], dtype=float)
        ok = np.isfinite(ys) & (ys > 0)
        if ok.any():
            ax.plot(*fg.decimate(steps[ok], ys[ok]), color="black", linestyle="--", linewidth=1.2, label="global")
    for s in marks:
        ax.axvline(s, color="red", linestyle=":", linewidth=1)
    # the two LR thresholds must be told apart: above the upper one the LR is too high, below the
    # lower one too low
    styles = [{"color": "tab:red", "linestyle": "--"}, {"color": "tab:blue", "linestyle": "-."}]
    for (value, label), style in zip(refs, styles):
        ax.axhline(value, linewidth=1.2, label=f"{label} = {value:g}", **style)
    fg.log_scale(ax)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title + " (sampled steps)")
    ax.grid(alpha=0.3)
    hidden = len(every) - len(labelled)
    legend_title = None if not hidden else f"{len(labelled)} of {len(every)} layers named; the other {hidden} in grey"
    ax.legend(fontsize=7, ncol=2, title=legend_title, title_fontsize=7)
    fg.finish(fig, ax)
    return fig


def _dead_units_figure(history: DoctorHistory, cfg=None, named: tuple[str, ...] = ()):
    """Dead fraction per ReLU-family layer per epoch: every layer drawn, at most ``MAX_LINES``
    named (those a finding names first), the rest grey."""
    from ..report import figures as fg

    every = list(range(len(history.activations)))
    forced = [i for i in every if history.activations[i]["name"] in named][: fg.MAX_LINES]
    rest = [i for i in every if i not in forced]
    shown = sorted(forced + (fg.spread(rest, fg.MAX_LINES - len(forced)) if len(forced) < fg.MAX_LINES else []))
    fig, ax = fg.new_axes(7, 4)
    fg.line_colors(ax, len(shown))
    for i in [i for i in every if i not in shown] + shown:
        act = history.activations[i]
        pts = [(r["epoch"], r["dead"][i]) for r in history.liveness if i < len(r["dead"]) and r["dead"][i] is not None]
        if not pts:
            continue
        if i in shown:
            ax.plot(*fg.decimate(*zip(*pts)), marker="o", markersize=3, label=f"{act['name']} ({act['type']})")
        else:
            ax.plot(*fg.decimate(*zip(*pts)), linewidth=0.6, color="0.75", zorder=1)
    if cfg is not None:
        ax.axhline(cfg.dead_fraction, color="red", linestyle=":", label="doctor.dead_fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("epoch")
    ax.set_ylabel("fraction of units never positive")
    ax.set_title("dead units per layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title=_shown(len(shown), len(every), "ReLU layers"), title_fontsize=7)
    fg.finish(fig, ax)
    return fig


def _curves_figure(history: DoctorHistory, epochs: list[dict[str, Any]], over: Finding | None):
    from ..report import figures as fg

    fig, ax = fg.new_axes(7, 4)
    for key in ("train_loss", "val_loss"):
        pts = [(r["epoch"], r[key]) for r in epochs if _finite(r.get(key))]
        if pts:
            ax.plot(*fg.decimate(*zip(*pts)), marker="o", markersize=3, label=key)
    if over is not None:
        ax.axvline(over.epoch, color="red", linestyle="--", label=f"overfitting from epoch {over.epoch}")
        best = over.evidence.get("best_epoch")
        measure = over.evidence.get("measure", "loss")
        if best is not None and _finite(over.evidence.get("best_val_loss")):
            ax.scatter([best], [over.evidence["best_val_loss"]], color="red", zorder=3,
                       label=f"val minimum (epoch {best})" if measure == "loss" else f"best val_{measure} (epoch {best})")
    for a in history.actions:
        ax.axvline(a["epoch"], color="grey", linestyle=":", linewidth=1)
    values = [r[k] for r in epochs for k in ("train_loss", "val_loss") if _finite(r.get(k))]
    ax.set_xlabel("epoch")
    from ..report import figures as fg

    ax.set_ylabel("loss" + fg.range_scale(ax, values))
    ax.set_title("training and validation loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fg.finish(fig, ax)
    return fig


def _shown(n: int, total: int, what: str) -> str | None:
    """Legend title saying how many of the lines exist when only some are drawn."""
    return None if n == total else f"{n} of {total} {what} named; the others in grey"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)

