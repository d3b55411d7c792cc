"""The library entry points the CLI is a thin layer over: fit, evaluate, predict."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .errors import RunError
from .recipe import Recipe, check_names, load_recipe, override_pairs
from .lock import acquire as acquire_lock
from .run import Run, check_writable_target, default_dir, open_run


def _merge_overrides(overrides, kwargs: dict[str, Any]):
    """List of "k=v" strings and/or keyword overrides (``train__epochs=5`` or ``**{"train.epochs": 5}``)."""
    merged = override_pairs(overrides)
    for key, value in kwargs.items():
        merged[key.replace("__", ".")] = value
    return merged


# What may change when a run is resumed: how long and how it is watched, where it runs, and how
# it is logged. Anything else (model, data, optimizer, seed...) would make the checkpoint describe
# a different run than its recipe.
RESUMABLE = ("train.epochs", "train.early_stop", "train.device", "train.threads", "train.progress",
             "train.checkpoint_every_steps", "train.checkpoint_every_minutes", "data.workers", "run.tensorboard",
             "run.plots")


def check_resume_overrides(pairs: dict[str, Any]) -> None:
    for key in pairs:
        if not any(key == k or key.startswith(k + ".") for k in RESUMABLE):
            raise RunError(
                f"{key}: cannot be changed when resuming (it would no longer be the same run); "
                f"allowed: {', '.join(RESUMABLE)}. Start a new run instead"
            )


def finished_line(run: Run, state: dict[str, Any], epochs: int) -> str | None:
    """The line saying that ``run`` (its last checkpoint's ``state``) is finished, or None.

    A run is finished when it was stopped (early stopping, the doctor) or has trained ``epochs``
    epochs (the recipe's, after any ``train.epochs`` override: raising it trains on), and its
    summary and report are written: a run killed while finishing is finished by resuming it.
    """
    stopped = state.get("stop_reason")
    if not (stopped or (state["epoch"] >= epochs and state["batch"] == 0)):
        return None
    if not (run.summary_path.exists() and run.report_path.exists()):
        return None
    done, best = state["epoch"], (state.get("best") or {}).get("epoch")
    how = f"{done} of {epochs} epochs" if done <= epochs else f"{done} epochs"
    if best is not None:
        how += f", best epoch {best}"
    if stopped:
        how += f"; {stopped}"
    hint = "" if stopped else f" (train.epochs=N with N > {done} trains on)"
    return f"{run.dir}: finished ({how}); nothing to resume{hint}"


def _identity(path: Path) -> tuple[int, int, int]:
    """What changes when a checkpoint is replaced (it is renamed into place: a new inode)."""
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def check_weights_fit(recipe: Recipe, tensors, state: dict[str, Any], source: str) -> None:
    """Raise a RunError naming the keys when the checkpoint's model weights do not fit ``recipe``'s
    model (a recipe.yaml edited by hand), as restoring would; builds the model, never the data."""
    import torch

    from .data.bundle import DataInfo
    from .engine.checkpoint import load_model_weights, split_prefix
    from .models import build_model
    from .tasks import build_task

    check_names(recipe)
    info = DataInfo.from_dict(state["info"])
    with torch.random.fork_rng(devices=[]):  # the model's initialisation leaves the caller's stream alone
        model = build_model(recipe, build_task(recipe, info).model_info(info), load_weights=False)
    load_model_weights(model, split_prefix(tensors, "model"), source)


def create_run(path: Path, recipe: Recipe, force: bool):
    """The new run at ``path`` and its lock (trainlab.lock: one writer from the first write on);
    the lock is released again when the run cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"run.dir: cannot create {str(path)!r} ({err.strerror})") from None
    lock = acquire_lock(path, "fit --force" if force else "fit")
    try:
        return Run.create(recipe, path, force=force), lock
    except BaseException:
        lock.release()
        raise


def build_components(recipe: Recipe, callbacks=(), dist=None):
    """Data, task, model and trainer for ``recipe``; nothing is written to disk."""
    import torch

    from .data import build_data
    from .rng import seed_everything
    from .engine.trainer import Trainer
    from .models import build_model
    from .tasks import build_task

    check_names(recipe)
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    seed_everything(recipe.seed)
    bundle = build_data(recipe)
    task = build_task(recipe, bundle.info)
    model = build_model(recipe, task.model_info(bundle.info), bundle.mean, bundle.std, whiten=bundle.whiten)
    if recipe.distill is not None:
        from .distill import load_teacher

        task.teacher = load_teacher(recipe, bundle.info)
    return Trainer(recipe, bundle, task, model, list(callbacks), dist=dist)


def standard_callbacks(recipe: Recipe, run: Run, quiet: bool, steps_per_epoch: int | None = None) -> list:
    from .engine.callbacks import Checkpointer, EarlyStopping, MetricsLogger, ProgressPrinter, TensorBoardLogger

    cbs = []
    if recipe.train.snapshots and steps_per_epoch is not None:  # T4: a snapshot at each cycle's end
        from .engine.callbacks import SnapshotSaver
        from .optim.schedules import restart_ends

        cbs.append(SnapshotSaver(run.checkpoints, restart_ends(recipe.schedule, steps_per_epoch, recipe.train.epochs)))
    if recipe.optim.switch is not None:
        from .engine.optimizer_switch import OptimizerSwitch

        cbs.append(OptimizerSwitch(recipe.optim.switch, recipe.optim.betas[1]))
    if recipe.train.early_stop is not None:
        cbs.append(EarlyStopping(recipe.train.early_stop.patience))
    if not quiet:
        cbs.append(ProgressPrinter(live=recipe.train.progress))
    if recipe.run.tensorboard:
        cbs.append(TensorBoardLogger(run.tensorboard))
    from .report.live import LiveReport

    cbs.append(LiveReport(run, recipe))  # V5: report.html shows the run so far at every epoch end
    if recipe.doctor is not None and recipe.doctor.enabled:
        from .doctor import Doctor

        cbs.append(Doctor(recipe.doctor, run, quiet=quiet, plots=recipe.run.plots))
    # After every callback that may log an event (the doctor's remedies, even at fit end), so that
    # metrics.jsonl holds them all; before the Checkpointer, which stays last to save their state.
    cbs.append(MetricsLogger(run.metrics_path))
    cbs.append(Checkpointer(run.checkpoints, recipe.train.checkpoint_every_steps, recipe.train.checkpoint_every_minutes))
    return cbs


def fit(
    recipe: str | Path | Recipe | dict | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    resume: str | Path | None = None,
    force: bool = False,
    quiet: bool = False,
    callbacks: list | None = None,
    dist_timeout: float | None = None,
    **kwargs: Any,
) -> Run:
    """Train a recipe and return its :class:`Run`.

    ``recipe`` is a built-in name, a YAML path, a dict or a Recipe (default ``digits-cnn``).
    Overrides come as ``["optim.lr=0.01"]``, as a mapping of dotted keys, or as keywords with
    ``__`` for dots (``train__epochs=5``). ``resume`` continues an interrupted run directory; a
    finished one (see :func:`finished_line`) is returned as it is, after one line saying so.
    Raises :class:`~trainlab.engine.trainer.Interrupted` after Ctrl-C, SIGTERM or SIGHUP (a checkpoint
    is saved). The run's lock (:mod:`trainlab.lock`) is held throughout: a second ``fit`` into the
    same run, resumed or forced, fails with a RunError naming this process.
    """
    import sys

    import torch

    from .device import default_threads, resolve_device
    from .engine.checkpoint import RESUME_KEYS, load_checkpoint
    from .engine.trainer import Interrupted

    t0 = time.perf_counter()
    state = None
    pairs = _merge_overrides(overrides, kwargs)
    if "WORLD_SIZE" in os.environ:  # started by torchrun: one rank of a data-parallel run (T7)
        from .engine.distributed import from_env

        ctx = from_env()
        if ctx is not None:
            return _fit_distributed(ctx, recipe, pairs, resume, force, quiet, callbacks, dist_timeout)
    lock = None  # one writer per run (trainlab.lock): held from before the first write to the end
    try:
        if resume is not None:
            run = open_run(resume)
            if recipe is not None:
                raise RunError("give either a recipe or --resume RUN, not both (the run holds its recipe)")
            check_resume_overrides(pairs)
            parent = load_recipe(run.recipe_path, pairs or None)
            if parent.train.bagging or parent.train.boosting:  # a folder of member runs (T4, T5)
                from .ensemble import fit_members

                return fit_members(parent, run.dir, fit, resume=True, quiet=quiet, overrides=pairs,
                                   callbacks=callbacks)
            last = run.checkpoints / "last.safetensors"
            seen = None
            # Read before locking, so that a finished run is left untouched (its lock file too), and
            # again under the lock where another writer changed the run in between.
            for locked in (False, True):
                if locked:
                    lock = acquire_lock(run.dir, "fit --resume")
                recipe_obj = load_recipe(run.recipe_path, pairs or None)
                if not last.exists() or seen == _identity(last):
                    continue
                seen = _identity(last)
                tensors, state = load_checkpoint(last, RESUME_KEYS)  # its JSON state checked by the schema
                done = finished_line(run, state, recipe_obj.train.epochs)
                if done:  # nothing to train, evaluate or write: the run stays as it is
                    check_weights_fit(recipe_obj, tensors, state, str(last))
                    if not quiet:
                        print(done)
                    return run
            if not last.exists():  # killed before its first checkpoint: start over in the same directory
                tensors = state = None
                if not quiet:
                    print(f"{run.dir} has no checkpoint yet: training from the start")
        else:
            recipe_obj = load_recipe(recipe, pairs or None)
            if recipe_obj.train.threads is None and resolve_device(recipe_obj.train.device).type == "cpu":
                # resolved now and kept in recipe.yaml: a resumed run computes with the same count
                recipe_obj.train.threads = default_threads()
                if recipe_obj.train.threads < torch.get_num_threads() and not quiet:
                    print(f"train.threads: {recipe_obj.train.threads} of {torch.get_num_threads()} (the other cores "
                          "are busy now; set train.threads to choose)", file=sys.stderr)
            target = Path(recipe_obj.run.dir) if recipe_obj.run.dir else default_dir(recipe_obj)
            check_writable_target(target, force)  # before the data is built; checked again under the lock
            if recipe_obj.train.bagging or recipe_obj.train.boosting:  # a folder of member runs (T4, T5)
                from .ensemble import fit_members

                return fit_members(recipe_obj, target, fit, force=force, quiet=quiet, callbacks=callbacks)
            run = Run(target)

        user_cbs = list(callbacks or [])
        trainer = build_components(recipe_obj, user_cbs)
        if resume is None:
            run, lock = create_run(run.dir, recipe_obj, force)
        trainer.add_callbacks(standard_callbacks(recipe_obj, run, quiet, trainer.steps_per_epoch))
        if state is not None:
            # checks every tensor and the data position first: a failure leaves the run as it was
            trainer.restore(tensors, state, str(last))  # callbacks' states too, so after add_callbacks
        if resume is not None:
            for stale in run.checkpoints.glob(".*.tmp-*"):  # left by a process killed during a save
                stale.unlink(missing_ok=True)
            if pairs:  # only once the checkpoint is known to fit the recipe
                from .atomic import write_text

                write_text(run.recipe_path, recipe_obj.to_yaml())
        if not quiet:
            print(f"report: {run.dir / 'report.html'} (rewritten at every epoch end: reload it in a browser)")
        try:
            trainer.fit()
        except Interrupted as err:
            err.run_dir = run.dir
            raise
        finish(run, trainer, time.perf_counter() - t0, quiet)
        return run
    finally:
        if lock is not None:
            lock.release()


def _fit_distributed(ctx, recipe, pairs: dict[str, Any], resume, force: bool, quiet: bool, callbacks,
                     timeout_s: float | None) -> Run:
    """One rank of ``torchrun ... trainlab fit`` (T7; engine/distributed.py says what changes).

    Rank 0 alone reads and writes the run directory (the lock, recipe.yaml, checkpoints, metrics,
    report): on a resume it sends the recipe and the last checkpoint to the others, so only its
    machine needs the run. Every rank checks the recipe before joining the group (the same error
    everywhere, nobody left waiting), then the ranks compare recipe hashes. A failure that only
    rank 0 sees (a run folder in use) is sent to the others, which stop quietly.
    """
    import tempfile

    import torch

    from .engine import distributed as D
    from .engine.callbacks import Checkpointer, EarlyStopping
    from .engine.checkpoint import RESUME_KEYS, load_checkpoint
    from .engine.trainer import Interrupted
    from .errors import TrainlabError

    t0 = time.perf_counter()

    def everywhere(err: TrainlabError) -> TrainlabError:
        err.every_rank = True  # the CLI prints it on rank 0 only
        return err

    def from_rank0(prepare):
        """``prepare()`` on rank 0, its result (or its error) on every rank."""
        result, error = None, None
        if ctx.main:
            try:
                result = prepare()
            except TrainlabError as err:
                error = err
        shared = D.broadcast({"result": result, "error": str(error) if error else None})
        if error is not None:
            raise everywhere(error)
        if shared["error"] is not None:
            raise everywhere(RunError(shared["error"]))
        return shared["result"]

    recipe_obj = None
    if resume is None:
        try:
            recipe_obj = load_recipe(recipe, pairs or None)
            D.check_recipe(recipe_obj, ctx.world)
        except TrainlabError as err:
            raise everywhere(err) from None
        if recipe_obj.train.threads is None:  # torchrun sets OMP_NUM_THREADS; the same on every rank
            recipe_obj.train.threads = torch.get_num_threads()
    D.setup(ctx, timeout_s or D.DEFAULT_TIMEOUT_S)
    lock, run, tensors, state = None, None, None, None
    try:
        with D.peer_failures(ctx):
            if resume is not None:
                def read_run():
                    nonlocal lock, run, tensors, state
                    run = open_run(resume)
                    if recipe is not None:
                        raise RunError("give either a recipe or --resume RUN, not both (the run holds its recipe)")
                    check_resume_overrides(pairs)
                    lock = acquire_lock(run.dir, "fit --resume")
                    base = run.recipe_path.read_text()
                    last = run.checkpoints / "last.safetensors"
                    if last.exists():
                        tensors, state = load_checkpoint(last, RESUME_KEYS)
                        done = finished_line(run, state, load_recipe(run.recipe_path, pairs or None).train.epochs)
                        if done:
                            if not quiet:
                                print(done)
                            return {"dir": str(run.dir), "finished": True}
                    elif not quiet:
                        print(f"{run.dir} has no checkpoint yet: training from the start")
                    return {"dir": str(run.dir), "recipe": base, "finished": False,
                            "checkpoint": last.read_bytes() if last.exists() else None}

                shared = from_rank0(read_run)
                run = run or Run(shared["dir"])
                if shared["finished"]:
                    return run
                import yaml

                try:
                    check_resume_overrides(pairs)
                    recipe_obj = load_recipe(yaml.safe_load(shared["recipe"]), pairs or None)
                    D.check_recipe(recipe_obj, ctx.world)
                except TrainlabError as err:
                    raise everywhere(err) from None
                if not ctx.main and shared["checkpoint"] is not None:
                    with tempfile.TemporaryDirectory() as tmp:  # the bytes rank 0 read, checked here the same way
                        path = Path(tmp) / "last.safetensors"
                        path.write_bytes(shared["checkpoint"])
                        tensors, state = load_checkpoint(path, RESUME_KEYS)
            try:
                D.check_same_recipe(recipe_obj)
            except TrainlabError as err:
                raise everywhere(err) from None
            if resume is None:
                def choose_dir():
                    target = Path(recipe_obj.run.dir) if recipe_obj.run.dir else default_dir(recipe_obj)
                    check_writable_target(target, force)
                    return str(target)

                run = Run(from_rank0(choose_dir))
            trainer = build_components(recipe_obj, list(callbacks or []), dist=ctx)
            if resume is None:
                def create():
                    nonlocal lock, run
                    run, lock = create_run(run.dir, recipe_obj, force)

                from_rank0(create)
            if ctx.main:
                trainer.add_callbacks(standard_callbacks(recipe_obj, run, quiet, trainer.steps_per_epoch))
            else:  # what changes training, and the checkpoint's gathering of every rank's state
                ranks_cbs = []
                if recipe_obj.optim.switch is not None:
                    from .engine.optimizer_switch import OptimizerSwitch

                    ranks_cbs.append(OptimizerSwitch(recipe_obj.optim.switch, recipe_obj.optim.betas[1]))
                if recipe_obj.train.early_stop is not None:
                    ranks_cbs.append(EarlyStopping(recipe_obj.train.early_stop.patience))
                ranks_cbs.append(Checkpointer(run.checkpoints, recipe_obj.train.checkpoint_every_steps,
                                              recipe_obj.train.checkpoint_every_minutes))
                trainer.add_callbacks(ranks_cbs)
            if state is not None:
                trainer.restore(tensors, state, str(run.checkpoints / "last.safetensors"))
            if ctx.main and resume is not None:
                for stale in run.checkpoints.glob(".*.tmp-*"):
                    stale.unlink(missing_ok=True)
                if pairs:
                    from .atomic import write_text

                    write_text(run.recipe_path, recipe_obj.to_yaml())
        last = run.checkpoints / "last.safetensors" if ctx.main else None
        try:
            with D.peer_failures(ctx, last):
                trainer.fit()
        except Interrupted as err:
            err.run_dir = run.dir
            raise
        if ctx.main:  # the final evaluation and the report: rank 0 alone, over whole splits
            trainer.task.reduce_meter, trainer.eval_shard = None, None
            for loader in trainer.eval_loaders.values():
                if loader is not None:
                    loader.shard = None
            finish(run, trainer, time.perf_counter() - t0, quiet)
        D.leave_together()  # the others wait for rank 0's report before they exit
        return run
    finally:
        if lock is not None:
            lock.release()


def finish(run: Run, trainer, wall_s: float, quiet: bool = False) -> dict[str, Any]:
    """Evaluate the final weights on val and test, then write summary.json, plots and report.md."""
    from .atomic import jsonable, write_json
    from .engine.checkpoint import load_checkpoint, load_model_weights, split_prefix
    from .report.html import environment, write_html_report
    from .tasks.base import scalar_metrics

    recipe = trainer.recipe
    stop = recipe.train.early_stop
    best_path = run.checkpoints / "best.safetensors"
    which = "last"
    if (stop is None or stop.restore_best) and best_path.exists():
        tensors, _ = load_checkpoint(best_path)
        load_model_weights(trainer.model, split_prefix(tensors, "model"), str(best_path))
        which, use_ema = "best", False  # best.safetensors already holds the evaluation weights
    else:
        use_ema = None
    val = trainer.evaluate("val", use_ema) if trainer.val_loader else None
    test = trainer.evaluate("test", use_ema) if trainer.test_loader else None
    st = trainer.state
    history = jsonable(st.history)  # what metrics.jsonl holds: non-finite values as None
    epochs = [r for r in history if "event" not in r]
    summary = {
        "name": recipe.name,
        "best_epoch": st.best_epoch,
        "monitor": trainer.monitor,
        "best_value": st.best_value,
        "epochs_run": len(epochs),
        "steps": st.step,
        "stop_reason": st.stop_reason,
        "checkpoint": which,
        "wall_s": round(wall_s, 3),
        "train_time_s": round(sum(r.get("time_s", 0.0) for r in epochs), 3),
        "class_names": trainer.task.model_info(trainer.bundle.info).class_names,
        "val": val,
        "test": test,
        "environment": environment(trainer.device),
    }
    if recipe.train.snapshots:  # T4: the cycle-end snapshots evaluated together
        from .ensemble import snapshot_summary

        summary["snapshot_ensemble"] = snapshot_summary(run, trainer)
    write_json(run.summary_path, summary)
    if recipe.run.plots:
        from .report.plots import plot_run

        plot_run(run, summary, epochs, trainer.task)
    if recipe.run.tensorboard:  # V2: filters, confusion matrix, augmentation preview, hparams + final metrics
        from .report.board import log_final

        log_final(run, recipe, trainer.model, trainer.task, trainer.bundle.info, summary)
    from .report.markdown import write_report

    sections = []
    if (run.dir / "doctor.json").exists():
        from .doctor.report import markdown_section

        sections = markdown_section(run)
    write_report(run, summary, recipe, history, trainer.task, sections)
    write_html_report(run, recipe, trainer.task, history, summary, sections)
    if not quiet:
        for name, m in (("val", val), ("test", test)):
            if m:
                print(f"{name}: " + "  ".join(f"{k} {v:.4f}" for k, v in scalar_metrics(m).items()
                                               if isinstance(v, float)))
        print(f"run: {run.dir}")
    return summary


def evaluate(run: str | Path | Run, split: str = "test", checkpoint: str = "best") -> dict[str, Any]:
    run = run if isinstance(run, Run) else open_run(run)
    return run.evaluate(split, checkpoint)


def predict(run: str | Path | Run, inputs, checkpoint: str = "best"):
    """``run.predict(inputs)``: a :class:`~trainlab.inputs.Prediction` with the fields probs,
    classes (predicted class per input), inputs (their names) and class_names."""
    run = run if isinstance(run, Run) else open_run(run)
    return run.predict(inputs, checkpoint)
