"""Hyper-parameter search (T6) on Optuna.

A search space is a YAML mapping of recipe keys to distributions::

    optim.lr:      {type: loguniform, low: 1.0e-4, high: 0.1}
    model.dropout: {type: uniform, low: 0.0, high: 0.5}
    model.width:   {type: int, low: 16, high: 128, step: 16}
    optim.name:    {type: categorical, choices: [adam, sgd]}

Every trial is an ordinary run of the recipe with the sampled values as overrides, written to
``<tuning folder>/trial-<number>/``. The per-epoch validation metric is reported to the trial
from a trainer callback, so the median or Hyperband pruner can stop a poor trial after any
epoch; a pruned run stops cleanly (summary and report written) and keeps its folder.

The study lives in an Optuna storage: ``sqlite:///<tuning folder>/study.db`` by default, or any
database URL Optuna supports (``--storage``), so that several processes (``--workers``) or
machines work on one study. ``N`` trials means N finished (complete or pruned) trials over all
workers: before training, a trial checks that fewer than N trials numbered below it are finished
or running, else it is given up untrained (marked failed, with the user attribute ``surplus``).
A trial whose run fails (a learning rate that diverges, no finite validation value) is marked
failed and the search goes on; more than N such failures in one worker stop it with one line.
A trial left running by a dead worker (SIGKILL, a lost machine) is marked failed and its values
are queued again: at once on the same machine, where the worker's lock file in
``<tuning folder>/workers/`` shows it is gone, and after Optuna's heartbeat grace period
elsewhere. So a killed search goes on with ``--resume``, keeps every finished trial and reaches N.

Outputs in the tuning folder: ``tune.json`` (the settings ``--resume`` reads), ``space.yaml``,
``recipe.yaml`` (the base recipe), ``best.yaml`` (the best trial's recipe), ``results.json`` and
``plots/history.png``, ``plots/importances.png``.
"""
from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from .engine.callbacks import Callback
from .errors import RecipeError, RunError, show
from .recipe import Recipe, Section, load_recipe, load_yaml, override_pairs

PRUNERS = ("median", "hyperband", "none")
# Optuna's heartbeat: a running trial whose worker has not written for GRACE_S seconds is stale.
HEARTBEAT_S = 20
GRACE_S = 90
# keys the search sets itself, or that would make trials write outside the tuning folder
RESERVED = ("run.dir", "seed")
SETTINGS = "tune.json"
FINISHED = ("COMPLETE", "PRUNED")


