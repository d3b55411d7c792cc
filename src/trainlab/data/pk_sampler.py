"""The identity-balanced P×K sampler of metric learning (K5): every batch holds P identities with K
samples each, so every anchor has positives and negatives in its own batch (the triplet loss's
mining needs both).

The order is a pure function of (targets, seed, epoch), like :func:`~trainlab.data.loader.epoch_order`,
so an exact resume draws the same batches.
"""
from __future__ import annotations

import torch

from ..errors import RecipeError
from ..rng import generator


def check_pk(targets: torch.Tensor, p: int, k: int, class_names: list[str] | None = None) -> None:
    """RecipeError (one line naming the value) when P×K batches cannot be drawn from ``targets``:
    fewer than ``p`` identities, or an identity with fewer than ``k`` samples."""
    ids, counts = torch.unique(targets, return_counts=True)
    if len(ids) < p:
        raise RecipeError(f"data.p: {p} identities per batch, but the training split has only {len(ids)}")
    short = counts < k
    if short.any():
        i = int(ids[short][0])
        name = class_names[i] if class_names is not None and i < len(class_names) else str(i)
        more = f" (and {int(short.sum()) - 1} more)" if int(short.sum()) > 1 else ""
        raise RecipeError(f"data.k: identity {name!r} has {int(counts[short][0])} training samples, fewer than "
                          f"data.k={k}{more}")


def pk_order(targets: torch.Tensor, p: int, k: int, seed: int, epoch: int) -> torch.Tensor:
    """Sample indices whose consecutive runs of P×K are identity-balanced batches; ceil(n / (P×K))
    batches, so an epoch has as many steps as with plain shuffling.

    Each identity's samples are shuffled and cut into chunks of K (a remainder of fewer than K
    waits for another epoch's shuffle); each batch takes one chunk from each of P distinct
    identities drawn with probability proportional to the chunks they have left, so an epoch
    visits nearly every sample once whatever the identities' sizes. When fewer than P identities
    have chunks left, every identity is shuffled again. targets: (N,) identity per sample ->
    (B·P·K,) long; a function of (targets, seed, epoch) only.
    """
    g = generator(seed, "pk", epoch)
    ids = torch.unique(targets)
    members = [(targets == i).nonzero().flatten() for i in ids]
    chunks: list[list[torch.Tensor]] = [[] for _ in ids]

    def refill() -> None:
        for c, m in zip(chunks, members):
            shuffled = m[torch.randperm(len(m), generator=g)]
            c.extend(shuffled[: len(m) // k * k].split(k))

    batches = -(-len(targets) // (p * k))
    out: list[torch.Tensor] = []
    for _ in range(batches):
        left = torch.tensor([len(c) for c in chunks], dtype=torch.float64)
        if int((left > 0).sum()) < p:
            refill()
            left = torch.tensor([len(c) for c in chunks], dtype=torch.float64)
        for i in torch.multinomial(left, p, replacement=False, generator=g).tolist():
            out.append(chunks[i].pop())
    return torch.cat(out)
