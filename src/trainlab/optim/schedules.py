"""Learning-rate schedules by name (``schedule.name``) (O6).

A schedule is a multiplier of each parameter group's base LR as a function of the optimizer step
(``factor(step)``), so it can be drawn without training, checked against its formula in a test,
and resumed exactly. LR values in the recipe (``min_lr``, ``max_lr``, ``base_lr``) are absolute:
a builder divides them by ``optim.lr`` to get multipliers, so after an optimizer switch the same
curve multiplies the new base LR.

Granularity follows each method: ``step``, ``multistep`` and ``exponential`` change once per epoch
(epoch = step // steps_per_epoch); ``cosine``, ``cosine_restarts`` (SGDR restarts within an epoch,
as in the paper), ``cyclic`` and ``onecycle`` change every step; ``plateau`` reacts once per epoch
to the epoch record through ``observe`` and keeps a small JSON state. Warm-up
(``schedule.warmup``) multiplies any of them during its first steps. One-cycle also has a momentum
curve, which :meth:`LRSchedule.apply` writes into SGD's ``momentum`` or Adam's ``beta1``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..errors import RecipeError
from ..registry import SCHEDULES


class LRSchedule:
    """LR multiplier (and optional momentum) per optimizer step.

    Subclasses with state (``reactive`` ones) override observe / state_dict / load_state_dict.
    """

    reactive = False  # True when the curve depends on the metrics seen (cannot be drawn exactly)

    def __init__(self, fn: Callable[[int], float], steps_per_epoch: int,
                 momentum_fn: Callable[[int], float] | None = None):
        self.fn = fn
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.momentum_fn = momentum_fn

    def factor(self, step: int) -> float:
        return self.fn(step)

    def momentum(self, step: int) -> float | None:
        """The momentum (SGD) / beta1 (Adam) for ``step``, or None to leave the optimizer's own."""
        return None if self.momentum_fn is None else self.momentum_fn(step)

    def observe(self, epoch: int, metrics: dict[str, Any]) -> None:
        """Called at each epoch end with the epoch record; pure schedules ignore it."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def apply(self, optimizer, step: int) -> float:
        """Set every group's LR (and momentum, when the schedule has a curve) for ``step``."""
        f = self.factor(step)
        m = self.momentum(step)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f
            if m is None:
                continue
            if "betas" in group:
                group["betas"] = (m, group["betas"][1])
            elif "momentum" in group:
                group["momentum"] = m
        return f


class Warmup(LRSchedule):
    """Multiply ``inner`` by a ramp from ``start`` to 1 over the first ``steps`` steps.

    linear: start + (1 − start)·t; exponential: start^(1 − t), with t = step / steps.
    """

    def __init__(self, inner: LRSchedule, steps: int, mode: str, start: float):
        super().__init__(inner.fn, inner.steps_per_epoch, inner.momentum_fn)
        self.inner, self.steps, self.mode, self.start = inner, steps, mode, start
        self.reactive = inner.reactive

    def factor(self, step: int) -> float:
        return self.inner.factor(step) * warmup_ramp(step, self.steps, self.mode, self.start)

    def momentum(self, step: int) -> float | None:
        return self.inner.momentum(step)

    def observe(self, epoch, metrics):
        self.inner.observe(epoch, metrics)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


def warmup_ramp(step: int, steps: int, mode: str, start: float) -> float:
    """Warm-up multiplier at ``step``: 1 from ``steps`` on."""
    if step >= steps:
        return 1.0
    t = step / steps
    return start + (1 - start) * t if mode == "linear" else start ** (1 - t)


