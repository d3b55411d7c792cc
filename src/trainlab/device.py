"""Devices: which one a recipe names, autocast on it, moving nested batches onto it, and how many
CPU threads a new run takes.

A bottom-layer module: data, models, tasks and the engine may all use it.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import torch

from .errors import RecipeError


def resolve_device(name: str) -> torch.device:
    """``train.device`` as a torch.device: auto picks CUDA when present; a missing device is a RecipeError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RecipeError(f"train.device: {name!r} requested but no CUDA device is available (use auto or cpu)")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise RecipeError(f"train.device: {name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    if name == "mps" and not torch.backends.mps.is_available():
        raise RecipeError("train.device: 'mps' requested but MPS is not available (use auto or cpu)")
    return torch.device(name)


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when ``amp``; full precision elsewhere."""
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor inside it on ``device``: dicts, lists and tuples are walked
    recursively (per-image lists of box dicts, dicts of several targets); other values are kept.

    tv_tensors keep their subclass and metadata (``Tensor.to`` preserves them). On the CPU the
    batch is returned as it is: the loader already produced CPU tensors.
    """
    if device.type == "cpu":
        return batch
    return _move(batch, device)


def _move(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        moved = [_move(v, device) for v in value]
        return moved if isinstance(value, list) else type(value)(*moved) if hasattr(value, "_fields") else tuple(moved)
    return value


def cpu_times() -> tuple[int, int] | None:
    """(idle, total) clock ticks of all CPUs since boot from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()
    except OSError:
        return None
    if len(parts) < 5 or parts[0] != "cpu":
        return None
    ticks = [int(v) for v in parts[1:9]]  # user nice system idle iowait irq softirq steal
    return ticks[3] + ticks[4], sum(ticks)


def idle_cores(before: tuple[int, int], after: tuple[int, int], cpus: int) -> float:
    """How many of ``cpus`` CPUs were idle between two :func:`cpu_times` readings."""
    total = after[1] - before[1]
    return cpus * (after[0] - before[0]) / total if total > 0 else float(cpus)


def default_threads(sample_s: float = 0.05) -> int:
    """The CPU threads a new run takes when ``train.threads`` is not set: torch's default, lowered
    to the cores other processes leave idle over ``sample_s`` seconds (at least 1).

    Why: torch's default is every core, and its threads wait on each other, so a core taken by
    another process slows every step. On a 2-core machine, digits-cnn took 9.2-10.1 s with 2 threads
    and 11.4-11.7 s with 1 when idle, but 19.6 s with 2 and 11.7 s with 1 beside one busy process
    (94.8 s vs 15.7 s under a load of 4-7). The count is written into the run's recipe.yaml, so a
    resumed run uses the same one (CPU results can depend on it).
    """
    n = torch.get_num_threads()
    before = cpu_times()
    if before is None:
        return n
    time.sleep(sample_s)
    after = cpu_times()
    if after is None:
        return n
    return max(1, min(n, int(idle_cores(before, after, os.cpu_count() or n) + 0.5)))