class ParamSpec(Section):
    """One dimension of the search space."""

    type: Literal["loguniform", "uniform", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = Field(None, gt=0.0, description="uniform / int: grid step")
    log: bool = Field(False, description="int: sample on a log scale")
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _shape(self):
        if self.type == "categorical":
            if self.low is not None or self.high is not None or self.step is not None:
                raise ValueError("categorical takes choices, not low/high/step")
            if not self.choices:
                raise ValueError("empty range: categorical needs at least one choice")
            for c in self.choices:
                if not (c is None or isinstance(c, (bool, int, float, str))):
                    raise ValueError(f"choice {show(c)}: choices must be numbers, strings, booleans or null")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low and high, not choices")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs low and high")
        if self.low >= self.high:
            raise ValueError(f"empty range: low {self.low:g} must be below high {self.high:g}")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0 (got {self.low:g})")
        if self.type == "int":
            if self.low != int(self.low) or self.high != int(self.high) or (self.step or 1) != int(self.step or 1):
                raise ValueError("int needs whole-number low, high and step")
            if self.log and (self.low < 1 or self.step not in (None, 1)):
                raise ValueError("int with log needs low >= 1 and no step")
        elif self.log:
            raise ValueError("log applies to int only (use type: loguniform)")
        if self.step is not None and self.step > self.high - self.low:
            raise ValueError(f"empty range: step {self.step:g} is larger than high - low")
        return self

    def bounds(self) -> list[Any]:
        """The values at the edges of the space: each must make a valid recipe."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]

    def suggest(self, trial, name: str):
        if self.type == "categorical":
            return trial.suggest_categorical(name, self.choices)
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.type == "loguniform", step=self.step)


def read_space(source: str | Path | dict) -> dict[str, ParamSpec]:
    """The search space of a YAML file (or a mapping): recipe key -> ParamSpec."""
    where = "search space" if isinstance(source, dict) else f"search space {source}"
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise RecipeError(f"--space: {str(path)!r} is not a file (expected a YAML search space)")
        try:
            data = load_yaml(path.read_text())
        except yaml.YAMLError as err:
            raise RecipeError(f"{where}: not valid YAML ({getattr(err, 'problem', None) or 'syntax error'})") from None
        except UnicodeDecodeError:
            raise RecipeError(f"{where}: not UTF-8 text") from None
    if not isinstance(data, dict) or not data:
        raise RecipeError(f"{where}: expected a mapping of recipe keys to distributions, e.g. "
                          "optim.lr: {type: loguniform, low: 1.0e-4, high: 0.1}")
    space = {}
    for key, spec in data.items():
        key = str(key)
        if key in RESERVED or key.startswith("run."):
            raise RecipeError(f"{where}: {key}: set by the search itself (each trial is a run in the tuning "
                              "folder); it cannot be searched")
        if not isinstance(spec, dict):
            raise RecipeError(f"{where}: {key}: expected a mapping such as {{type: uniform, low: 0, high: 1}}, "
                              f"got {show(spec)}")
        try:
            space[key] = ParamSpec.model_validate(spec)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            msg = first["msg"].replace("Value error, ", "")
            raise RecipeError(f"{where}: {key}{'.' + loc if loc else ''}: {msg}") from None
    return space


def check_space(recipe: Recipe, space: dict[str, ParamSpec], where: str = "search space") -> None:
    """Every key must be a recipe key and every edge of its range a valid value there (a
    RecipeError naming the key otherwise), checked before a study or a run is touched."""
    from .recipe import check_names

    for key, spec in space.items():
        for value in spec.bounds():
            try:
                candidate = load_recipe(recipe, {key: value})
                check_names(candidate)
            except RecipeError as err:
                raise RecipeError(f"{where}: {key}={show(value)}: {err}") from None


# ------------------------------------------------------------------------------------ storage
def _storage(url: str):
    import optuna

    import inspect
    import warnings

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    with warnings.catch_warnings():  # the heartbeat is marked experimental; it is what finds lost workers
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Optuna 5 renamed the stale-trial callback (failed_trial_callback before)
        params = inspect.signature(optuna.storages.RDBStorage).parameters
        hook = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                          grace_period=GRACE_S, **{hook: requeue})


def _optuna():
    try:
        import optuna
    except ImportError:
        raise RunError("trainlab tune needs optuna: pip install 'trainlab[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the search prints its own lines
    return optuna


def requeue(study, trial) -> None:
    """Queue the values of ``trial`` (failed with its worker) again, so that the point is still tried."""
    if trial.params:
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def fail_dead_local_trials(study, folder: Path) -> list[int]:
    """Mark failed (and requeue) the running trials of this machine whose worker is dead: its lock
    in ``folder/workers`` is held by no process (the OS releases it when a process dies)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from .lock import holder

    host, failed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w = t.user_attrs.get("worker") or {}
        lock_dir = Path(w.get("lock", ""))
        if w.get("host") != host or w.get("pid") == os.getpid() or not lock_dir.is_dir():
            continue
        if lock_dir.parent.resolve() != (folder / "workers").resolve() or holder(lock_dir) is not None:
            continue
        try:
            # the state change is the claim: of two workers that find the same dead trial, one requeues it
            if study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                requeue(study, t)
                failed.append(t.number)
        except UpdateFinishedTrialError:
            pass  # another worker got there first
    return failed


# ------------------------------------------------------------------------------------ pruning
class PruningReporter(Callback):
    """Reports the epoch's validation metric to the Optuna trial; stops the run when pruned."""

    name = "tune"

    def __init__(self, trial, key: str):
        self.trial, self.key = trial, key
        self.pruned_at: int | None = None

    def on_epoch_end(self, trainer, record):
        value = record.get(self.key)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(value, record["epoch"])
        if self.pruned_at is None and self.trial.should_prune():
            self.pruned_at = record["epoch"]
            trainer.request_stop(f"pruned by the search at epoch {record['epoch']} ({self.key} {value:.4f})")


class _Surplus(Exception):
    """N trials are already finished or running: this one is given up before it trains."""


