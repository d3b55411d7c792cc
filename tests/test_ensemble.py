"""T4/T5: the combination rules of ensembles, SAMME's formulas, bootstrap draws and the cycle ends
that snapshot ensembles save at — pure functions checked against values written out here."""
from __future__ import annotations

import math

import pytest
import torch

from trainlab.data.resample import load_weights, resample_indices
from trainlab.errors import DataError
from trainlab.evaluate import ensemble_math as em


def _probs(m: int, n: int = 50, c: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(m, n, c, generator=g, dtype=torch.float64) * 3, dim=2)


def test_ensemble_of_one_model_is_the_model():
    """T4: an ensemble of one model equals the model, for every combination rule."""
    p = _probs(1)
    assert torch.equal(em.mean_probs(p), p[0])
    assert torch.allclose(em.weighted_probs(p, [0.7]), p[0])
    assert torch.equal(em.majority_vote(p), p[0].argmax(1))
    target = torch.arange(50) % 4
    ce = torch.nn.functional.nll_loss(p[0].log(), target)
    assert float(em.nll(em.mean_probs(p), target)) == pytest.approx(float(ce))


def test_ensemble_of_identical_models_is_the_model():
    """T4: an ensemble of identical copies equals the model."""
    p = _probs(1)
    copies = p.expand(5, -1, -1)
    assert torch.allclose(em.mean_probs(copies), p[0])
    assert torch.allclose(em.weighted_probs(copies, [1, 2, 3, 4, 5]), p[0])
    assert torch.equal(em.majority_vote(copies), p[0].argmax(1))


def test_mean_and_weighted_average_formulas():
    """T4: mean = (p1 + p2 + p3) / 3; weighted = (w1 p1 + w2 p2 + w3 p3) / (w1 + w2 + w3)."""
    p = _probs(3)
    assert torch.allclose(em.mean_probs(p), (p[0] + p[1] + p[2]) / 3)
    w = [0.9, 0.5, 0.1]
    assert torch.allclose(em.weighted_probs(p, w), (0.9 * p[0] + 0.5 * p[1] + 0.1 * p[2]) / 1.5)
    assert torch.allclose(em.weighted_probs(p, [0.0, 1.0, 0.0]), p[1])
    with pytest.raises(ValueError):
        em.weighted_probs(p, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        em.weighted_probs(p, [1.0, 1.0])


def test_majority_vote_and_its_tie_rule():
    """T4: most votes wins; a tie goes to the tied class with the higher mean probability; a tie
    of that too to the lower class index."""
    members = [  # (samples, classes) per member
        [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.5, 0.4, 0.1]],
        [[0.0, 0.0, 1.0], [0.2, 0.5, 0.3], [0.4, 0.5, 0.1]],
        [[0.5, 0.2, 0.3], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]],
    ]
    p = torch.tensor(members, dtype=torch.float64)
    assert em.vote_counts(p).tolist() == [[2, 0, 1], [1, 1, 1], [1, 1, 1]]
    # sample 0: two votes for class 0 beat one very sure vote for class 2;
    # sample 1: a three-way tie, mean probabilities (0.8, 1.0, 1.2) / 3: class 2;
    # sample 2: a three-way tie, mean probabilities (1.0, 1.0, 1.0) / 3: the lowest index, 0
    assert em.majority_vote(p).tolist() == [0, 2, 0]
    # two members, every sample a 1-1 tie: sample 0 classes 0/2 (means 0.3 < 0.55: class 2), sample 1
    # classes 0/1 (means 0.35 < 0.45: class 1), sample 2 classes 0/1 with equal means 0.45: class 0
    two = p[:2]
    assert em.vote_counts(two).tolist() == [[1, 0, 1], [1, 1, 0], [1, 1, 0]]
    assert em.majority_vote(two).tolist() == [2, 1, 0]


def test_samme_on_a_small_case_against_its_formulas():
    """T5: SAMME written out: err = sum(w * miss) / sum(w); alpha = log((1 - err) / err) + log(K - 1);
    w <- w * exp(alpha * miss), renormalized; prediction = argmax_k sum_m alpha_m [pred_m == k]."""
    K = 3
    target = torch.tensor([0, 1, 2, 0, 1])
    w = torch.full((5,), 0.2, dtype=torch.float64)
    pred1 = torch.tensor([0, 1, 2, 1, 1])  # misses sample 3
    miss1 = pred1 != target
    err1 = em.samme_error(w, miss1)
    assert err1 == pytest.approx(0.2)
    alpha1 = em.samme_alpha(err1, K)
    assert alpha1 == pytest.approx(math.log(0.8 / 0.2) + math.log(2))  # log 4 + log 2 = log 8
    w2 = em.samme_update(w, miss1, alpha1)
    # the missed sample's weight is multiplied by exp(alpha) = 8: (0.2 * 8) / (0.8 + 1.6) = 2/3
    assert w2.tolist() == pytest.approx([1 / 12, 1 / 12, 1 / 12, 2 / 3, 1 / 12])
    pred2 = torch.tensor([2, 1, 2, 0, 0])  # misses samples 0 and 4: weight 1/12 + 1/12 = 1/6
    miss2 = pred2 != target
    err2 = em.samme_error(w2, miss2)
    assert err2 == pytest.approx(1 / 6)
    alpha2 = em.samme_alpha(err2, K)
    assert alpha2 == pytest.approx(math.log(5) + math.log(2))  # log 10
    scores = em.samme_scores(torch.stack([pred1, pred2]), [alpha1, alpha2], K)
    # where the members disagree the one with the larger say (log 10 > log 8) wins: samples 0, 3, 4
    assert scores[0].tolist() == pytest.approx([math.log(8), 0, math.log(10)])
    assert scores[1].tolist() == pytest.approx([0, math.log(80), 0])
    assert scores.argmax(1).tolist() == [2, 1, 2, 0, 0]
    # a member at chance level (err = 1 - 1/K) has no say; a better one a positive say
    assert em.samme_alpha(1 - 1 / K, K) == pytest.approx(0.0, abs=1e-12)
    assert em.samme_alpha(0.5, K) > 0  # with 3 classes, 50 % error still beats chance
    assert math.isfinite(em.samme_alpha(0.0, K))


