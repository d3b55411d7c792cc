"""Rules: pure functions from the recorded history to findings.

Each rule reads a :class:`~trainlab.doctor.history.DoctorHistory` (the sampled monitors), the
trainer's epoch records (train/validation curves) and the recipe's ``doctor`` thresholds, and
returns findings that quote the numbers. Nothing here touches a model or a file, so the rules give
the same diagnosis during training, at its end, and when ``trainlab doctor RUN`` re-reads a run.

Rules that judge a whole run (under-fitting, high variance) wait for ``done``; the others may fire
while training goes on. Most keep firing once they have fired on a prefix of the history, but some
judge the latest numbers (the last epoch's dead units, medians over all samples so far); a code
reported during training (``history.reported``) that the rules no longer find is listed as an
``info`` finding marked resolved (:func:`resolved`), so a printed finding is always in the final
report.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .findings import CODES, Finding, finding, share_remedies, sort_findings
from .history import DoctorHistory

Epochs = Sequence[dict[str, Any]]
SATURATING = {"Sigmoid": "sigmoid (derivative at most 0.25)", "Tanh": "tanh (saturates: derivative near 0)",
              "Hardsigmoid": "hard sigmoid", "Hardtanh": "hard tanh", "LogSigmoid": "log-sigmoid"}


# ---------------------------------------------------------------------------------------- helpers
def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def num(v: float | None) -> str:
    """Compact number for messages: 3 significant digits, or 3.1e4 / 2e-06 style when large/small."""
    if v is None or not finite(v):
        return str(v)
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e3:
        return f"{v:.3g}"
    mantissa, exp = f"{v:.2g}".split("e") if "e" in f"{v:.2g}" else f"{v:.1e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exp)}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('batch') else 's'}"


def pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return math.nan
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def initial_loss(h: DoctorHistory, epochs: Epochs) -> float | None:
    """The loss at the start of training: the first sampled step's, else the first epoch's."""
    for v in h.steps["loss"]:
        if finite(v):
            return v
    for r in epochs:
        if finite(r.get("train_loss")):
            return r["train_loss"]
    return None


def within_divergence(loss: float, init: float | None, cfg) -> bool:
    """Whether ``loss`` has not diverged: it is at most ``cfg.diverge_factor`` × the initial loss
    ``init`` (:func:`initial_loss`). With no usable initial loss (None, NaN/inf, or not positive)
    there is nothing to diverge from and any loss passes; a NaN/inf ``loss`` never does."""
    if not finite(init) or init <= 0:
        return finite(loss)
    return finite(loss) and loss <= cfg.diverge_factor * init


def sample_ratio(h: DoctorHistory, i: int) -> float | None:
    """Median update/weight ratio over the weight layers at sample ``i`` (None if not finite)."""
    layers = h.weight_layers() or list(range(len(h.layers)))
    row = h.steps["update_ratio"][i]
    vals = [row[j] for j in layers if j < len(row) and finite(row[j])]
    return median(vals) if vals else None


def update_ratio(h: DoctorHistory, epochs_from: int = 1, epochs_to: int | None = None) -> tuple[float | None, int]:
    """(median over samples of :func:`sample_ratio`, number of samples) for samples in the epoch range.

    Samples before the optimizer's moment estimates warm up (``data["moment_warmup_steps"]``) are
    left out: Adam's bias-corrected first steps move every weight by about the LR whatever its
    scale (m/sqrt(v) ≈ ±1 after one gradient), so their ratio says nothing about the LR yet."""
    vals = []
    warm = h.data.get("moment_warmup_steps", 0)
    for i, (e, s) in enumerate(zip(h.steps["epoch"], h.steps["step"])):
        if e >= epochs_from and (epochs_to is None or e <= epochs_to) and s > warm:
            r = sample_ratio(h, i)
            if r is not None:
                vals.append(r)
    return (median(vals) if vals else None), len(vals)


def one_label_per_sample(h: DoctorHistory) -> bool:
    """Each sample has one label from a fixed set of classes, so per-class counts and the
    per-class rules apply (the task declares it: ``Task.labels_per_sample``). Histories written
    before that was recorded say it by their task's name."""
    if "labels_per_sample" in h.data:
        return bool(h.data["labels_per_sample"])
    return h.data.get("task", "classification") == "classification"


def score(h: DoctorHistory | None) -> tuple[str, str]:
    """(metric, words) of the task's headline score that the rules compare between splits and
    against thresholds: ("accuracy", "accuracy") for classification, ("miou", "mIoU") for
    segmentation, as the task declares it (``Task.quality``). Histories written before the
    task's score was recorded are judged by accuracy."""
    data = h.data if h is not None else {}
    return data.get("quality", "accuracy"), data.get("quality_words", "accuracy")


def score_judges_fit(h: DoctorHistory | None) -> bool:
    """Whether a score below ``doctor.underfit_accuracy`` means under-fitting (a classifier at 60%
    does; a next-character model at 60% is not biased). The task declares it."""
    if h is None:
        return True
    return h.data.get("quality_judges_fit", one_label_per_sample(h))


def fit_basis(h: DoctorHistory) -> str:
    """The split whose curve tells whether the model still under-fits: ``"train"``, or ``"val"``
    when ``data.batch_augment`` mixes labels (mixup, cutmix): then the training accuracy and loss
    are measured against blended targets, whose loss never falls near zero and whose "accuracy"
    counts only the dominant label, so the clean-label thresholds would call a good model biased."""
    return "val" if h.data.get("mixed_labels") else "train"


def not_converged(record: dict[str, Any], init: float | None, cfg, h: DoctorHistory | None = None) -> bool:
    """The curve is still where an under-fitting model sits (see :func:`underfitting`): the task's
    score (:func:`score`: accuracy, mIoU) below ``underfit_accuracy`` where the task says it judges
    fit (:func:`score_judges_fit`), or loss at or above ``underfit_loss_ratio`` × the initial
    loss, on the split of :func:`fit_basis`."""
    basis = fit_basis(h) if h is not None else "train"
    acc = record.get(f"{basis}_{score(h)[0]}")
    if score_judges_fit(h) and finite(acc) and acc < cfg.underfit_accuracy:
        return True
    loss = record.get(f"{basis}_loss")
    return finite(loss) and finite(init) and init > 0 and loss >= cfg.underfit_loss_ratio * init


