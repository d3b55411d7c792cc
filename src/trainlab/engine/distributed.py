"""Data-parallel training over several processes, launched by torchrun (T7).

    torchrun --nproc-per-node N -m trainlab fit RECIPE ...                      one machine
    torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d \\
             --rdzv-endpoint HOST:PORT -m trainlab fit RECIPE ...               M machines

What stays as in one process: ``data.batch_size`` is the *global* batch, and the sample order of
an epoch is the same (seed, epoch) permutation; global batch b is ``order[b*B:(b+1)*B]`` and rank r
trains on the r-th contiguous piece of it (:func:`trainlab.data.loader.shard`). DistributedDataParallel averages the
ranks' gradients, so with equal pieces the step equals one process's step on the whole batch (a
mean loss over 2B samples is the mean of two means over B). The batches per epoch, the optimizer
steps and the schedule are those of one process; only a trailing batch too small to give every rank
two samples is dropped (one process drops a trailing single sample, for BatchNorm's sake).

What changes: rank 0 alone writes the run (metrics, checkpoints, plots, report, the lock) and
prints; the training metrics of an epoch and the validation metrics are summed over the ranks
(each rank validates a piece of every batch where the task's meter holds sums, see
:func:`summable`); each rank draws dropout from its own stream (rank 0 keeps the run's), and a
checkpoint holds every rank's generator state, so a resumed run continues bit for bit. The ranks
agree once per optimizer step (one small all-reduce, on the CPU) on whether to stop (a signal
reached one of them) or to save on the wall clock, so they always stop and save at the same step.

Nothing here is imported by a run of one process.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from ..errors import RecipeError, RunError

DEFAULT_TIMEOUT_S = 300.0  # how long a collective waits for a silent rank before it fails


@dataclass(frozen=True)
class Context:
    """This process's place in the run: torchrun's RANK, WORLD_SIZE and LOCAL_RANK."""

    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env(environ: dict[str, str] | None = None) -> Context | None:
    """The Context torchrun's environment describes; None for a single process (no WORLD_SIZE, or 1)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise RunError(f"torchrun environment: RANK/WORLD_SIZE/LOCAL_RANK must be integers, got "
                       f"{env.get('RANK')!r}/{env.get('WORLD_SIZE')!r}/{env.get('LOCAL_RANK')!r}") from None
    if world < 1 or not 0 <= rank < world:
        raise RunError(f"torchrun environment: RANK {rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE {world})")
    return Context(rank, world, local) if world > 1 else None


def check_recipe(recipe, world: int) -> None:
    """Refuse (RecipeError, one line) what cannot be split over ``world`` ranks, before any process
    waits for another: a global batch the ranks cannot share equally, and doctor remedies (they
    would change one rank's training only)."""
    data = recipe.data
    if isinstance(data.batch_size, int) and data.batch_size % world:
        raise RecipeError(f"data.batch_size: {data.batch_size} is the global batch and must be divisible by the "
                          f"world size {world} (torchrun's processes); e.g. {max(world, data.batch_size // world * world)}")
    if data.sampler == "pk" and data.p % world:
        raise RecipeError(f"data.p: {data.p} identities per batch must be divisible by the world size {world}, so "
                          "that every rank gets whole identities")
    for field in ("bagging", "boosting"):  # ensembles of runs (T4, T5): each member is its own fit
        if getattr(recipe.train, field, 0):
            raise RecipeError(f"train.{field}: an ensemble's members are separate runs, not trained under "
                              "torchrun; run `trainlab fit` without torchrun")
    if recipe.doctor is not None and recipe.doctor.enabled and recipe.doctor.auto:
        raise RecipeError("doctor.auto: the doctor's remedies change the training of the process that applies them; "
                          "under torchrun set doctor.auto=false (the doctor still diagnoses, on rank 0)")