class ReduceOnPlateau(LRSchedule):
    """Multiply the LR by ``gamma`` when ``monitor`` has not improved for more than ``patience``
    epochs (relative threshold, optional cooldown, floor ``min_factor``), as torch's
    ReduceLROnPlateau does, with the decision kept as JSON state for exact resume."""

    reactive = True

    def __init__(self, steps_per_epoch: int, monitor: str, mode: str, gamma: float, patience: int,
                 threshold: float, cooldown: int, min_factor: float, base_lr: float):
        super().__init__(lambda s: self.scale, steps_per_epoch)
        self.monitor, self.mode, self.gamma = monitor, mode, gamma
        self.patience, self.threshold, self.cooldown = patience, threshold, cooldown
        self.min_factor, self.base_lr = min_factor, base_lr
        self.scale = 1.0
        self.best: float | None = None
        self.bad_epochs = 0
        self.cooldown_left = 0

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best * (1 - self.threshold)
        return value > self.best * (1 + self.threshold)

    def observe(self, epoch: int, metrics: dict[str, Any]) -> None:
        if self.monitor not in metrics:
            known = [k for k, v in metrics.items() if isinstance(v, (int, float)) and k not in ("epoch", "step")]
            raise RecipeError(
                f"schedule.monitor: {self.monitor!r} is not in the epoch record (known: {', '.join(known)})"
            )
        value = float(metrics[self.monitor])
        if value == value and self._better(value):  # NaN is never an improvement
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            new = max(self.scale * self.gamma, self.min_factor)
            if (self.scale - new) * self.base_lr > 1e-8:  # torch's eps: ignore negligible changes
                self.scale = new
            self.cooldown_left = self.cooldown
            self.bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs,
                "cooldown_left": self.cooldown_left}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scale, self.best = state["scale"], state["best"]
            self.bad_epochs, self.cooldown_left = state["bad_epochs"], state["cooldown_left"]


def build_schedule(cfg, base_lr: float, steps_per_epoch: int, epochs: int,
                   monitor_mode: str | None = None) -> LRSchedule:
    """The recipe's schedule for a run of ``epochs`` × ``steps_per_epoch`` optimizer steps.

    ``monitor_mode`` ('min' or 'max') is the direction of a plateau schedule's monitor, as the
    task declares it (``Task.metric_mode``); the other schedules ignore it.
    """
    entry = SCHEDULES.get(cfg.name, "schedule.name")
    watch = {"monitor_mode": monitor_mode} if entry.meta.get("watches") else {}
    sched = entry.fn(cfg, base_lr, max(1, steps_per_epoch), epochs, **watch)
    if cfg.warmup is not None:
        steps = cfg.warmup.steps or int(round(cfg.warmup.epochs * steps_per_epoch))
        if steps > 0:
            sched = Warmup(sched, steps, cfg.warmup.mode, cfg.warmup.start_factor)
    return sched


def optimizer_steps_per_epoch(recipe, n_train: int) -> int:
    """Optimizer steps per epoch of a recipe with ``n_train`` training samples, as the trainer
    counts them (batches per epoch, a trailing single sample dropped, divided by accumulation)."""
    from ..data.loader import steps_per_epoch
    from .optimizers import train_batch_size

    batches = steps_per_epoch(n_train, train_batch_size(recipe, n_train))
    return math.ceil(batches / recipe.train.accumulate)