# ------------------------------------------------------------------------------------- X1: explosion
def nan_loss(h: DoctorHistory, epochs: Epochs, cfg, done: bool) -> list[Finding]:
    entries = [e for e in h.nonfinite if e["what"] == "loss"]
    if not entries:
        return []
    first = entries[0]
    step, epoch = first["step"], first["epoch"]
    steps, losses, norms = h.steps["step"], h.steps["loss"], h.steps["grad_norm"]
    before = [i for i, s in enumerate(steps) if s < step and finite(losses[i])]
    where = f"step {step}" if "since_step" not in first else f"steps {first['since_step'] + 1}..{step}"
    msg = f"the loss became {first.get('value', 'nan')} at {where} (epoch {epoch})"
    ev: dict[str, Any] = {"step": step, "epoch": epoch, "value": first.get("value"), "occurrences": len(entries)}
    if before:
        i = before[-1]
        msg += f"; last finite sampled loss {num(losses[i])} at step {steps[i]}"
        ev.update(last_finite_loss=losses[i], last_finite_step=steps[i])
        if finite(norms[i]):
            msg += f" with global gradient norm {num(norms[i])}"
            ev["grad_norm_before"] = norms[i]
        if finite(h.steps["lr"][i]):
            msg += f", lr {num(h.steps['lr'][i])}"
            ev["lr"] = h.steps["lr"][i]
    rollbacks = [a for a in h.actions if a.get("action") == "rollback"]
    if len(entries) > 1:
        msg += f"; it happened {plural(len(entries), 'time')}"
    if rollbacks:
        msg += f"; the doctor rolled back {plural(len(rollbacks), 'time')}"
        ev["rollbacks"] = len(rollbacks)
    return [finding("nan_loss", "error", msg, epoch=epoch, step=step, evidence=ev)]


def gradient_spikes(h: DoctorHistory, cfg, start: int = 0) -> list[dict[str, Any]]:
    """Sampled steps from index ``start`` whose global gradient norm is an explosion: above
    ``explode_factor`` × the median of the previous ``explode_window`` finite samples, or above
    ``grad_norm_max``."""
    norms, steps = h.steps["grad_norm"], h.steps["step"]
    out = []
    for i in range(start, len(norms)):
        g = norms[i]
        if not finite(g):
            continue
        prev = [(j, norms[j]) for j in range(max(0, i - cfg.explode_window), i) if finite(norms[j])]
        ref = median([v for _, v in prev]) if len(prev) >= 3 else None
        if ref is not None and ref > 0 and g > cfg.explode_factor * ref:
            out.append({"index": i, "step": steps[i], "norm": g, "ref": ref, "factor": g / ref,
                        "span": steps[i] - steps[prev[0][0]]})
        elif g > cfg.grad_norm_max:
            out.append({"index": i, "step": steps[i], "norm": g, "ref": None, "factor": None, "span": 0})
    return out


def exploding_gradients(h: DoctorHistory, epochs: Epochs, cfg, done: bool) -> list[Finding]:
    bad = [e for e in h.nonfinite if e["what"] in ("gradients", "weights")]
    spikes = gradient_spikes(h, cfg)
    if not bad and not spikes:
        return []
    if bad:
        e = bad[0]
        layers = tuple(e.get("layers", ()))
        shown = ", ".join(layers[:4]) + (f" and {len(layers) - 4} more" if len(layers) > 4 else "")
        msg = f"{e['what']} of {shown} became NaN/inf at step {e['step']} (epoch {e['epoch']})"
        ev: dict[str, Any] = {"what": e["what"], "step": e["step"], "nonfinite_layers": list(layers)}
        finite_norms = [(s, g) for s, g in zip(h.steps["step"], h.steps["grad_norm"]) if finite(g) and s < e["step"]]
        if finite_norms:
            peak = max(finite_norms, key=lambda t: t[1])
            msg += f"; the largest finite global gradient norm before was {num(peak[1])} at step {peak[0]}"
            ev["peak_norm"], ev["peak_step"] = peak[1], peak[0]
        return [finding("exploding_gradients", "error", msg, epoch=e["epoch"], step=e["step"], layers=layers,
                        evidence=ev)]
    s = spikes[0]
    i = s["index"]
    if s["ref"] is not None:
        msg = (f"gradients exploded at step {s['step']} (global norm {num(s['norm'])}, {s['factor']:.0f}× the "
               f"median of the previous {s['span']} steps)")
    else:
        msg = f"gradients exploded at step {s['step']} (global norm {num(s['norm'])} > {num(cfg.grad_norm_max)})"
    # The layers whose gradient grew most against their own recent median.
    grads = h.steps["layer_grad"]
    growth = []
    for j, layer in enumerate(h.layers):
        prev = [grads[k][j] for k in range(max(0, i - cfg.explode_window), i) if finite(grads[k][j])]
        ref = median(prev) if prev else None
        if finite(grads[i][j]) and ref:
            growth.append((grads[i][j] / ref, layer["name"]))
    top = tuple(name for _, name in sorted(growth, reverse=True)[:3])
    if top:
        msg += f"; most in {', '.join(top)}"
    if len(spikes) > 1:
        msg += f"; {len(spikes)} sampled steps exploded"
    ev = {"step": s["step"], "grad_norm": s["norm"], "reference_median": s["ref"], "factor": s["factor"],
          "window_steps": s["span"], "spikes": len(spikes), "max_norm": max(x["norm"] for x in spikes)}
    return [finding("exploding_gradients", "warning", msg, epoch=h.steps["epoch"][i], step=s["step"], layers=top,
                    evidence=ev)]


