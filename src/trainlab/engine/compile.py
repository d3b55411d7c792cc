"""``train.compile``: train through torch.compile, falling back to eager execution (M13).

torch.compile captures the model's forward (and backward) as a static graph and generates fused
kernels for it. It compiles lazily, so a missing compiler or an unsupported operation surfaces at
the first forward, not when torch.compile is called. :class:`CompiledForward` catches that
failure, warns once, restores what the failed call may have changed (buffers such as BatchNorm
statistics, and the CPU random generator that dropout draws from) and runs the eager model from
then on, so a recipe with ``train.compile: true`` runs everywhere and trains as the eager run would.

Compilation happens once per input signature (shapes, dtypes, devices, requires_grad, training and
grad mode: what torch.compile's guards key on), so only the first call of a signature can fail
that way. The snapshot for the rollback is therefore taken only for a signature that has not yet
run compiled; later calls of a known signature run the cached graph without copying anything (if
one of them still fails, training goes on eagerly, without a rollback).
"""
from __future__ import annotations

import sys
from typing import Any

import torch


def _describe(value: Any) -> Any:
    """A hashable description of one argument as the compiled graph's guards see it."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype, value.device, value.requires_grad)
    if value is None or isinstance(value, (bool, int, float, str)):
        return (type(value).__name__, value)  # Python scalars are specialized on their value
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_describe(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _describe(v)) for k, v in value.items()))
    return (type(value).__name__, id(value))


class CompiledForward:
    """Callable like the model: the compiled module until it fails once, then the eager one."""

    def __init__(self, model: torch.nn.Module, compiler=None, stream=None):
        self.model = model
        self.stream = stream
        self.failed: str | None = None
        self.seen: set[tuple] = set()  # signatures that already ran compiled
        try:
            self.compiled = (compiler or torch.compile)(model)
        except Exception as err:  # noqa: BLE001 - any backend problem means: run eagerly
            self._fall_back(err)

    def _fall_back(self, err: BaseException) -> None:
        self.compiled = None
        first = (str(err).strip().splitlines() or [""])[0][:200]
        self.failed = f"{type(err).__name__}: {first}"
        print(f"warning: train.compile failed ({self.failed}); training eagerly", file=self.stream or sys.stderr,
              flush=True)

    def signature(self, args: tuple, kwargs: dict) -> tuple:
        """What decides whether a call reuses an already compiled graph."""
        return (self.model.training, torch.is_grad_enabled(), _describe(args), _describe(kwargs))

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            return self.model(*args, **kwargs)
        sig = self.signature(args, kwargs)
        known = sig in self.seen
        if not known:
            buffers = [b.detach().clone() for b in self.model.buffers()]
            rng = torch.get_rng_state()
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - compile errors have many types; eager re-raises real ones
            if not known:  # a known signature was not snapshotted: its graph had already run
                with torch.no_grad():
                    for b, saved in zip(self.model.buffers(), buffers):
                        b.copy_(saved)
                torch.set_rng_state(rng)
            self._fall_back(err)
            return self.model(*args, **kwargs)
        self.seen.add(sig)
        return out

    def __getattr__(self, name):
        return getattr(self.model, name)
