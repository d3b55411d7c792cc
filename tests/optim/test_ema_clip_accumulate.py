"""Weight EMA (O8), gradient clipping (O7) and gradient accumulation, through the real trainer."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trainlab.api import build_components
from trainlab.engine.trainer import evaluate_split
from trainlab.optim.ema import WeightEMA
from trainlab.recipe import load_recipe

TINY = ["data.subset=128", "model.width=16", "model.depth=1", "model.norm=none", "model.dropout=0",
        "train.epochs=2", "train.early_stop=null", "optim.name=sgd", "optim.lr=0.1", "optim.momentum=0.9",
        "optim.nesterov=false", "schedule.name=none"]


def tiny_trainer(*overrides: str):
    return build_components(load_recipe("digits-mlp", TINY + list(overrides)))


@pytest.mark.parametrize("bias_correction", [True, False])
def test_ema_is_the_notes_running_average(bias_correction):
    """O8: v_t = β·v_{t−1} + (1 − β)·θ_t from v_0 = 0, reported as v_t / (1 − β^t) (S2 §5)."""
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    beta = 0.8
    ema = WeightEMA(net, beta, bias_correction)
    v = {k: (torch.zeros_like(p) if bias_correction else p.detach().clone()) for k, p in net.named_parameters()}
    for t in range(1, 8):
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn_like(p) * t)
        ema.update(net)
        avg = ema.averaged()
        for k, p in net.named_parameters():
            v[k] = beta * v[k] + (1 - beta) * p.detach()
            expect = v[k] / (1 - beta**t) if bias_correction else v[k]
            assert torch.allclose(avg[k], expect, atol=1e-6), (t, k)
    if bias_correction:  # a constant θ is averaged exactly, with no pull towards the zero start
        ema2 = WeightEMA(net, 0.99, True)
        for _ in range(3):
            ema2.update(net)
        assert all(torch.allclose(ema2.averaged()[k], p, atol=1e-6) for k, p in net.named_parameters())


def test_evaluation_uses_the_ema_weights_and_restores_the_model():
    """O8: with train.ema, validation runs on the averaged weights; the trained weights come back."""
    trainer = tiny_trainer("train.epochs=1", "train.ema={decay: 0.9}")
    trainer.fit()
    raw = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    got = trainer.evaluate("val")
    twin = copy.deepcopy(trainer.model)
    with torch.no_grad():
        for k, p in twin.named_parameters():
            p.copy_(trainer.ema.averaged()[k])
    expect = evaluate_split(twin, trainer.task, trainer.val_loader, trainer.device, False)
    assert got["loss"] == pytest.approx(expect["loss"], rel=1e-6)
    plain = trainer.evaluate("val", use_ema=False)
    assert plain["loss"] != pytest.approx(got["loss"], rel=1e-4)
    assert all(torch.equal(raw[k], v) for k, v in trainer.model.state_dict().items())


@pytest.mark.parametrize("value,norm", [(0.01, None), (None, 0.5), (0.02, 0.05)])
def test_gradient_clipping_by_value_and_by_norm(value, norm):
    """O7: by value g ← clamp(g, −c, c); by norm g ← g·min(1, c/(‖g‖₂ + 1e-6)) over all parameters."""
    trainer = tiny_trainer("optim.momentum=0", "optim.lr=1.0")
    trainer.recipe.train.grad_clip_value = value
    trainer.recipe.train.grad_clip = norm
    torch.manual_seed(3)
    params = trainer.params
    grads = [torch.randn_like(p) * 0.1 for p in params]
    before = [p.detach().clone() for p in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    trainer.optimizer_step()
    expect = [g.clamp(-value, value) for g in grads] if value is not None else grads
    if norm is not None:
        total = torch.sqrt(sum((g**2).sum() for g in expect))
        assert float(trainer.last_grad_norm) == pytest.approx(float(total), rel=1e-5)
        expect = [g * min(1.0, norm / (float(total) + 1e-6)) for g in expect]
    for b, p, e in zip(before, params, expect):
        assert torch.allclose(b - p.detach(), e, atol=1e-6)  # SGD with lr 1: the step is the gradient
    if norm is not None:
        assert float(torch.sqrt(sum(((b - p.detach()) ** 2).sum() for b, p in zip(before, params)))) <= norm + 1e-5


def test_accumulating_two_batches_of_32_equals_one_batch_of_64():
    """O1: train.accumulate=2 with batch 32 takes the same steps as batch 64 (no batch-dependent layers)."""
    runs = {}
    for name, extra in (("b64", ["data.batch_size=64"]),
                        ("b32x2", ["data.batch_size=32", "train.accumulate=2"]),
                        ("b32", ["data.batch_size=32"])):
        trainer = tiny_trainer(*extra)
        trainer.fit()
        runs[name] = (trainer.state.step, [p.detach().clone() for p in trainer.params])
    assert runs["b64"][0] == runs["b32x2"][0] == 4 and runs["b32"][0] == 8
    for a, b in zip(runs["b64"][1], runs["b32x2"][1]):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(runs["b64"][1], runs["b32"][1]))