# ------------------------------------------------------------------------------ X2: vanishing
def vanishing_gradients(h: DoctorHistory, epochs: Epochs, cfg, done: bool) -> list[Finding]:
    weights = h.weight_layers()
    rows = [r for r in h.steps["layer_grad"] if r and all(finite(v) for v in r)]
    if len(weights) < 3 or len(rows) < 3:
        return []
    if _fully_dead(h, 0.9):
        return []  # units that never fire pass no gradient: dead_relu names that cause
    med = [median([r[j] for r in rows]) for j in range(len(h.layers))]
    last = weights[-1]
    if not med[last] > 0:
        return []
    ratios = [med[j] / med[last] for j in weights[:-1]]
    lead = 0
    while lead < len(ratios) and ratios[lead] < cfg.vanish_ratio:
        lead += 1
    if lead == 0:
        return []
    names = tuple(h.layers[j]["name"] for j in weights[:lead])
    low, high = min(ratios[:lead]), max(ratios[:lead])
    span = num(low) if num(low) == num(high) else f"{num(low)} to {num(high)}"
    which = "layer" if lead == 1 else f"{lead} weight layers"
    msg = (f"the first {which} ({', '.join(names)}) get {span} of the last layer's ({h.layers[last]['name']}) "
           f"gradient norm (medians over {plural(len(rows), 'sampled step')}): vanishing gradients")
    saturating = [SATURATING[t] for t in h.activation_types if t in SATURATING]
    if saturating:
        msg += f", {' and '.join(saturating)} activations"
    ev = {"ratios": {h.layers[j]["name"]: r for j, r in zip(weights[:-1], ratios)},
          "last_layer": h.layers[last]["name"], "last_layer_grad": med[last], "samples": len(rows),
          "activations": list(h.activation_types)}
    return [finding("vanishing_gradients", "warning", msg, epoch=h.steps["epoch"][0], step=h.steps["step"][0],
                    layers=names, evidence=ev)]


# -------------------------------------------------------------------------------- X3: dead ReLU
def _fully_dead(h: DoctorHistory, level: float) -> bool:
    if not h.liveness:
        return False
    return any(d is not None and d >= level for d in h.liveness[-1]["dead"])


def _blown_up(h: DoctorHistory) -> bool:
    """Weights or gradients went NaN/inf and no rollback repaired them."""
    bad = [e for e in h.nonfinite if e["what"] in ("weights", "gradients")]
    if not bad:
        return False
    return not any(a.get("action") == "rollback" and a["step"] >= bad[-1]["step"] for a in h.actions)


def dead_relu(h: DoctorHistory, epochs: Epochs, cfg, done: bool) -> list[Finding]:
    if not h.liveness or _blown_up(h):
        return []  # a network full of NaN/inf says nothing about its units
    last = h.liveness[-1]
    bad = [(i, d) for i, d in enumerate(last["dead"])
           if d is not None and d >= cfg.dead_fraction and i < len(h.activations) and h.activations[i]["units"] >= 2]
    if not bad:
        return []
    since = last["epoch"]
    for rec in h.liveness:
        if any(i < len(rec["dead"]) and rec["dead"][i] is not None and rec["dead"][i] >= cfg.dead_fraction
               for i, _ in bad):
            since = rec["epoch"]
            break
    bad.sort(key=lambda t: -t[1])
    parts = []
    for k, (i, d) in enumerate(bad):
        a = h.activations[i]
        parts.append(f"{pct(d)} of {a['type']} units in {a['name']} are dead" if k == 0 else f"{a['name']} {pct(d)}")
    msg = parts[0]
    if len(parts) > 1:
        msg += f" ({'; '.join(parts[1:])})"
    floor = h.activations[bad[0][0]].get("floor", 0.0)
    never = "never positive" if not floor else f"never above {num(floor)} (no gradient below it)"
    msg += (f": {never} over the {plural(last['batches'], 'sampled batch')} of epoch {last['epoch']}"
            + (f", since epoch {since}" if since != last["epoch"] else ""))
    worst = bad[0][1]
    if worst >= 0.99:
        msg += "; layers before a fully dead layer get no gradient at all"
    ev = {"dead": {h.activations[i]["name"]: d for i, d in bad}, "epoch": last["epoch"], "batches": last["batches"],
          "since_epoch": since, "threshold": cfg.dead_fraction}
    return [finding("dead_relu", "error" if worst >= 0.99 else "warning", msg, epoch=since,
                    layers=tuple(h.activations[i]["name"] for i, _ in bad), evidence=ev)]


# ------------------------------------------------------------------------- X4, X5: fit quality
def fit_measure(h: DoctorHistory | None) -> str:
    """The validation metric over-fitting is judged by (bare name): the loss, unless the task says
    its validation loss is not comparable with its training loss (an embedding's triplet loss on
    unseen identities, in other batches) and names its score instead (``Task.overfit_measure``)."""
    return (h.data.get("overfit_measure") if h is not None else None) or "loss"


def overfit_onset(epochs: Epochs, cfg, measure: str = "loss") -> dict[str, Any] | None:
    """The first point where the validation ``measure`` has been worse than its best for at least
    ``overfit_patience`` epochs while training loss kept falling, or None. Worse: the loss
    ``overfit_rise`` (relative) above its minimum; a score (higher is better)
    ``overfit_score_drop`` (absolute) below its maximum."""
    key, lower = f"val_{measure}", measure == "loss"
    pts = [r for r in epochs if finite(r.get(key)) and finite(r.get("train_loss"))]
    for end in range(len(pts)):
        best = (min if lower else max)(range(end + 1), key=lambda k: pts[k][key])
        b, e = pts[best], pts[end]
        worse = (e[key] >= b[key] * (1 + cfg.overfit_rise) if lower
                 else e[key] <= b[key] - cfg.overfit_score_drop)
        if end - best >= cfg.overfit_patience and worse and e["train_loss"] < b["train_loss"]:
            return {"measure": measure, "best_epoch": b["epoch"], "onset": b["epoch"] + 1, "detected": e["epoch"],
                    "best_value": b[key], "best_val_loss": b.get("val_loss"), "train_loss_at_best": b["train_loss"]}
    return None


