"""Adam → SGD during training (O5): SWATS estimate, logging, and exact resume after the switch."""
from __future__ import annotations

import json

import pytest
import torch

from trainlab.api import fit
from trainlab.engine.callbacks import Callback
from trainlab.engine.checkpoint import load_checkpoint
from trainlab.engine.trainer import Interrupted
from trainlab.errors import RecipeError
from trainlab.engine.optimizer_switch import OptimizerSwitch
from trainlab.recipe import SwitchConfig, load_recipe

RUN = ["data.subset=192", "data.batch_size=32", "model.width=16", "model.depth=1", "train.early_stop=null",
       "run.tensorboard=false", "run.plots=false", "train.progress=false", "optim.name=adam", "optim.lr=0.01"]


class InterruptAt(Callback):
    """Acts like Ctrl-C after batch ``batch`` of epoch ``epoch`` (0-based)."""

    name = "interrupt_at"

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_batch_end(self, trainer, batch, outputs, loss):
        if trainer.state.epoch == self.epoch and trainer.state.batch == self.batch:
            trainer._interrupt = True


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_swats_estimate_formula():
    """O5: γ_k = pᵀp / (−pᵀg), Λ_k = λ_k / (1 − β2^k) with λ_k = β2 λ_{k−1} + (1 − β2) γ_k."""
    cb = OptimizerSwitch(SwitchConfig(auto=True, min_steps=2, tolerance=0.01), beta2=0.9)
    torch.manual_seed(0)
    lam, gammas = 0.0, []
    for k in range(1, 6):
        g = [torch.randn(4, 3), torch.randn(3)]
        scale = 0.1 * k
        p = [-scale * x + 0.01 * torch.randn_like(x) for x in g]  # a descent step
        pp = sum(float((x * x).sum()) for x in p)
        pg = sum(float((x * y).sum()) for x, y in zip(p, g))
        gamma = pp / -pg
        lam = 0.9 * lam + 0.1 * gamma
        got = cb.observe_step(p, g)
        assert got == pytest.approx(gamma, rel=1e-6)
        assert cb.estimate() == pytest.approx(lam / (1 - 0.9**k), rel=1e-6)
        gammas.append(gamma)
    assert cb.observe_step([torch.ones(2)], [torch.ones(2)]) is None  # uphill step: skipped
    assert cb.k == 5
    assert cb.criterion(cb.estimate()) and not cb.criterion(2 * cb.estimate())


def test_switch_needs_a_trigger():
    """O5: optim.switch without at_epoch or auto is a one-line recipe error."""
    with pytest.raises(RecipeError, match=r"^optim.switch: set at_epoch: N or auto: true"):
        load_recipe("digits-mlp", ["optim.switch={to: sgd}"])


def test_auto_switch_fires_and_is_logged(tmp_path):
    """O5: SWATS switches Adam → SGD with lr (1 − ρ)·Λ; epoch records carry optimizer and lr."""
    run = fit("digits-mlp", RUN + [f"run.dir={tmp_path / 'auto'}", "train.epochs=3", "schedule.name=none",
                                   "optim.switch={auto: true, tolerance: 0.5, min_steps: 3}"], quiet=True)
    rows = records(run.dir)
    events = [r for r in rows if r.get("event") == "optimizer_switch"]
    assert len(events) == 1
    ev = events[0]
    assert ev["from"] == "adam" and ev["to"] == "sgd" and ev["reason"] == "SWATS criterion"
    assert ev["swats_steps"] >= 3
    assert ev["lr"] == pytest.approx((1 - 0.9) * ev["swats_estimate"], rel=1e-9)
    epochs = [r for r in rows if "event" not in r]
    assert all("optimizer" in r and "lr" in r for r in epochs)
    assert epochs[-1]["optimizer"] == "sgd" and epochs[-1]["lr"] == pytest.approx(ev["lr"])


def test_resume_after_the_switch_ends_with_the_same_weights(tmp_path):
    """O5/O8/O6: a run interrupted after an Adam → SGD switch (with EMA and one-cycle momentum)
    and resumed ends bit for bit where the uninterrupted run ends."""
    extra = ["train.epochs=4", "schedule.name=onecycle", "optim.switch={at_epoch: 2}", "train.ema={decay: 0.9}"]
    whole = fit("digits-mlp", RUN + extra + [f"run.dir={tmp_path / 'whole'}"], quiet=True)
    with pytest.raises(Interrupted):
        fit("digits-mlp", RUN + extra + [f"run.dir={tmp_path / 'cut'}"], quiet=True, callbacks=[InterruptAt(2, 3)])
    _, state = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.safetensors")
    assert state["optimizer"]["name"] == "sgd" and state["callbacks"]["optimizer_switch"]["switched"]
    resumed = fit(resume=tmp_path / "cut", quiet=True)
    a, _ = load_checkpoint(whole.dir / "checkpoints" / "last.safetensors")
    b, _ = load_checkpoint(resumed.dir / "checkpoints" / "last.safetensors")
    keys = [k for k in a if k.startswith(("model.", "ema.", "optim."))]
    assert any(k.startswith("ema.") for k in keys) and any(k.startswith("optim.") for k in keys)
    assert set(keys) == {k for k in b if k.startswith(("model.", "ema.", "optim."))}
    for k in keys:
        assert torch.equal(a[k], b[k]), k
    rows = records(resumed.dir)
    assert [r["optimizer"] for r in rows if "event" not in r] == ["adam", "sgd", "sgd", "sgd"]
    assert sum(r.get("event") == "optimizer_switch" for r in rows) == 1
    assert rows == records(whole.dir) or [
        {k: v for k, v in r.items() if k != "time_s"} for r in rows
    ] == [{k: v for k, v in r.items() if k != "time_s"} for r in records(whole.dir)]


def test_swats_step_from_the_callback_skips_parameters_without_gradient():
    """O5: the callback's copies before the step give γ = pᵀp / (−pᵀg) over the parameters that have a gradient;
    one without gradient (which Adam leaves unchanged) is skipped, and the buffers are reused step after step."""
    from types import SimpleNamespace

    cb = OptimizerSwitch(SwitchConfig(auto=True, min_steps=100, tolerance=0.01), beta2=0.9)
    a, frozen = torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))
    trainer = SimpleNamespace(params=[a, frozen], at_step_boundary=True)
    buffers = None
    for step in range(1, 4):
        a.grad = torch.randn(5, 3)
        cb.on_after_backward(trainer)
        g, before = a.grad.clone(), a.detach().clone()
        with torch.no_grad():
            a -= 0.05 * step * a.grad + 0.001 * torch.randn(5, 3)  # a descent step
        cb.on_batch_end(trainer, None, None, None)
        p = a.detach() - before
        expected = float((p * p).double().sum()) / -float((p * g).double().sum())
        assert cb.k == step and cb.last_gamma == pytest.approx(expected, rel=1e-6)
        assert buffers is None or all(x is y for x, y in zip(buffers, cb._grads + cb._before))
        buffers = cb._grads + cb._before
        assert len(cb._params) == 1 and cb._params[0] is a
