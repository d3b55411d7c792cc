"""PCA and ZCA whitening of inputs seen as flat feature vectors (D2).

Fitted on the (normalized) training split only, like the normalization statistics, and applied
inside the model's input stage (:class:`trainlab.models.wrapper.Whiten`), so the fitted matrix is
saved with the weights and reused by evaluate and predict.
"""
from __future__ import annotations

import math

import torch

from ..rng import generator
from ..errors import RecipeError
from .bundle import DataInfo, SampleSource, TensorSource

MAX_FEATURES = 4096  # the covariance is D x D; beyond this whitening is the wrong tool (use conv nets)
MAX_FIT_SAMPLES = 20000


def whitening_matrix(x: torch.Tensor, method: str, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), W (D, D)) such that ``(x - mean) @ W.T`` has covariance ~ identity.

    x: (N, D). With Σ = U diag(λ) Uᵀ the covariance of x: PCA is W = diag(1/√(λ+eps)) Uᵀ (rows are
    the principal axes, largest variance first); ZCA is W = U diag(1/√(λ+eps)) Uᵀ, the whitening
    that stays closest to the input (it rotates back into the original coordinates).
    """
    x = x.double()
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / max(len(x), 1)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    evals, evecs = evals.flip(0).clamp(min=0.0), evecs.flip(1)
    scale = 1.0 / torch.sqrt(evals + eps)
    if method == "pca":
        w = scale[:, None] * evecs.T
    elif method == "zca":
        w = (evecs * scale) @ evecs.T
    else:
        raise RecipeError(f"data.whiten: expected pca or zca, got {method!r}")
    return mean, w


def check_whiten_size(info: DataInfo) -> None:
    """Refuse whitening for inputs with more than MAX_FEATURES features (a RecipeError line)."""
    d = math.prod(info.input_shape)
    if d > MAX_FEATURES:
        raise RecipeError(
            f"data.whiten: inputs have {d} features ({'x'.join(map(str, info.input_shape))}); whitening "
            f"needs a DxD covariance and is meant for flat inputs of at most {MAX_FEATURES} features"
        )


def fit_training_whitening(
    train: SampleSource, info: DataInfo, mean: torch.Tensor, std: torch.Tensor, method: str, eps: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whitening fitted on the training split after normalization with (mean, std)."""
    check_whiten_size(info)
    n = len(train)
    if isinstance(train, TensorSource) and n <= MAX_FIT_SAMPLES:
        x = train.inputs.double()
    else:
        pick = torch.randperm(n, generator=generator(seed, "whiten"))[:MAX_FIT_SAMPLES]
        x = torch.stack([train.load(int(i))[0].as_subclass(torch.Tensor) for i in pick]).double()
    shape = (1, -1) + (1,) * (x.dim() - 2) if info.kind == "image" else (1, -1)
    x = (x - mean.double().reshape(shape)) / std.double().reshape(shape)
    mu, w = whitening_matrix(x.reshape(len(x), -1), method, eps)
    return mu.float(), w.float()