def overfit_words(h: DoctorHistory | None, o: dict[str, Any], value: float, at: int) -> str:
    """'validation loss rose from A (epoch N, its minimum) to B (epoch M, +x%)', or for a score
    'validation rank-1 identification fell from A (epoch N, its maximum) to B (epoch M, -x points)'."""
    if o["measure"] == "loss":
        return (f"validation loss rose from {num(o['best_value'])} (epoch {o['best_epoch']}, its minimum) to "
                f"{num(value)} (epoch {at}, +{pct(value / o['best_value'] - 1)})")
    words = score(h)[1] if h is not None and score(h)[0] == o["measure"] else o["measure"]
    return (f"validation {words} fell from {num(o['best_value'])} (epoch {o['best_epoch']}, its maximum) to "
            f"{num(value)} (epoch {at}, -{100 * (o['best_value'] - value):.1f} points)")


def overfitting(h: DoctorHistory, epochs: Epochs, cfg, done: bool) -> list[Finding]:
    o = overfit_onset(epochs, cfg, fit_measure(h))
    if o is None:
        return []
    key, lower = f"val_{o['measure']}", o["measure"] == "loss"
    after = [r for r in epochs if r["epoch"] >= o["detected"] and finite(r.get(key))]
    end = (max if lower else min)(after, key=lambda r: r[key])  # the worst value seen since detection
    msg = (f"overfitting from epoch {o['onset']}: {overfit_words(h, o, end[key], end['epoch'])} while training "
           f"loss fell from {num(o['train_loss_at_best'])} to {num(end['train_loss'])}")
    q, words = score(h)
    if finite(end.get(f"train_{q}")) and finite(end.get(f"val_{q}")):
        msg += f"; {words} train {pct(end[f'train_{q}'])} vs validation {pct(end[f'val_{q}'])}"
    ev = {**o, key: end[key], "train_loss": end["train_loss"], "at_epoch": end["epoch"]}
    if lower:
        ev["rise"] = end[key] / o["best_value"] - 1
    kept = kept_best_weights(h, epochs, o, cfg)
    if kept is None:
        return [finding("overfitting", "warning", msg, epoch=o["onset"], evidence=ev)]
    msg += "; handled: " + kept["text"]
    ev["handled"] = {k: v for k, v in kept.items() if k != "text"}
    # what was done is not advice any more
    remedies = tuple(r for r in CODES["overfitting"][2] if "train.early_stop" not in r)
    return [Finding("overfitting", "info", msg, epoch=o["onset"], evidence=ev, remedies=remedies,
                    feature=CODES["overfitting"][0])]


def kept_best_weights(h: DoctorHistory, epochs: Epochs, onset: dict[str, Any], cfg) -> dict[str, Any] | None:
    """How the run's own configuration already dealt with over-fitting, or None if it did not.

    It did when the weights the run is judged by are the best epoch's (``train.early_stop.restore_best``,
    or no early stopping: the best checkpoint is restored for the final evaluation) and that epoch
    is not an over-fitted one: before the onset, or with its validation measure within
    ``overfit_rise`` (``overfit_score_drop``) of the best (a run that follows ``val_accuracy``
    may keep a later epoch). The trainer's best epoch is recorded in the history
    (``data["best_epoch"]``) as training goes."""
    best = h.data.get("best_epoch")
    if not h.data.get("restore_best") or best is None:
        return None
    rec = next((r for r in epochs if r["epoch"] == best), None)
    if rec is None:
        return None
    key, lower = f"val_{onset['measure']}", onset["measure"] == "loss"
    v = rec.get(key)
    near = finite(v) and (v < onset["best_value"] * (1 + cfg.overfit_rise) if lower
                          else v > onset["best_value"] - cfg.overfit_score_drop)
    if best >= onset["onset"] and not near:
        return None
    last = max(r["epoch"] for r in epochs)
    monitor = h.data.get("monitor", "val_loss")
    extreme = "minimum" if lower else "maximum"
    where = f"its {extreme}" if best == onset["best_epoch"] else \
        f"{abs(best - onset['best_epoch'])} epochs {'before' if best < onset['best_epoch'] else 'after'} its {extreme}"
    stopped = str(h.data.get("stop_reason") or "").startswith("early stop")
    text = (f"the best checkpoint holds the weights of epoch {best} (best {monitor}; {where}), which the final "
            f"evaluation uses")
    if stopped:
        what = "validation-loss minimum" if lower else f"validation {onset['measure']} maximum"
        text = f"early stopping ended the run at epoch {last}, {last - onset['best_epoch']} epochs after the {what}; " + text
    return {"text": text, "best_epoch": best, "monitor": monitor, "last_epoch": last, "stopped_early": stopped}


def blown_up_loss(h: DoctorHistory, epochs: Epochs, cfg) -> bool:
    """The loss diverged above ``diverge_factor`` × its start or became NaN/inf at some point: then
    a high loss at the end is the blow-up's (``lr_too_high``, ``nan_loss``), not the model's bias,
    and the rules that read a high loss as under-fitting stay silent."""
    return diverged(h, epochs, cfg) is not None or any(e["what"] == "loss" for e in h.nonfinite)


SET_LOSS_PARTS = ("class", "l1", "giou")  # DETR's set loss (models/set_loss.py), recorded as train_loss_<part>
STUCK_PART, MOVING_PART = 0.10, 0.30  # relative falls: a part "stuck" below the first, "improving" above the second


