"""Devices: which one a recipe names, autocast on it, and moving nested batches onto it.

A bottom-layer module: data, models, tasks and the engine may all use it.
"""
from __future__ import annotations

import contextlib
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
