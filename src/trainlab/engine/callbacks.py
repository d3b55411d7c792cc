"""Callbacks: everything around the loop that is not the loop.

The event set is small and fixed, Keras-style: ``on_fit_start``, ``on_epoch_start``,
``on_after_backward`` (gradients ready, before clipping and the optimizer step), ``on_batch_end``,
``on_validation_end``, ``on_epoch_end``, ``on_interrupt`` and ``on_fit_end``. The trainer calls a
callback only for the events it overrides, so an unused event costs nothing per step. A callback
with state to resume implements ``state_dict``/``load_state_dict`` (JSON values).
"""
from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import dumps

if TYPE_CHECKING:
    from .trainer import Trainer

EVENTS = (
    "on_fit_start",
    "on_epoch_start",
    "on_after_backward",
    "on_batch_end",
    "on_validation_end",
    "on_epoch_end",
    "on_interrupt",
    "on_fit_end",
)


class Callback:
    """Base class; override the events you need."""

    name = "callback"

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer) -> None: ...
    def on_after_backward(self, trainer: Trainer) -> None: ...
    def on_batch_end(self, trainer: Trainer, batch: dict, outputs: Any, loss) -> None: ...
    def on_validation_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None: ...
    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def on_interrupt(self, trainer: Trainer) -> None: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def overrides(cb: Callback, event: str) -> bool:
    return getattr(type(cb), event) is not getattr(Callback, event)


def unprinted_events(trainer) -> list[str]:
    """One line per event logged since the last call (``trainer.printed_events`` marks the history
    printed so far), so that whichever callback prints first prints each event once."""
    history = trainer.state.history
    lines = [f"  {e['event']}: {e.get('message', '')}" for e in history[trainer.printed_events:] if "event" in e]
    trainer.printed_events = len(history)
    return lines


# -------------------------------------------------------------------------------- early stopping
class EarlyStopping(Callback):
    """Stop when the monitored metric has not improved for ``patience`` epochs (T2).

    The trainer tracks the best value (it also decides the best checkpoint); this callback only
    counts epochs since then.
    """

    name = "early_stop"

    def __init__(self, patience: int):
        self.patience = patience

    def on_epoch_end(self, trainer, record):
        since = trainer.state.epoch - (trainer.state.best_epoch or 0)
        if trainer.state.best_epoch is not None and since >= self.patience:
            trainer.request_stop(
                f"early stop: {trainer.monitor} has not improved for {since} epochs "
                f"(best {trainer.state.best_value:.4g} at epoch {trainer.state.best_epoch})"
            )


# ------------------------------------------------------------------------------------ logging
class MetricsLogger(Callback):
    """Keeps ``metrics.jsonl`` equal to the run's history (epoch records and events)."""

    name = "metrics"

    def __init__(self, path: Path):
        self.path = path

    def write(self, trainer):
        text = "".join(dumps(r, indent=None) + "\n" for r in trainer.state.history)
        trainer.writer.submit(self.path, text.encode())

    def on_fit_start(self, trainer):
        # After a resume the file may hold epochs newer than the checkpoint: restate the history.
        if trainer.state.history or self.path.exists():
            self.write(trainer)

    def on_epoch_end(self, trainer, record):
        self.write(trainer)

    def on_interrupt(self, trainer):
        self.write(trainer)

    def on_fit_end(self, trainer):
        self.write(trainer)


def _fmt(v: Any, width: int) -> str:
    if v is None:
        return "-".rjust(width)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v).rjust(width)
        return (f"{v:.3g}" if (abs(v) < 1e-3 and v != 0) else f"{v:.4f}").rjust(width)
    return str(v).rjust(width)