def set_loss_parts(epochs: Epochs, first_epoch: int = 0, last_epoch: int | None = None) -> dict[str, Any] | None:
    """How each part of a set detector's loss (class, L1, GIoU) moved between the first and the last
    epoch in [first_epoch, last_epoch] that record all three; None for other models.

    A single loss hides which part is the problem: a DETR whose class loss is stuck while its boxes
    improve finds objects without naming them (the "no object" weight, the class weight, more
    epochs), the opposite points at the box terms. Returns {"text", "from_epoch", "to_epoch",
    "parts": {part: (first, last, fall)}, "stuck": [...], "improving": [...]}.
    """
    keys = [f"train_loss_{p}" for p in SET_LOSS_PARTS]
    pts = [r for r in epochs if all(finite(r.get(k)) for k in keys) and r["epoch"] >= first_epoch
           and (last_epoch is None or r["epoch"] <= last_epoch)]
    if len(pts) < 2:
        return None
    a, b = pts[0], pts[-1]
    parts = {p: (a[k], b[k], 1 - b[k] / a[k] if a[k] > 0 else 0.0) for p, k in zip(SET_LOSS_PARTS, keys)}
    stuck = [p for p, (_, _, fall) in parts.items() if fall < STUCK_PART]
    improving = [p for p, (_, _, fall) in parts.items() if fall >= MOVING_PART]
    text = (f"set loss parts from epoch {a['epoch']} to {b['epoch']}: "
            + ", ".join(f"{p} {num(x)} → {num(y)} ({'−' + pct(f) if f > 0 else '+' + pct(-f)})"
                        for p, (x, y, f) in parts.items()))
    if stuck and improving:
        text += f"; the {'/'.join(stuck)} loss is stuck while {'/'.join(improving)} improve"
        if "class" in stuck:
            text += (" (the queries place boxes but do not name their objects: raise model.options.class_weight "
                     "or eos_coef, or train longer)")
        else:
            text += " (the boxes lag the classes: raise model.options.l1_weight/giou_weight, or train longer)"
    return {"text": text, "from_epoch": a["epoch"], "to_epoch": b["epoch"], "parts": parts, "stuck": stuck,
            "improving": improving}


def underfitting(h: DoctorHistory, epochs: Epochs, cfg, done: bool) -> list[Finding]:
    if not done or blown_up_loss(h, epochs, cfg):
        return []
    basis = fit_basis(h)
    q, words = score(h)
    loss_key, acc_key = f"{basis}_loss", f"{basis}_{q}"
    word = {"train": "training", "val": "validation"}[basis]
    pts = [r for r in epochs if finite(r.get(loss_key))]
    init = initial_loss(h, epochs)
    if not pts or not finite(init):
        return []  # with mixed labels and no validation split there is nothing to judge
    last = pts[-1]
    if not not_converged(last, init, cfg, h):
        return []
    acc = last.get(acc_key) if score_judges_fit(h) else None
    parts = []
    if finite(acc):
        parts.append(f"{word} {words} {pct(acc)} after {plural(last['epoch'], 'epoch')}")
    share = last[loss_key] / init
    start = "at the start" if basis == "train" else "(training) at the start"
    parts.append(f"{word} loss {num(last[loss_key])} vs {num(init)} {start} "
                 f"({pct(share) + ' of it' if share < 2 else num(share) + '× it'})")
    msg = "underfitting (high bias): " + ", ".join(parts)
    if basis == "val":
        msg += (f"; judged on validation because data.batch_augment mixes labels "
                f"({', '.join(h.data['mixed_labels'])})")
    ev: dict[str, Any] = {loss_key: last[loss_key], "initial_loss": init, acc_key: acc, "epochs": last["epoch"],
                          "basis": basis}
    parts = set_loss_parts(epochs)
    if parts is not None:
        msg += "; " + parts["text"]
        ev["set_loss_parts"] = parts
    remedies: tuple[str, ...] = ()
    if len(pts) >= 2 and pts[-2][loss_key] > 0:
        fall = 1 - last[loss_key] / pts[-2][loss_key]
        ev["last_epoch_improvement"] = fall
        if fall > 0.02:
            msg += f"; still falling {pct(fall)} in the last epoch"
            remedies = ("train longer: the loss is still falling (train.epochs)",)
    return [finding("underfitting", "warning", msg, epoch=last["epoch"], evidence=ev, remedies=remedies)]


def high_variance(h: DoctorHistory, epochs: Epochs, cfg, done: bool) -> list[Finding]:
    if not done:
        return []
    q, words = score(h)
    tr, va = f"train_{q}", f"val_{q}"
    pts = [r for r in epochs if finite(r.get(tr)) and finite(r.get(va))]
    if not pts:
        return []
    last = pts[-1]
    gap = last[tr] - last[va]
    if gap < cfg.variance_gap:
        return []
    msg = (f"high variance: training {words} {pct(last[tr])} vs validation "
           f"{pct(last[va])} at epoch {last['epoch']} (gap {100 * gap:.0f} points)")
    n = h.data.get("train_samples")
    if n:
        msg += f", from {n} training samples"
    ev = {tr: last[tr], va: last[va], "gap": gap,
          "epoch": last["epoch"], "train_samples": n}
    return [finding("high_variance", "warning", msg, epoch=last["epoch"], evidence=ev)]


# ----------------------------------------------------------------------------- X6: learning rate
def loss_rises(epochs: Epochs, init: float | None) -> list[tuple[int, float, float]]:
    """Epochs whose training loss rose over the previous epoch's by more than 10% of it and more
    than 1% of the initial loss (so that noise near zero loss does not count): (epoch, before, after)."""
    pts = [r for r in epochs if finite(r.get("train_loss"))]
    floor = 0.01 * init if finite(init) else 0.0
    return [(b["epoch"], a["train_loss"], b["train_loss"]) for a, b in zip(pts, pts[1:])
            if b["train_loss"] > 1.1 * a["train_loss"] and b["train_loss"] - a["train_loss"] > floor]


