"""E5: k-NN retrieval (search, vote, rank-k) and verification (pairs, ROC, AUC, EER, TAR@FAR)
against scikit-learn (NearestNeighbors, KNeighborsClassifier, roc_curve, roc_auc_score), loops
written out here and constructed cases with known answers."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from trainlab.errors import DataError, RecipeError
from trainlab.evaluate.retrieval import (
    auc,
    equal_error_rate,
    knn_classify,
    knn_search,
    pairs_from_labels,
    rank_k_accuracy,
    roc_curve,
    tar_at_far,
)

SKLEARN_METRIC = {"euclidean": "euclidean", "squared": "sqeuclidean", "cosine": "cosine"}


def data(seed: int, q: int = 40, g: int = 300, dim: int = 8, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(q, dim, generator=gen, dtype=dtype), torch.randn(g, dim, generator=gen, dtype=dtype),
            torch.randint(0, 6, (g,), generator=gen) * 3 - 5)  # labels -5, -2, ..., 10: not 0..C-1


def test_retrieval_does_not_import_sklearn():
    """E5: scikit-learn is the tests' oracle, never imported by the module (it is slow to import),
    not even lazily inside a function."""
    import ast

    import trainlab.evaluate.retrieval as retrieval

    tree = ast.parse(open(retrieval.__file__, encoding="utf-8").read())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported and not [name for name in imported if name.split(".")[0] == "sklearn"]


@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("metric", ["euclidean", "squared", "cosine"])
def test_knn_search_equals_sklearn_nearest_neighbors(metric, k):
    """E5: neighbours (same indices, same order) and distances of sklearn's brute-force
    NearestNeighbors, for each metric; chunked or not, the same answer."""
    from sklearn.neighbors import NearestNeighbors

    for seed in range(2):
        queries, gallery, _ = data(seed)
        nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric=SKLEARN_METRIC[metric]).fit(gallery.numpy())
        ref_d, ref_i = nn.kneighbors(queries.numpy())
        dist, idx = knn_search(queries, gallery, k, metric)
        assert dist.shape == idx.shape == (len(queries), k) and idx.dtype == torch.int64
        np.testing.assert_array_equal(idx.numpy(), ref_i)
        np.testing.assert_allclose(dist.numpy(), ref_d, rtol=1e-10, atol=1e-12)
        for chunk in (1, 7, 1000):
            d2, i2 = knn_search(queries, gallery, k, metric, chunk=chunk)
            assert torch.equal(i2, idx) and torch.equal(d2, dist)


@pytest.mark.parametrize("metric", ["euclidean", "squared", "cosine"])
def test_knn_search_equals_sklearn_on_a_larger_gallery(metric):
    """E5: a gallery large enough (4000) for the search to prune by block minima: still sklearn's
    neighbours and distances, k = 1 and 5, chunked or not."""
    from sklearn.neighbors import NearestNeighbors

    queries, gallery, _ = data(30, q=30, g=4000, dim=16)
    nn = NearestNeighbors(n_neighbors=5, algorithm="brute", metric=SKLEARN_METRIC[metric]).fit(gallery.numpy())
    ref_d, ref_i = nn.kneighbors(queries.numpy())
    for k, chunk in ((1, None), (5, None), (5, 4)):
        dist, idx = knn_search(queries, gallery, k, metric, chunk=chunk)
        np.testing.assert_array_equal(idx.numpy(), ref_i[:, :k])
        np.testing.assert_allclose(dist.numpy(), ref_d[:, :k], rtol=1e-10, atol=1e-12)


def test_knn_search_float32_matches_float64_neighbours():
    """E5: float32 inputs (the ranking product in float32, then exact re-ranking) find the
    neighbours float64 finds, with float32 distances."""
    queries, gallery, _ = data(3, q=50, g=2000, dim=32)
    d64, i64 = knn_search(queries, gallery, 5)
    d32, i32 = knn_search(queries.float(), gallery.float(), 5, chunk=16)
    assert d32.dtype == torch.float32
    assert torch.equal(i32, i64)
    torch.testing.assert_close(d32.double(), d64, rtol=1e-5, atol=1e-5)


def test_knn_search_breaks_ties_by_lower_gallery_index():
    """E5: equal distances go to the lower gallery index, also when more gallery rows tie than the
    search keeps as candidates (30 copies of the nearest point)."""
    point = torch.tensor([[1.0, 2.0, 3.0]])
    gallery = torch.cat([torch.full((10, 3), 50.0), point.repeat(30, 1), torch.full((5, 3), 9.0)])
    gallery = gallery[torch.randperm(len(gallery), generator=torch.Generator().manual_seed(0))]
    copies = torch.nonzero((gallery == point).all(1)).squeeze(1)
    for metric, k in itertools.product(["euclidean", "squared", "cosine"], [1, 5, 30]):
        dist, idx = knn_search(point + 0.0, gallery, k, metric)
        assert idx[0].tolist() == copies[:k].tolist()
        torch.testing.assert_close(dist, torch.zeros_like(dist), rtol=0, atol=1e-6 if metric == "cosine" else 0)
    # a large gallery (pruned by block minima) with 40 copies of the nearest point spread over it
    gen = torch.Generator().manual_seed(1)
    gallery = torch.randn(5000, 3, generator=gen) * 5 + 20
    where = torch.randperm(5000, generator=gen)[:40].sort().values
    gallery[where] = point
    for metric, k in itertools.product(["euclidean", "squared", "cosine"], [1, 5, 40]):
        dist, idx = knn_search(point + 0.0, gallery, k, metric, chunk=1)
        assert idx[0].tolist() == where[:k].tolist()
        torch.testing.assert_close(dist, torch.zeros_like(dist), rtol=0, atol=1e-6 if metric == "cosine" else 0)
    # a tie inside the candidates: two points at the same distance on either side of the query
    gallery = torch.tensor([[3.0, 0.0], [0.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    dist, idx = knn_search(torch.zeros(1, 2), gallery, 3)
    assert idx.tolist() == [[1, 2, 3]] and dist.tolist() == [[0.0, 1.0, 1.0]]


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("k", [1, 4, 5])
@pytest.mark.parametrize("metric", ["euclidean", "squared", "cosine"])
def test_knn_classify_equals_sklearn_kneighbors_classifier(metric, k, weights):
    """E5: the vote of sklearn's KNeighborsClassifier (brute), uniform (ties, frequent with k = 4
    and 6 labels, to the smallest label) or 1/distance weighted, labels that are not 0..C-1."""
    from sklearn.neighbors import KNeighborsClassifier

    queries, gallery, labels = data(10 + k, q=200, g=120)
    clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric=SKLEARN_METRIC[metric], weights=weights)
    ref = clf.fit(gallery.numpy(), labels.numpy()).predict(queries.numpy())
    dist, idx = knn_search(queries, gallery, k, metric)
    pred = knn_classify(dist, idx, labels, weights)
    assert pred.shape == (len(queries),) and pred.dtype == labels.dtype
    np.testing.assert_array_equal(pred.numpy(), ref)


def test_knn_classify_zero_distances_vote_alone_as_sklearn():
    """E5: distance weighting with neighbours at distance 0: only those vote, one vote each
    (sklearn's rule). Integer points, many of them repeated with different labels, so that the
    distances tie everywhere; the vote is given sklearn's own neighbours (which of the tied points
    it keeps is its business) and must give its predictions."""
    from sklearn.neighbors import KNeighborsClassifier

    gen = torch.Generator().manual_seed(4)
    gallery = torch.randint(0, 4, (60, 2), generator=gen).double()  # 16 places: many exact duplicates
    labels = torch.randint(0, 3, (60,), generator=gen)
    queries = torch.cat([gallery[:25], torch.rand(15, 2, generator=gen, dtype=torch.float64) * 3])
    for k in (3, 7):
        clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute", weights="distance")
        clf.fit(gallery.numpy(), labels.numpy())
        dist, idx = clf.kneighbors(queries.numpy())
        assert (dist[:25, 0] == 0).all()
        pred = knn_classify(torch.from_numpy(dist), torch.from_numpy(idx), labels, "distance")
        np.testing.assert_array_equal(pred.numpy(), clf.predict(queries.numpy()))
    # a zero-distance neighbour outvotes any number of near ones
    d = torch.tensor([[0.0, 1e-9, 1e-9]])
    assert knn_classify(d, torch.tensor([[0, 1, 2]]), torch.tensor([7, 3, 3]), "distance").tolist() == [7]


def test_rank_k_accuracy_equals_a_loop():
    """E5: rank-k accuracy is the fraction of probes whose identity is among their k nearest
    gallery labels (rank-1: the nearest neighbour is right), non-decreasing in k."""
    queries, gallery, labels = data(21, q=60, g=90)
    probe_labels = labels[torch.randint(0, 90, (60,), generator=torch.Generator().manual_seed(1))]
    _, idx = knn_search(queries, gallery, 10)
    previous = 0.0
    for k in (1, 2, 5, 10):
        ref = sum(int(probe_labels[q]) in labels[idx[q, :k]].tolist() for q in range(60)) / 60
        acc = rank_k_accuracy(idx, labels, probe_labels, k)
        assert acc.dim() == 0 and float(acc) == pytest.approx(ref)
        assert float(acc) >= previous
        previous = float(acc)
    # the nearest neighbour of each gallery item in the gallery is itself: rank-1 = 1
    _, self_idx = knn_search(gallery, gallery, 1)
    assert float(rank_k_accuracy(self_idx, labels, labels, 1)) == 1.0


@pytest.mark.parametrize("drop_intermediate", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_curve_equals_sklearn(seed, drop_intermediate):
    """E5: roc_curve is sklearn.metrics.roc_curve, array for array: of -distance for distances
    (thresholds in distance units, i.e. minus sklearn's), of the similarity as it is; ties in the
    values (rounded to 1 decimal) included; auc is roc_auc_score."""
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc_curve

    gen = torch.Generator().manual_seed(seed)
    same = torch.rand(400, generator=gen) < 0.3
    dist = torch.where(same, torch.rand(400, generator=gen) * 1.2, 0.4 + torch.rand(400, generator=gen))
    dist = (dist * 10).round() / 10 if seed != 2 else dist  # seed 2: no ties
    ref_fpr, ref_tpr, ref_thr = sk_roc_curve(same.numpy(), -dist.numpy().astype(np.float64),
                                             drop_intermediate=drop_intermediate)
    fpr, tpr, thr = roc_curve(dist, same, "distance", drop_intermediate)
    np.testing.assert_array_equal(fpr.numpy(), ref_fpr)
    np.testing.assert_array_equal(tpr.numpy(), ref_tpr)
    np.testing.assert_array_equal(thr.numpy(), -ref_thr)
    assert thr[0] == -float("inf")
    sim = -dist.double() + 2
    fpr_s, tpr_s, thr_s = roc_curve(sim, same, "similarity", drop_intermediate)
    ref_fpr, ref_tpr, ref_thr = sk_roc_curve(same.numpy(), sim.numpy(), drop_intermediate=drop_intermediate)
    np.testing.assert_array_equal(fpr_s.numpy(), ref_fpr)
    np.testing.assert_array_equal(tpr_s.numpy(), ref_tpr)
    np.testing.assert_array_equal(thr_s.numpy(), ref_thr)
    assert float(auc(fpr, tpr)) == pytest.approx(roc_auc_score(same.numpy(), -dist.numpy()), abs=1e-12)


def constructed_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """100 same pairs at distances 0.5, 1.5, ..., 99.5; 100 different pairs at 20.75, ..., 119.75.

    Accepting d <= 59.75 rejects the 40 same pairs above it (60.5 ... 99.5) and accepts the 40
    different pairs up to it (20.75 ... 59.75): EER = 0.40 at 59.75. Accepting at most 1 % of the different pairs (only 20.75) accepts the
    same pairs up to 21.5: TAR@FAR=1e-2 = 22 / 100 at threshold 21.5."""
    same_d = torch.arange(100, dtype=torch.float64) + 0.5
    diff_d = torch.arange(100, dtype=torch.float64) + 20.75
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    return torch.cat([same_d, diff_d])[perm], (torch.arange(200) < 100)[perm]


@pytest.mark.parametrize("drop_intermediate", [True, False])
def test_eer_and_tar_at_far_on_a_constructed_case(drop_intermediate):
    """E5: EER and TAR@FAR=1e-2 of a case worked out by hand (see constructed_pairs)."""
    dist, same = constructed_pairs()
    curve = roc_curve(dist, same, "distance", drop_intermediate)
    eer, eer_threshold = equal_error_rate(*curve)
    assert eer == pytest.approx(0.40) and eer_threshold == 59.75
    tar, threshold = tar_at_far(*curve, far=1e-2)
    assert tar == pytest.approx(0.22) and threshold == 21.5
    # FAR 0: the same pairs below the first different one (0.5 ... 20.5: 21 of them)
    assert tar_at_far(*curve, far=0.0) == (pytest.approx(0.21), 20.5)
    assert tar_at_far(*curve, far=1.0)[0] == 1.0


def test_eer_between_curve_points_and_at_perfect_separation():
    """E5: the EER where the ROC crosses FAR = FRR between two points is on the segment joining
    them; a perfectly separating distance has EER 0 at the largest same-pair distance."""
    # same at 1, 3; different at 2, 4: points (0,0) (0,.5) (.5,.5) (.5,1) (1,1); the crossing
    # of FAR = 1 - TAR is the corner (.5, .5): EER 0.5, threshold 1 (FAR 0, FRR .5) or 2 (.5, .5)
    dist, same = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([True, False, True, False])
    eer, t = equal_error_rate(*roc_curve(dist, same, drop_intermediate=False))
    assert eer == pytest.approx(0.5) and t == 2.0
    # 3 same, 2 different: same at 1, 2, 4; different at 3, 5: FRR(2) = 1/3, FAR(2) = 0; FRR(3) =
    # 1/3, FAR(3) = 1/2: the crossing is on the segment (0, 2/3) -> (1/2, 2/3) at FAR = 1/3, and the
    # rates are closer at threshold 3 (|1/2 - 1/3|) than at 2 (|0 - 1/3|)
    dist = torch.tensor([1.0, 2.0, 4.0, 3.0, 5.0])
    same = torch.tensor([True, True, True, False, False])
    eer, t = equal_error_rate(*roc_curve(dist, same, drop_intermediate=False))
    assert eer == pytest.approx(1 / 3) and t == 3.0
    dist, same = torch.tensor([0.1, 0.2, 0.7, 0.9]), torch.tensor([True, True, False, False])
    assert equal_error_rate(*roc_curve(dist, same)) == (0.0, pytest.approx(0.2))


def test_pairs_from_labels_all_same_pairs_when_few_and_balanced():
    """E5: with few same pairs all of them are taken and as many different pairs are sampled;
    each row i < j, labelled correctly, no pair twice; one seed, one answer."""
    labels = torch.tensor([3, 1, 3, 2, 1, 5, 3, 0, 2, 4, 4, 6])
    pairs, same = pairs_from_labels(labels, max_pairs=100, seed=0)
    all_same = {(i, j) for i, j in itertools.combinations(range(12), 2) if labels[i] == labels[j]}
    assert len(all_same) == 6 and same.sum() == 6 and (~same).sum() == 6
    assert {tuple(p) for p in pairs[same].tolist()} == all_same
    assert (pairs[:, 0] < pairs[:, 1]).all() and len({tuple(p) for p in pairs.tolist()}) == 12
    assert torch.equal(labels[pairs[:, 0]] == labels[pairs[:, 1]], same)
    again = pairs_from_labels(labels, max_pairs=100, seed=0)
    assert torch.equal(again[0], pairs) and torch.equal(again[1], same)
    others = {tuple(pairs_from_labels(labels, 100, seed=s)[0][~same].flatten().tolist()) for s in range(5)}
    assert len(others) > 1  # the seed picks the different pairs


def test_pairs_from_labels_samples_when_many_and_scales():
    """E5: with more same pairs than max_pairs / 2 a sample of each kind, max_pairs in all; every
    same and different pair can be drawn (counted over seeds); 10^5 labels (10^9 pairs) are
    sampled without listing the pairs."""
    labels = torch.arange(4).repeat_interleave(5)  # 40 same pairs, 150 different
    seen = set()
    for seed in range(200):
        pairs, same = pairs_from_labels(labels, max_pairs=20, seed=seed)
        assert len(pairs) == 20 and int(same.sum()) == 10
        assert torch.equal(labels[pairs[:, 0]] == labels[pairs[:, 1]], same)
        assert len({tuple(p) for p in pairs.tolist()}) == 20
        seen |= {tuple(p) for p in pairs.tolist()}
    assert len(seen) == 190  # all 40 same and 150 different pairs turned up
    big = torch.randint(0, 2000, (100_000,), generator=torch.Generator().manual_seed(0))
    pairs, same = pairs_from_labels(big, max_pairs=10_000, seed=1)
    assert len(pairs) == 10_000 and int(same.sum()) == 5_000
    assert torch.equal(big[pairs[:, 0]] == big[pairs[:, 1]], same)
    assert len(torch.unique(pairs[:, 0] * 100_000 + pairs[:, 1])) == 10_000


def test_bad_arguments_raise_recipe_errors_naming_the_value():
    """E5: unknown metric / weights / kind, k out of range, far outside [0, 1], max_pairs < 2 are
    RecipeErrors naming the value; labels without a same pair are a DataError."""
    q, g = torch.randn(3, 4), torch.randn(6, 4)
    with pytest.raises(RecipeError, match="'manhattan'"):
        knn_search(q, g, 1, "manhattan")
    with pytest.raises(RecipeError, match="k must be an integer >= 1, got 0"):
        knn_search(q, g, 0)
    with pytest.raises(RecipeError, match="k = 7 is more than the 6 gallery items"):
        knn_search(q, g, 7)
    with pytest.raises(RecipeError, match="chunk must be an integer >= 1, got 0"):
        knn_search(q, g, 1, chunk=0)
    dist, idx = knn_search(q, g, 2)
    with pytest.raises(RecipeError, match="'inverse'.*known: distance, uniform"):
        knn_classify(dist, idx, torch.arange(6), "inverse")
    with pytest.raises(RecipeError, match="k = 3 but the search kept only 2"):
        rank_k_accuracy(idx, torch.arange(6), torch.arange(3), 3)
    d, s = constructed_pairs()
    with pytest.raises(RecipeError, match="'score'"):
        roc_curve(d, s, "score")
    curve = roc_curve(d, s)
    with pytest.raises(RecipeError, match="far must be a rate in \\[0, 1\\], got 1.5"):
        tar_at_far(*curve, far=1.5)
    with pytest.raises(RecipeError, match="max_pairs must be an integer >= 2, got 1"):
        pairs_from_labels(torch.tensor([0, 0, 1]), 1)
    with pytest.raises(DataError, match="0 same and 3 different pairs"):
        pairs_from_labels(torch.tensor([0, 1, 2]), 10)
    with pytest.raises(DataError, match="needs same and different pairs, got 4 same of 4"):
        roc_curve(torch.rand(4), torch.ones(4, dtype=torch.bool))