def schedule_curve(sched: LRSchedule, base_lr: float, total_steps: int, monitor: str | None = None,
                   flat_value: float = 1.0) -> dict[str, list]:
    """LR (and momentum) at every step 0..total_steps−1 without training.

    A reactive schedule is fed a flat metric (``flat_value`` for ``monitor`` at every epoch end):
    the metric never improves after the first epoch, so a plateau schedule decays as early as
    its patience allows. ``sched`` is advanced; draw with a fresh schedule.
    """
    spe = sched.steps_per_epoch
    lrs, moms = [], []
    for s in range(total_steps):
        if sched.reactive and s > 0 and s % spe == 0:
            sched.observe(s // spe, {monitor: flat_value})
        lrs.append(base_lr * sched.factor(s))
        moms.append(sched.momentum(s))
    return {"step": list(range(total_steps)), "lr": lrs,
            "momentum": moms if any(m is not None for m in moms) else None}


def _gamma(cfg, default: float) -> float:
    return default if cfg.gamma is None else cfg.gamma


# ----------------------------------------------------------------------------------- schedules
@SCHEDULES.register("none", help="constant learning rate")
def constant(cfg, base_lr, spe, epochs):
    return LRSchedule(lambda step: 1.0, spe)


@SCHEDULES.register("step", help="per epoch: multiply by gamma (0.1) every step_size epochs")
def step(cfg, base_lr, spe, epochs):
    gamma = _gamma(cfg, 0.1)
    return LRSchedule(lambda s: gamma ** ((s // spe) // cfg.step_size), spe)


@SCHEDULES.register("multistep", help="per epoch: multiply by gamma (0.1) at each epoch in milestones")
def multistep(cfg, base_lr, spe, epochs):
    gamma = _gamma(cfg, 0.1)
    milestones = list(cfg.milestones) or [max(1, int(epochs * 0.5)), max(1, int(epochs * 0.75))]

    def fn(s: int) -> float:
        epoch = s // spe
        return gamma ** sum(1 for m in milestones if m <= epoch)

    return LRSchedule(fn, spe)


@SCHEDULES.register("exponential", help="per epoch: lr = optim.lr · gamma^epoch (gamma 0.9)")
def exponential(cfg, base_lr, spe, epochs):
    gamma = _gamma(cfg, 0.9)
    return LRSchedule(lambda s: gamma ** (s // spe), spe)


@SCHEDULES.register("cosine", help="per step: cosine from optim.lr down to min_lr over the run")
def cosine(cfg, base_lr, spe, epochs):
    total = max(1, spe * epochs)
    floor = _floor(cfg, base_lr)

    def fn(s: int) -> float:
        t = min(s, total) / total
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return LRSchedule(fn, spe)


def _floor(cfg, base_lr: float) -> float:
    if cfg.min_lr > base_lr:
        raise RecipeError(f"schedule.min_lr: {cfg.min_lr} is above optim.lr ({base_lr}); the floor must be lower")
    return cfg.min_lr / base_lr


@SCHEDULES.register("cosine_restarts", help="SGDR: cosine to min_lr over T_0 epochs, restarts, cycles x T_mult")
def cosine_restarts(cfg, base_lr, spe, epochs):
    floor = _floor(cfg, base_lr)
    t_mult = cfg.T_mult
    first = _first_cycle(cfg, epochs) * spe  # cycle length in steps (fractional epochs are allowed)

    def fn(s: int) -> float:
        start, length = 0.0, first
        while s >= start + length:
            start, length = start + length, length * t_mult
        t = (s - start) / length
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return LRSchedule(fn, spe)


def _first_cycle(cfg, epochs: int) -> float:
    """Epochs of the first SGDR cycle: T_0, or three cycles that end with the run:
    T_0 (1 + T_mult + T_mult²) = epochs."""
    return cfg.T_0 if cfg.T_0 is not None else epochs / (1 + cfg.T_mult + cfg.T_mult**2)


def restart_ends(cfg, spe: int, epochs: int) -> list[int]:
    """The optimizer-step counts at which each cycle of ``cosine_restarts`` that completes within
    ``epochs`` × ``spe`` steps ends: after that many steps the next one restarts at optim.lr (a
    snapshot ensemble saves the weights there). The boundaries are summed as the schedule sums
    them, so a step is an end exactly where the schedule restarts; only the last cycle's end may
    float a hair above the run's last step (T_0 = epochs / 7) and still count as that step."""
    total, length, end, ends = spe * epochs, _first_cycle(cfg, epochs) * spe, 0.0, []
    while True:
        end += length
        step = max(1, math.ceil(end))
        if step > total:
            if end - 1e-6 > total:
                return ends
            step = total
        if not ends or step > ends[-1]:
            ends.append(step)
        length *= cfg.T_mult


@SCHEDULES.register("cyclic", help="CLR per step: base_lr..max_lr, triangular/triangular2/exp_range/cosine wave")
def cyclic(cfg, base_lr, spe, epochs):
    top = cfg.max_lr if cfg.max_lr is not None else base_lr
    low = cfg.base_lr if cfg.base_lr is not None else top / 4
    if low >= top:
        raise RecipeError(f"schedule.base_lr: {low} must be below the peak max_lr ({top})")
    up = cfg.step_size_up or 2 * spe
    down = cfg.step_size_down or up
    total = up + down
    ratio = up / total
    mode = cfg.mode
    # exp_range shrinks the height by gamma every step; by default to 1% at the end of the run.
    gamma = _gamma(cfg, 0.01 ** (1 / max(1, spe * epochs))) if mode == "exp_range" else 1.0

    def fn(s: int) -> float:
        cycle = math.floor(1 + s / total)
        x = 1 + s / total - cycle  # position in the cycle, 0..1
        pos = x / ratio if x <= ratio else (x - 1) / (ratio - 1)  # 0 → 1 → 0
        wave = 0.5 * (1 - math.cos(math.pi * pos)) if mode == "cosine" else pos
        if mode == "triangular2":
            height = 1 / 2 ** (cycle - 1)
        elif mode == "exp_range":
            height = gamma**s
        else:
            height = 1.0
        return (low + (top - low) * wave * height) / base_lr

    return LRSchedule(fn, spe)


@SCHEDULES.register("onecycle", help="one cycle per step: max_lr/div_factor up to max_lr, then far below; momentum against it")
def onecycle(cfg, base_lr, spe, epochs):
    total = max(2, spe * epochs)
    top = (cfg.max_lr if cfg.max_lr is not None else base_lr) / base_lr
    start = top / cfg.div_factor
    end = start / cfg.final_div_factor
    rise_end = cfg.pct_start * total - 1  # last step of the rising phase (torch's convention)
    if rise_end <= 0 or rise_end >= total - 1:
        raise RecipeError(
            f"schedule.pct_start: {cfg.pct_start} leaves no step for one of the two phases of a "
            f"{total}-step run; use a value between {1.5 / total:.3g} and {1 - 1 / total:.3g}"
        )
    anneal = _cos_anneal if cfg.anneal == "cos" else _linear_anneal

    def position(s: int) -> tuple[float, bool]:
        s = min(s, total - 1)
        if s <= rise_end:
            return s / rise_end, True
        return (s - rise_end) / (total - 1 - rise_end), False

    def fn(s: int) -> float:
        pct, rising = position(s)
        return anneal(start, top, pct) if rising else anneal(top, end, pct)

    momentum_fn = None
    if cfg.cycle_momentum:
        lo, hi = cfg.base_momentum, cfg.max_momentum

        def momentum_fn(s: int) -> float:
            pct, rising = position(s)
            return anneal(hi, lo, pct) if rising else anneal(lo, hi, pct)

    return LRSchedule(fn, spe, momentum_fn)


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


def _linear_anneal(start: float, end: float, pct: float) -> float:
    return start + (end - start) * pct


@SCHEDULES.register("plateau", help="per epoch: multiply by gamma (0.1) when schedule.monitor stalls for patience epochs",
                    watches=True)
def plateau(cfg, base_lr, spe, epochs, monitor_mode=None):
    if monitor_mode not in ("min", "max"):
        raise ValueError("a plateau schedule needs the direction of its monitor (the task declares it)")
    gamma = _gamma(cfg, 0.1)
    if gamma >= 1:
        raise RecipeError(f"schedule.gamma: {gamma} must be below 1 for plateau (it multiplies the LR on a stall)")
    return ReduceOnPlateau(
        spe, cfg.monitor, monitor_mode, gamma, cfg.patience,
        cfg.threshold, cfg.cooldown, _floor(cfg, base_lr), base_lr,
    )
