"""L5: triplet loss with batch-all, batch-hard and semi-hard mining, against a loop over every
triplet written out here and against pytorch-metric-learning's TripletMarginLoss + miners."""
from __future__ import annotations

import itertools

import pytest
import torch

from trainlab.errors import RecipeError
from trainlab.triplet import pairwise_distances, triplet_loss

MININGS = ("batch_all", "batch_hard", "semi_hard")
DISTANCES = ("euclidean", "squared", "cosine")
# margins of a size that leaves easy, hard and semi-hard triplets in the batches below
MARGIN = {"euclidean": 1.0, "squared": 2.0, "cosine": 0.3}


def batch(seed: int, b: int = 12, ids: int = 4, dim: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, dim, generator=g, dtype=torch.float64)
    labels = torch.arange(ids).repeat_interleave(b // ids)[torch.randperm(b, generator=g)]
    return x.requires_grad_(), labels


def pair_distance(u: torch.Tensor, v: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "cosine":
        return 1 - (u @ v) / (u.norm() * v.norm())
    sq = ((u - v) ** 2).sum()
    return sq if metric == "squared" else sq.sqrt()


def brute_force(x: torch.Tensor, labels: torch.Tensor, margin: float, mining: str, metric: str):
    """The definitions, one triplet at a time: (loss, number considered, number active)."""
    n = len(labels)
    y = labels.tolist()
    d = [[pair_distance(x[i], x[j], metric) for j in range(n)] for i in range(n)]
    terms, considered = [], 0
    if mining == "batch_hard":
        for a in range(n):
            pos = [d[a][p] for p in range(n) if p != a and y[p] == y[a]]
            neg = [d[a][k] for k in range(n) if y[k] != y[a]]
            if pos and neg:
                considered += 1
                terms.append(torch.relu(max(pos) - min(neg) + margin))
        active = sum(1 for t in terms if t > 0)
        loss = sum(terms) / len(terms) if terms else torch.zeros((), dtype=x.dtype)
        return loss, considered, active
    for a, p, k in itertools.product(range(n), repeat=3):
        if a == p or y[p] != y[a] or y[k] == y[a]:
            continue
        considered += 1
        violation = d[a][p] - d[a][k] + margin
        if violation <= 0:
            continue
        if mining == "semi_hard" and not d[a][k] > d[a][p]:
            continue
        terms.append(violation)
    loss = sum(terms) / len(terms) if terms else torch.zeros((), dtype=x.dtype)
    return loss, considered, len(terms)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("mining", MININGS)
def test_loss_and_gradient_equal_a_loop_over_all_triplets(mining, distance):
    """L5: each mining × distance gives the loss, the gradient and the counts of the triplet-by-
    triplet definition (batch_all and semi_hard: mean over the active triplets; batch_hard: mean
    over the anchors with a positive and a negative)."""
    for seed in range(3):
        x, labels = batch(seed)
        margin = MARGIN[distance]
        loss, stats = triplet_loss(x, labels, margin, mining, distance)
        ref, considered, active = brute_force(x, labels, margin, mining, distance)
        assert active > 0
        torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
        (grad,) = torch.autograd.grad(loss, x)
        (ref_grad,) = torch.autograd.grad(ref, x)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-8, atol=1e-10)
        assert int(stats["triplets"]) == considered and int(stats["active"]) == active
        assert float(stats["active_fraction"]) == pytest.approx(active / considered)


def test_unequal_identity_sizes_and_a_singleton_anchor():
    """L5: identities of different sizes, one with a single sample (an anchor with no positive:
    it is a negative for the others only), against the loop, every mining and distance."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
    for mining, distance in itertools.product(MININGS, DISTANCES):
        loss, stats = triplet_loss(x, labels, MARGIN[distance], mining, distance)
        ref, considered, active = brute_force(x, labels, MARGIN[distance], mining, distance)
        torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
        assert int(stats["triplets"]) == considered and int(stats["active"]) == active
        torch.testing.assert_close(torch.autograd.grad(loss, x)[0], torch.autograd.grad(ref, x)[0],
                                   rtol=1e-8, atol=1e-10)


def _pml_case(pml, mining: str, distance: str, margin: float):
    """pytorch-metric-learning's loss function and miner for one of our modes."""
    dist = {
        "euclidean": lambda: pml.distances.LpDistance(p=2, power=1, normalize_embeddings=False),
        "squared": lambda: pml.distances.LpDistance(p=2, power=2, normalize_embeddings=False),
        # PML's margin is on similarities: cos(a,n) − cos(a,p) + m, which is our
        # (1 − cos(a,p)) − (1 − cos(a,n)) + m term for term
        "cosine": lambda: pml.distances.CosineSimilarity(),
    }[distance]
    if mining == "batch_hard":
        # Hermans et al.'s batch hard is a plain mean over the anchors: PML's MeanReducer (its
        # default AvgNonZeroReducer would leave the zero-loss anchors out)
        loss = pml.losses.TripletMarginLoss(margin=margin, distance=dist(), reducer=pml.reducers.MeanReducer())
        return loss, pml.miners.BatchHardMiner(distance=dist())
    kind = {"batch_all": "all", "semi_hard": "semihard"}[mining]
    loss = pml.losses.TripletMarginLoss(margin=margin, distance=dist())
    return loss, pml.miners.TripletMarginMiner(margin=margin, type_of_triplets=kind, distance=dist())


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("mining", MININGS)
def test_equals_pytorch_metric_learning(mining, distance):
    """L5: the loss and gradient are pytorch-metric-learning's TripletMarginLoss with the matching
    miner: TripletMarginMiner "all" (batch_all) and "semihard" (semi_hard), BatchHardMiner
    (batch_hard, mean reducer), with LpDistance power 1 / 2 and CosineSimilarity."""
    pml = pytest.importorskip("pytorch_metric_learning")
    import pytorch_metric_learning.distances  # noqa: F401
    import pytorch_metric_learning.losses  # noqa: F401
    import pytorch_metric_learning.miners  # noqa: F401
    import pytorch_metric_learning.reducers  # noqa: F401

    for seed in range(3):
        x, labels = batch(100 + seed, b=16, ids=4, dim=6)
        margin = MARGIN[distance]
        loss_fn, miner = _pml_case(pml, mining, distance, margin)
        ref = loss_fn(x, labels, miner(x, labels))
        loss, _ = triplet_loss(x, labels, margin, mining, distance)
        assert ref.item() > 0
        torch.testing.assert_close(loss, ref, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(torch.autograd.grad(loss, x)[0], torch.autograd.grad(ref, x)[0],
                                   rtol=1e-7, atol=1e-10)


def test_batch_all_without_a_miner_is_pml_default_triplet_loss():
    """L5: batch_all is PML's TripletMarginLoss alone (all triplets, AvgNonZeroReducer), in float32."""
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    from pytorch_metric_learning.distances import LpDistance

    x, labels = batch(5, b=24, ids=6, dim=8)
    x = x.detach().float().requires_grad_()
    ref = pml_losses.TripletMarginLoss(margin=0.5, distance=LpDistance(normalize_embeddings=False))(x, labels)
    loss, _ = triplet_loss(x, labels, 0.5, "batch_all", "euclidean")
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("mining", MININGS)
def test_identical_embeddings_give_finite_gradients(mining, distance):
    """L5: embeddings repeated exactly (zero distances, where √ has an infinite slope) give a
    finite loss and gradient, never NaN."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(3, 5, generator=g)
    x = base.repeat_interleave(4, 0).requires_grad_()  # 4 copies of each of 3 points
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 2, 1, 0, 2])  # copies shared across identities
    loss, _ = triplet_loss(x, labels, 0.2, mining, distance)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_euclidean_distance_and_gradient_at_zero():
    """L5: the Euclidean distance of a point to itself or to a copy is 0 with a zero gradient."""
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [4.0, 6.0]], requires_grad=True)
    d = pairwise_distances(x, None, "euclidean")
    assert d[0, 0] == 0 and d[0, 1] == 0 and d[0, 2].item() == pytest.approx(5.0)
    (grad,) = torch.autograd.grad(d[0, 1] + d[0, 0], x)
    assert torch.equal(grad, torch.zeros_like(x))


@pytest.mark.parametrize("metric", DISTANCES)
def test_pairwise_distances_equal_the_formulas(metric):
    """L5: (N, M) distances of two sets and of one set against itself, by the formulas."""
    g = torch.Generator().manual_seed(11)
    a = torch.randn(7, 6, generator=g, dtype=torch.float64) + 3.0
    b = torch.randn(5, 6, generator=g, dtype=torch.float64) + 3.0
    for left, right, d in ((a, b, pairwise_distances(a, b, metric)), (a, a, pairwise_distances(a, None, metric))):
        ref = torch.stack([torch.stack([pair_distance(u, v, metric) for v in right]) for u in left])
        torch.testing.assert_close(d, ref, rtol=1e-9, atol=1e-9)
    assert torch.equal(pairwise_distances(a, None, metric).diagonal(), torch.zeros(7, dtype=torch.float64))


def test_nothing_to_learn_gives_zero_loss_that_still_backpropagates():
    """L5: a batch without valid triplets (one identity) or with none active (identities far
    apart) has loss 0 that is attached to the graph, so backward() works and gives zeros."""
    x = torch.randn(6, 3, requires_grad=True)
    for mining in MININGS:
        loss, stats = triplet_loss(x, torch.zeros(6, dtype=torch.long), 0.2, mining, "euclidean")
        assert loss.item() == 0 and loss.requires_grad and int(stats["triplets"]) == 0
        loss.backward()
        assert torch.equal(x.grad, torch.zeros_like(x))
        x.grad = None
    far = torch.tensor([[0.0, 0.0], [0.1, 0.0], [100.0, 0.0], [100.1, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    for mining in MININGS:
        loss, stats = triplet_loss(far, labels, 1.0, mining, "euclidean")
        assert loss.item() == 0 and int(stats["active"]) == 0 and int(stats["triplets"]) > 0
        assert float(stats["active_fraction"]) == 0
        loss.backward()


def test_bad_arguments_raise_recipe_errors_naming_the_value():
    """L5: an unknown mining or distance, or a negative margin, is a RecipeError naming it."""
    x, labels = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    with pytest.raises(RecipeError, match="'batch_hardest'.*did you mean 'batch_hard'"):
        triplet_loss(x, labels, 0.2, "batch_hardest", "euclidean")
    with pytest.raises(RecipeError, match="'manhattan'.*known: cosine, euclidean, squared"):
        triplet_loss(x, labels, 0.2, "batch_all", "manhattan")
    with pytest.raises(RecipeError, match=r"margin must be a finite number >= 0, got -0\.1"):
        triplet_loss(x, labels, -0.1, "batch_all", "euclidean")
    with pytest.raises(RecipeError, match="'l1'"):
        pairwise_distances(x, x, "l1")
