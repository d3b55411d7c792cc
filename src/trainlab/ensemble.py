"""Ensembles of classification runs (T4) and boosting (T5).

Three ways to get members, one way to evaluate them:

- ``trainlab ensemble RUN RUN ... [--method mean|vote|weighted]``: finished runs of one task, one
  class list and one evaluation data set (same data set, split and seed), each read only;
- ``train.bagging=N``: :func:`fit_members` trains N members, member k on a bootstrap of the
  training split drawn from (seed, k) (``data.resample``), each a normal run in
  ``RUN/members/member-k``; resuming RUN skips finished members and resumes a killed one;
- ``train.boosting=N``: SAMME (Zhu et al. 2009) by weighted resampling: member k trains on n
  draws in proportion to the sample weights left by members 0..k-1 (``RUN/boost-weights/
  member-k.json``); its weighted error on the whole training split gives its say ``alpha`` and
  the next weights; the ensemble is the alpha-weighted vote. Boosting stops early when a member
  is no better than chance (it stays listed with alpha 0: no say in the vote) or makes no weighted error;
- ``train.snapshots=true`` with a ``cosine_restarts`` schedule: the weights at the end of each
  cycle (``checkpoints/snapshot-K``), evaluated together in the run's summary and by
  ``trainlab ensemble RUN --snapshots``.

Every member's class probabilities on a split are computed once (``member_probs``), then
combined (:mod:`trainlab.evaluate.ensemble_math`) and scored by the classification meter, so an
ensemble's evaluation has the shape of ``trainlab evaluate``'s. Its ``loss`` is the negative
log-likelihood of the combined probabilities: the averaged ones for mean and vote (votes have no
likelihood), the weighted ones for weighted and SAMME.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import RecipeError, RunError
from .run import Run, check_writable_target, open_run

METHODS = ("mean", "vote", "weighted")

# Data options that change only the training split or its loading: runs that differ in them are
# still evaluated on the same samples. Every other data option (data set, root, split, fold,
# image size...) and the seed decide the evaluation splits.
TRAIN_ONLY_DATA = ("batch_size", "sampler", "p", "k", "workers", "subset", "normalize", "augment", "batch_augment",
                   "forbid", "whiten", "whiten_eps", "imbalance", "resample", "max_pixels")
# Of those, the ones that choose the training split's samples: they matter when the training split
# itself is evaluated (--split train). A member's own draw (resample) never does: the ensemble is
# evaluated on the training split the members were drawn from.
TRAIN_SAMPLES_DATA = ("subset", "imbalance")


# ----------------------------------------------------------------------------------- members
class Member:
    """One model of an ensemble: a run's checkpoint file. The recipe and the checkpoint's state are
    read at once (to check the members against each other), the model when first used."""

    def __init__(self, run: Run, path: Path, label: str):
        from .data.bundle import DataInfo
        from .engine.checkpoint import load_checkpoint

        self.run, self.path, self.label = run, path, label
        self.recipe = run.recipe()
        self._tensors, self.state = load_checkpoint(path)
        self.info = DataInfo.from_dict(self.state["info"])
        self._model = None

    @property
    def task(self):
        from .tasks import build_task

        return build_task(self.recipe, self.info)

    @property
    def model(self):
        if self._model is None:
            from .engine.checkpoint import load_model_weights, split_prefix
            from .models import build_model

            model = build_model(self.recipe, self.task.model_info(self.info), load_weights=False)
            load_model_weights(model, split_prefix(self._tensors, "model"), str(self.path))
            self._model, self._tensors = model.eval(), None
        return self._model


def eval_data_key(recipe, split: str = "test") -> dict[str, Any]:
    """What decides a run's evaluation split ``split``: its seed and its data options but the
    training-only ones (for the training split, but the ones that choose its samples)."""
    ignored = [k for k in TRAIN_ONLY_DATA if split != "train" or k not in TRAIN_SAMPLES_DATA]
    data = {k: v for k, v in recipe.data.model_dump(mode="json").items() if k not in ignored}
    return {"seed": recipe.seed, **data}


def check_members(members: list[Member], split: str = "test") -> None:
    """One-line RunError unless every member is a classification run of the first one's class
    list and evaluation data of ``split`` (see :func:`eval_data_key`)."""
    first = members[0]
    for m in members:
        if m.recipe.task != "classification":
            raise RunError(f"ensemble: {m.label} is a run of the {m.recipe.task} task; ensembles combine the class "
                           "probabilities of classification runs")
    key = eval_data_key(first.recipe, split)
    for m in members[1:]:
        if m.info.class_names != first.info.class_names:
            raise RunError(f"ensemble: {m.label} has the classes {_names(m.info.class_names)}, {first.label} has "
                           f"{_names(first.info.class_names)}; members must share one class list")
        other = eval_data_key(m.recipe, split)
        if other != key:
            field = next(k for k in key if key[k] != other.get(k))
            where = "seed" if field == "seed" else f"data.{field}"
            raise RunError(f"ensemble: {m.label} and {first.label} differ in {where} ({other.get(field)!r} vs "
                           f"{key[field]!r}): they are not evaluated on the same data")


def _numbered(folder: Path, prefix: str, suffix: str = "") -> list[Path]:
    """``folder/<prefix><K><suffix>`` entries in the order of K (other names are not members)."""
    found = []
    for path in folder.glob(f"{prefix}*{suffix}") if folder.is_dir() else ():
        middle = path.name[len(prefix): len(path.name) - len(suffix)]
        if middle.isdigit():
            found.append((int(middle), path))
    return [path for _, path in sorted(found)]


def _names(names: list[str]) -> str:
    return "[" + ", ".join(names[:6]) + (", ..." if len(names) > 6 else "") + "]"


def run_members(run: Run, checkpoint: str = "best", snapshots: bool = False) -> list[Member]:
    """The members ``run`` stands for: its snapshots (``snapshots``), the member runs of a bagging
    or boosting run, else its own ``checkpoint``."""
    if snapshots:
        paths = _numbered(run.checkpoints, "snapshot-", ".safetensors")
        if not paths:
            raise RunError(f"ensemble --snapshots: run {run.dir} has no snapshot checkpoints (train it with "
                           "train.snapshots=true and schedule.name=cosine_restarts)")
        return [Member(run, p, f"{run.dir} {p.stem}") for p in paths]
    recipe = run.recipe()
    if recipe.train.bagging or recipe.train.boosting:
        dirs = [d for d in _numbered(run.dir / "members", "member-") if d.is_dir()]
        if not dirs:
            raise RunError(f"ensemble: {run.dir} is a bagging/boosting run without members yet "
                           f"(trainlab fit --resume {run.dir} trains them)")
        return [Member(open_run(d), open_run(d).checkpoint(checkpoint), str(d)) for d in dirs]
    return [Member(run, run.checkpoint(checkpoint), str(run.dir))]


def member_probs(members: list[Member], split: str, bundle=None):
    """((M, N, C) float64 class probabilities of every member on ``split``, (N,) targets).

    The split is rebuilt once from the first member's recipe (``bundle``: an already built one);
    each model carries its own input stage (normalization), so statistics are not computed."""
    import torch

    from .data import build_data
    from .device import autocast, resolve_device
    from .engine.trainer import eval_loader
    from .optim.optimizers import train_batch_size

    first = members[0]
    recipe = first.recipe
    bundle = bundle or build_data(recipe, statistics=False)
    source = bundle.split(split)
    device = resolve_device(recipe.train.device)
    loader = eval_loader(source, first.task.eval_batch_size(train_batch_size(recipe, len(bundle.train))), recipe,
                         device, first.task)
    targets, probs = None, []
    with torch.no_grad():
        for m in members:
            task = m.task
            m.model.to(device)
            outs, tgts = [], []
            for batch in loader.batches(0):
                batch = task.to_device(batch, device)
                with autocast(device, m.recipe.train.amp):
                    outputs = task.forward(m.model, batch)
                outs.append(task.predict(outputs).double().cpu())
                t = batch["target"]
                tgts.append((t.argmax(1) if t.dim() == 2 else t).cpu())
            probs.append(torch.cat(outs))
            targets = torch.cat(tgts) if targets is None else targets
            m.model.to("cpu")
    loader.close()
    return torch.stack(probs), targets


# -------------------------------------------------------------------------------- combining
def combined_metrics(probs, targets, method: str, weights=None, topk: int = 5) -> dict[str, Any]:
    """The evaluation metrics (the shape ``trainlab evaluate`` writes) of (M, N, C) member
    probabilities combined by ``method``: mean, vote, weighted (``weights`` (M,)) or samme
    (``weights``: the alphas; ties go to the higher alpha-weighted probability)."""
    from .evaluate import ensemble_math as em
    from .evaluate.classification import ClassificationMeter

    if method == "mean":
        p = em.mean_probs(probs)
        scores = p
    elif method == "vote":
        p = em.mean_probs(probs)
        scores = em.vote_scores(probs)
    elif method == "weighted":
        p = em.weighted_probs(probs, weights)
        scores = p
    elif method == "samme":
        p = em.weighted_probs(probs, weights)
        scores = em.samme_scores(probs.argmax(2), weights, probs.shape[2]) + 1e-9 * p
    else:
        raise RecipeError(f"--method: unknown method {method!r}; known: {', '.join(METHODS)}")
    meter = ClassificationMeter(probs.shape[2], topk)
    meter.update(scores, targets, em.nll(p, targets))
    out = meter.compute()
    out["method"] = method
    return out


def member_accuracies(probs, targets) -> list[float]:
    return [float((p.argmax(1) == targets).double().mean()) for p in probs]


def evaluate_ensemble(
    runs: list[str | Path | Run],
    method: str = "mean",
    split: str = "test",
    checkpoint: str = "best",
    snapshots: bool = False,
) -> dict[str, Any]:
    """Evaluate runs (or a bagging/boosting run's members, or a run's snapshots) as an ensemble;
    reads the runs only. Returns the metrics plus ``members`` (each one's accuracy), ``weights``,
    ``best_member_accuracy`` and ``gain`` (ensemble accuracy − best member's)."""
    if method not in METHODS:
        raise RecipeError(f"--method: unknown method {method!r}; known: {', '.join(METHODS)}")
    if split not in ("train", "val", "test"):
        raise RecipeError(f"--split: expected train, val or test, got {split!r}")
    if not runs:
        raise RecipeError("ensemble: give at least one run")
    if snapshots and len(runs) != 1:
        raise RecipeError("ensemble --snapshots: give exactly one run (its snapshots are the members)")
    members: list[Member] = []
    for r in runs:
        members += run_members(r if isinstance(r, Run) else open_run(r), checkpoint, snapshots)
    check_members(members, split)
    from .data import build_data

    # the splits as the members were trained from: without the first member's own draw (data.resample),
    # which would otherwise be the training split that --split train evaluates
    first = members[0].recipe
    bundle = build_data(first.model_copy(update={"data": first.data.model_copy(update={"resample": None})}),
                        statistics=False)
    probs, targets = member_probs(members, split, bundle)
    weights = None
    if method == "weighted":  # each member's validation accuracy
        if bundle.val is None or len(bundle.val) == 0:
            raise RecipeError("--method weighted: the runs have no validation split to weigh the members by "
                              "(data.split.val is 0)")
        val_probs, val_targets = probs, targets
        if split != "val":
            val_probs, val_targets = member_probs(members, "val", bundle)
        weights = member_accuracies(val_probs, val_targets)
        if sum(weights) <= 0:
            raise RecipeError("--method weighted: every member has validation accuracy 0; use --method mean")
    out = combined_metrics(probs, targets, method, weights, members[0].recipe.eval.topk)
    accs = member_accuracies(probs, targets)
    out.update(split=split, checkpoint="snapshots" if snapshots else checkpoint,
               class_names=members[0].info.class_names,
               members=[{"member": m.label, "accuracy": a} for m, a in zip(members, accs)],
               weights=weights, best_member_accuracy=max(accs), gain=out["accuracy"] - max(accs))
    return out


def format_table(result: dict[str, Any]) -> list[str]:
    """The lines ``trainlab ensemble`` prints: scalar metrics, then each member and the gain."""
    lines = [f"{result['split']} split, {len(result['members'])} members, method {result['method']}, "
             f"{result['n']} samples"]
    for key, value in result.items():
        if isinstance(value, float) and key not in ("best_member_accuracy", "gain"):
            lines.append(f"  {key:<18} {value:.4f}")
    lines += ["", "members:"]
    for i, m in enumerate(result["members"]):
        w = f"  weight {result['weights'][i]:.4f}" if result.get("weights") else ""
        lines.append(f"  {m['member']}  accuracy {m['accuracy']:.4f}{w}")
    lines.append(f"gain over the best member: {result['gain']:+.4f} (best member {result['best_member_accuracy']:.4f})")
    return lines


# ------------------------------------------------------------------------------- snapshots
def snapshot_summary(run: Run, trainer) -> dict[str, Any] | None:
    """The snapshot ensemble of a finished run (its ``snapshot-K`` checkpoints averaged) on the
    trainer's val and test splits, for summary.json; None before the first cycle ended."""
    if not _numbered(run.checkpoints, "snapshot-", ".safetensors"):
        return None
    members = run_members(run, snapshots=True)
    out: dict[str, Any] = {"snapshots": len(members)}
    for split in ("val", "test"):
        if getattr(trainer.bundle, split) is None or len(getattr(trainer.bundle, split)) == 0:
            out[split] = None
            continue
        probs, targets = member_probs(members, split, trainer.bundle)
        m = combined_metrics(probs, targets, "mean", topk=trainer.recipe.eval.topk)
        accs = member_accuracies(probs, targets)
        m.update(members=accs, gain=m["accuracy"] - max(accs))
        out[split] = m
    return out


# ------------------------------------------------------------------------- bagging, boosting
def member_recipe(parent, run_dir: Path, k: int, weights: Path | None):
    """Member k's recipe: the parent's, one member trained on its own draw, in members/member-k."""
    from .recipe import load_recipe

    return load_recipe(parent, {"train.bagging": 0, "train.boosting": 0, "name": f"{parent.name}-member-{k}",
                                "run.dir": str(run_dir / "members" / f"member-{k}"),
                                "data.resample": {"member": k, "weights": str(weights) if weights else None}})


def fit_members(
    recipe,
    target: str | Path,
    fit: Callable[..., Run],
    *,
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
    overrides: dict[str, Any] | None = None,
    callbacks: list | None = None,
) -> Run:
    """Train (or resume) the members of a bagging or boosting recipe into ``target`` and write its
    summary.json (the ensemble's val and test metrics, each member's), eval-test-ensemble.json and
    report.md. ``fit`` trains one run (:func:`trainlab.api.fit`, passed in: the api calls this)."""
    import torch

    from .atomic import write_json, write_text
    from .data import build_data
    from .engine.trainer import Interrupted
    from .evaluate import ensemble_math as em
    from .lock import acquire as acquire_lock
    from .recipe import check_names
    from .tasks.base import scalar_metrics

    t0 = time.perf_counter()
    check_names(recipe)
    boosting = recipe.train.boosting > 0
    count = recipe.train.boosting or recipe.train.bagging
    kind = "boosting" if boosting else "bagging"
    target = Path(target)
    if resume and boosting:
        # each member trained on the weights its predecessors' errors left: training one further would
        # change the weights its successors were trained on
        further = [k for k in overrides or {} if k.split(".")[:2] in (["train", "epochs"], ["train", "early_stop"])]
        if further:
            raise RunError(f"{further[0]}: cannot be changed when resuming a boosting run (each member trained on the "
                           "sample weights the members before it left); start a new run instead")
    bundle = build_data(recipe, statistics=False)  # refuses bad data options before anything is written
    if resume:
        done = _finished(open_run(target), count)
        if done and not overrides:  # nothing to train or evaluate: the run, its lock file too, stays as it is
            if not quiet:
                print(f"{target}: finished ({done}); nothing to resume")
            return open_run(target)
    else:
        check_writable_target(target, force)
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunError(f"run.dir: cannot create {str(target)!r} ({err.strerror})") from None
    lock = acquire_lock(target, f"fit ({kind})")
    try:
        if resume:
            run = open_run(target)
            if overrides:
                write_text(run.recipe_path, recipe.to_yaml())
        else:
            if force:
                for folder in ("members", "boost-weights"):
                    shutil.rmtree(target / folder, ignore_errors=True)
            run = Run.create(recipe, target, force=force)
        say = (lambda line: None) if quiet else print
        train_targets = bundle.train.targets.long()
        n, classes = len(train_targets), bundle.info.num_classes
        weights = torch.full((n,), 1.0 / n, dtype=torch.float64)
        alphas: list[float] = []
        entries: list[dict[str, Any]] = []
        stop_reason = None
        for k in range(count):
            wpath = None
            if boosting:
                wpath = run.dir / "boost-weights" / f"member-{k}.json"
                if not wpath.exists():  # the same values on a resume: they follow from the members before
                    wpath.parent.mkdir(parents=True, exist_ok=True)
                    write_json(wpath, weights.tolist())
            mdir = run.dir / "members" / f"member-{k}"
            say(f"{kind} member {k + 1}/{count}: {mdir}")
            try:
                if (mdir / "recipe.yaml").is_file():
                    member = fit(resume=mdir, overrides=dict(overrides or {}), quiet=quiet, callbacks=callbacks)
                else:
                    member = fit(member_recipe(recipe, run.dir, k, wpath), quiet=quiet, callbacks=callbacks)
            except Interrupted as err:
                err.run_dir = run.dir  # resuming the ensemble's run resumes this member, then the rest
                raise
            summary = member.summary()
            entry = {"run": str(member.dir), "val": scalar_metrics(summary.get("val")) or None,
                     "test": scalar_metrics(summary.get("test")) or None}
            if boosting:
                probs, _ = member_probs([Member(member, member.checkpoint("best"), str(member.dir))], "train",
                                        bundle)
                miss = probs[0].argmax(1) != train_targets
                err = em.samme_error(weights, miss)
                alpha = em.samme_alpha(err, classes)
                entry.update(weighted_error=err, alpha=alpha)
                if alpha <= 0:
                    entry["alpha"] = 0.0 if entries else 1.0  # a lone member still predicts
                    stop_reason = (f"member {k} is no better than chance (weighted error {err:.4f} >= "
                                   f"1 - 1/{classes}); boosting stopped")
                elif err <= em.MIN_ERROR:
                    stop_reason = f"member {k} makes no weighted training error; boosting stopped"
                else:
                    weights = em.samme_update(weights, miss, alpha)
                alphas.append(entry["alpha"])
            entries.append(entry)
            if stop_reason:
                say(stop_reason)
                break
        members = [Member(open_run(e["run"]), open_run(e["run"]).checkpoint("best"), e["run"]) for e in entries]
        evals: dict[str, Any] = {}
        for split in ("val", "test"):
            if getattr(bundle, split) is None or len(getattr(bundle, split)) == 0:
                evals[split] = None
                continue
            probs, targets = member_probs(members, split, bundle)
            method = "samme" if boosting else "mean"
            m = combined_metrics(probs, targets, method, alphas if boosting else None, recipe.eval.topk)
            accs = member_accuracies(probs, targets)
            m.update(split=split, checkpoint=kind, epoch=None, class_names=bundle.info.class_names,
                     best_member_accuracy=max(accs), gain=m["accuracy"] - max(accs))
            evals[split] = m
        summary = {"name": recipe.name, "ensemble": kind, "members": entries,
                   "alphas": alphas if boosting else None, "stop_reason": stop_reason,
                   "class_names": bundle.info.class_names, "wall_s": round(time.perf_counter() - t0, 3), **evals}
        write_json(run.summary_path, summary)
        for split, m in evals.items():
            if m is not None:
                write_json(run.dir / f"eval-{split}-ensemble.json", m)
        report = _report(summary)
        write_text(run.report_path, report)
        write_text(run.dir / "report.html", _report_html(report, summary, run.dir))  # V5: every run has both
        if not quiet:
            for split, m in evals.items():
                if m:
                    print(f"{split} ({kind} of {len(entries)}): accuracy {m['accuracy']:.4f}, best member "
                          f"{m['best_member_accuracy']:.4f}, gain {m['gain']:+.4f}")
            print(f"run: {run.dir}")
        return run
    finally:
        lock.release()


def _finished(run: Run, count: int) -> str | None:
    """How a bagging/boosting run finished (all its members trained, or boosting stopped early),
    or None while members are missing or its summary is not written."""
    import json

    try:
        summary = json.loads(run.summary_path.read_text())
    except (OSError, ValueError):
        return None
    members = summary.get("members") if isinstance(summary, dict) else None
    if not isinstance(members, list) or not (len(members) >= count or summary.get("stop_reason")):
        return None
    return f"{len(members)} {summary.get('ensemble', 'ensemble')} members" + (
        f"; {summary['stop_reason']}" if summary.get("stop_reason") else "")


def _report_html(markdown: str, summary: dict[str, Any], folder: Path) -> str:
    """report.md's text as the self-contained page of :mod:`trainlab.report.html`, with links to
    each member's own report.html (relative to the ensemble's folder)."""
    import os

    from .report.html import Markup, esc, markdown_html, page, table

    lines = markdown.splitlines()
    rows = []
    for e in summary["members"]:
        own = Path(e["run"]) / "report.html"
        href = Path(os.path.relpath(own.resolve(), folder.resolve())).as_posix()
        rows.append([Markup(f'<a href="{esc(href)}">{esc(e["run"])}</a>') if own.exists() else e["run"]])
    body = ['<section id="summary"><h2>Summary</h2>' + markdown_html(lines[1:], lambda path, alt: "") + "</section>",
            '<section id="members"><h2>Member reports</h2>' + table(["member run"], rows) + "</section>"]
    return page(lines[0].lstrip("# "), [("summary", "summary"), ("members", "member reports")], body)


def _report(summary: dict[str, Any]) -> str:
    kind = summary["ensemble"]
    lines = [f"# {summary['name']}: {kind} of {len(summary['members'])} members", ""]
    split = "test" if summary.get("test") else "val"
    lines += [f"| member | {split} accuracy |" + (" alpha |" if kind == "boosting" else ""),
              "|---|---|" + ("---|" if kind == "boosting" else "")]
    for e in summary["members"]:
        acc = (e.get(split) or {}).get("accuracy")
        row = f"| {e['run']} | {acc:.4f} |" if acc is not None else f"| {e['run']} | - |"
        lines.append(row + (f" {e['alpha']:.4f} |" if kind == "boosting" else ""))
    final = summary.get(split)
    if final:
        lines += ["", f"Ensemble {split} accuracy {final['accuracy']:.4f}, best member "
                  f"{final['best_member_accuracy']:.4f}, gain {final['gain']:+.4f}."]
    if summary.get("stop_reason"):
        lines += ["", summary["stop_reason"]]
    return "\n".join(lines) + "\n"