class _Refused(Exception):
    """The sampled values together make an invalid recipe (each was valid alone)."""


class _Failed(Exception):
    """The trial's run failed on its own (diverged to non-finite weights, no finite value): the
    point is marked failed and the search goes on, as for a point that trains badly."""


# ------------------------------------------------------------------------------------- search
def read_settings(folder: Path) -> dict[str, Any]:
    import json

    path = folder / SETTINGS
    if not path.is_file():
        raise RunError(f"{str(folder)!r} is not a tuning folder (no {SETTINGS}); start one with "
                       "trainlab tune RECIPE --space SPACE.yaml --trials N")
    try:
        settings = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{path}: not valid JSON ({getattr(err, 'msg', None) or err.reason}); the search's settings "
                       "file was damaged") from None
    # what every reader below takes from it, with its type (a hand-edited or truncated file)
    expected = {"trials": int, "metric": str, "direction": str, "pruner": str, "storage": str, "study": str,
                "seed": int}
    if not isinstance(settings, dict):
        raise RunError(f"{path}: expected a JSON object of the search's settings, got {type(settings).__name__}")
    for key, kind in expected.items():
        value = settings.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise RunError(f"{path}: {key}: expected {'an integer' if kind is int else 'a string'}, got {show(value)}")
    if settings["pruner"] not in PRUNERS or settings["direction"] not in ("max", "min"):
        raise RunError(f"{path}: pruner {show(settings['pruner'])}, direction {show(settings['direction'])}: "
                       f"expected a pruner of {', '.join(PRUNERS)} and a direction max or min")
    return settings


def _metric(recipe: Recipe, metric: str | None) -> tuple[str, str]:
    from .data import build_data
    from .engine.trainer import check_watched_metric
    from .tasks import build_task

    bundle = build_data(recipe, statistics=False)
    task = build_task(recipe, bundle.info)
    metric = metric or task.quality or "loss"
    check_watched_metric("--metric", metric, task, has_val=bundle.val is not None and len(bundle.val) > 0,
                         split="val")
    return metric, task.metric_mode(metric)


def start(
    recipe, space, trials: int, overrides: list[str] | dict[str, Any] | None = None, *,
    metric: str | None = None, pruner: str = "median", storage: str | None = None, study: str | None = None,
) -> Path:
    """Check everything and create the tuning folder and the study; returns the folder. Bad input
    raises before anything is written (an existing study in ``storage`` is joined, not changed)."""
    from .atomic import write_json, write_text
    from .recipe import check_names
    from .run import check_writable_target

    if trials < 1:
        raise RecipeError(f"--trials: expected at least 1 trial, got {trials}")
    if pruner not in PRUNERS:
        raise RecipeError(f"--pruner: expected one of {', '.join(PRUNERS)}, got {pruner!r}")
    pairs = override_pairs(overrides)
    out_dir = pairs.pop("run.dir", None)
    base = load_recipe(recipe, pairs or None)
    check_names(base)
    where = f"search space {space}" if not isinstance(space, dict) else "search space"
    parsed = read_space(space)
    check_space(base, parsed, where)
    metric, direction = _metric(base, metric)
    folder = Path(out_dir) if out_dir else Path("runs") / f"tune-{base.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (folder / SETTINGS).is_file():
        raise RunError(f"run.dir: {str(folder)!r} already holds a search; go on with trainlab tune --resume {folder}, "
                       "or pick another run.dir")
    check_writable_target(folder, force=False)
    optuna = _optuna()
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    url = storage or f"sqlite:///{folder / 'study.db'}"
    name = study or folder.name

    def undo():
        if created:  # nothing of this search is left behind
            import shutil

            shutil.rmtree(folder, ignore_errors=True)

    try:
        joined = optuna.create_study(storage=_storage(url), study_name=name, load_if_exists=storage is not None,
                                     direction="maximize" if direction == "max" else "minimize")
    except Exception as err:  # a bad URL, an unreachable database, a missing driver
        undo()
        raise RunError(f"--storage: cannot open study {name!r} in {url}: {str(err).splitlines()[0]}") from None
    # Optuna joins an existing study whatever direction is asked: a worker optimising another metric
    # would feed its values into the others' study (a loss maximised beside accuracies).
    theirs = joined.user_attrs.get("trainlab_metric")
    wanted = "maximize" if direction == "max" else "minimize"
    if (theirs is not None and theirs != metric) or joined.direction.name.lower() != wanted:
        undo()
        raise RecipeError(f"--study: study {name!r} in {url} optimises "
                          f"{'val ' + theirs if theirs else 'another metric'} ({joined.direction.name.lower()}), "
                          f"this search val {metric} ({wanted}); give the same --metric, or another --study")
    if theirs is None:
        joined.set_user_attr("trainlab_metric", metric)
    write_text(folder / "recipe.yaml", base.to_yaml())
    write_text(folder / "space.yaml", yaml.safe_dump({k: v.model_dump(exclude_none=True, exclude_defaults=True)
                                                      | {"type": v.type} for k, v in parsed.items()}, sort_keys=False))
    write_json(folder / SETTINGS, {"trials": trials, "metric": metric, "direction": direction, "pruner": pruner,
                                   "storage": url, "study": name, "seed": base.seed})
    return folder


