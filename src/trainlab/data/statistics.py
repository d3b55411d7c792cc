"""Normalization statistics of the training split (D1)."""
from __future__ import annotations

import torch

from ..engine.seeding import generator
from .bundle import DataInfo, SampleSource, TensorSource

MAX_STAT_SAMPLES = 4096  # a random sample this large pins mean/std to ~1e-3 of a pixel's std


def channel_stats(source: SampleSource, info: DataInfo, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (images) or per-feature (flat) mean and standard deviation, in stored scale.

    Computed in float64 over the training split only (or a seeded random sample of at most
    MAX_STAT_SAMPLES of it), so no information leaks from validation or test data. A channel with
    zero variance gets std 1, so normalizing never divides by zero.
    """
    n = len(source)
    if isinstance(source, TensorSource) and n <= MAX_STAT_SAMPLES * 4:
        chunks = source.inputs.split(256)
    else:  # stream the sample: never hold thousands of decoded images at once
        pick = torch.randperm(n, generator=generator(seed, "stats"))[:MAX_STAT_SAMPLES].tolist()
        chunks = (torch.stack([source.load(i)[0] for i in pick[j : j + 64]]) for j in range(0, len(pick), 64))
    total = total_sq = count = 0
    for x in chunks:
        x = x.double()
        dims = [0] + list(range(2, x.dim())) if info.kind == "image" else [0]
        total = total + x.sum(dim=dims)
        total_sq = total_sq + x.square().sum(dim=dims)
        count += x.numel() // x.shape[1] if info.kind == "image" else x.shape[0]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp(min=0).sqrt()
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return mean.float(), std.float()
