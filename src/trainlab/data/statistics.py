"""Normalization statistics of the training split (D1), and the cache of what a file data set's
start-up sample found (issue 25)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from ..rng import generator
from .bundle import DataInfo, SampleSource, TensorSource

MAX_STAT_SAMPLES = 4096  # a random sample this large pins mean/std to ~1e-3 of a pixel's std


def channel_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor, torch.Tensor]:
    """(sum (C,), sum of squares (C,), count per channel, min, max) of a (N, C, ...) batch in float64.

    (N, F) vectors count each feature as a channel. Everything but the count stays a tensor on the
    batch's device, so that summing over many batches costs no device sync until the end.
    """
    x = x.detach().double()
    if x.dim() == 1:
        x = x.unsqueeze(1)
    dims = [0, *range(2, x.dim())]
    count = x.numel() // x.shape[1]
    return x.sum(dims), (x * x).sum(dims), count, x.min(), x.max()


def mean_std(total: torch.Tensor, total_sq: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) standard deviation from the sums of :func:`channel_moments`."""
    mean = total / count
    return mean, (total_sq / count - mean * mean).clamp(min=0).sqrt()


def channel_stats(source: SampleSource, info: DataInfo, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (images) or per-feature (flat) mean and standard deviation, in stored scale.

    Computed in float64 over the training split only (or a seeded random sample of at most
    MAX_STAT_SAMPLES of it), so no information leaks from validation or test data. A channel with
    zero variance gets std 1, so normalizing never divides by zero.
    """
    sampled = getattr(source, "sampled_moments", None)
    got = sampled() if sampled is not None else None
    if got is not None:  # a file data set's start-up sample (data.stats_sample), see data.folder
        total, total_sq, count, images = got
        mean, std = mean_std(total, total_sq, count)
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
        sample = info.extra.get("sample", {})
        note = (f"statistics from {images} training images of a random sample of {sample.get('files')} files "
                f"(data.stats_sample)")
        info.extra["statistics"] = note + (" (cached)" if sample.get("cached") else "")
        if not sample.get("cached"):
            print(f"data: {note}; cached for the next run in {cache_dir()}", file=sys.stderr)
        return mean.float(), std.float()
    n = len(source)
    if isinstance(source, TensorSource) and n <= MAX_STAT_SAMPLES * 4:
        chunks = source.inputs.split(256)
    else:  # stream the sample: never hold thousands of decoded images at once
        pick = torch.randperm(n, generator=generator(seed, "stats"))[:MAX_STAT_SAMPLES].tolist()
        chunks = (torch.stack([source.load(i)[0] for i in pick[j : j + 64]]) for j in range(0, len(pick), 64))
    total = total_sq = count = 0
    for x in chunks:
        if info.kind != "image":  # one row of features per sample
            x = x.reshape(len(x), -1)
        s, sq, c, _, _ = channel_moments(x)
        total, total_sq, count = total + s, total_sq + sq, count + c
    mean, std = mean_std(total, total_sq, count)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return mean.float(), std.float()


def cache_dir() -> Path:
    """Where start-up results are cached: ``$TRAINLAB_CACHE``, else ``$XDG_CACHE_HOME/trainlab``,
    else ``~/.cache/trainlab``."""
    if os.environ.get("TRAINLAB_CACHE"):
        return Path(os.environ["TRAINLAB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "trainlab"


def cache_load(kind: str, key: str) -> Any | None:
    """The JSON value cached under (kind, key), or None (missing, unreadable or damaged: recomputed)."""
    try:
        return json.loads((cache_dir() / kind / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cache_store(kind: str, key: str, value: Any) -> None:
    """Cache ``value`` (JSON) under (kind, key), atomically; a cache that cannot be written is skipped
    (the next run recomputes), never an error."""
    from ..atomic import write_text

    try:
        folder = cache_dir() / kind
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / f"{key}.json", json.dumps(value))
    except OSError:
        pass
