"""Retrieval and verification metrics for embeddings (E5): k nearest neighbours, rank-k, ROC.

Identification (E5): each probe (query) embedding is looked up in a gallery of embeddings with
known identities. :func:`knn_search` finds the k nearest gallery items, :func:`knn_classify` votes
among them (scikit-learn's ``KNeighborsClassifier``), :func:`rank_k_accuracy` asks whether the
probe's identity is among them (the CMC curve's rank-k point).

Verification (E5): pairs of embeddings, each pair "same identity" or not, scored by a distance.
:func:`pairs_from_labels` draws the pairs, :func:`roc_curve` (scikit-learn's), :func:`auc`,
:func:`equal_error_rate` and :func:`tar_at_far` read the ROC.

Torch throughout, on the inputs' device; scikit-learn is only the tests' oracle (and slow to
import), never imported here.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import DataError, RecipeError, unknown_name
from ..rng import generator

METRICS = ("euclidean", "squared", "cosine")
WEIGHTS = ("uniform", "distance")
KINDS = ("distance", "similarity")

# one (queries x gallery) block of the search holds about this many distances (64 MiB in float32)
_BLOCK_ELEMENTS = 1 << 24
# candidates kept per query beyond k from the one-product ranking, re-ranked with exact distances
_RERANK_EXTRA = 16
# columns per block when the candidates are found through block minima (see _smallest)
_PRUNE_WIDTH = 32


# --- identification: k nearest neighbours ------------------------------------------------------

def _check_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RecipeError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def knn_search(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    metric: str = "euclidean",
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest gallery rows of every query: ``(distances (Q, k), indices (Q, k))``.

    Args:
        queries: (Q, D) probe embeddings.
        gallery: (G, D) gallery embeddings, on the queries' device; G >= k.
        k: neighbours per query.
        metric: ``"euclidean"``, ``"squared"`` (squared Euclidean, scikit-learn's
            ``"sqeuclidean"``) or ``"cosine"`` (``1 − cos``, scikit-learn's ``"cosine"``).
        chunk: queries per block; None picks about 16 M distances (64 MiB in float32) per block.

    Each row is nearest first; equal distances go to the lower gallery index. The neighbours and
    distances are scikit-learn's ``NearestNeighbors(algorithm="brute")`` ones (up to rounding).

    Queries go by blocks of ``chunk`` against the whole gallery, so the memory is one (chunk, G)
    block, whatever Q is. In each block one matrix product ranks the gallery (Euclidean: by
    ``‖g‖² − 2 q·g``, which orders like the distance); the best ``k + 16`` candidates (found
    through the minima of blocks of 32 columns: a full-width top-k costs about as much as the
    product) are then re-ranked by their exact distance (``‖q − g‖`` from the differences, free of
    the product form's cancellation), which is also the distance returned. Half precision is
    computed in float32; float64 stays float64. No gradient is recorded.

    Equal distances mean equal as computed: copies of one gallery row tie exactly; two rows that
    differ only in rounding may not.
    """
    if metric not in METRICS:
        raise unknown_name("metric", metric, METRICS, field="metric")
    _check_int(k, "knn_search: k", 1)
    if chunk is not None:
        _check_int(chunk, "knn_search: chunk", 1)
    if queries.dim() != 2 or gallery.dim() != 2 or queries.shape[1] != gallery.shape[1]:
        raise DataError(f"knn_search: expected queries (Q, D) and gallery (G, D), got {tuple(queries.shape)} "
                        f"and {tuple(gallery.shape)}")
    if k > len(gallery):
        raise RecipeError(f"knn_search: k = {k} is more than the {len(gallery)} gallery items")
    dtype = torch.promote_types(torch.promote_types(queries.dtype, gallery.dtype), torch.float32)
    with torch.no_grad():
        q_all = queries.to(dtype)
        g_all = gallery.to(dtype)
        if metric == "cosine":
            q_all, g_all = F.normalize(q_all, dim=1), F.normalize(g_all, dim=1)
            g_rank, centre = g_all, None
        else:
            # ranking rows centred on the gallery's mean: the same order, less cancellation.
            # ‖g‖² rides along as one more column (the queries get a 1 there), so that the product
            # alone gives ‖g‖² − 2 q·g: adding it to a (chunk, G) block would be a second pass
            centre = g_all.mean(0, keepdim=True)
            g_rank = g_all - centre
            g_rank = torch.cat([g_rank, (g_rank * g_rank).sum(1, keepdim=True)], 1)
        n_gallery = len(g_all)
        candidates = min(n_gallery, k + _RERANK_EXTRA)
        rows = chunk or max(1, _BLOCK_ELEMENTS // n_gallery)
        out_d, out_i = [], []
        for start in range(0, len(q_all), rows):
            q = q_all[start:start + rows]
            if centre is None:
                key = (-q) @ g_rank.T  # nearest = largest cosine
            else:
                # ‖q − g‖² − ‖q‖² = ‖g‖² − 2 q·g: the query's own norm does not change its ranking
                key = torch.cat([(q - centre) * -2, q.new_ones(len(q), 1)], 1) @ g_rank.T
            cand = _smallest(key, candidates)
            exact = _exact_distances(q, g_all[cand], metric)
            # nearest first; equal distances by gallery index (sort by index, then stably by distance)
            cand, by_index = cand.sort(1)
            exact = exact.gather(1, by_index)
            exact, by_distance = exact.sort(dim=1, stable=True)
            cand = cand.gather(1, by_distance)
            out_d.append(exact[:, :k])
            out_i.append(cand[:, :k])
        if not out_d:
            empty = q_all.new_zeros((0, k))
            return empty, empty.long()
        return torch.cat(out_d), torch.cat(out_i)


def _smallest(key: torch.Tensor, n: int) -> torch.Tensor:
    """Column indices (rows, n) of the n smallest keys of each row, equal keys by lower index."""
    rows, cols = key.shape
    if n >= cols:
        return torch.arange(cols, device=key.device).expand(rows, cols)
    blocks = cols // _PRUNE_WIDTH
    if blocks < 2 * (n + 1):
        values, idx = key.topk(n + 1, dim=1, largest=False, sorted=True)
        # the (n+1)-th equal to the n-th: topk chose among equal keys arbitrarily
        crowded = values[:, n] == values[:, n - 1]
    else:
        # a full-width topk costs more than the product that made the keys: take the minimum of
        # each block of columns j, j + blocks, j + 2 blocks, ... (one vectorized pass), then look
        # only inside the n blocks with the smallest minima (and the few columns left over).
        # Every one of the n smallest keys is in them: n block minima are already <= the n-th.
        block_min, best = key[:, :blocks * _PRUNE_WIDTH].view(rows, _PRUNE_WIDTH, blocks).amin(1).topk(
            n + 1, dim=1, largest=False, sorted=True)
        spread = blocks * torch.arange(_PRUNE_WIDTH, device=key.device)
        inside = (best[:, :n, None] + spread).reshape(rows, n * _PRUNE_WIDTH)
        left_over = torch.arange(blocks * _PRUNE_WIDTH, cols, device=key.device).expand(rows, -1)
        inside = torch.cat([inside, left_over], 1)
        values, pick = key.gather(1, inside).topk(n + 1, dim=1, largest=False, sorted=True)
        idx = inside.gather(1, pick)
        # ties at the n-th key, inside the blocks or in a block left out (its minimum equals it)
        crowded = (values[:, n] == values[:, n - 1]) | (block_min[:, n] <= values[:, n - 1])
    idx = idx[:, :n]
    if bool(crowded.any()):
        # duplicated gallery rows: redo those rows with a stable sort, which keeps the lowest indices
        redo = crowded.nonzero().squeeze(1)
        idx = idx.clone()
        idx[redo] = key[redo].sort(dim=1, stable=True).indices[:, :n]
    return idx


def _exact_distances(q: torch.Tensor, g: torch.Tensor, metric: str) -> torch.Tensor:
    """Distances of queries (R, D) to their candidates (R, C, D): (R, C)."""
    if metric == "cosine":
        return (1 - (q.unsqueeze(1) * g).sum(-1)).clamp_(0, 2)  # q and g are unit rows here
    diff = q.unsqueeze(1) - g
    sq = (diff * diff).sum(-1)
    return sq if metric == "squared" else sq.sqrt_()


def knn_classify(
    distances: torch.Tensor,
    indices: torch.Tensor,
    gallery_labels: torch.Tensor,
    weights: str = "uniform",
) -> torch.Tensor:
    """Predicted labels (Q,) by a vote of the neighbours from :func:`knn_search`.

    Args:
        distances: (Q, k) neighbour distances, nearest first.
        indices: (Q, k) neighbour indices into the gallery.
        gallery_labels: (G,) integer labels of the gallery (any values: the label set is theirs).
        weights: ``"uniform"`` (one vote each) or ``"distance"`` (a vote of 1 / distance; a query
            with a neighbour at distance 0 takes its vote from the zero-distance neighbours only,
            one each).

    The answers are scikit-learn's ``KNeighborsClassifier(weights=...).predict``: the label with
    the largest total vote, a tie going to the smallest label. Votes are summed per neighbour's
    label as a (Q, k, k) comparison, so the cost does not grow with the number of identities.
    """
    if weights not in WEIGHTS:
        raise unknown_name("weights", weights, WEIGHTS, field="weights")
    if distances.shape != indices.shape or indices.dim() != 2 or gallery_labels.dim() != 1:
        raise DataError(f"knn_classify: expected distances (Q, k), indices (Q, k) and gallery labels (G,), got "
                        f"{tuple(distances.shape)}, {tuple(indices.shape)} and {tuple(gallery_labels.shape)}")
    labels = gallery_labels[indices]
    if weights == "uniform":
        vote = torch.ones(labels.shape, dtype=torch.float64, device=labels.device)
    else:
        # scikit-learn's rule: 1/d in the distances' own precision (an overflow to inf counts as 0)
        inverse = 1.0 / distances
        at_zero = torch.isinf(inverse)
        vote = torch.where(at_zero.any(1, keepdim=True), at_zero.to(inverse.dtype), inverse).double()
    same = labels.unsqueeze(2) == labels.unsqueeze(1)  # (Q, k, k)
    total = (same * vote.unsqueeze(1)).sum(2)  # total vote of neighbour j's label, (Q, k)
    best = total.amax(1, keepdim=True)
    biggest = torch.iinfo(labels.dtype).max if not labels.is_floating_point() else math.inf
    return labels.masked_fill(total < best, biggest).amin(1)


def rank_k_accuracy(
    indices: torch.Tensor,
    gallery_labels: torch.Tensor,
    probe_labels: torch.Tensor,
    k: int = 1,
) -> torch.Tensor:
    """The fraction of probes (0-dim float tensor) whose identity is among the labels of their
    k nearest gallery items: indices (Q, >= k) nearest first, gallery_labels (G,), probe_labels (Q,).
    Rank-1 is the nearest neighbour's label being right; over k it is the CMC curve."""
    _check_int(k, "rank_k_accuracy: k", 1)
    if indices.dim() != 2 or probe_labels.shape != indices.shape[:1]:
        raise DataError(f"rank_k_accuracy: expected indices (Q, k) and probe labels (Q,), got "
                        f"{tuple(indices.shape)} and {tuple(probe_labels.shape)}")
    if k > indices.shape[1]:
        raise RecipeError(f"rank_k_accuracy: k = {k} but the search kept only {indices.shape[1]} neighbours")
    hit = (gallery_labels[indices[:, :k]] == probe_labels.unsqueeze(1)).any(1)
    return hit.float().mean() if len(hit) else torch.zeros((), device=indices.device)


# --- verification: pairs and the ROC -----------------------------------------------------------

def pairs_from_labels(labels: torch.Tensor, max_pairs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Verification pairs from identities: ``(pairs (P, 2) int64, same (P,) bool)``.

    Args:
        labels: (N,) integer identities.
        max_pairs: at most this many pairs in all (>= 2).
        seed: the sample depends on (labels, max_pairs, seed) only, on every machine.

    Every unordered pair {i, j} (i < j in each row) is "same" when the labels are equal. The same
    pairs are all taken when there are at most ``max_pairs // 2`` of them, else a uniform sample
    of that many; then as many different pairs (fewer only when fewer exist), a uniform sample of
    all different pairs: the two classes are balanced. Rows hold the same pairs first, then the
    different ones, each group in a fixed order (by identity). Pairs are counted, not listed, so
    large N (10⁵ samples, 10⁹ pairs) costs O(N) memory. Computed on the CPU, returned on the
    labels' device.
    """
    _check_int(max_pairs, "pairs_from_labels: max_pairs", 2)
    if labels.dim() != 1:
        raise DataError(f"pairs_from_labels: expected labels (N,), got {tuple(labels.shape)}")
    lab = labels.cpu()
    n = len(lab)
    order = lab.argsort(stable=True)
    sorted_labels = lab[order]
    pos = torch.arange(n)
    new_group = torch.ones(n, dtype=torch.bool)
    new_group[1:] = sorted_labels[1:] != sorted_labels[:-1]
    # in sorted order position b pairs with every a < b: a same pair for group_start <= a, else different
    group_start = torch.where(new_group, pos, 0).cummax(0).values
    same_per_row, diff_per_row = pos - group_start, group_start
    total_same, total_diff = int(same_per_row.sum()), int(diff_per_row.sum())
    if total_same == 0 or total_diff == 0:
        raise DataError(f"pairs_from_labels: verification needs a same and a different pair; {n} labels give "
                        f"{total_same} same and {total_diff} different pairs")
    n_same = min(total_same, max_pairs // 2)
    n_diff = min(total_diff, n_same)
    gen = generator("pairs_from_labels", seed)
    same_pairs = _pairs_at(_sample_ranks(total_same, n_same, gen), same_per_row, group_start, order)
    diff_pairs = _pairs_at(_sample_ranks(total_diff, n_diff, gen), diff_per_row, torch.zeros_like(pos), order)
    pairs = torch.cat([same_pairs, diff_pairs])
    same = torch.cat([torch.ones(n_same, dtype=torch.bool), torch.zeros(n_diff, dtype=torch.bool)])
    return pairs.to(labels.device), same.to(labels.device)


def _sample_ranks(total: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """n distinct integers of [0, total) drawn uniformly, sorted (all of them when n >= total)."""
    if n >= total:
        return torch.arange(total)
    if total <= _BLOCK_ELEMENTS:
        return torch.randperm(total, generator=gen)[:n].sort().values
    # too many to permute: draw with replacement until n distinct, then n of those at random
    picked = torch.empty(0, dtype=torch.int64)
    while len(picked) < n:
        draws = torch.randint(total, (2 * (n - len(picked)) + 16,), generator=gen)
        picked = torch.unique(torch.cat([picked, draws]))
    return picked[torch.randperm(len(picked), generator=gen)[:n]].sort().values


def _pairs_at(ranks: torch.Tensor, per_row: torch.Tensor, first: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The pairs numbered ``ranks`` (R,) when sorted position b owns ``per_row[b]`` consecutive
    partners ``first[b], first[b] + 1, ...``: (R, 2) original indices, smaller first."""
    ends = per_row.cumsum(0)
    b = torch.searchsorted(ends, ranks, right=True)
    a = first[b] + ranks - (ends[b] - per_row[b])
    i, j = order[a], order[b]
    return torch.stack([torch.minimum(i, j), torch.maximum(i, j)], 1)


def roc_curve(
    values: torch.Tensor,
    same: torch.Tensor,
    kind: str = "distance",
    drop_intermediate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The verification ROC: ``(fpr, tpr, thresholds)``, float64 CPU tensors of one length.

    Args:
        values: (P,) one number per pair; ``kind`` says which way it points.
        same: (P,) bool, True for a pair of one identity (the positives).
        kind: ``"distance"`` (smaller means same: accept a pair when ``value <= threshold``) or
            ``"similarity"`` (larger means same: accept when ``value >= threshold``).
        drop_intermediate: drop the thresholds whose point is collinear with its neighbours, as
            scikit-learn does by default; False keeps one point per distinct value.

    Point i accepts the pairs on the accepting side of ``thresholds[i]``: tpr is the fraction of
    same pairs accepted, fpr the fraction of different pairs accepted. The first point accepts
    nothing, threshold ``-inf`` for distances (``+inf`` for similarities); thresholds run from the
    strictest to the most lenient.

    This is ``sklearn.metrics.roc_curve(same, score, drop_intermediate=...)`` with the score
    ``-distance`` (or the similarity), the same arrays; for distances ``thresholds`` is minus
    scikit-learn's, so that it is in the distance's own units.
    """
    if kind not in KINDS:
        raise unknown_name("score kind", kind, KINDS, field="kind")
    v = torch.as_tensor(values).detach().to(torch.float64).cpu()
    y = torch.as_tensor(same).detach().cpu()
    if v.dim() != 1 or y.shape != v.shape or y.dtype != torch.bool:
        raise DataError(f"roc_curve: expected values (P,) and same (P,) bool, got {tuple(v.shape)} and "
                        f"{tuple(y.shape)} {y.dtype}")
    if bool(torch.isnan(v).any()):
        raise DataError(f"roc_curve: {int(torch.isnan(v).sum())} of the {len(v)} values are NaN")
    n_same = int(y.sum())
    if n_same == 0 or n_same == len(y):
        raise DataError(f"roc_curve: needs same and different pairs, got {n_same} same of {len(y)}")
    score = -v if kind == "distance" else v
    order = score.argsort(descending=True, stable=True)
    score, positive = score[order], y[order].to(torch.float64)
    # one point per distinct score, at the last pair that has it
    last = torch.cat([(score[1:] != score[:-1]).nonzero().squeeze(1), torch.tensor([len(score) - 1])])
    tps = positive.cumsum(0)[last]
    fps = 1 + last.to(torch.float64) - tps
    thresholds = score[last]
    if drop_intermediate and len(fps) > 2:
        corner = (torch.diff(fps, n=2) != 0) | (torch.diff(tps, n=2) != 0)
        keep = torch.cat([torch.tensor([True]), corner, torch.tensor([True])])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    zero = torch.zeros(1, dtype=torch.float64)
    fps, tps = torch.cat([zero, fps]), torch.cat([zero, tps])
    thresholds = torch.cat([torch.tensor([math.inf], dtype=torch.float64), thresholds])
    if kind == "distance":
        thresholds = -thresholds
    return fps / fps[-1], tps / tps[-1], thresholds


def auc(fpr: torch.Tensor, tpr: torch.Tensor) -> torch.Tensor:
    """Area under the ROC (0-dim float64) by the trapezoid rule; fpr (P,) non-decreasing, tpr (P,).
    Of :func:`roc_curve`'s output it is ``sklearn.metrics.roc_auc_score``."""
    x, y = torch.as_tensor(fpr, dtype=torch.float64), torch.as_tensor(tpr, dtype=torch.float64)
    if x.dim() != 1 or x.shape != y.shape or len(x) < 2:
        raise DataError(f"auc: expected fpr and tpr (P,), P >= 2, got {tuple(x.shape)} and {tuple(y.shape)}")
    if bool((torch.diff(x) < 0).any()):
        raise DataError("auc: fpr must be non-decreasing (a curve from roc_curve)")
    return torch.trapezoid(y, x)


def equal_error_rate(fpr: torch.Tensor, tpr: torch.Tensor, thresholds: torch.Tensor) -> tuple[float, float]:
    """The equal error rate of a ROC from :func:`roc_curve`: ``(eer, threshold)``.

    The EER is where the false rejection rate ``1 − tpr`` equals the false acceptance rate
    ``fpr``, on the ROC drawn as straight segments between its points (so between two thresholds
    it is the rate a mix of the two would reach). The threshold is that of the curve point on
    either side of the crossing where the two rates are closer (the later point on a tie); a
    real operating point, not an interpolated value.
    """
    x, y, t = (torch.as_tensor(a, dtype=torch.float64).cpu() for a in (fpr, tpr, thresholds))
    _check_curve(x, y, t, "equal_error_rate")
    gap = x - (1 - y)  # FAR − FRR: -1 at the first point, +1 at the last, non-decreasing between
    i = int((gap >= 0).nonzero()[0])
    if i == 0 or gap[i] == 0:
        return float(x[i]), float(t[i])
    share = float(-gap[i - 1] / (gap[i] - gap[i - 1]))  # where on segment i-1 → i the gap is 0
    eer = float(x[i - 1] + share * (x[i] - x[i - 1]))
    nearer = i if gap[i] <= -gap[i - 1] else i - 1
    return eer, float(t[nearer])


def tar_at_far(fpr: torch.Tensor, tpr: torch.Tensor, thresholds: torch.Tensor, far: float) -> tuple[float, float]:
    """The highest true acceptance rate with a false acceptance rate <= ``far``: ``(tar, threshold)``.

    Of the curve points with ``fpr <= far`` it takes the one with the highest tpr, the strictest
    threshold among equals. ``far`` in [0, 1]; below the smallest non-zero fpr the answer may be
    the accept-nothing point (tar 0, threshold ∓inf). Pass ``drop_intermediate=False`` curves for
    the exact operating point: the default drops collinear points, which can move the threshold
    (not the tar) along a flat stretch.
    """
    if not (isinstance(far, (int, float)) and 0.0 <= far <= 1.0):
        raise RecipeError(f"tar_at_far: far must be a rate in [0, 1], got {far!r}")
    x, y, t = (torch.as_tensor(a, dtype=torch.float64).cpu() for a in (fpr, tpr, thresholds))
    _check_curve(x, y, t, "tar_at_far")
    allowed = y.masked_fill(x > far, -1.0)
    i = int(allowed.argmax())  # argmax gives the first of equal maxima: the strictest threshold
    return float(y[i]), float(t[i])


def _check_curve(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, what: str) -> None:
    if x.dim() != 1 or x.shape != y.shape or x.shape != t.shape or len(x) < 2:
        raise DataError(f"{what}: expected fpr, tpr and thresholds of one length >= 2 (from roc_curve), got "
                        f"{tuple(x.shape)}, {tuple(y.shape)} and {tuple(t.shape)}")
