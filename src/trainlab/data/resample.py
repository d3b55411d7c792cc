"""Resampled training splits: the bootstrap of a bagging member (T4) and the weighted draw of a
boosting member (T5, SAMME by resampling).

Member ``k`` of a run with seed ``s`` trains on n draws, with replacement, from the n samples of
the training split: uniform draws (a bootstrap: about 63% of the samples appear, some several
times) or draws in proportion to per-sample weights. The draws depend on (s, k) only, so a
member's split is rebuilt exactly when it is resumed or evaluated, and members differ.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..errors import DataError
from ..rng import generator


def resample_indices(n: int, seed: int, member: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(n,) int64 indices into a split of ``n`` samples, drawn with replacement from (seed, member):
    uniformly, or with probability ``weights[i] / sum(weights)`` (weights (n,), non-negative)."""
    gen = generator(seed, "resample", member)
    if weights is None:
        return torch.randint(n, (n,), generator=gen)
    return torch.multinomial(weights.double(), n, replacement=True, generator=gen)


def load_weights(path: str | Path, n: int) -> torch.Tensor:
    """(n,) float64 sample weights from a JSON list (``data.resample.weights``); a missing file,
    a wrong length or a negative, non-finite or all-zero weight is a DataError."""
    path = Path(path)
    where = f"data.resample.weights: {str(path)!r}"
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{where} does not exist") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{where} is not a JSON list of numbers ({err})") from None
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise DataError(f"{where} is not a JSON list of numbers")
    if len(values) != n:
        raise DataError(f"{where} holds {len(values)} weights for a training split of {n} samples")
    if not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
        raise DataError(f"{where}: weights must be finite, >= 0 and not all 0")
    return torch.tensor(values, dtype=torch.float64)
