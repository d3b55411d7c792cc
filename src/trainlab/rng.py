"""Seeds and random-number-generator state.

Every random choice of a run derives from the run seed. Data order comes from (seed, epoch), each
sample's augmentation from (seed, epoch, index), so neither depends on the number of loader
workers; model initialization and dropout use torch's global generator, seeded once and
checkpointed, so an interrupted run resumes bit for bit.
"""
from __future__ import annotations

import hashlib
import random
import struct
from typing import Any

import numpy as np
import torch


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed that depends on every part (ints or strings), stable across processes."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return struct.unpack("<Q", digest)[0] >> 1


def generator(*parts: Any, device: str | torch.device | None = None) -> torch.Generator:
    """A torch generator on ``device`` (default the CPU) seeded from ``derive_seed(*parts)``."""
    return torch.Generator(device="cpu" if device is None else device).manual_seed(derive_seed(*parts))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch's global generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Global RNG states split into tensors (for safetensors) and JSON-able values."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = state
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    meta = {
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [py_version, list(py_state), py_gauss],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    py_version, py_state, py_gauss = meta["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