def diverged(h: DoctorHistory, epochs: Epochs, cfg) -> dict[str, Any] | None:
    """The first sampled step whose loss exceeds ``diverge_factor`` × the initial loss, or None."""
    init = initial_loss(h, epochs)
    if not finite(init) or init <= 0:
        return None
    for s, e, v in zip(h.steps["step"], h.steps["epoch"], h.steps["loss"]):
        if finite(v) and not within_divergence(v, init, cfg):
            return {"step": s, "epoch": e, "loss": v, "initial_loss": init}
    for r in epochs:  # the epoch mean also covers the steps between samples
        if finite(r.get("train_loss")) and not within_divergence(r["train_loss"], init, cfg):
            return {"step": r.get("step"), "epoch": r["epoch"], "loss": r["train_loss"], "initial_loss": init,
                    "epoch_mean": True}
    return None


def lr_too_high(h: DoctorHistory, epochs: Epochs, cfg, done: bool) -> list[Finding]:
    init = initial_loss(h, epochs)
    reasons, ev = [], {}
    step = epoch = None
    d = diverged(h, epochs, cfg)
    nan = [e for e in h.nonfinite if e["what"] == "loss"]
    blowups = []  # (step, epoch, text), told in the order they happened
    if d is not None:
        where = f"in epoch {d['epoch']} (its mean)" if d.get("epoch_mean") else f"by step {d['step']}"
        blowups.append((d["step"], d["epoch"], f"diverged from {num(d['initial_loss'])} to {num(d['loss'])} {where}"))
        ev.update(initial_loss=d["initial_loss"], diverged_loss=d["loss"], diverged_step=d["step"])
    if nan:
        blowups.append((nan[0]["step"], nan[0]["epoch"], f"became {nan[0].get('value', 'nan')} at step {nan[0]['step']}"))
        ev["nonfinite_step"] = nan[0]["step"]
    if blowups:
        blowups.sort(key=lambda t: t[0])
        step, epoch = blowups[0][0], blowups[0][1]
        reasons.append("the loss " + " and ".join(t for _, _, t in blowups))
    rises = loss_rises(epochs, init)
    if len(rises) >= cfg.oscillation_rises:
        shown = ", ".join(f"epoch {e}: {num(a)} -> {num(b)}" for e, a, b in rises[:3])
        reasons.append(f"the training loss oscillates: it rose {plural(len(rises), 'time')} ({shown})")
        ev["rises"] = [list(r) for r in rises]
        if epoch is None:
            epoch = rises[0][0]
    ratio, n = update_ratio(h)
    if ratio is not None and ratio > cfg.lr_high_ratio:
        reasons.append(f"each step moves the weights by {num(ratio)}× their norm (median over "
                       f"{plural(n, 'sampled step')}; above {num(cfg.lr_high_ratio)})")
        ev.update(update_ratio=ratio, samples=n)
        if step is None and epoch is None:
            step, epoch = h.steps["step"][0], h.steps["epoch"][0]
    if not reasons:
        return []
    # The LR where the trouble started (an LR change during the run, e.g. optim.switch, may be the cause).
    lrs = [v for s, v in zip(h.steps["step"], h.steps["lr"]) if finite(v) and (step is None or s <= step)]
    lrs = lrs or [v for v in h.steps["lr"] if finite(v)]
    lr = lrs[-1] if lrs and step is not None else lrs[0] if lrs else None
    ev["lr"] = lr
    msg = f"learning rate too high{f' (lr {num(lr)})' if lr else ''}: " + ", ".join(reasons)
    return [finding("lr_too_high", "warning", msg, epoch=epoch, step=step, evidence=ev)]


def lr_too_low(h: DoctorHistory, epochs: Epochs, cfg, done: bool) -> list[Finding]:
    pts = [r for r in epochs if finite(r.get("train_loss"))]
    if len(pts) < (1 if done else cfg.plateau_patience):
        return []
    init = initial_loss(h, epochs)
    ratio, n = update_ratio(h)
    if ratio is None or n < 3 or ratio >= cfg.lr_low_ratio or not not_converged(pts[-1], init, cfg, h):
        return []
    # Weights also stand still when no gradient reaches them (dead units) or after a blow-up.
    if _fully_dead(h, 0.9) or blown_up_loss(h, epochs, cfg):
        return []
    lrs = [v for v in h.steps["lr"] if finite(v)]
    lr_text = "?" if not lrs else num(lrs[0]) if num(lrs[0]) == num(lrs[-1]) else f"{num(lrs[0])} -> {num(lrs[-1])}"
    msg = (f"learning rate too low (lr {lr_text}): each step moves the weights by only "
           f"{num(ratio)}× their norm (median over {plural(n, 'sampled step')}; below {num(cfg.lr_low_ratio)}), "
           f"and after {plural(pts[-1]['epoch'], 'epoch')} the training loss is {num(pts[-1]['train_loss'])} "
           f"(start {num(init)})")
    ev = {"update_ratio": ratio, "samples": n, "lr": lrs[0] if lrs else None, "train_loss": pts[-1]["train_loss"],
          "initial_loss": init, "epochs": pts[-1]["epoch"]}
    return [finding("lr_too_low", "warning", msg, epoch=pts[-1]["epoch"], evidence=ev)]


# ------------------------------------------------------------------------------------ X7: plateau
def plateau_window(h: DoctorHistory, epochs: Epochs, cfg, after_epoch: int = 0) -> dict[str, Any] | None:
    """The first run of ``plateau_patience`` epochs (all after ``after_epoch``) in which the training
    loss improved by less than ``plateau_delta`` (relative) on its best before, while the model
    still under-fits, the loss has not diverged above its initial value (that is ``lr_too_high``)
    and the updates are not tiny (that is ``lr_too_low``)."""
    pts = [r for r in epochs if finite(r.get("train_loss")) and r["epoch"] > after_epoch]
    p = cfg.plateau_patience
    init = initial_loss(h, epochs)
    for end in range(p, len(pts)):
        before = min(r["train_loss"] for r in pts[: end - p + 1])
        recent = min(r["train_loss"] for r in pts[end - p + 1: end + 1])
        stuck = recent > before * (1 - cfg.plateau_delta) and (not finite(init) or recent <= init)
        if stuck and not_converged(pts[end], init, cfg, h):
            first, last = pts[end - p + 1]["epoch"], pts[end]["epoch"]
            ratio, n = update_ratio(h, first, last)
            if ratio is not None and ratio < cfg.lr_low_ratio:
                continue
            return {"first_epoch": first, "last_epoch": last, "best_before": before, "best_recent": recent,
                    "train_loss": pts[end]["train_loss"], "score": score(h)[1],
                    "train_score": pts[end].get(f"train_{score(h)[0]}"),
                    "update_ratio": ratio}
    return None