def device_for(recipe, ctx: Context) -> torch.device:
    """The device of ``ctx``'s rank: its local GPU (cuda:LOCAL_RANK) when the recipe trains on CUDA."""
    from ..device import resolve_device

    device = resolve_device(recipe.train.device)
    if device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def setup(ctx: Context, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Join the process group (torchrun's MASTER_ADDR/MASTER_PORT): gloo for CPU tensors, and NCCL
    for CUDA tensors where there is a GPU. ``timeout_s`` bounds every collective, so the survivors
    of a rank that hangs fail instead of waiting for ever (a rank that dies closes its connections,
    which they notice at once)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "gloo"
    if torch.cuda.is_available() and dist.is_nccl_available():
        torch.cuda.set_device(ctx.local_rank % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    try:
        dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world, timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as err:
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise RunError(f"rank {ctx.rank}: could not join the {ctx.world}-process group at {where} "
                       f"({first_line(err)})") from None
    # Kept until the process exits: a second fit in the same processes (kfold, a script) reuses it;
    # a group destroyed and made again would find the first one's addresses in torchrun's store.
    import atexit

    atexit.register(close)


def leave_together() -> None:
    """Wait until every rank is done with the group (a rank whose peer is gone while it still
    uses the group may have gloo abort it at exit); a rank already gone is not waited for."""
    import torch.distributed as dist

    if dist.is_initialized():
        with contextlib.suppress(RuntimeError):
            dist.barrier()


def close() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def first_line(err: BaseException) -> str:
    """The gist of a (gloo, NCCL, store) error: its first line without the source location and
    the generic advice that follows."""
    import re

    text = str(err).strip().splitlines()
    line = re.sub(r"^\[[^\]]*\]\s*", "", text[0]) if text else type(err).__name__
    return line.split(". This is typically")[0]


# ------------------------------------------------------------------------- errors of the group
class RankError(RunError):
    """An error every rank raises alike (a recipe they disagree on, a refused recipe): rank 0
    prints it, the others exit with its code quietly."""


@contextlib.contextmanager
def peer_failures(ctx: Context, last_checkpoint=None):
    """Turn a collective that failed because another rank stopped (killed, crashed, hung past
    the timeout) into one line; the checkpoint on disk is the last one written in full."""
    try:
        yield
    except RunError:
        raise
    except RuntimeError as err:  # torch.distributed's DistError and gloo/NCCL errors are RuntimeErrors
        import torch.distributed as dist

        if not isinstance(err, getattr(dist, "DistError", ())) and not any(
                word in str(err) for word in ("Connection", "gloo", "NCCL", "timed out", "Timeout", "peer")):
            raise
        saved = ""
        if last_checkpoint is not None and last_checkpoint.exists():
            saved = (f"; the last checkpoint {last_checkpoint} is intact: torchrun ... -m trainlab fit --resume "
                     f"{last_checkpoint.parent.parent}")
        raise RunError(f"rank {ctx.rank}: another of the {ctx.world} processes stopped or stopped answering "
                       f"({first_line(err)}){saved}") from None


# ---------------------------------------------------------------------------- the recipe hash
def versions() -> dict[str, str]:
    """The torch and trainlab versions: ranks that compute differently are told apart too."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("trainlab")
    except PackageNotFoundError:  # a source tree on PYTHONPATH
        own = "source"
    return {"torch": torch.__version__, "trainlab": own}


def recipe_digest(recipe) -> str:
    """SHA-256 of the recipe (every field) and of the torch and trainlab versions that run it."""
    text = json.dumps({"recipe": recipe.to_dict(), "versions": versions()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += _differences(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if a == b else [path or "(whole)"]


def check_same_recipe(recipe) -> None:
    """Every rank must train the same recipe: their digests are compared at start-up, and on a
    mismatch the first field that differs is named (RankError on every rank)."""
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    digests: list[Any] = [None] * world
    dist.all_gather_object(digests, recipe_digest(recipe))
    if len(set(digests)) == 1:
        return
    mine = {"recipe": recipe.to_dict(), "versions": versions()}
    every: list[Any] = [None] * world
    dist.all_gather_object(every, mine)
    other = next(r for r, d in enumerate(digests) if d != digests[0])
    diff = _differences(every[0], every[other])
    field = diff[0] if diff else "?"

    def show(r):
        value: Any = every[r]
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return json.dumps(value)[:60]

    raise RankError(f"the ranks disagree on the recipe (hash {digests[0][:12]} on rank 0, {digests[other][:12]} on "
                    f"rank {other}): {field.removeprefix('recipe.')} is {show(0)} on rank 0 and {show(other)} on rank "
                    f"{other}{' (and more)' if len(diff) > 1 else ''}; start every rank with the same recipe, "
                    f"overrides and versions (rank {rank} stops)")


def broadcast(obj: Any) -> Any:
    """``obj`` as rank 0 has it, on every rank (pickled: small things and checkpoints only)."""
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------- sums over the ranks
def sum_states(states: list[Any]) -> Any:
    """Element-wise sum of JSON meter states (numbers add, lists and dicts by position and key;
    anything else must be equal on every rank)."""
    first = states[0]
    if isinstance(first, bool) or first is None or isinstance(first, str):
        return first
    if isinstance(first, (int, float)):
        return sum(states[1:], first)
    if isinstance(first, list):
        return [sum_states([s[i] for s in states]) for i in range(len(first))]
    if isinstance(first, dict):
        return {k: sum_states([s[k] for s in states]) for k in first}
    return first


def summable(meter) -> bool:
    """Whether an evaluation meter declares its accumulators (``summed``: attribute names holding
    sums, or meters that declare their own), so that ranks can each evaluate part of a split and
    add up; a meter that does not (mAP, retrieval) is run over the whole split on every rank."""
    names = getattr(type(meter), "summed", None)
    if not names:
        return False
    return all(not hasattr(getattr(meter, n, None), "update") or summable(getattr(meter, n)) for n in names)


def _values(meter) -> list[Any]:
    out = []
    for name in type(meter).summed:
        value = getattr(meter, name)
        if hasattr(value, "update"):
            out.append(_values(value))
        else:
            out.append(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
    return out


def _assign(meter, values: list[Any]) -> None:
    for name, value in zip(type(meter).summed, values):
        own = getattr(meter, name)
        if hasattr(own, "update"):
            _assign(own, value)
        else:
            if isinstance(own, torch.Tensor) and isinstance(value, torch.Tensor):
                value = value.to(own.device)
            setattr(meter, name, value)


def _add(values: list[list[Any]]) -> list[Any]:
    out = []
    for parts in zip(*values):
        if isinstance(parts[0], list):
            out.append(_add(list(parts)))
            continue
        present = [p for p in parts if p is not None]  # a rank without batches has no matrix yet
        total = present[0] if present else None
        for p in present[1:]:
            total = total + p
        out.append(total)
    return out


def reduce_meter(meter) -> None:
    """Replace a :func:`summable` meter's accumulators by their sums over the ranks (the same on
    every rank: gathered, then added in rank order)."""
    _assign(meter, _add(gather(_values(meter))))


def agree(values: list[int]) -> list[int]:
    """The element-wise maximum of ``values`` over the ranks (on the CPU, through gloo)."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)  # a CPU tensor: gloo, no device sync
    return t.tolist()


def sync_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, before an evaluation: the
    ranks' own last updates differ where BatchNorm is not synchronised."""
    import torch.distributed as dist

    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)


# ------------------------------------------------------------------------- BatchNorm across ranks
class _SumOverRanks(torch.autograd.Function):
    """y = sum of x over the ranks. Every rank's loss depends on y, so the gradient of x is the sum
    of the ranks' gradients of y: an all-reduce again."""

    @staticmethod
    def forward(ctx, x):
        import torch.distributed as dist

        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist

        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CrossRankBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch (T7, train.sync_batchnorm):
    the mean and the biased variance over every rank's samples, by two differentiable all-reduces
    (the sum of x, then of (x - mean)^2, with the sample counts), so gradients flow to every rank's
    inputs as they would in one process. torch's SyncBatchNorm does the same on GPUs only; this one
    serves the CPU (gloo). Evaluation uses the running statistics as BatchNorm does.

    Shapes: input (N, C, *) on each rank; statistics (C,).
    """

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        all_reduce = _SumOverRanks.apply
        dims = [0, *range(2, x.dim())]
        per_channel = x.numel() // max(x.shape[1], 1)
        sums = all_reduce(torch.cat([x.sum(dims), x.new_tensor([float(per_channel)])]))
        count = sums[-1].detach()
        mean = sums[:-1] / count
        shape = [1, -1] + [1] * (x.dim() - 2)
        centred = x - mean.reshape(shape)
        var = all_reduce((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                n = float(count)
                unbiased = var * (n / max(n - 1.0, 1.0))
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.detach(), alpha=factor)
        y = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y


def synchronise_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` with every BatchNorm layer computing global-batch statistics: torch's SyncBatchNorm
    on CUDA, :class:`CrossRankBatchNorm` elsewhere. Parameter and buffer names do not change, so the
    checkpoint loads into the plain model."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def convert(module: torch.nn.Module) -> torch.nn.Module:
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, CrossRankBatchNorm):
            new = CrossRankBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                     module.track_running_stats)
            new.load_state_dict(module.state_dict())
            new.train(module.training)
            return new.to(next(iter(module.state_dict().values()), torch.empty(0)).device)
        for name, child in module.named_children():
            setattr(module, name, convert(child))
        return module

    return convert(model)


def wrap(model: torch.nn.Module, device: torch.device, sync_batchnorm: bool):
    """(model, its DistributedDataParallel wrapper): the wrapper's construction broadcasts rank 0's
    parameters and buffers, so every rank starts from the same weights."""
    from torch.nn.parallel import DistributedDataParallel

    if sync_batchnorm:
        model = synchronise_batchnorm(model, device)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return model, DistributedDataParallel(model, device_ids=ids)


def rank_seed(seed: int, rank: int) -> int:
    from ..rng import derive_seed

    return derive_seed(seed, "rank", rank)
