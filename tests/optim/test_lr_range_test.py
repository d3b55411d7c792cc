"""The LR range test (O9): geometric sweep, smoothed loss, divergence stop, model left untouched."""
from __future__ import annotations

import math

import torch

from trainlab.api import build_components
from trainlab.optim.lr_finder import lr_range_test, suggest
from trainlab.recipe import load_recipe

TINY = ["data.subset=256", "model.width=16", "model.depth=1", "train.early_stop=null"]


def test_range_test_follows_smith_and_leaves_the_trainer_untouched(tmp_path, monkeypatch):
    """O9: lr_i = start·(end/start)^(i/(n−1)); smoothed = bias-corrected EMA; suggestion = argmin / 10;
    weights, buffers, gradients, the trainer's optimizer and the global RNG are as before; no files."""
    monkeypatch.chdir(tmp_path)
    trainer = build_components(load_recipe("digits-mlp", TINY))
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    opt_state = trainer.optimizer.state_dict()
    rng = torch.get_rng_state()
    start, end, steps, beta = 1e-5, 1.0, 30, 0.8
    result = lr_range_test(trainer, start, end, steps, smoothing=beta, diverge=1e9)
    assert len(result.lrs) == steps
    for i, lr in enumerate(result.lrs):
        assert math.isclose(lr, start * (end / start) ** (i / (steps - 1)), rel_tol=1e-12)
    avg = 0.0
    for t, (loss, smooth) in enumerate(zip(result.losses, result.smoothed), 1):
        avg = beta * avg + (1 - beta) * loss
        assert math.isclose(smooth, avg / (1 - beta**t), rel_tol=1e-9)
    best = min(range(steps), key=result.smoothed.__getitem__)
    assert result.min_loss_lr == result.lrs[best] and math.isclose(result.suggested, result.lrs[best] / 10)
    assert result.smoothed[best] < result.smoothed[0]  # the sweep did train the model
    after = trainer.model.state_dict()
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    assert all(p.grad is None for p in trainer.model.parameters())
    assert trainer.optimizer.state_dict() == opt_state
    assert torch.equal(torch.get_rng_state(), rng)
    assert trainer.model.training and trainer.state.step == 0
    assert list(tmp_path.iterdir()) == []


def test_range_test_stops_on_divergence():
    """O9: the sweep stops once the smoothed loss exceeds `diverge` × its minimum (or is not finite)."""
    trainer = build_components(load_recipe("digits-mlp", TINY + ["model.norm=none", "model.dropout=0"]))
    result = lr_range_test(trainer, 1e-3, 1e6, steps=60, smoothing=0.5, diverge=3.0)
    assert len(result.lrs) < 60
    assert "diverged" in result.stop_reason or "not finite" in result.stop_reason
    if "diverged" in result.stop_reason:
        assert result.smoothed[-1] > 3.0 * min(result.smoothed)


def test_suggestion_on_a_known_curve():
    """O9: lowest loss at lr 1e-1 → suggest 1e-2; steepest descent where the loss falls fastest."""
    lrs = [10 ** (-5 + 0.5 * i) for i in range(10)]  # 1e-5 .. 10^-0.5
    loss = [2.0, 2.0, 1.98, 1.9, 1.5, 0.8, 0.6, 0.5, 0.9, 3.0]
    low, steep = suggest(lrs, loss)
    assert low == lrs[7] and steep == lrs[4]