def set_trials(folder: Path, trials: int) -> None:
    """``--resume --trials N``: raise (or lower) the number of finished trials the search aims at."""
    from .atomic import write_json

    if trials < 1:
        raise RecipeError(f"--trials: expected at least 1 trial, got {trials}")
    settings = read_settings(folder)
    settings["trials"] = trials
    write_json(folder / SETTINGS, settings)


def _pruner(name: str, epochs: int):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    return optuna.pruners.NopPruner()


def load_study(folder: Path, worker: int = 0):
    optuna = _optuna()
    settings = read_settings(folder)
    base = load_recipe(folder / "recipe.yaml")
    storage = _storage(settings["storage"])
    try:
        summaries = optuna.get_all_study_summaries(storage)
        n_before = next((s.n_trials for s in summaries if s.study_name == settings["study"]), None)
    except Exception as err:
        raise RunError(f"cannot open the study in {settings['storage']}: {str(err).splitlines()[0]}") from None
    if n_before is None:
        raise RunError(f"study {settings['study']!r} is not in {settings['storage']}")
    # Seeded from the recipe, the trials already in the study and the worker: reproducible, and two
    # workers (or a resumed search) do not replay the same random start-up points.
    seed = (settings["seed"] * 1_000_003 + n_before * 101 + worker) % 2**32
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.load_study(study_name=settings["study"], storage=storage, sampler=sampler,
                              pruner=_pruner(settings["pruner"], base.train.epochs))
    return study, settings, base