class ProgressPrinter(Callback):
    """A live progress bar (terminals only) and one table row per epoch (T1)."""

    name = "progress"

    def __init__(self, live: bool, stream=None):
        self.stream = stream or sys.stdout
        self.live = live and self.stream.isatty()
        self._bar = None
        self._last = 0.0

    def _print(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def on_fit_start(self, trainer):
        # (record key, header, width): the epoch, the task's columns, the LR and the time
        cols = [("epoch", "epoch")] + trainer.task.table_columns() + [("lr", "lr"), ("time_s", "time_s")]
        self.columns = [(key, head, max(len(head), 6) + 1) for key, head in cols]
        header = " ".join(head.rjust(w) for _, head, w in self.columns)
        print(header, file=self.stream, flush=True)
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            # two rows: the epoch (its batches, loss, rate, ETA) and the whole run (epochs, run ETA)
            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True,
            )
            self._bar.start()
            self._per_epoch = len(trainer.train_loader)
            self._epochs = trainer.recipe.train.epochs
            self._task = self._bar.add_task("epoch 1", total=self._per_epoch, info="")
            self._run = self._bar.add_task(f"run   1/{self._epochs}", total=self._epochs * self._per_epoch, info="")

    def on_epoch_start(self, trainer):
        self._t0 = time.perf_counter()
        self._n0 = trainer.state.batch
        if self._bar is not None:
            epoch = trainer.state.epoch + 1
            # reset, not update: rich estimates the ETA from the task's own samples, which a bar
            # moved back to 0 would corrupt (an ETA of 0:00:00 from the third epoch on), and the
            # previous epoch's loss and rate would linger
            self._bar.reset(self._task, total=self._per_epoch, completed=trainer.state.batch, description=f"epoch {epoch}",
                            info="")
            self._bar.update(self._run, completed=trainer.state.epoch * self._per_epoch + trainer.state.batch,
                             description=f"run   {epoch}/{self._epochs}")

    def on_batch_end(self, trainer, batch, outputs, loss):
        if self._bar is None:
            return
        now = time.perf_counter()
        if now - self._last < 0.1:  # redraw at most ten times a second; never sync the device more
            return
        self._last = now
        done = trainer.state.batch
        rate = (done - self._n0) * trainer.train_loader.batch_size / max(now - self._t0, 1e-9)
        # detached: float() of a tensor that requires grad warns (into the live display)
        info = f"loss {float(loss.detach()):.4f}  {rate:,.0f} samples/s"
        self._bar.update(self._task, completed=done, info=info)
        self._bar.update(self._run, completed=trainer.state.epoch * self._per_epoch + done)

    def on_epoch_end(self, trainer, record):
        row = " ".join(_fmt(record.get(key), w) for key, _, w in self.columns)
        self._print(row)
        for line in unprinted_events(trainer):
            self._print(line)

    def _stop(self):
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def on_interrupt(self, trainer):
        self._stop()

    def on_fit_end(self, trainer):
        self._stop()
        if trainer.state.stop_reason:
            print(trainer.state.stop_reason, file=self.stream, flush=True)


class TensorBoardLogger(Callback):
    """Scalars of every epoch record as TensorBoard event files (V2).

    TensorBoard writes on its own thread and reports a failed write (a full disk) at the next
    call, as a bare OS error: it is turned into one line naming the folder here, and the thread's
    own report of it (a traceback from threading.excepthook) is left out."""

    name = "tensorboard"

    def __init__(self, folder: Path):
        self.folder = folder
        self.writer = None
        self._excepthook = None

    @contextlib.contextmanager
    def _writing(self):
        try:
            yield
        except OSError as err:
            from ..errors import RunError

            self._restore_excepthook()
            raise RunError(f"could not write TensorBoard events in {self.folder}: {err.strerror or err}") from None

    def _restore_excepthook(self) -> None:
        if threading.excepthook == self._quiet_writer_thread:
            threading.excepthook = self._excepthook

    def _quiet_writer_thread(self, args) -> None:
        if isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
            return  # tensorboard raises it again on the training thread, where _writing words it
        self._excepthook(args)

    def on_fit_start(self, trainer):
        from torch.utils.tensorboard import SummaryWriter

        self._excepthook, threading.excepthook = threading.excepthook, self._quiet_writer_thread
        with self._writing():
            self.writer = SummaryWriter(log_dir=str(self.folder))

    def on_epoch_end(self, trainer, record):
        with self._writing():
            for key, value in record.items():
                if key in ("epoch", "step") or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                group = "train" if key.startswith("train_") else "val" if key.startswith("val_") else "misc"
                self.writer.add_scalar(f"{group}/{key.split('_', 1)[-1] if group != 'misc' else key}", value,
                                       record["epoch"])
            self.writer.flush()

    def on_fit_end(self, trainer):
        if self.writer is not None:
            writer, self.writer = self.writer, None
            try:
                with self._writing():
                    writer.close()
            finally:
                self._restore_excepthook()

    on_interrupt = on_fit_end


