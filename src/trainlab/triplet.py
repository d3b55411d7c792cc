"""Triplet loss for metric learning (L5): pull an anchor's own identity closer than any other.

For an anchor a, a positive p (another sample of a's identity) and a negative n (a sample of a
different identity), the triplet's loss is ``relu(d(a, p) − d(a, n) + margin)`` (Schroff et al.
2015, "FaceNet"): zero once the negative is at least ``margin`` further away than the positive.
A batch of B embeddings holds up to B³ triplets, almost all of them already satisfied; *mining*
picks the ones that teach something (Hermans et al. 2017, "In Defense of the Triplet Loss for
Person Re-Identification"):

- ``batch_all``: every valid triplet; the mean is over the triplets with a positive loss only,
  so that the easy ones, more numerous as training goes on, do not dilute the gradient.
- ``batch_hard``: per anchor, its furthest positive and its nearest negative; the mean is over
  every anchor that has a positive and a negative in the batch, zero-loss anchors included.
- ``semi_hard``: every triplet whose negative is further than the positive but within the
  margin, ``d(a, p) < d(a, n) < d(a, p) + margin``, averaged.

The values are those of pytorch-metric-learning's ``TripletMarginLoss`` with the matching miner
(see :func:`triplet_loss`). Everything is computed with (B, B) or (B, B, B) masks: no loop over
triplets, and no host–device sync.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import DataError, RecipeError, unknown_name

METRICS = ("euclidean", "squared", "cosine")
MININGS = ("batch_all", "batch_hard", "semi_hard")


def _check_metric(metric: str, field: str) -> None:
    if metric not in METRICS:
        raise unknown_name("distance", metric, METRICS, field=field)


def pairwise_distances(a: torch.Tensor, b: torch.Tensor | None = None, metric: str = "euclidean") -> torch.Tensor:
    """Distances between the rows of ``a`` (N, D) and of ``b`` (M, D): (N, M).

    Args:
        a: (N, D) embeddings.
        b: (M, D) embeddings, or None for ``a`` against itself; then the diagonal is exactly 0.
        metric: ``"euclidean"`` ``‖x − y‖``, ``"squared"`` ``‖x − y‖²`` or ``"cosine"``
            ``1 − cos(x, y)`` in [0, 2] (a zero row counts as orthogonal to everything).

    Euclidean and squared distances come from one matrix product (``‖x‖² + ‖y‖² − 2 x·y``) on
    rows centred on ``b``'s mean. The Euclidean square root has a zero gradient where the distance
    is 0 (identical embeddings), not NaN. Half precision is computed and returned in float32.
    """
    _check_metric(metric, "metric")
    if a.dim() != 2 or (b is not None and (b.dim() != 2 or b.shape[1] != a.shape[1])):
        got = tuple(a.shape) if b is None else f"{tuple(a.shape)} and {tuple(b.shape)}"
        raise DataError(f"pairwise distances: expected embeddings (N, D) and (M, D), got {got}")
    dtype = torch.promote_types(a.dtype if b is None else torch.promote_types(a.dtype, b.dtype), torch.float32)
    x = a.to(dtype)
    y = x if b is None else b.to(dtype)
    if metric == "cosine":
        xn = F.normalize(x, dim=1)
        yn = xn if b is None else F.normalize(y, dim=1)
        # rounding can put cos a hair outside [-1, 1]; the clamp's zero gradient there is the true one
        d = (1 - xn @ yn.T).clamp(0, 2)
    else:
        # distances do not move with a translation, and centred rows lose less to the cancellation
        # in ‖x‖² + ‖y‖² − 2 x·y; a constant centre (detached) leaves the gradient exact
        centre = y.mean(0, keepdim=True).detach()
        xc = x - centre
        yc = xc if b is None else y - centre
        sq = ((xc * xc).sum(1, keepdim=True) + (yc * yc).sum(1) - 2 * xc @ yc.T).clamp(min=0)
        if metric == "squared":
            d = sq
        else:
            # d sqrt(s)/ds is infinite at 0: take the root only where s > 0, else 0 with zero gradient
            pos = sq > 0
            d = torch.where(pos, torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))), torch.zeros_like(sq))
    if b is None:
        d = d.masked_fill(torch.eye(len(x), dtype=torch.bool, device=x.device), 0.0)
    return d


def triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.2,
    mining: str = "batch_hard",
    distance: str = "euclidean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Triplet margin loss of one batch with in-batch mining (L5).

    Args:
        embeddings: (B, D) embeddings (not normalized here: normalize them in the model, or use
            ``distance="cosine"``).
        labels: (B,) integer identities; positives share the anchor's label, negatives do not.
        margin: the margin m >= 0, in the units of ``distance`` (cosine: of 1 − cos).
        mining: ``"batch_all"``, ``"batch_hard"`` or ``"semi_hard"`` (below).
        distance: ``"euclidean"``, ``"squared"`` or ``"cosine"`` (:func:`pairwise_distances`).

    Returns:
        ``(loss, stats)``: the scalar loss, and 0-dim tensors (detached, on the embeddings' device,
        so that reading them is the caller's choice of sync): ``triplets``, the number of triplets
        considered (anchors for batch_hard); ``active``, how many of them add to the loss;
        ``active_fraction`` = active / triplets (0 when there are none).

    With valid triplets (a, p, n): a ≠ p, label(p) = label(a), label(n) ≠ label(a), and
    ``ℓ = relu(d(a, p) − d(a, n) + m)``:

    - ``batch_all``: the mean of ℓ over the valid triplets with ℓ > 0 (the "batch all ≠ 0" of
      Hermans et al.; pytorch-metric-learning's ``TripletMarginLoss`` with its default
      ``AvgNonZeroReducer``, with or without ``TripletMarginMiner(type_of_triplets="all")``).
    - ``batch_hard``: per anchor ``relu(max_p d(a, p) − min_n d(a, n) + m)``, the mean over the
      anchors that have at least one positive and one negative, zero terms included (Hermans et
      al.'s batch hard; pytorch-metric-learning's ``BatchHardMiner`` + ``TripletMarginLoss`` with
      a ``MeanReducer``: its default reducer would average over the non-zero anchors only).
    - ``semi_hard``: the mean of ℓ over all valid triplets with ``d(a, p) < d(a, n) < d(a, p) + m``,
      the negatives further than the positive yet inside the margin (all of them have ℓ > 0).
      This is pytorch-metric-learning's ``TripletMarginMiner(margin=m, type_of_triplets=
      "semihard")`` + ``TripletMarginLoss(margin=m)``. It is not FaceNet's per-pair choice of the
      nearest semi-hard negative (nor TensorFlow Addons', which falls back to the furthest
      negative): every semi-hard triplet counts once. ``triplets`` counts all valid triplets and
      ``active`` the semi-hard ones.

    A batch with nothing to learn from (no valid triplet, or none active) has loss 0, still
    attached to the embeddings' graph so that ``backward()`` works. Memory: the (B, B, B) masks of
    batch_all and semi_hard hold 16.8 M entries at B = 256.
    """
    if mining not in MININGS:
        raise unknown_name("triplet mining", mining, MININGS, field="mining")
    _check_metric(distance, "distance")
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise RecipeError(f"triplet loss: margin must be a finite number >= 0, got {margin!r}")
    if embeddings.dim() != 2 or labels.shape != embeddings.shape[:1]:
        raise DataError(f"triplet loss: expected embeddings (B, D) and labels (B,), got {tuple(embeddings.shape)} "
                        f"and {tuple(labels.shape)}")
    d = pairwise_distances(embeddings, None, distance)
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    negative = ~same
    zero = torch.zeros((), dtype=d.dtype, device=d.device)

    if mining == "batch_hard":
        # -inf / +inf fills lose to every real distance; a row without any gives -inf, relu 0
        hardest_positive = d.masked_fill(~positive, -math.inf).amax(1)
        hardest_negative = d.masked_fill(~negative, math.inf).amin(1)
        considered = positive.any(1) & negative.any(1)
        terms = torch.where(considered, F.relu(hardest_positive - hardest_negative + margin), zero)
        count = considered.sum()
        loss = terms.sum() / count.clamp(min=1)
        active = (terms > 0).sum()
    else:
        ap = d.unsqueeze(2)  # (a, p, 1)
        an = d.unsqueeze(1)  # (a, 1, n)
        violation = ap - an + margin  # (a, p, n)
        considered = positive.unsqueeze(2) & negative.unsqueeze(1)
        chosen = considered & (violation > 0)
        if mining == "semi_hard":
            chosen = chosen & (an > ap)
        count = considered.sum()
        active = chosen.sum()
        loss = torch.where(chosen, violation, zero).sum() / active.clamp(min=1)

    stats = {
        "triplets": count.detach(),
        "active": active.detach(),
        "active_fraction": (active.to(d.dtype) / count.clamp(min=1).to(d.dtype)).detach(),
    }
    return loss, stats