def counts(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def work(folder: str | Path, worker: int = 0, threads: int | None = None, say=print) -> int:
    """Run trials of the study in ``folder`` until N trials are finished or running; returns the
    number this process finished."""
    from optuna.trial import TrialState

    from .api import fit
    from .engine.trainer import Interrupted
    from .lock import acquire

    folder = Path(folder).resolve()
    study, settings, base = load_study(folder, worker)
    space = read_space(folder / "space.yaml")
    n, metric = settings["trials"], settings["metric"]
    lock_dir = folder / "workers" / f"{socket.gethostname()}-{os.getpid()}"
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock = acquire(lock_dir, "tune worker")
    done_here = 0

    def objective(trial):
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid(), "lock": str(lock_dir)})
        ahead = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
        if sum(t.number < trial.number for t in ahead) >= n:
            trial.set_user_attr("surplus", True)
            raise _Surplus()
        params = {key: spec.suggest(trial, key) for key, spec in space.items()}
        run_dir = folder / f"trial-{trial.number:04d}"
        pairs = {**params, "run.dir": str(run_dir)}
        if threads and base.train.threads is None and "train.threads" not in params:
            pairs["train.threads"] = threads
        try:
            recipe = load_recipe(base, pairs)
        except RecipeError as err:
            trial.set_user_attr("refused", str(err))
            say(f"trial {trial.number}: refused: {err}")
            raise _Refused() from None
        trial.set_user_attr("run", str(run_dir))
        reporter = PruningReporter(trial, f"val_{metric}")
        t0 = time.perf_counter()
        try:
            run = fit(recipe, quiet=True, callbacks=[reporter])
        except Interrupted:
            requeue(study, study._storage.get_trial(trial._trial_id))
            raise
        except RunError as err:  # e.g. a learning rate that diverges: its NaN weights are refused
            trial.set_user_attr("failed", str(err))
            say(f"trial {trial.number}: failed: {err}")
            raise _Failed() from None
        summary = run.summary()
        value = (summary.get("val") or {}).get(metric)
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
        state = f"pruned at epoch {reporter.pruned_at}" if reporter.pruned_at else "complete"
        say(f"trial {trial.number}: val {metric} {_fmt(value)} ({state}; {shown}; {time.perf_counter() - t0:.1f} s)")
        if reporter.pruned_at is not None:
            raise _pruned(reporter.pruned_at)
        if value is None or not math.isfinite(value):
            trial.set_user_attr("failed", f"no finite val {metric} in {run_dir / 'summary.json'}")
            say(f"trial {trial.number}: failed: {trial.user_attrs['failed']}")
            raise _Failed()
        return value

    refused = failed = 0
    try:
        while True:
            for number in fail_dead_local_trials(study, folder):
                say(f"trial {number}: its worker is gone (killed?); marked failed and its values queued again")
            c = counts(study)
            if sum(c.get(s, 0) for s in (*FINISHED, "RUNNING")) >= n:
                break
            before = len(study.get_trials(deepcopy=False))
            study.optimize(objective, n_trials=1, catch=(_Surplus, _Refused, _Failed))
            last = [t for t in study.get_trials(deepcopy=False) if t.number >= before
                    and t.user_attrs.get("worker", {}).get("pid") == os.getpid()]
            done_here += sum(t.state.name in FINISHED for t in last)
            refused += sum("refused" in t.user_attrs for t in last)
            if refused > n:
                raise RecipeError(f"search space: {refused} sampled combinations made invalid recipes; the "
                                  f"last: {last[-1].user_attrs['refused']}")
            failed += sum("failed" in t.user_attrs for t in last)
            if failed > n:  # every point fails: something other than the sampled values is wrong
                why = next(t.user_attrs["failed"] for t in reversed(last) if "failed" in t.user_attrs)
                raise RunError(f"{failed} trials of this worker failed; the last: {why}")
    finally:
        lock.release()
    return done_here


def _pruned(epoch: int):
    import optuna

    return optuna.TrialPruned(f"pruned at epoch {epoch}")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if (abs(v) < 1e-3 and v != 0) or abs(v) >= 1e4 else f"{v:.4f}".rstrip("0").rstrip(".")
    return str(v)


