"""The trainer: one explicit loop, readable top to bottom (T1).

    for each epoch:
        for each batch:   batch augment → task step: forward + loss (autocast) → backward → clip →
                          optimizer step → schedule step → weight EMA → callbacks
        validate (the task's evaluation, eval mode, no_grad) → epoch record → best tracking → callbacks

What differs between problems — how a batch is formed and moved, the step, the metrics and their
directions, evaluation — belongs to the task (:mod:`trainlab.tasks.base`); everything else
(logging, checkpoints, early stopping, the doctor) is a callback. The trainer owns the state that
must survive an interruption and hands it to the checkpointer as tensors + JSON.
"""
from __future__ import annotations

import contextlib
import copy
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.batch import build_batch_transforms
from ..data.bundle import batch_size_note
from ..data.loader import BatchLoader
from ..data.transforms import build_transforms
from ..device import autocast, resolve_device
from ..errors import RecipeError, RunError
from ..losses import penalized_parameters, weight_penalty
from ..tasks.base import Task, scalar_metrics
from ..optim.ema import WeightEMA
from ..optim.optimizers import build_optimizer, train_batch_size
from ..optim.schedules import build_schedule, optimizer_steps_per_epoch
from . import checkpoint as ckpt
from .callbacks import EVENTS, Callback, overrides
from ..rng import generator, rng_state, set_rng_state
from .writer import DurableWriter



