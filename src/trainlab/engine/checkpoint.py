"""Checkpoints: tensors in safetensors, state in JSON, one file written atomically.

A checkpoint is a single ``.safetensors`` file whose tensors carry prefixed names (``model.``,
``optim.``, ``ema.``, ``rng.``) and whose header metadata holds the JSON state (epoch, step, data
position, schedule, early stopping, history...). One file means one atomic rename: a kill during a
save leaves the previous checkpoint whole. A readable copy of the JSON state is written beside it
(``last.json``); loading trusts only the copy inside the safetensors file. Nothing is unpickled.

The file is written by the safetensors library (``save_file``, straight from the snapshot's
memory into the temporary file, on the writer thread). A hand-written serializer used to make
the bytes instead; ``python benchmarks/safetensors_writer.py`` found it within noise (2 ms) of
the library on the default digits-cnn checkpoint and 1.4x slower on a 100 MB one, stalling the
training thread longer (safetensors 0.8), so it was removed.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import atomic
from ..atomic import dumps
from ..errors import RunError
from .state_schema import RESUME_KEYS, check_state

STATE_KEY = "trainlab_state"
FORMAT = "trainlab-checkpoint/1"


def snapshot(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies: safe to serialize on another thread while training goes on, and
    never sharing storage, which safetensors refuses (tied weights)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def save_checkpoint(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    state: dict[str, Any],
    submit: Callable[[Path, bytes | Callable[[Path], None]], None] | None = None,
    copied: bool = False,
) -> None:
    """Write ``tensors`` and the JSON ``state`` to ``path``, plus ``path.json`` for people.

    The snapshot (tensor copies, JSON text) is taken here, unless ``copied`` says that ``tensors``
    already are the caller's :func:`snapshot`; ``submit`` hands it to a writer (the trainer's
    background DurableWriter), which also does the safetensors serialization. By default the files
    are written durably before returning.
    """
    from safetensors.torch import save_file

    path = Path(path)
    text = dumps({"format": FORMAT, **state}, indent=None)  # compact: indent runs json's Python encoder
    plain = tensors if copied else snapshot(tensors)

    def fill(tmp: Path) -> None:
        save_file(plain, str(tmp), metadata={STATE_KEY: text})

    if submit is None:
        atomic.write_file(path, fill)
        atomic.write_bytes(path.with_suffix(".json"), (text + "\n").encode())
    else:
        submit(path, fill)
        submit(path.with_suffix(".json"), (text + "\n").encode())


# State keys a checkpoint must hold to be evaluated / to be resumed from.
MODEL_KEYS = ("info",)


def load_checkpoint(
    path: str | Path, require: tuple[str, ...] = MODEL_KEYS
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, state) of a checkpoint; a missing, truncated or tampered file is a RunError.

    The file is read once and both the tensors and the state come from those bytes, so a
    concurrent rename can never pair one file's tensors with another's state.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    try:
        if len(data) < 8:
            raise ValueError(f"{len(data)} bytes")
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
        meta = header.get("__metadata__") or {} if isinstance(header, dict) else {}
        tensors = load(data)
    except (SafetensorError, ValueError, OSError, RuntimeError, UnicodeDecodeError) as err:
        raise RunError(f"checkpoint {path} is damaged or not a safetensors file ({str(err).splitlines()[0]})") from None
    if STATE_KEY not in meta:
        raise RunError(f"checkpoint {path} has no trainlab state (not written by trainlab fit)")
    try:
        state = json.loads(meta[STATE_KEY])
    except json.JSONDecodeError:
        raise RunError(f"checkpoint {path}: its state is not valid JSON (file tampered with?)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RunError(f"checkpoint {path}: unknown format {state.get('format') if isinstance(state, dict) else state!r}")
    missing = [k for k in require if k not in state]
    if missing:
        raise RunError(f"checkpoint {path}: its state lacks {', '.join(missing)} (file damaged or tampered with?)")
    if require in (MODEL_KEYS, RESUME_KEYS):  # what evaluating / resuming reads, checked before any use
        check_state(state, str(path), resume=require == RESUME_KEYS)
    return tensors, state


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix.`` with the prefix removed."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def check_model_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Raise a RunError unless ``weights`` is a full state dict of ``model``: the same keys and
    shapes, each tensor of the model's own dtype (a float64 or float16 tensor would be cast
    silently by ``load_state_dict``), and no NaN or infinity in a floating tensor."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = [
        f"{k} {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"shape mismatch: {'; '.join(shapes[:5])}{' ...' if len(shapes) > 5 else ''}")
        if missing:
            parts.append(f"missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        raise RunError(f"checkpoint {source} does not match the recipe's model ({'; '.join(parts)})")
    for k, mine in own.items():
        theirs = weights[k]
        if theirs.dtype != mine.dtype:
            raise RunError(f"checkpoint {source}: model tensor {k} is {str(theirs.dtype).replace('torch.', '')}, "
                           f"the model's is {str(mine.dtype).replace('torch.', '')} (not written by this recipe's fit)")
        if theirs.is_floating_point() and not bool(torch.isfinite(theirs).all()):
            raise RunError(f"checkpoint {source}: model tensor {k} holds NaN or infinite values "
                           "(a diverged or damaged checkpoint)")


def load_model_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load a full state dict into ``model``; anything :func:`check_model_weights` refuses is a RunError."""
    check_model_weights(model, weights, source)
    model.load_state_dict(weights)


