"""The JSON state of a checkpoint, checked before anything trusts it (T3).

A checkpoint's state is data from a file: it may have been edited by hand, copied from another run
or damaged. :func:`check_state` checks the type and range of every field trainlab reads, and
:func:`check_positions` the data position against the recipe's epoch length; a failure is one
line naming the field, e.g. ``checkpoint runs/x/checkpoints/last.safetensors: state.epoch:
expected a non-negative integer, got -3``. Both are pure functions of the JSON (and of a few
numbers), so a resume calls them before it writes anything. The tensors are checked where they
meet the model and the optimizer (:func:`trainlab.engine.checkpoint.check_model_weights`,
:meth:`trainlab.engine.trainer.Trainer.restore`).
"""
from __future__ import annotations

import json
import math
from typing import Any

from ..errors import RunError

KINDS = ("image", "flat", "sequence")
ANNOTATIONS = ("boxes", "masks", "semantic")
# What a resume reads; evaluating a model reads only ``info``.
RESUME_KEYS = ("info", "epoch", "batch", "step", "history", "best", "optimizer", "rng", "meter")
MT_WORDS = 624  # Mersenne Twister state: NumPy's keys and Python's state (plus its position)


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Fields:
    """Checks with one way to fail: ``checkpoint SOURCE: PATH: expected WHAT, got VALUE``."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, expected: str, got: Any = None, show: bool = True, text: str | None = None) -> RunError:
        """The error; ``got`` is shown as JSON, ``text`` as it is, neither without ``show``."""
        got_part = f", got {text}" if text is not None else f", got {_show(got)}" if show else ""
        return RunError(f"checkpoint {self.source}: {path}: expected {expected}{got_part}")

    def obj(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "a JSON object", value)
        return value

    def lst(self, value: Any, path: str, length: int | None = None) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, "a list", value)
        if length is not None and len(value) != length:
            raise self.fail(path, f"a list of {length} items", text=f"{len(value)} items")
        return value

    def int(self, value: Any, path: str, lo: int = 0, hi: int | None = None, none: bool = False) -> int | None:
        if value is None and none:
            return None
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)
        if not ok:
            what = "a non-negative integer" if lo == 0 else "a positive integer" if lo == 1 else f"an integer >= {lo}"
            if hi is not None:
                what = f"an integer from {lo} to {hi}"
            raise self.fail(path, what + (" or null" if none else ""), value)
        return value

    def num(self, value: Any, path: str, lo: float | None = None, none: bool = False) -> float | None:
        if value is None and none:
            return None
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              and (lo is None or value >= lo))
        if not ok:
            what = "a finite number" + (f" >= {lo:g}" if lo is not None else "")
            raise self.fail(path, what + (" or null" if none else ""), value)
        return value

    def str(self, value: Any, path: str, none: bool = False, choices: tuple[str, ...] = ()) -> str | None:
        if value is None and none:
            return None
        if not isinstance(value, str) or (choices and value not in choices):
            what = f"one of {', '.join(choices)}" if choices else "a string"
            raise self.fail(path, what + (" or null" if none else ""), value)
        return value

    def numbers(self, value: Any, path: str) -> None:
        """Numbers (or null), and lists/objects of them: a meter's sums and counts."""
        if isinstance(value, list):
            for i, item in enumerate(value):
                self.numbers(item, f"{path}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                self.numbers(item, f"{path}.{key}")
        else:
            self.num(value, path, none=True)

    def strings(self, value: Any, path: str) -> list[str]:
        for i, item in enumerate(self.lst(value, path)):
            self.str(item, f"{path}[{i}]")
        return value

    def plain(self, value: Any, path: str) -> None:
        """Numbers (or null), strings, booleans and lists/objects of them: a meter's or a record's values."""
        if value is None or isinstance(value, (str, bool)):
            return
        if isinstance(value, (int, float)):
            self.num(value, path)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.plain(item, f"{path}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                self.plain(item, f"{path}.{key}")
        else:  # pragma: no cover - json.loads makes nothing else
            raise self.fail(path, "a JSON value", value)


def check_info(info: Any, source: str, path: str = "state.info") -> None:
    """The data description a model is rebuilt from: input shape, classes and their names."""
    f = _Fields(source)
    info = f.obj(info, path)
    for key in ("input_shape", "num_classes", "class_names"):
        if key not in info:
            raise f.fail(f"{path}.{key}", "a value (the key is missing)", show=False)
    shape = f.lst(info["input_shape"], f"{path}.input_shape")
    if not 1 <= len(shape) <= 3:
        raise f.fail(f"{path}.input_shape", "1 to 3 sizes", shape)
    for i, size in enumerate(shape):
        f.int(size, f"{path}.input_shape[{i}]", lo=1)
    n = f.int(info["num_classes"], f"{path}.num_classes", lo=1)
    names = f.strings(info["class_names"], f"{path}.class_names")
    if len(names) != n:
        raise f.fail(f"{path}.class_names", f"{n} names (num_classes)", text=f"{len(names)} names")
    if "kind" in info:
        f.str(info["kind"], f"{path}.kind", choices=KINDS)
    if "label_changing" in info:
        f.strings(info["label_changing"], f"{path}.label_changing")
    if "annotations" in info:
        for i, a in enumerate(f.lst(info["annotations"], f"{path}.annotations")):
            f.str(a, f"{path}.annotations[{i}]", choices=ANNOTATIONS)
    if "max_value" in info:
        f.num(info["max_value"], f"{path}.max_value", lo=1e-12)
    extra = f.obj(info.get("extra", {}), f"{path}.extra")
    if "semantic_classes" in extra:
        f.strings(extra["semantic_classes"], f"{path}.extra.semantic_classes")


def check_state(state: dict[str, Any], source: str, resume: bool = True) -> None:
    """Raise a one-line RunError naming the first field of ``state`` (a checkpoint's JSON) with a
    wrong type or range; ``resume=False`` checks only what evaluating a model needs."""
    f = _Fields(source)
    f.obj(state, "state")
    needed = RESUME_KEYS if resume else ("info",)
    missing = [key for key in needed if key not in state]
    if missing:
        raise f.fail(f"state.{missing[0]}", "a value (the key is missing)", show=False)
    check_info(state["info"], source)
    if not resume:
        if "epoch" in state:
            f.int(state["epoch"], "state.epoch", none=True)
        return
    if "kind" in state:
        f.str(state["kind"], "state.kind", choices=("last",))
    epoch = f.int(state["epoch"], "state.epoch")
    f.int(state["batch"], "state.batch")
    step = f.int(state["step"], "state.step")
    best = f.obj(state["best"], "state.best")
    f.num(best.get("value"), "state.best.value", none=True)
    f.int(best.get("epoch"), "state.best.epoch", lo=1, hi=epoch, none=True)
    if "monitor" in best:
        f.str(best["monitor"], "state.best.monitor")
    f.str(state.get("stop_reason"), "state.stop_reason", none=True)
    _check_history(f, state["history"], epoch, step)
    meter = f.obj(state["meter"], "state.meter")
    if "n" in meter:
        f.int(meter["n"], "state.meter.n")
    f.numbers(meter, "state.meter")
    _check_optimizer(f, state["optimizer"])
    f.obj(state.get("schedule", {}), "state.schedule")
    f.plain(state.get("schedule", {}), "state.schedule")
    f.int(state.get("ema_steps", 0), "state.ema_steps", hi=step)
    _check_rng(f, state["rng"])
    for name, value in f.obj(state.get("callbacks", {}), "state.callbacks").items():
        f.obj(value, f"state.callbacks.{name}")
    f.num(state.get("last_lr"), "state.last_lr", lo=0.0, none=True)
    if "time_s" in state:
        f.num(state["time_s"], "state.time_s", lo=0.0)


def _check_history(f: _Fields, history: Any, epoch: int, step: int) -> None:
    """Epoch records numbered 1, 2, ... up to the state's epoch, and events, each a JSON object."""
    last = 0
    for i, entry in enumerate(f.lst(history, "state.history")):
        path = f"state.history[{i}]"
        entry = f.obj(entry, path)
        if "event" in entry:
            f.str(entry["event"], f"{path}.event")
            f.int(entry.get("epoch", 0), f"{path}.epoch")
            f.int(entry.get("step", 0), f"{path}.step")
            if "message" in entry:
                f.str(entry["message"], f"{path}.message")
            continue
        if "epoch" not in entry:
            raise f.fail(f"{path}.epoch", "an epoch number or an event name (neither key is there)", show=False)
        n = f.int(entry["epoch"], f"{path}.epoch", lo=last + 1, hi=epoch)
        last = n
        f.int(entry.get("step", 0), f"{path}.step", hi=step)
        for key, value in entry.items():
            f.plain(value, f"{path}.{key}")
        if "lr" in entry:
            f.num(entry["lr"], f"{path}.lr", lo=0.0, none=True)
    if last != epoch:
        raise f.fail("state.history", f"the records of epochs 1 to {epoch} (state.epoch)",
                     text=f"records up to epoch {last}")


def _check_optimizer(f: _Fields, opt: Any) -> None:
    opt = f.obj(opt, "state.optimizer")
    f.str(opt.get("name"), "state.optimizer.name")
    f.num(opt.get("lr"), "state.optimizer.lr", lo=0.0, none=True)
    f.num(opt.get("momentum"), "state.optimizer.momentum", lo=0.0, none=True)
    groups = f.lst(opt.get("param_groups"), "state.optimizer.param_groups")
    if not groups:
        raise f.fail("state.optimizer.param_groups", "at least one parameter group", groups)
    seen: set[int] = set()
    for i, group in enumerate(groups):
        path = f"state.optimizer.param_groups[{i}]"
        group = f.obj(group, path)
        for j, pid in enumerate(f.lst(group.get("params"), f"{path}.params")):
            f.int(pid, f"{path}.params[{j}]")
            if pid in seen:
                raise f.fail(f"{path}.params[{j}]", "each parameter index once", pid)
            seen.add(pid)
        f.num(group.get("lr"), f"{path}.lr", lo=0.0)
        if "initial_lr" in group:
            f.num(group["initial_lr"], f"{path}.initial_lr", lo=0.0)
        if "betas" in group:
            for k, beta in enumerate(f.lst(group["betas"], f"{path}.betas", length=2)):
                f.num(beta, f"{path}.betas[{k}]", lo=0.0)
        for key in ("momentum", "weight_decay", "eps"):
            if key in group:
                f.num(group[key], f"{path}.{key}", lo=0.0)
    for key, value in f.obj(opt.get("scalars", {}), "state.optimizer.scalars").items():
        pid, _, name = key.partition(".")
        if not (pid.isdigit() and name) or int(pid) not in seen:
            raise f.fail(f"state.optimizer.scalars.{key}", "a key <parameter index>.<name> of a listed parameter",
                         key)
        f.num(value, f"state.optimizer.scalars.{key}", none=True)  # SGD without momentum: a None buffer


def _check_rng(f: _Fields, rng: Any) -> None:
    """NumPy's and Python's Mersenne Twister states (torch's is a tensor, checked on load)."""
    rng = f.obj(rng, "state.rng")
    kind, keys, pos, has_gauss, gauss = f.lst(rng.get("numpy"), "state.rng.numpy", length=5)
    f.str(kind, "state.rng.numpy[0]", choices=("MT19937",))
    for i, key in enumerate(f.lst(keys, "state.rng.numpy[1]", length=MT_WORDS)):
        f.int(key, f"state.rng.numpy[1][{i}]", hi=2**32 - 1)
    f.int(pos, "state.rng.numpy[2]", hi=MT_WORDS)
    f.int(has_gauss, "state.rng.numpy[3]", hi=1)
    f.num(gauss, "state.rng.numpy[4]")
    version, words, py_gauss = f.lst(rng.get("python"), "state.rng.python", length=3)
    f.int(version, "state.rng.python[0]", lo=1, hi=3)
    words = f.lst(words, "state.rng.python[1]", length=MT_WORDS + 1)
    for i, word in enumerate(words[:-1]):
        f.int(word, f"state.rng.python[1][{i}]", hi=2**32 - 1)
    f.int(words[-1], f"state.rng.python[1][{MT_WORDS}]", hi=MT_WORDS)
    f.num(py_gauss, "state.rng.python[2]", none=True)


def check_positions(state: dict[str, Any], source: str, batches_per_epoch: int, steps_per_epoch: int,
                    accumulate: int) -> None:
    """The data position of a checked ``state`` against the recipe: the batch within an epoch of
    ``batches_per_epoch`` batches, at an optimizer step boundary, and no more optimizer steps than
    that many epochs and batches make."""
    f = _Fields(source)
    epoch, batch, step = state["epoch"], state["batch"], state["step"]
    f.int(batch, "state.batch", hi=batches_per_epoch)
    if batch % accumulate and batch != batches_per_epoch:
        raise f.fail("state.batch", f"a multiple of train.accumulate={accumulate} (a checkpoint is taken "
                     "between optimizer steps)", batch)
    most = epoch * steps_per_epoch + -(-batch // accumulate)
    f.int(step, "state.step", hi=most)


def info_mismatch(saved: dict[str, Any], data: dict[str, Any], source: str) -> RunError | None:
    """The error when a checked ``state.info`` does not describe the data the recipe builds (a
    checkpoint of another run), else None."""
    f = _Fields(source)
    for key in ("kind", "input_shape", "num_classes", "class_names"):
        mine, theirs = saved.get(key, data.get(key) if key == "kind" else None), data.get(key)
        if mine != theirs:
            return f.fail(f"state.info.{key}", f"{_show(theirs)} as the recipe's data has (a checkpoint of "
                          "another run?)", mine)
    return None