def _worker_main(folder: str, worker: int, threads: int | None) -> None:
    """Entry point of a worker process (spawned): one line and exit code 2 on a user error."""
    import sys

    import torch

    from .errors import TrainlabError

    if threads:
        torch.set_num_threads(threads)
    from .engine.trainer import Interrupted

    try:
        work(folder, worker, threads)
    except TrainlabError as err:
        print(f"trainlab tune: worker {worker}: error: {err}", file=sys.stderr, flush=True)
        sys.exit(err.exit_code)
    except Interrupted as err:  # Ctrl-C reaches every worker: the trial's checkpoint is saved, its values requeued
        print(f"trainlab tune: worker {worker}: stopped by {err.signal_name} at {err}; trainlab tune --resume "
              f"{folder} goes on", file=sys.stderr, flush=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def run_workers(folder: str | Path, workers: int = 1, say=print) -> list[int]:
    """Work on the study with ``workers`` processes on this machine (1: in this process); returns
    their exit codes."""
    import multiprocessing

    if workers < 1:
        raise RecipeError(f"--workers: expected at least 1, got {workers}")
    folder = Path(folder)
    read_settings(folder)
    if workers == 1:
        work(folder, 0, say=say)
        return [0]
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")  # torch and a forked SQLite connection do not mix
    procs = [ctx.Process(target=_worker_main, args=(str(folder), i, threads)) for i in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join()
        raise
    return [p.exitcode for p in procs]


# ------------------------------------------------------------------------------------ results
def results(folder: str | Path, plots: bool = True) -> dict[str, Any]:
    """The study's outcome: counts, the best trial (its values, metric and run) written as
    ``best.yaml``, ``results.json`` and the two plots."""
    from .atomic import write_json, write_text

    folder = Path(folder).resolve()
    study, settings, base = load_study(folder)
    trials = study.get_trials(deepcopy=False)
    c = counts(study)
    out: dict[str, Any] = {"dir": str(folder), "study": settings["study"], "storage": settings["storage"],
                           "metric": settings["metric"], "direction": settings["direction"],
                           "target_trials": settings["trials"],
                           "finished": sum(c.get(s, 0) for s in FINISHED), "complete": c.get("COMPLETE", 0),
                           "pruned": c.get("PRUNED", 0), "failed": c.get("FAIL", 0),
                           "running": c.get("RUNNING", 0), "best": None,
                           "trials": [{"number": t.number, "state": t.state.name, "value": t.value,
                                       "params": t.params, "run": t.user_attrs.get("run"),
                                       "epochs": len(t.intermediate_values),
                                       "seconds": (t.duration.total_seconds() if t.duration else None)}
                                      for t in trials]}
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if complete:
        best = study.best_trial
        out["best"] = {"number": best.number, "value": best.value, "params": best.params,
                       "run": best.user_attrs.get("run")}
        run_recipe = Path(best.user_attrs.get("run", "")) / "recipe.yaml"
        best_recipe = load_recipe(run_recipe) if run_recipe.is_file() else load_recipe(base, best.params)
        best_recipe.run.dir = None  # a new run of the best recipe goes to its own folder
        write_text(folder / "best.yaml", best_recipe.to_yaml())
        out["best"]["recipe"] = str(folder / "best.yaml")
    if plots:
        out["plots"] = _plots(study, folder, settings)
    write_json(folder / "results.json", out)
    return out


def _plots(study, folder: Path, settings: dict[str, Any]) -> list[str]:
    """Optimisation history (every finished trial's value, the best so far) and parameter
    importances (Optuna's fANOVA evaluator; needs two complete trials)."""
    from .report.figures import finish, gc_paused, new_axes, save

    done = [t for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED and t.value is not None]
    written = []
    (folder / "plots").mkdir(exist_ok=True)
    maximize = settings["direction"] == "max"
    with gc_paused():
        if done:
            fig, ax = new_axes(6.4, 4.0)
            for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
                pts = [(t.number, t.value) for t in done if t.state.name == state]
                if pts:
                    ax.scatter(*zip(*pts), marker=marker, label=state.lower(), s=24)
            best, line = None, []
            for t in sorted((t for t in done if t.state.name == "COMPLETE"), key=lambda t: t.number):
                if best is None or (t.value > best if maximize else t.value < best):
                    best = t.value
                line.append((t.number, best))
            if line:
                ax.step(*zip(*line), where="post", color="C3", label="best so far")
            ax.set_xlabel("trial")
            ax.set_ylabel(f"val {settings['metric']}")
            ax.set_title("optimisation history")
            ax.legend(loc="best")
            finish(fig, ax)
            written.append(str(save(fig, folder / "plots" / "history.png")))
        importances = param_importances(study)
        if importances:
            names = list(importances)[::-1]
            fig, ax = new_axes(6.4, 1.2 + 0.4 * len(names))
            ax.barh(names, [importances[n] for n in names], color="C0")
            ax.set_xlabel("importance (fANOVA, sums to 1)")
            ax.set_title("parameter importances")
            finish(fig, ax)
            written.append(str(save(fig, folder / "plots" / "importances.png")))
    return written


def param_importances(study) -> dict[str, float]:
    """Optuna's parameter importances over the complete trials ({} when they cannot be computed:
    fewer than two complete trials, or no parameter that varies)."""
    import warnings

    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):
        return {}


def format_results(r: dict[str, Any]) -> str:
    lines = [f"{r['finished']} of {r['target_trials']} trials finished ({r['complete']} complete, "
             f"{r['pruned']} pruned); {r['failed']} failed or given up; study {r['study']!r} in {r['storage']}"]
    b = r.get("best")
    if b:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items())
        lines.append(f"best trial {b['number']}: val {r['metric']} {_fmt(b['value'])} ({shown})")
        lines.append(f"best recipe: {b['recipe']}  (run: {b['run']})")
    else:
        lines.append("no complete trial yet")
    if r.get("plots"):
        lines.append("plots: " + ", ".join(r["plots"]))
    return "\n".join(lines)