def test_bootstrap_draws_are_with_replacement_and_reproducible():
    """T4: n draws of n with replacement from (seed, member): duplicates and left-out samples,
    the same draws for the same seed and member, other draws for another member or seed."""
    n = 1000
    a = resample_indices(n, 7, 0)
    assert a.shape == (n,) and a.dtype == torch.int64 and int(a.min()) >= 0 and int(a.max()) < n
    distinct = len(torch.unique(a))
    assert distinct < n  # some samples twice or more
    # about 1 - 1/e ~ 63.2 % of the samples appear in a bootstrap
    assert 0.58 < distinct / n < 0.68
    assert torch.equal(a, resample_indices(n, 7, 0))
    assert not torch.equal(a, resample_indices(n, 7, 1))
    assert not torch.equal(a, resample_indices(n, 8, 0))


def test_weighted_draws_follow_the_weights():
    """T5: boosting's draws are in proportion to the sample weights; a zero weight is never drawn."""
    w = torch.tensor([0.0, 1.0, 3.0, 0.0], dtype=torch.float64)
    idx = resample_indices(4, 0, 3, w)
    assert torch.equal(idx, resample_indices(4, 0, 3, w))
    big = torch.cat([w] * 500)
    counts = torch.bincount(resample_indices(len(big), 0, 1, big) % 4, minlength=4)
    assert counts[0] == 0 and counts[3] == 0
    assert counts[2] / counts[1] == pytest.approx(3.0, rel=0.2)


def test_sample_weight_files_are_checked(tmp_path):
    path = tmp_path / "w.json"
    path.write_text("[1, 2, 3]")
    assert load_weights(path, 3).tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(DataError, match="3 weights for a training split of 4"):
        load_weights(path, 4)
    path.write_text("[1, -2, 3]")
    with pytest.raises(DataError, match=">= 0"):
        load_weights(path, 3)
    with pytest.raises(DataError, match="does not exist"):
        load_weights(tmp_path / "none.json", 3)


def test_snapshot_steps_are_the_ends_of_the_warm_restart_cycles():
    """T4: snapshots are taken where cosine_restarts restarts: the LR is back at optim.lr at the
    step after each end and at its floor just before it."""
    from trainlab.optim.schedules import build_schedule, restart_ends
    from trainlab.recipe import ScheduleConfig

    cfg = ScheduleConfig(name="cosine_restarts", T_0=1, T_mult=2)
    assert restart_ends(cfg, 10, 7) == [10, 30, 70]  # cycles of 10, 20, 40 steps
    assert restart_ends(cfg, 10, 6) == [10, 30]  # the third cycle does not complete
    default = ScheduleConfig(name="cosine_restarts")  # three cycles that fill the run: T_0 = 7 / 7
    assert restart_ends(default, 10, 7) == [10, 30, 70]
    sched = build_schedule(cfg, 0.1, 10, 7)
    for end in (10, 30):
        assert sched.factor(end) == pytest.approx(1.0)
        assert sched.factor(end - 1) < 0.05


@pytest.mark.parametrize("t_0, t_mult, spe, epochs", [(0.3, 1, 7, 5), (None, 1, 7, 7), (1.1, 2, 13, 12)])
def test_snapshot_steps_are_where_the_schedule_restarts_with_fractional_cycles(t_0, t_mult, spe, epochs):
    """T4: with cycles of a fractional number of steps (T_0 = 0.3 epochs of 7 steps: 2.1 steps), the
    summed boundaries drift around whole steps; every snapshot step is still a step where the LR
    jumps back up (and no restart is missed), and a last cycle ending a hair after the run's last
    step is saved at that step."""
    from trainlab.optim.schedules import build_schedule, restart_ends
    from trainlab.recipe import ScheduleConfig

    cfg = ScheduleConfig(name="cosine_restarts", T_0=t_0, T_mult=t_mult)
    sched, total = build_schedule(cfg, 0.1, spe, epochs), spe * epochs
    restarts = [k for k in range(1, total) if sched.factor(k) > sched.factor(k - 1)]
    ends = restart_ends(cfg, spe, epochs)
    assert [e for e in ends if e < total] == restarts
    if t_0 is None:  # three cycles of 49 / 3 steps: the last one ends with the run
        assert ends[-1] == total