# Signals that stop a run the way the first Ctrl-C does: finish the step, save, stop. SIGTERM is
# what Kubernetes, SLURM and spot instances send before a kill, SIGHUP a closed terminal.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(Exception):
    """Raised out of fit() after Ctrl-C, SIGTERM or SIGHUP, once a checkpoint has been saved."""

    run_dir = None  # set by trainlab.fit so the CLI can say how to resume

    def __init__(self, where: str, signum: int = signal.SIGINT):
        super().__init__(where)
        # a callback that sets trainer._interrupt = True asks for what Ctrl-C does
        self.signum = int(signal.SIGINT) if isinstance(signum, bool) else int(signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended: 130 for
        Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
        return 128 + self.signum


@dataclass
class TrainState:
    epoch: int = 0  # index of the epoch in progress (0-based); equals epochs done between epochs
    batch: int = 0  # batches of that epoch already trained
    step: int = 0  # optimizer steps taken in the whole run
    history: list[dict[str, Any]] = field(default_factory=list)  # epoch records and events
    best_value: float | None = None
    best_epoch: int | None = None
    improved: bool = False
    stop_reason: str | None = None


def check_watched_metric(field: str, name: str, task, has_val: bool, split: str | None = None) -> None:
    """Raise a RecipeError unless metric ``name`` (watched by recipe ``field``) will be in the epoch
    record: ``train_<m>`` / ``val_<m>`` for the task's train_metrics / val_metrics, and a val_
    metric only with a validation split. With ``split`` ("train" or "val"), ``name`` is a bare
    metric of that split (kfold's ``--metric accuracy``).
    """
    if split is None:
        known = [f"train_{n}" for n in task.train_metrics] + [f"val_{n}" for n in task.val_metrics]
        full = name
    else:
        known = list(task.train_metrics if split == "train" else task.val_metrics)
        full = f"{split}_{name}"
    if name not in known:
        from ..errors import unknown_name

        raise unknown_name("metric", name, known, field)
    if full.startswith("val_") and not has_val:
        raise RecipeError(f"{field}: {name!r} needs a validation split (data.split.val > 0), or watch a train_ metric")


def schedule_monitor_mode(recipe, task) -> str | None:
    """The direction of a plateau schedule's monitor, as the task declares it (None otherwise)."""
    sched = recipe.schedule
    return task.metric_mode(sched.monitor) if sched.name == "plateau" else None


def default_monitor(task, has_val: bool) -> str:
    """The metric the best checkpoint follows without early stopping: the task's, on the training
    split when there is no validation split."""
    return task.monitor if has_val else task.monitor.replace("val_", "train_", 1)


def check_watched_metrics(recipe, task, has_val: bool) -> None:
    """Every metric ``recipe`` watches must exist in the epoch record, checked before training (by
    the trainer, and by `trainlab schedule`, which builds no trainer): a plateau schedule's monitor,
    then the early-stopping monitor (without early stopping, the default monitor). The schedule's
    comes first so that `trainlab schedule`, which is about the schedule, names it when both fail.
    """
    stop = recipe.train.early_stop
    watched = []
    if recipe.schedule.name == "plateau":
        watched.append(("schedule.monitor", recipe.schedule.monitor))
    watched.append(("train.early_stop.monitor", (stop and stop.monitor) or default_monitor(task, has_val)))
    for key, name in watched:
        check_watched_metric(key, name, task, has_val)


def loader_hooks(task) -> dict[str, Any]:
    """The BatchLoader hooks (collate, sample order) ``task`` overrides; the defaults are left to
    the loader, which keeps its in-memory fast path for them."""
    hooks: dict[str, Any] = {}
    if type(task).collate is not Task.collate:
        hooks["collate_fn"] = task.collate
    if type(task).order is not Task.order or task.recipe.data.sampler != "shuffle":
        hooks["order"] = task.order
    return hooks


def eval_loader(source, batch_size: int, recipe, device: torch.device, task=None,
                shard: tuple[int, int] | None = None) -> BatchLoader | None:
    """Batches of an evaluation split in a fixed order, every sample kept; None for an absent or
    empty split. (An in-memory split is gathered on ``device`` without workers, see BatchLoader.)
    ``shard`` (rank, world size): this rank's piece of every batch (torchrun, T7)."""
    if source is None or len(source) == 0:
        return None
    return BatchLoader(source, batch_size, seed=recipe.seed, shuffle=False, workers=recipe.data.workers,
                       drop_singleton=False, device=device, shard=shard,
                       **(loader_hooks(task) if task is not None else {}))


class Trainer:
    def __init__(self, recipe, bundle, task, model: torch.nn.Module, callbacks: list[Callback] = (), dist=None):
        self.recipe = recipe
        self.bundle = bundle
        self.task = task
        # this process's place among torchrun's (engine.distributed.Context), None in one process
        self.dist = dist
        self.ddp = None
        if dist is None:
            self.device = resolve_device(recipe.train.device)
            self.model = model.to(self.device)
        else:
            from . import distributed

            self.device = distributed.device_for(recipe, dist)
            self.model, self.ddp = distributed.wrap(model.to(self.device), self.device, recipe.train.sync_batchnorm)
        self.forward_model = self._maybe_compile(self.ddp if self.ddp is not None else self.model)
        data, train = recipe.data, recipe.train
        shard = (dist.rank, dist.world) if dist is not None else None

        task.check_data(bundle)
        batch_size = train_batch_size(recipe, len(bundle.train))  # 'full' or optim gd: whole split
        note = batch_size_note(data.batch_size, len(bundle.train),
                               "windows" if bundle.info.kind == "sequence" else "samples")
        if note and (dist is None or dist.main):  # more than the split: one batch of all of it (issue 22)
            print(note, file=sys.stderr)
        cuda = self.device.type == "cuda"
        self.train_loader = BatchLoader(
            bundle.train, batch_size, seed=recipe.seed, shuffle=True,
            transform=build_transforms(data.augment, bundle.info, data.forbid),
            workers=data.workers, pin_memory=cuda, device=self.device, shard=shard, **loader_hooks(task),
        )
        if self.train_loader.batch_size == 1 and any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.model.modules()
        ):
            raise RecipeError(
                "data.batch_size: BatchNorm cannot train on batches of one sample; "
                "use model.norm=layer, group or none for single-sample SGD"
            )
        self.eval_batch_size = task.eval_batch_size(batch_size)
        # Under torchrun, each rank evaluates a piece of every batch where the task's meter holds
        # sums that add up over the ranks; other meters (mAP, retrieval) see the whole split.
        self.eval_shard = None
        if dist is not None:
            from .distributed import reduce_meter, summable

            if type(task).evaluate is Task.evaluate and summable(task.eval_meter()):
                self.eval_shard = shard
                task.reduce_meter = reduce_meter
        self.eval_loaders: dict[str, BatchLoader | None] = {
            name: eval_loader(getattr(bundle, name), self.eval_batch_size, recipe, self.device, task, self.eval_shard)
            for name in ("val", "test")
        }
        self.batch_transform = build_batch_transforms(data.batch_augment, bundle.info)

        self.accumulate = train.accumulate
        self.steps_per_epoch = (optimizer_steps_per_epoch(recipe, len(bundle.train)) if dist is None
                                else math.ceil(len(self.train_loader) / self.accumulate))
        self.optimizer = build_optimizer(recipe.optim, self.model)
        self._check_monitor()  # before anything asks the task for a watched metric's direction
        self.schedule = build_schedule(recipe.schedule, recipe.optim.lr, self.steps_per_epoch, train.epochs,
                                       monitor_mode=schedule_monitor_mode(recipe, task))
        self.ema = WeightEMA(self.model, train.ema.decay, train.ema.warmup) if train.ema else None
        loss = recipe.loss
        self.penalty_params = penalized_parameters(self.model) if (loss.l1 or loss.l2) else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]

        stop = train.early_stop
        self.monitor = (stop and stop.monitor) or default_monitor(task, self.val_loader is not None)
        self.monitor_mode = task.metric_mode(self.monitor, stop.mode if stop else "auto")
        self.min_delta = stop.min_delta if stop else 0.0

        self.state = TrainState()
        self.meter = task.train_meter()
        self.last_grad_norm: float | None = None
        self.last_lr: float | None = None
        self.at_step_boundary = True
        self.printed_events = 0
        self.writer = DurableWriter()
        self.callbacks: list[Callback] = []
        self.add_callbacks(callbacks)
        self._interrupt: int | None = None  # the stop signal received, if any
        self._epoch_t0 = time.perf_counter()
        # under torchrun: a signal this rank received, acted on once every rank knows (_agree), and
        # rank 0's wall-clock save decision (set by the Checkpointer), shared the same way
        self._local_signal: int | None = None
        self.save_clock = None
        self.clock_save_due = False
        if dist is not None and not dist.main:
            # Each rank draws dropout from its own stream; rank 0 keeps the run's (the model's
            # initialisation, drawn before, is the same everywhere and DDP broadcasts rank 0's).
            from ..rng import seed_everything
            from .distributed import rank_seed

            seed_everything(rank_seed(recipe.seed, dist.rank))

    # ------------------------------------------------------------------------------- set-up
    def _maybe_compile(self, model):
        if not self.recipe.train.compile:
            return model
        from .compile import CompiledForward  # falls back to eager at the first failing forward

        return CompiledForward(model)

    def _check_monitor(self):
        """Every metric a recipe watches must exist in the epoch record, checked before training."""
        check_watched_metrics(self.recipe, self.task, has_val=self.val_loader is not None)

    # --------------------------------------------------------------------------------- events
    def add_callbacks(self, callbacks) -> None:
        """Append callbacks; each is called only for the events it overrides."""
        self.callbacks.extend(callbacks)
        self._handlers = {e: [cb for cb in self.callbacks if overrides(cb, e)] for e in EVENTS}

    def _emit(self, event: str, *args) -> None:
        for cb in self._handlers[event]:
            getattr(cb, event)(self, *args)

    def request_stop(self, reason: str) -> None:
        if self.state.stop_reason is None:
            self.state.stop_reason = reason

    def log_event(self, event: str, message: str, **data: Any) -> None:
        """Record an action (optimizer switch, doctor remedy) in the history and metrics.jsonl."""
        self.state.history.append(
            {"event": event, "epoch": self.state.epoch + 1, "step": self.state.step, "message": message, **data}
        )

    # ------------------------------------------------------------------------------ the loop
    def fit(self) -> TrainState:
        """Train until ``train.epochs`` or a stop request; raises Interrupted after Ctrl-C."""
        try:
            self._emit("on_fit_start")
            self.schedule.apply(self.optimizer, self.state.step)
            with self._signal_guard():
                try:
                    while self.state.epoch < self.recipe.train.epochs and self.state.stop_reason is None:
                        if self._interrupt:  # came during the last epoch's validation: stop before the next
                            raise Interrupted(f"epoch {self.state.epoch + 1}, batch {self.state.batch}",
                                              self._interrupt)
                        self.train_epoch()
                except Interrupted:
                    self._emit("on_interrupt")
                    raise
            self._emit("on_fit_end")
        except BaseException:
            with contextlib.suppress(Exception):  # keep the original error, not a follow-up one
                self.close()
            raise
        self.close()
        return self.state

    def train_epoch(self) -> dict[str, Any]:
        st, model, task = self.state, self.model, self.task
        model.train()
        if st.batch == 0:
            self.meter = task.train_meter()
            self._epoch_t0 = time.perf_counter()
        self._emit("on_epoch_start")
        n_batches = len(self.train_loader)
        accumulate = self.accumulate
        for batch in self.train_loader.batches(st.epoch, st.batch):
            batch = self.to_device(batch)
            if self.batch_transform is not None:
                batch = self.batch_transform(batch, self._batch_generator())
            if self.ddp is None:
                outputs, loss, total = self.compute_loss(batch)
                if accumulate > 1:
                    # Average over the batches of this optimizer step; the epoch's last group may be short.
                    group = min(accumulate, n_batches - (st.batch // accumulate) * accumulate)
                    total = total / group
                total.backward()
            else:
                outputs, loss = self._distributed_backward(batch, n_batches)
            st.batch += 1
            self.at_step_boundary = st.batch % accumulate == 0 or st.batch == n_batches
            if self.at_step_boundary:
                self._emit("on_after_backward")
                self.optimizer_step()
                if self.dist is not None:
                    self._agree()
            task.train_update(self.meter, outputs, batch, loss)
            self._emit("on_batch_end", batch, outputs, loss)
            if self.at_step_boundary and (self._interrupt or st.stop_reason):
                if self._interrupt:
                    raise Interrupted(f"epoch {st.epoch + 1}, batch {st.batch}", self._interrupt)
                return self.end_epoch(partial=st.batch < n_batches)
        return self.end_epoch()

    def _distributed_backward(self, batch: dict[str, Any], n_batches: int) -> tuple[Any, torch.Tensor]:
        """Forward and backward of this rank's piece of the batch (torchrun): gradients are averaged
        over the ranks at the last batch of an optimizer step only (DDP's no_sync before it), and a
        piece of a short batch weighs by its share of the batch (BatchLoader.shard_weight)."""
        st, accumulate = self.state, self.accumulate
        boundary = (st.batch + 1) % accumulate == 0 or st.batch + 1 == n_batches
        with contextlib.nullcontext() if boundary else self.ddp.no_sync():
            outputs, loss, total = self.compute_loss(batch)
            if accumulate > 1:
                total = total / min(accumulate, n_batches - (st.batch // accumulate) * accumulate)
            weight = self.train_loader.shard_weight(st.batch)
            if weight != 1.0:
                total = total * weight
            total.backward()
        return outputs, loss

    def _agree(self) -> None:
        """Every rank learns whether any of them received a stop signal, and rank 0's wall-clock
        save decision, at the same optimizer step (torchrun): they stop and save together."""
        from .distributed import agree

        clock = int(bool(self.dist.main and self.save_clock is not None and self.save_clock()))
        signum, self.clock_save_due = agree([self._local_signal or 0, clock])
        if signum and self._interrupt is None:
            self._interrupt = signum
        self.clock_save_due = bool(self.clock_save_due)

    def compute_loss(self, batch: dict[str, Any]) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """(outputs, task loss, loss + weight penalty) of one batch, under autocast."""
        with self.autocast():
            outputs, loss = self.task.step(self.forward_model, batch)
        total = loss
        if self.penalty_params is not None:
            total = loss + weight_penalty(self.penalty_params, self.recipe.loss.l1, self.recipe.loss.l2)
        return outputs, loss, total

    def clip_gradients(self) -> None:
        """Clip by value, then by global norm (O7); the norm before clipping is kept for callbacks."""
        train = self.recipe.train
        if train.grad_clip_value is not None:
            torch.nn.utils.clip_grad_value_(self.params, train.grad_clip_value)
        if train.grad_clip is not None:
            self.last_grad_norm = torch.nn.utils.clip_grad_norm_(self.params, train.grad_clip, foreach=True)

    def optimizer_step(self) -> None:
        self.clip_gradients()
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.schedule.apply(self.optimizer, self.state.step)
        if self.ema is not None:
            self.ema.update(self.model)

    def end_epoch(self, partial: bool = False) -> dict[str, Any]:
        """Validate, write the epoch record, track the best value and tell the callbacks.

        ``partial`` marks an epoch cut short by a stop request (e.g. a doctor remedy).
        """
        st = self.state
        train = self.task.train_summary(self.meter if self.dist is None else self._global_meter())
        record: dict[str, Any] = {"epoch": st.epoch + 1, "step": st.step,
                                  "optimizer": getattr(self.optimizer, "trainlab_name", "?"),
                                  # the LR of the epoch's last step, not the one set for the next
                                  "lr": self.last_lr if self.last_lr is not None else self.optimizer.param_groups[0]["lr"]}
        if partial:
            record["partial"] = True
        record.update({f"train_{k}": v for k, v in train.items()})
        if self.val_loader is not None:
            if self.dist is not None:
                from .distributed import sync_buffers

                sync_buffers(self.model)
            val = self.evaluate("val")
            self._emit("on_validation_end", val)
            record.update({f"val_{k}": v for k, v in scalar_metrics(val).items() if k != "n"})
        record["time_s"] = round(time.perf_counter() - self._epoch_t0, 4)
        st.history.append(record)
        st.epoch += 1
        st.batch = 0
        self._track_best(record)
        self.schedule.observe(st.epoch, record)
        self.schedule.apply(self.optimizer, st.step)  # a reactive schedule's decision takes effect now
        with self.writer.holding():  # the files of this epoch go to disk after every snapshot is taken
            self._emit("on_epoch_end", record)
        return record

    def _global_meter(self):
        """A training meter holding the sums of every rank's meter (torchrun); the same on each."""
        from .distributed import gather, sum_states

        meter = self.task.train_meter()
        meter.load(sum_states(gather(self.meter.state())))
        return meter

    def _track_best(self, record: dict[str, Any]) -> None:
        st = self.state
        value = record.get(self.monitor)
        st.improved = False
        if value is None or not math.isfinite(value):
            return
        better = (
            st.best_value is None
            or (self.monitor_mode == "min" and value < st.best_value - self.min_delta)
            or (self.monitor_mode == "max" and value > st.best_value + self.min_delta)
        )
        if better:
            st.best_value, st.best_epoch, st.improved = value, record["epoch"], True

    # ---------------------------------------------------------------------------- evaluation
    @property
    def val_loader(self) -> BatchLoader | None:
        return self.eval_loaders["val"]

    @property
    def test_loader(self) -> BatchLoader | None:
        return self.eval_loaders["test"]

    def split_loader(self, split: str) -> BatchLoader | None:
        """The evaluation loader of ``split``; a training split read for evaluation (a gallery)
        gets one without augmentation, made when first asked for."""
        if split not in self.eval_loaders:
            self.eval_loaders[split] = eval_loader(getattr(self.bundle, split), self.eval_batch_size, self.recipe,
                                                   self.device, self.task)
        return self.eval_loaders[split]

    def evaluate(self, split: str, use_ema: bool | None = None) -> dict[str, Any]:
        """The task's metrics of ``split`` (EMA weights if configured), see :meth:`Task.evaluate`."""
        use_ema = self.ema is not None and self.recipe.train.ema.evaluate if use_ema is None else use_ema
        loaders = {name: self.split_loader(name) for name in self.task.eval_splits(split)}
        with self.ema_weights() if use_ema else contextlib.nullcontext():
            return self.task.evaluate(self.model, loaders, split, self.device, self.recipe.train.amp)

    @contextlib.contextmanager
    def ema_weights(self):
        """Temporarily swap the EMA-averaged parameters into the model."""
        if self.ema is None or self.ema.steps == 0:
            yield
            return
        saved = {k: p.detach().clone() for k, p in self.model.named_parameters()}
        self.ema.copy_to(self.model)
        try:
            yield
        finally:
            with torch.no_grad():
                for k, p in self.model.named_parameters():
                    p.copy_(saved[k])

    # ------------------------------------------------------------------------------- devices
    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.task.to_device(batch, self.device)

    def autocast(self):
        return autocast(self.device, self.recipe.train.amp)

    def _batch_generator(self) -> torch.Generator:
        return generator(self.recipe.seed, "batch", self.state.epoch, self.state.batch, device=self.device)

    # ------------------------------------------------------------------------- optimizer swap
    def switch_optimizer(self, name: str, lr: float | None = None, momentum: float | None = None) -> None:
        """Replace the optimizer (Adam → SGD, O5); the schedule goes on multiplying the new base LR."""
        update: dict[str, Any] = {"name": name}
        if lr is not None:
            update["lr"] = lr
        if momentum is not None:
            update["momentum"] = momentum
        cfg = self.recipe.optim.model_copy(update=update)
        self.optimizer = build_optimizer(cfg, self.model, name=name, lr=cfg.lr)
        self.optimizer.trainlab_lr = cfg.lr
        self.optimizer.trainlab_momentum = cfg.momentum
        self.schedule.apply(self.optimizer, self.state.step)

    # ---------------------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to continue exactly from here, as (tensors, JSON state).

        Under torchrun every rank calls it at the same step (it gathers their meters and generator
        states); rank 0 gets the checkpoint, the others (None, None)."""
        st = self.state
        meter, ranks = self.meter.state(), None
        if self.dist is not None:
            from .distributed import gather, sum_states

            parts = gather({"meter": meter, "rng": _rng_json()})
            if not self.dist.main:
                return None, None
            meter, ranks = sum_states([part["meter"] for part in parts]), parts
        tensors = ckpt.with_prefix(self.model.state_dict(), "model")
        opt_tensors, opt_meta = ckpt.optimizer_to_checkpoint(self.optimizer)
        tensors.update(ckpt.with_prefix(opt_tensors, "optim"))
        rng_tensors, rng_meta = rng_state()
        tensors.update(ckpt.with_prefix(rng_tensors, "rng"))
        if self.ema is not None:
            tensors.update(ckpt.with_prefix(self.ema.state_tensors(), "ema"))
        state = {
            "kind": "last",
            "epoch": st.epoch, "batch": st.batch, "step": st.step,
            "best": {"value": st.best_value, "epoch": st.best_epoch, "monitor": self.monitor},
            "stop_reason": st.stop_reason,
            "history": st.history,
            "meter": meter,
            "optimizer": {"name": getattr(self.optimizer, "trainlab_name", self.recipe.optim.name),
                          "lr": getattr(self.optimizer, "trainlab_lr", None),
                          "momentum": getattr(self.optimizer, "trainlab_momentum", None), **opt_meta},
            "schedule": self.schedule.state_dict(),
            "ema_steps": self.ema.steps if self.ema is not None else 0,
            # the LR of the last step: an epoch resumed at its very end logs it, not the next one
            "last_lr": self.last_lr,
            "rng": rng_meta,
            "callbacks": {cb.name: cb_state for cb in self.callbacks if (cb_state := cb.state_dict())},
            "info": self.bundle.info.to_dict(),
            "time_s": time.perf_counter() - self._epoch_t0,
        }
        if ranks is not None:  # each rank's meter and generators (the meter above is their sum)
            state["world_size"] = self.dist.world
            state["ranks"] = ranks
        return tensors, state

    def eval_weights_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The weights evaluation uses (EMA-averaged if configured), for ``best.safetensors``.

        The tensors are already CPU copies (:func:`checkpoint.snapshot`, taken while the EMA
        weights are swapped in): save them with ``copied=True``.
        """
        use_ema = self.ema is not None and self.recipe.train.ema.evaluate
        with self.ema_weights() if use_ema else contextlib.nullcontext():
            tensors = ckpt.with_prefix(ckpt.snapshot(self.model.state_dict()), "model")
        st = self.state
        state = {"kind": "best", "epoch": st.best_epoch, "step": st.step,
                 "best": {"value": st.best_value, "epoch": st.best_epoch, "monitor": self.monitor},
                 "info": self.bundle.info.to_dict()}
        return tensors, state

    def check_restorable(self, tensors: dict[str, torch.Tensor], state: dict[str, Any], source: str) -> None:
        """Raise a one-line RunError, changing nothing, unless the ``last`` checkpoint (its JSON
        ``state`` already checked by :func:`state_schema.check_state`) fits this trainer: the data
        position within this recipe's epochs, the data it describes, the tensors of the model, the
        optimizer, the RNG and the EMA, and the meter and schedule states."""
        from ..registry import OPTIMIZERS
        from .state_schema import check_positions, info_mismatch

        check_positions(state, source, len(self.train_loader), self.steps_per_epoch, self.accumulate)
        wrong = info_mismatch(state["info"], self.bundle.info.to_dict(), source)
        if wrong is not None:
            raise wrong
        ckpt.check_model_weights(self.model, ckpt.split_prefix(tensors, "model"), source)
        if state["optimizer"]["name"] not in OPTIMIZERS:
            raise RunError(f"checkpoint {source}: state.optimizer.name: unknown optimizer {state['optimizer']['name']!r}")
        ckpt.check_optimizer_tensors(self.optimizer, ckpt.split_prefix(tensors, "optim"), state["optimizer"], source)
        ckpt.check_rng_tensors(ckpt.split_prefix(tensors, "rng"), source)
        if self.ema is not None:
            ckpt.check_like(self.ema.shadow, ckpt.split_prefix(tensors, "ema"), "ema", source)
        for what, load in (("meter", self.task.train_meter().load),
                           ("schedule", copy.deepcopy(self.schedule).load_state_dict)):
            try:  # on fresh objects: the trainer's own change only once everything passed
                load(state.get(what, {}))
            except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as err:
                raise RunError(f"checkpoint {source}: state.{what}: does not fit this recipe's {what} ({err!r})") from None

    def restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any], source: str) -> None:
        """Continue from a ``last`` checkpoint written by :meth:`checkpoint_state`, after
        :meth:`check_restorable` (nothing changes when it fails)."""
        self.check_restorable(tensors, state, source)
        ckpt.load_model_weights(self.model, ckpt.split_prefix(tensors, "model"), source)
        opt = state["optimizer"]
        if opt["name"] != getattr(self.optimizer, "trainlab_name", None):
            self.switch_optimizer(opt["name"], opt.get("lr"), opt.get("momentum"))
        try:
            ckpt.optimizer_from_checkpoint(self.optimizer, ckpt.split_prefix(tensors, "optim"), opt)
        except (ValueError, KeyError, IndexError) as err:
            raise RunError(f"checkpoint {source}: its optimizer state does not fit this recipe ({err})") from None
        self.schedule.load_state_dict(state.get("schedule", {}))
        if self.ema is not None:
            self.ema.load_state(ckpt.split_prefix(tensors, "ema"), state.get("ema_steps", 0))
        st = self.state
        st.epoch, st.batch, st.step = state["epoch"], state["batch"], state["step"]
        st.history = list(state["history"])
        st.best_value, st.best_epoch = state["best"]["value"], state["best"]["epoch"]
        st.stop_reason = state.get("stop_reason")
        self.last_lr = state.get("last_lr")
        self.meter = self.task.train_meter()
        self.meter.load(state["meter"])
        self.printed_events = len(st.history)
        saved = state.get("callbacks", {})
        for cb in self.callbacks:
            if cb.name in saved:
                try:
                    cb.load_state_dict(saved[cb.name])
                except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
                    raise RunError(f"checkpoint {source}: state.callbacks.{cb.name}: does not fit the {cb.name} "
                                   f"callback ({err!r})") from None
        set_rng_state(ckpt.split_prefix(tensors, "rng"), state["rng"])
        if self.dist is not None:
            self._restore_rank(state, source)

    def _restore_rank(self, state: dict[str, Any], source: str) -> None:
        """A torchrun resume: each rank takes back its own meter and generator states from a
        checkpoint of as many ranks (state.ranks). Otherwise rank 0 keeps the sum of the meters
        restored above and the run's generators, and rank r > 0 starts an empty meter and generators
        seeded from (seed, rank, step): the same batches, other dropout draws than an unbroken run."""
        from ..rng import derive_seed, seed_everything

        r, ranks = self.dist.rank, state.get("ranks")
        if isinstance(ranks, list) and len(ranks) == self.dist.world and state.get("world_size") == self.dist.world:
            try:
                self.meter = self.task.train_meter()
                self.meter.load(ranks[r]["meter"])
                _set_rng_json(ranks[r]["rng"])
            except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as err:
                raise RunError(f"checkpoint {source}: state.ranks[{r}]: not the meter and generator state of rank {r} "
                               f"({err!r})") from None
        elif r > 0:
            self.meter = self.task.train_meter()
            seed_everything(derive_seed(self.recipe.seed, "rank", r, "resumed", self.state.step))

    # ------------------------------------------------------------------- Ctrl-C, SIGTERM, SIGHUP
    @contextlib.contextmanager
    def _signal_guard(self):
        """First stop signal (Ctrl-C, SIGTERM, SIGHUP): finish the current step, save, stop.
        A second one acts as it would without trainlab (Ctrl-C: KeyboardInterrupt; SIGTERM: the
        process ends at once). Loader workers leave these signals to this process (their
        worker_init_fn ignores them), for a signal sent to the whole process group (a terminal's
        Ctrl-C, SLURM's scancel) reaches them too."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        # under torchrun a rank keeps the signal to itself until every rank knows it (_agree)
        attr = "_interrupt" if self.dist is None else "_local_signal"

        def handler(signum, frame):
            if getattr(self, attr) is None:
                setattr(self, attr, signum)
            for sig, old in previous.items():
                signal.signal(sig, old)

        previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def close(self) -> None:
        """Stop loader workers and wait until every file handed to the writer is on disk."""
        for loader in (self.train_loader, *self.eval_loaders.values()):
            if loader is not None:
                loader.close()
        self.writer.close()


def _rng_json() -> dict[str, Any]:
    """This process's generator states as JSON (a torchrun rank's entry in a checkpoint)."""
    tensors, meta = rng_state()
    return {**meta, **{k: v.tolist() for k, v in tensors.items()}}


def _set_rng_json(saved: dict[str, Any]) -> None:
    tensors = {k: torch.tensor(v, dtype=torch.uint8) for k, v in saved.items() if k == "torch" or k.startswith("cuda")}
    set_rng_state(tensors, {"numpy": saved["numpy"], "python": saved["python"]})


def evaluate_split(model, task, loader: BatchLoader, device: torch.device, amp: bool) -> dict[str, Any]:
    """The task's metrics over every batch of ``loader`` (a one-split :meth:`Task.evaluate`)."""
    return task.evaluate(model, {"eval": loader}, "eval", device, amp)
