"""Learning-rate schedules by name (``schedule.name``) (O6).

A schedule is a multiplier of each parameter group's base LR as a function of the optimizer step
(``factor(step)``), so it can be drawn without training, checked against its formula in a test,
and resumed exactly. Epoch-based schedules read the epoch as ``step // steps_per_epoch``. Reactive
schedules (on-plateau) also ``observe`` the epoch's metrics and keep a small JSON state. Warm-up
(``schedule.warmup``) multiplies any schedule during its first steps.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..registry import SCHEDULES


class LRSchedule:
    """LR multiplier per optimizer step. Subclasses with state override observe/state_dict."""

    def __init__(self, fn: Callable[[int], float], steps_per_epoch: int):
        self.fn = fn
        self.steps_per_epoch = max(1, steps_per_epoch)

    def factor(self, step: int) -> float:
        return self.fn(step)

    def observe(self, epoch: int, metrics: dict[str, float]) -> None:
        """Called at each epoch end with the epoch record; pure schedules ignore it."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def apply(self, optimizer, step: int) -> float:
        """Set every group's LR for ``step``; returns the factor."""
        f = self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f
        return f


class Warmup(LRSchedule):
    """Multiply ``inner`` by a ramp from ``start`` to 1 over the first ``steps`` steps."""

    def __init__(self, inner: LRSchedule, steps: int, mode: str, start: float):
        super().__init__(inner.fn, inner.steps_per_epoch)
        self.inner, self.steps, self.mode, self.start = inner, steps, mode, start

    def factor(self, step: int) -> float:
        f = self.inner.factor(step)
        if step >= self.steps:
            return f
        t = step / self.steps
        ramp = self.start + (1 - self.start) * t if self.mode == "linear" else self.start ** (1 - t)
        return f * ramp

    def observe(self, epoch, metrics):
        self.inner.observe(epoch, metrics)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


def build_schedule(cfg, base_lr: float, steps_per_epoch: int, epochs: int) -> LRSchedule:
    """The recipe's schedule for a run of ``epochs`` × ``steps_per_epoch`` optimizer steps."""
    entry = SCHEDULES.get(cfg.name, "schedule.name")
    sched = entry.fn(cfg, base_lr, steps_per_epoch, epochs)
    if cfg.warmup is not None:
        steps = cfg.warmup.steps or int(round(cfg.warmup.epochs * steps_per_epoch))
        if steps > 0:
            sched = Warmup(sched, steps, cfg.warmup.mode, cfg.warmup.start_factor)
    return sched


@SCHEDULES.register("none", help="constant learning rate")
def constant(cfg, base_lr, spe, epochs):
    return LRSchedule(lambda step: 1.0, spe)


@SCHEDULES.register("step", help="multiply by gamma every step_size epochs")
def step(cfg, base_lr, spe, epochs):
    return LRSchedule(lambda s: cfg.gamma ** ((s // spe) // cfg.step_size), spe)


@SCHEDULES.register("cosine", help="cosine from the base LR down to min_lr over the run, per step")
def cosine(cfg, base_lr, spe, epochs):
    total = max(1, spe * epochs)
    floor = cfg.min_lr / base_lr

    def fn(s: int) -> float:
        t = min(s, total) / total
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return LRSchedule(fn, spe)