def plateau(h: DoctorHistory, epochs: Epochs, cfg, done: bool) -> list[Finding]:
    w = plateau_window(h, epochs, cfg)
    if w is None:
        return []
    change = 1 - w["best_recent"] / w["best_before"] if w["best_before"] else 0.0
    msg = (f"plateau: the training loss stayed at {num(w['best_recent'])} from epoch {w['first_epoch']} to "
           f"{w['last_epoch']} ({pct(change) if change > 0 else 'no'} improvement on {num(w['best_before'])}, "
           f"needs {pct(cfg.plateau_delta)})")
    if finite(w.get("train_score")):
        msg += f" with training {w['score']} {pct(w['train_score'])}"
    actions = [a for a in h.actions if a.get("action") in ("lr_decay", "switch_optimizer")]
    if actions:
        msg += f"; the doctor acted {plural(len(actions), 'time')} ({', '.join(a['action'] for a in actions)})"
    ev = {**w, "improvement": change}
    parts = set_loss_parts(epochs, w["first_epoch"] - 1, w["last_epoch"])
    if parts is not None:
        msg += "; " + parts["text"]
        ev["set_loss_parts"] = parts
    return [finding("plateau", "warning", msg, epoch=w["first_epoch"], evidence=ev)]


# ---------------------------------------------------------------------------------- X8: the data
def unnormalized_inputs(h: DoctorHistory, epochs: Epochs, cfg, done: bool) -> list[Finding]:
    s = h.inputs
    if not s:
        return []
    if not all(finite(s.get(k)) for k in ("mean", "std", "min", "max")):
        msg = (f"the net's inputs contain NaN/inf in the first {plural(s['batches'], 'batch')} (mean {s.get('mean')}, "
               f"range {s.get('min')}..{s.get('max')}): check the data files and the preprocessing")
        return [finding("unnormalized_inputs", "error", msg, epoch=1, step=1, evidence=dict(s))]
    problems = []
    if s["worst_abs_mean"] > cfg.input_mean_max:
        problems.append(f"a channel mean of {num(s['worst_abs_mean'])} (limit {num(cfg.input_mean_max)})")
    if s["max_std"] > cfg.input_std_max:
        problems.append(f"a standard deviation of {num(s['max_std'])} (limit {num(cfg.input_std_max)})")
    if s["min_std"] < cfg.input_std_min and s["max"] > s["min"]:
        problems.append(f"a standard deviation of {num(s['min_std'])} (limit {num(cfg.input_std_min)})")
    if not problems:
        return []
    msg = (f"unnormalized inputs: the net sees values {num(s['min'])}..{num(s['max'])}, mean {num(s['mean'])}, "
           f"std {num(s['std'])} over the first {s['batches']} batches, with {' and '.join(problems)}; "
           "expected mean ≈ 0 and std ≈ 1")
    if s["min"] >= 0:
        msg += "; all inputs are positive, so each unit's weight gradients share one sign and steps zig-zag"
    return [finding("unnormalized_inputs", "warning", msg, epoch=1, step=1, evidence=dict(s))]


def class_imbalance(h: DoctorHistory, epochs: Epochs, cfg, done: bool) -> list[Finding]:
    counts = h.data.get("class_counts")
    if not one_label_per_sample(h) or not counts or len(counts) < 2:
        return []
    names = h.data.get("class_names") or [str(i) for i in range(len(counts))]
    present = [(c, n) for c, n in enumerate(counts)]
    big = max(present, key=lambda t: t[1])
    small = min(present, key=lambda t: t[1])
    if small[1] == 0:
        ratio = math.inf
    else:
        ratio = big[1] / small[1]
    if ratio < cfg.imbalance_ratio:
        return []
    msg = (f"class imbalance: the largest training class {names[big[0]]!r} has {big[1]} samples, the smallest "
           f"{names[small[0]]!r} {small[1]} ({num(ratio)}×; limit {num(cfg.imbalance_ratio)}×)")
    ev: dict[str, Any] = {"class_counts": counts, "ratio": ratio if finite(ratio) else None}
    # the score that counts every sample alike flatters the large classes; macro recall does not
    q, words = score(h)
    last = next((r for r in reversed(epochs) if finite(r.get("val_macro_recall"))), None)
    if last is not None and finite(last.get(f"val_{q}")) and last[f"val_{q}"] - last["val_macro_recall"] >= 0.02:
        msg += (f"; validation {words} {pct(last[f'val_{q}'])} vs macro recall "
                f"{pct(last['val_macro_recall'])} at epoch {last['epoch']}")
        ev.update({f"val_{q}": last[f"val_{q}"], "val_macro_recall": last["val_macro_recall"]})
    return [finding("class_imbalance", "warning", msg, epoch=1, evidence=ev)]


def small_dataset(h: DoctorHistory, epochs: Epochs, cfg, done: bool) -> list[Finding]:
    n, c = h.data.get("train_samples"), h.data.get("num_classes")
    # Per-class counts mean one label per sample: a sequence window holds T targets over a
    # vocabulary, and its "classes" are tokens, so the per-class rule does not apply there.
    if not one_label_per_sample(h) or not n or not c or n >= cfg.small_dataset_per_class * c:
        return []
    params = h.data.get("parameters")
    msg = (f"small dataset: {n} training samples for {c} classes ({n / c:.1f} per class; fewer than "
           f"{cfg.small_dataset_per_class} per class)")
    if params:
        msg += f" and a model with {params:,} parameters ({params / n:,.0f} per sample)"
    ev = {"train_samples": n, "num_classes": c, "per_class": n / c, "parameters": params}
    return [finding("small_dataset", "warning", msg, epoch=1, evidence=ev)]