# ---------------------------------------------------------------------------------- checkpoints
class Checkpointer(Callback):
    """Writes ``last.safetensors`` at each epoch end, every ``every_steps`` optimizer steps and at
    the first step boundary ``every_minutes`` after the last save (wall clock: it bounds the work a
    hard kill loses on a long epoch, whatever a step costs), and ``best.safetensors`` whenever the
    monitored metric improves. Runs after every other callback, so the state it saves includes
    their decisions. The snapshot is taken here; the trainer's background writer puts it on disk.
    Saving reads the state and changes nothing, so when it happens does not affect exact resume."""

    name = "checkpoint"

    def __init__(self, folder: Path, every_steps: int | None, every_minutes: float | None = None):
        self.folder = folder
        self.every_steps = every_steps
        self.every_s = every_minutes * 60.0 if every_minutes else None
        self._saved_at = time.monotonic()

    def save_last(self, trainer):
        from .checkpoint import save_checkpoint

        tensors, state = trainer.checkpoint_state()  # under torchrun: every rank, at the same step
        if tensors is not None:  # rank 0 (or the only process) writes
            save_checkpoint(self.folder / "last.safetensors", tensors, state, trainer.writer.submit)
        self._saved_at = time.monotonic()

    def on_fit_start(self, trainer):
        self._saved_at = time.monotonic()
        if trainer.dist is not None and self.every_s is not None:
            # under torchrun rank 0's clock decides, and the trainer tells every rank (Trainer._agree)
            trainer.save_clock = lambda: time.monotonic() - self._saved_at >= self.every_s

    def on_batch_end(self, trainer, batch, outputs, loss):
        st = trainer.state
        if not trainer.at_step_boundary or st.step == 0:
            return
        due = self.every_steps and st.step % self.every_steps == 0
        if trainer.dist is not None:
            timed = trainer.clock_save_due
        else:
            timed = self.every_s is not None and time.monotonic() - self._saved_at >= self.every_s
        if due or timed:
            self.save_last(trainer)

    def on_epoch_end(self, trainer, record):
        from .checkpoint import save_checkpoint

        if trainer.state.improved and (trainer.dist is None or trainer.dist.main):
            tensors, state = trainer.eval_weights_state()  # already copies
            save_checkpoint(self.folder / "best.safetensors", tensors, state, trainer.writer.submit, copied=True)
        self.save_last(trainer)

    def on_interrupt(self, trainer):
        if trainer.at_step_boundary:
            self.save_last(trainer)


# ------------------------------------------------------------------------------------ snapshots
class SnapshotSaver(Callback):
    """Snapshot ensembles (T4, Huang et al. 2017): at the end of each warm-restart cycle of a
    ``cosine_restarts`` schedule, where the LR has annealed to its floor and the model sits in a
    local minimum, save the evaluation weights as ``snapshot-<K>.safetensors`` (K from 1).

    The cycle ends are optimizer-step counts (:func:`trainlab.optim.schedules.restart_ends`), so a
    resumed run saves the snapshots it had not reached yet, identical to an uninterrupted run's."""

    name = "snapshots"

    def __init__(self, folder: Path, ends: list[int]):
        self.folder = folder
        self.ends = list(ends)

    def on_batch_end(self, trainer, batch, outputs, loss):
        step = trainer.state.step
        if not trainer.at_step_boundary or step not in self.ends:
            return
        from .checkpoint import save_checkpoint

        tensors, state = trainer.eval_weights_state()  # CPU copies taken now
        cycle = self.ends.index(step) + 1
        state.update(kind="snapshot", cycle=cycle, epoch=trainer.state.epoch, step=step, best=None)
        save_checkpoint(self.folder / f"snapshot-{cycle}.safetensors", tensors, state, trainer.writer.submit,
                        copied=True)
