"""``train.compile``: train through torch.compile, falling back to eager execution (M13).

torch.compile captures the model's forward (and backward) as a static graph and generates fused
kernels for it. It compiles lazily, so a missing compiler or an unsupported operation surfaces at
the first forward, not when torch.compile is called. :class:`CompiledForward` catches that
failure, warns once, restores what the failed call may have changed (buffers such as BatchNorm
statistics, and the CPU random generator that dropout draws from) and runs the eager model from
then on, so a recipe with ``train.compile: true`` runs everywhere and trains as the eager run would.
"""
from __future__ import annotations

import sys

import torch


class CompiledForward:
    """Callable like the model: the compiled module until it fails once, then the eager one."""

    def __init__(self, model: torch.nn.Module, compiler=None, stream=None):
        self.model = model
        self.stream = stream
        self.failed: str | None = None
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

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            return self.model(*args, **kwargs)
        buffers = [b.detach().clone() for b in self.model.buffers()]
        rng = torch.get_rng_state()
        try:
            return self.compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - compile errors have many types; eager re-raises real ones
            with torch.no_grad():
                for b, saved in zip(self.model.buffers(), buffers):
                    b.copy_(saved)
            torch.set_rng_state(rng)
            self._fall_back(err)
            return self.model(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)