# ------------------------------------------------------------------------------- L6 multi-task
TRUNK_GRAD = "train_trunkgrad_"  # epoch-record prefix: mean norm of one loss part's gradient on the shared trunk


def trunk_gradients(record: dict[str, Any]) -> dict[str, float]:
    """{part: gradient norm} of an epoch record's ``train_trunkgrad_<part>`` entries (finite only)."""
    return {k[len(TRUNK_GRAD):]: v for k, v in record.items() if k.startswith(TRUNK_GRAD) and finite(v)}


def dominance(grads: dict[str, float]) -> tuple[str, str, float] | None:
    """(largest part, runner-up, ratio of their gradient norms) of two or more parts, else None."""
    if len(grads) < 2:
        return None
    (top, g1), (second, g2) = sorted(grads.items(), key=lambda kv: -kv[1])[:2]
    return top, second, (g1 / g2 if g2 > 0 else math.inf)


def head_dominance(h: DoctorHistory, epochs: Epochs, cfg, done: bool) -> list[Finding]:
    """L6: one loss part (a head of a multi-task model) sends the shared trunk a gradient
    ``doctor.head_dominance`` times every other part's in the latest measured epoch, so the
    trunk's features serve that head and the others ride along. Reads the epoch records'
    ``train_trunkgrad_<head>`` (the task measures them on sampled steps); judges the latest epoch."""
    measured = [r for r in epochs if len(trunk_gradients(r)) >= 2]
    if not measured:
        return []
    last = measured[-1]
    grads = trunk_gradients(last)
    top, second, ratio = dominance(grads)
    if ratio < cfg.head_dominance:
        return []
    since = last["epoch"]
    for r in reversed(measured[:-1]):  # the first epoch of the run of epochs where the same part dominates
        d = dominance(trunk_gradients(r))
        if d is None or d[0] != top or d[2] < cfg.head_dominance:
            break
        since = r["epoch"]
    shown = ", ".join(f"{k} {num(v)}" for k, v in sorted(grads.items(), key=lambda kv: -kv[1]))
    msg = (f"one head dominates the shared trunk: the weighted loss of head {top!r} sends the trunk's features a "
           f"gradient {num(ratio)}× the next head's ({second!r}) at epoch {last['epoch']}"
           + (f", since epoch {since}" if since != last["epoch"] else "")
           + f" (norms: {shown}; limit {num(cfg.head_dominance)}×)")
    ev = {"epoch": last["epoch"], "since_epoch": since, "dominant": top, "runner_up": second,
          "ratio": ratio if finite(ratio) else None, "trunk_gradients": grads, "limit": cfg.head_dominance}
    return [finding("head_dominance", "warning", msg, epoch=since, evidence=ev,
                    remedies=(f"lower loss.weights.{top} or raise the other heads' weights (loss.weights)",))]


# ------------------------------------------------------------------------------------- diagnose
Rule = Callable[[DoctorHistory, Epochs, Any, bool], list[Finding]]
RULES: dict[str, Rule] = {
    "nan_loss": nan_loss, "exploding_gradients": exploding_gradients, "vanishing_gradients": vanishing_gradients,
    "dead_relu": dead_relu, "overfitting": overfitting, "underfitting": underfitting,
    "high_variance": high_variance, "lr_too_high": lr_too_high, "lr_too_low": lr_too_low, "plateau": plateau,
    "unnormalized_inputs": unnormalized_inputs, "class_imbalance": class_imbalance,
    "small_dataset": small_dataset, "head_dominance": head_dominance,
}
QUICK = ("nan_loss", "exploding_gradients")  # checked as soon as a sample shows trouble


def diagnose(history: DoctorHistory | dict[str, Any], epochs: Epochs, cfg, done: bool = True,
             codes: Sequence[str] | None = None) -> list[Finding]:
    """All findings of the rules (or of ``codes`` only), most severe first."""
    h = history if isinstance(history, DoctorHistory) else DoctorHistory.from_dict(history)
    epochs = [r for r in epochs if "event" not in r]
    out: list[Finding] = []
    for code in codes or RULES:
        out.extend(RULES[code](h, epochs, cfg, done))
    out.extend(resolved(h, epochs, out, codes))
    return share_remedies(sort_findings(out))


def resolved(h: DoctorHistory, epochs: Epochs, found: Sequence[Finding],
             codes: Sequence[str] | None = None) -> list[Finding]:
    """Info findings for codes reported during training that the rules no longer find.

    Some rules judge the latest numbers (the last epoch's dead units, medians over all samples
    so far), so a finding printed during training can stop holding later; the diagnosis still
    lists it, marked resolved, so that what was printed and the final table agree. (When
    ``trainlab doctor RUN`` re-judges with other thresholds, "resolved" may also mean: not a
    finding under these thresholds.)
    """
    present = {f.code for f in found}
    last = epochs[-1]["epoch"] if epochs else None
    out = []
    for r in h.reported:
        code = r["code"]
        if code in present or code not in CODES or (codes is not None and code not in codes):
            continue
        present.add(code)
        until = f", not found at epoch {last}" if last is not None else ", not found now"
        msg = (f"resolved (reported as {r['severity']} in epoch {r.get('reported_epoch')} of training{until}): "
               f"{r['message']}")
        out.append(finding(code, "info", msg, epoch=r.get("epoch"), step=r.get("step"),
                           layers=tuple(r.get("layers", ())),
                           evidence={"resolved": True, "reported_severity": r["severity"],
                                     "reported_epoch": r.get("reported_epoch"), "last_epoch": last}))
    return out
