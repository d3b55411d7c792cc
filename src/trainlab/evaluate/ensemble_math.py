"""How an ensemble combines its members' class probabilities (T4) and SAMME boosting's weights (T5).

Pure functions on tensors. Member probabilities come stacked as ``probs`` (M, N, C): M members, N
samples, C classes, each row a probability vector.

- mean: the average of the members' probabilities (bagging, snapshot ensembles).
- weighted: ``sum_m w_m p_m / sum_m w_m``, non-negative weights (validation accuracies).
- vote: every member votes for its most probable class; the class with the most votes wins, a
  tie goes to the tied class with the highest mean probability, and a tie of that too to the
  lowest class index (``torch.argmax`` returns the first maximum).
- SAMME (Zhu et al. 2009, multi-class AdaBoost): a member's weighted training error ``err``
  gives it the say ``alpha = log((1 - err) / err) + log(K - 1)``; the samples it misclassified
  have their weight multiplied by ``exp(alpha)`` and the weights are renormalized; the ensemble
  predicts ``argmax_k sum_m alpha_m [pred_m == k]``.
"""
from __future__ import annotations

import math

import torch

# Smallest error SAMME uses: a member with no weighted error would get an infinite say.
MIN_ERROR = 1e-10


def mean_probs(probs: torch.Tensor) -> torch.Tensor:
    """(N, C) average of (M, N, C) member probabilities."""
    return probs.mean(0)


def weighted_probs(probs: torch.Tensor, weights: torch.Tensor | list[float]) -> torch.Tensor:
    """(N, C) weighted average of (M, N, C) probabilities; ``weights`` (M,) non-negative, not all 0."""
    w = torch.as_tensor(weights, dtype=probs.dtype)
    if w.shape != (probs.shape[0],):
        raise ValueError(f"{tuple(w.shape)} weights for {probs.shape[0]} members")
    if bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"weights must be >= 0 and not all 0, got {w.tolist()}")
    return torch.einsum("m,mnc->nc", w / w.sum(), probs)


def vote_counts(probs: torch.Tensor) -> torch.Tensor:
    """(N, C) number of members whose most probable class is each class."""
    return torch.nn.functional.one_hot(probs.argmax(2), probs.shape[2]).sum(0).to(probs.dtype)


def vote_scores(probs: torch.Tensor) -> torch.Tensor:
    """(N, C) scores whose argmax is the majority vote with its tie rule: votes + 0.5 · mean
    probability (a mean probability is at most 1, so half of it never outweighs one vote)."""
    return vote_counts(probs) + 0.5 * mean_probs(probs)


def majority_vote(probs: torch.Tensor) -> torch.Tensor:
    """(N,) class chosen by majority vote of (M, N, C) probabilities (tie rule above)."""
    return vote_scores(probs).argmax(1)


def nll(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of (N, C) probabilities at the (N,) targets (cross-entropy of
    the combined prediction); probabilities are floored at 1e-12 so a confident miss stays finite."""
    return -probs.gather(1, target.view(-1, 1)).clamp_min(1e-12).log().mean()


# ------------------------------------------------------------------------------------ SAMME
def samme_error(weights: torch.Tensor, miss: torch.Tensor) -> float:
    """Weighted error ``sum_i w_i [miss_i] / sum_i w_i``; weights (N,), miss (N,) bool."""
    return float((weights * miss.to(weights.dtype)).sum() / weights.sum())


def samme_alpha(error: float, num_classes: int) -> float:
    """A member's say: ``log((1 - err) / err) + log(K - 1)``; positive exactly when the member
    beats chance (err < 1 - 1/K). ``err`` is floored at MIN_ERROR."""
    err = min(max(error, MIN_ERROR), 1.0 - MIN_ERROR)
    return math.log((1 - err) / err) + math.log(num_classes - 1)


def samme_update(weights: torch.Tensor, miss: torch.Tensor, alpha: float) -> torch.Tensor:
    """(N,) next sample weights: ``w_i · exp(alpha · [miss_i])``, normalized to sum 1."""
    w = weights * torch.exp(alpha * miss.to(weights.dtype))
    return w / w.sum()


def samme_scores(preds: torch.Tensor, alphas: torch.Tensor | list[float], num_classes: int) -> torch.Tensor:
    """(N, C) ``sum_m alpha_m [pred_m == k]`` of (M, N) member predictions; its argmax (first
    maximum on a tie) is the boosted prediction."""
    a = torch.as_tensor(alphas, dtype=torch.float64)
    onehot = torch.nn.functional.one_hot(preds.long(), num_classes).to(torch.float64)  # (M, N, C)
    return torch.einsum("m,mnc->nc", a, onehot)