def check_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                            source: str) -> None:
    """Raise a RunError unless the optimizer state of a checkpoint (``tensors`` named
    ``state.<parameter index>.<name>``, ``meta`` its checked JSON) fits ``opt``: the same parameter
    groups, and each state tensor of its parameter's shape and dtype (a one-element ``step``)."""
    def fail(path: str, what: str) -> RunError:
        return RunError(f"checkpoint {source}: {path}: {what}")

    mine = [len(g["params"]) for g in opt.param_groups]
    theirs = [len(g["params"]) for g in meta["param_groups"]]
    if mine != theirs:
        raise fail("state.optimizer.param_groups", f"groups of {theirs} parameters; this model's optimizer has {mine}")
    params = [p for g in opt.param_groups for p in g["params"]]
    for key, value in tensors.items():
        kind, pid, name = (key.split(".", 2) + ["", ""])[:3]
        if kind != "state" or not pid.isdigit() or not name or int(pid) >= len(params):
            raise fail(f"tensor optim.{key}", f"not an optimizer state of this model ({len(params)} parameters)")
        param = params[int(pid)]
        if name == "step":
            if not value.is_floating_point() or value.numel() != 1:
                raise fail(f"tensor optim.{key}", f"expected one step count, got {value.dtype} {tuple(value.shape)}")
        elif value.shape != param.shape or value.dtype != param.dtype:
            raise fail(f"tensor optim.{key}", f"expected {param.dtype} {tuple(param.shape)} like its parameter, "
                       f"got {value.dtype} {tuple(value.shape)}")


def check_rng_tensors(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Raise a RunError unless ``tensors`` are generator states as :func:`trainlab.rng.rng_state`
    saves them: torch's CPU state (a uint8 vector of its size) and any CUDA ones."""
    size = torch.get_rng_state().numel()
    if "torch" not in tensors:
        raise RunError(f"checkpoint {source}: tensor rng.torch: missing (torch's generator state)")
    for key, value in tensors.items():
        if key != "torch" and not key.startswith("cuda"):
            raise RunError(f"checkpoint {source}: tensor rng.{key}: not a generator state trainlab saves")
        if value.dtype != torch.uint8 or value.dim() != 1 or (key == "torch" and value.numel() != size):
            what = f"a uint8 vector of {size} bytes" if key == "torch" else "a uint8 vector"
            raise RunError(f"checkpoint {source}: tensor rng.{key}: expected {what}, got {value.dtype} "
                           f"{tuple(value.shape)}")


def check_like(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], prefix: str, source: str) -> None:
    """Raise a RunError unless ``tensors`` has ``own``'s keys, shapes and dtypes (the EMA's averages)."""
    if set(tensors) != set(own):
        raise RunError(f"checkpoint {source}: tensors {prefix}.*: expected the {len(own)} tensors of this model, "
                       f"got {len(tensors)}")
    for key, value in tensors.items():
        if value.shape != own[key].shape or value.dtype != own[key].dtype:
            raise RunError(f"checkpoint {source}: tensor {prefix}.{key}: expected {own[key].dtype} "
                           f"{tuple(own[key].shape)}, got {value.dtype} {tuple(value.shape)}")


def optimizer_to_checkpoint(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as tensors (``state.<param>.<name>``) plus JSON (groups, scalar entries)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_checkpoint(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g and isinstance(g["betas"], list):
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})
