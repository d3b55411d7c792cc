"""LR schedules (O6): each curve against its formula written out here and against torch's schedulers."""
from __future__ import annotations

import json
import math

import pytest
import torch

from trainlab.errors import RecipeError
from trainlab.optim.schedules import ReduceOnPlateau, build_schedule, schedule_curve
from trainlab.recipe import ScheduleConfig
from trainlab.registry import SCHEDULES

BASE = 0.1
SPE, EPOCHS = 5, 12
TOTAL = SPE * EPOCHS


def ours(**cfg) -> list[float]:
    sched = build_schedule(ScheduleConfig(**cfg), BASE, SPE, EPOCHS)
    return [BASE * sched.factor(s) for s in range(TOTAL)]


def torch_lrs(make, per: str = "step", momentum: float = 0.0, opt_cls=torch.optim.SGD, **opt_kw):
    """LR (and momentum) that a torch scheduler gives at each optimizer step of the run."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = opt_cls([p], lr=BASE, **({"momentum": momentum} if opt_cls is torch.optim.SGD else {}), **opt_kw)
    sched = make(opt)
    lrs, moms = [], []
    for s in range(TOTAL):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0].get("momentum", opt.param_groups[0].get("betas", (None,))[0]))
        p.grad = torch.zeros(1)
        opt.step()
        if per == "step" or (s + 1) % SPE == 0:
            sched.step()
    return lrs, moms


def assert_curves(a, b, rel=1e-9):
    assert len(a) == len(b)
    for s, (x, y) in enumerate(zip(a, b)):
        assert math.isclose(x, y, rel_tol=rel, abs_tol=1e-15), (s, x, y)


def test_step_multistep_exponential_are_per_epoch_like_torch():
    """O6: step decay, discrete milestones and exponential decay change once per epoch."""
    sched = torch.optim.lr_scheduler
    assert_curves(ours(name="step", step_size=3, gamma=0.5),
                  torch_lrs(lambda o: sched.StepLR(o, 3, 0.5), per="epoch")[0])
    assert_curves(ours(name="multistep", milestones=[2, 5, 9], gamma=0.3),
                  torch_lrs(lambda o: sched.MultiStepLR(o, [2, 5, 9], 0.3), per="epoch")[0])
    assert_curves(ours(name="exponential", gamma=0.8),
                  torch_lrs(lambda o: sched.ExponentialLR(o, 0.8), per="epoch")[0])
    # formula: lr = lr0 · γ^⌊epoch / step_size⌋, constant within an epoch
    lrs = ours(name="step", step_size=3, gamma=0.5)
    assert all(lrs[s] == BASE * 0.5 ** ((s // SPE) // 3) for s in range(TOTAL))


def test_cosine_formula_per_step():
    """O6: cosine annealing lr = min + (lr0 − min)·(1 + cos(π t/T))/2 over the run's steps."""
    lo = 0.001
    expect = [lo + (BASE - lo) * (1 + math.cos(math.pi * s / TOTAL)) / 2 for s in range(TOTAL)]
    assert_curves(ours(name="cosine", min_lr=lo), expect)
    got = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, TOTAL, lo))[0]
    assert_curves(ours(name="cosine", min_lr=lo), got, rel=1e-6)


def clr_formula(s, lo, hi, size, wave):
    """S0 Q14: LR = Min LR + (Max LR − Min LR) × f(cycle position), cycle of 2·size steps."""
    pos = (s % (2 * size)) / (2 * size)
    if wave == "triangle":
        f = 1 - abs(1 - 2 * pos)
    else:  # cosine wave
        f = (1 - math.cos(2 * math.pi * pos)) / 2
    return lo + (hi - lo) * f, s // (2 * size)


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range", "cosine"])
def test_cyclic_lr_is_the_clr_formula_of_the_notes(mode):
    """O6: cyclical LR (S0 Q14) with triangular, triangular2, exp_range and cosine waves."""
    lo, hi, size, gamma = 0.02, 0.1, 4, 0.97
    got = ours(name="cyclic", base_lr=lo, max_lr=hi, step_size_up=size, mode=mode, gamma=gamma)
    expect = []
    for s in range(TOTAL):
        lr, cycle = clr_formula(s, lo, hi, size, "cosine" if mode == "cosine" else "triangle")
        height = {"triangular2": 0.5**cycle, "exp_range": gamma**s}.get(mode, 1.0)
        expect.append(lo + (lr - lo) * height)
    assert_curves(got, expect, rel=1e-9)
    if mode != "cosine":  # torch has the three triangular modes
        ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, lo, hi, step_size_up=size, mode=mode, gamma=gamma, cycle_momentum=False))[0]
        assert_curves(got, ref, rel=1e-6)


def test_cyclic_defaults_and_asymmetric_cycle_match_torch():
    """O6: defaults max_lr = optim.lr, base_lr = max_lr/4, 2 epochs up; step_size_down differs from up."""
    got = ours(name="cyclic")
    assert math.isclose(got[0], BASE / 4) and math.isclose(got[2 * SPE], BASE) and min(got) >= BASE / 4 - 1e-12
    got = ours(name="cyclic", base_lr=0.01, max_lr=0.2, step_size_up=3, step_size_down=7)
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CyclicLR(
        o, 0.01, 0.2, step_size_up=3, step_size_down=7, cycle_momentum=False))[0]
    assert_curves(got, ref, rel=1e-6)


@pytest.mark.parametrize("t_mult", [1, 2])
def test_cosine_restarts_sgdr(t_mult):
    """O6: SGDR: lr = min + (lr0 − min)(1 + cos(π T_cur/T_i))/2, T_i = T_0·T_mult^i, restarts per step."""
    lo, t0 = 0.001, 2
    got = ours(name="cosine_restarts", T_0=t0, T_mult=t_mult, min_lr=lo)
    expect = []
    for s in range(TOTAL):
        e, t_i = s / SPE, t0
        while e >= t_i:  # walk through the finished cycles
            e -= t_i
            t_i *= t_mult
        expect.append(lo + (BASE - lo) * (1 + math.cos(math.pi * e / t_i)) / 2)
    assert_curves(got, expect, rel=1e-9)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=BASE)
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=t0, T_mult=t_mult, eta_min=lo)
    for s in range(TOTAL):
        ref.step(s / SPE)
        assert math.isclose(opt.param_groups[0]["lr"], got[s], rel_tol=1e-6), s
    # restarts: back to lr0 at epochs T_0, T_0(1 + T_mult), ...
    assert math.isclose(got[t0 * SPE], BASE) and got[t0 * SPE - 1] < 0.05 * BASE


def test_cosine_restarts_default_fills_the_run_with_three_cycles():
    """O6: default T_0 = epochs / (1 + T_mult + T_mult²): the third cycle ends with the run."""
    got = ours(name="cosine_restarts")
    t0_steps = TOTAL / 7
    restarts = [s for s in range(1, TOTAL) if got[s] > got[s - 1] + 1e-12]
    assert restarts == [math.ceil(t0_steps), math.ceil(3 * t0_steps)]
    assert got[-1] < 0.01 * BASE


@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_onecycle_lr_and_momentum_match_torch(anneal):
    """O6: one-cycle LR up from max/div to max then down to max/(div·final_div); momentum moves against it."""
    cfg = dict(name="onecycle", max_lr=0.3, pct_start=0.25, div_factor=10, final_div_factor=100,
               anneal=anneal, base_momentum=0.8, max_momentum=0.9)
    sched = build_schedule(ScheduleConfig(**cfg), BASE, SPE, EPOCHS)
    lrs = [BASE * sched.factor(s) for s in range(TOTAL)]
    moms = [sched.momentum(s) for s in range(TOTAL)]
    ref_lr, ref_m = torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.3, total_steps=TOTAL, pct_start=0.25, anneal_strategy=anneal, div_factor=10,
        final_div_factor=100, base_momentum=0.8, max_momentum=0.9), momentum=0.9)
    assert_curves(lrs, ref_lr, rel=1e-6)
    assert_curves(moms, ref_m, rel=1e-6)
    assert math.isclose(lrs[0], 0.03) and math.isclose(max(lrs), 0.3, rel_tol=1e-6)
    assert math.isclose(lrs[-1], 0.0003, rel_tol=1e-6)


def test_onecycle_apply_sets_sgd_momentum_and_adam_beta1():
    """O6: LRSchedule.apply writes the momentum curve into SGD momentum or Adam's beta1."""
    sched = build_schedule(ScheduleConfig(name="onecycle"), BASE, SPE, EPOCHS)
    p = torch.nn.Parameter(torch.zeros(1))
    for opt in (torch.optim.SGD([p], lr=BASE, momentum=0.9), torch.optim.Adam([p], lr=BASE, betas=(0.9, 0.99))):
        for g in opt.param_groups:
            g["initial_lr"] = BASE
        sched.apply(opt, 20)
        group = opt.param_groups[0]
        m = group["betas"][0] if "betas" in group else group["momentum"]
        assert math.isclose(m, sched.momentum(20)) and 0.85 <= m <= 0.95
        assert math.isclose(group["lr"], BASE * sched.factor(20))
        if "betas" in group:
            assert group["betas"][1] == 0.99


def test_plateau_matches_torch_reduce_on_plateau_and_resumes():
    """O6: on-plateau: γ·lr after more than `patience` epochs without a relative improvement."""
    metrics = [1.0, 0.9, 0.95, 0.9, 0.91, 0.85, 0.86, 0.86, 0.8500001, 0.87, 0.7, 0.71, 0.72, 0.73, 0.74]
    cfg = ScheduleConfig(name="plateau", patience=2, gamma=0.5, cooldown=1, min_lr=0.02, threshold=1e-3)
    sched = build_schedule(cfg, BASE, SPE, len(metrics), monitor_mode="min")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=BASE)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1, min_lr=0.02,
                                                     threshold=1e-3)
    seen = []
    for epoch, m in enumerate(metrics, 1):
        sched.observe(epoch, {"val_loss": m, "epoch": epoch})
        ref.step(m)
        seen.append(BASE * sched.factor(epoch * SPE))
        assert math.isclose(seen[-1], opt.param_groups[0]["lr"], rel_tol=1e-12), epoch
        if epoch == 7:  # checkpoint through JSON mid-run; the resumed schedule decides the same
            state = json.loads(json.dumps(sched.state_dict()))
            sched = build_schedule(cfg, BASE, SPE, len(metrics), monitor_mode="min")
            sched.load_state_dict(state)
    assert len(set(seen)) >= 3 and min(seen) == 0.02  # decayed twice and hit the floor


def test_plateau_in_max_mode_and_missing_monitor():
    """O6: an accuracy monitor is maximized; a monitor absent from the record is a one-line error."""
    sched = build_schedule(ScheduleConfig(name="plateau", monitor="val_accuracy", patience=0), BASE, SPE, 5,
                           monitor_mode="max")
    sched.observe(1, {"val_accuracy": 0.5})
    sched.observe(2, {"val_accuracy": 0.6})
    assert sched.factor(0) == 1.0
    sched.observe(3, {"val_accuracy": 0.55})
    assert math.isclose(sched.factor(0), 0.1)
    with pytest.raises(RecipeError, match="schedule.monitor: 'val_f1' is not in the epoch record"):
        build_schedule(ScheduleConfig(name="plateau", monitor="val_f1"), BASE, SPE, 5, monitor_mode="max").observe(1, {"val_loss": 1.0})


@pytest.mark.parametrize("mode", ["linear", "exponential"])
def test_warmup_composes_with_any_schedule(mode):
    """O6: warm-up multiplies the schedule by start + (1 − start)t (linear) or start^(1 − t) (exponential)."""
    start, n = 0.05, 7
    cos = ours(name="cosine")
    got = ours(name="cosine", warmup={"steps": n, "mode": mode, "start_factor": start})
    for s in range(TOTAL):
        t = s / n
        ramp = 1.0 if s >= n else (start + (1 - start) * t if mode == "linear" else start ** (1 - t))
        assert math.isclose(got[s], cos[s] * ramp, rel_tol=1e-12), s
    by_epochs = ours(name="step", warmup={"epochs": 1.4, "mode": mode, "start_factor": start})
    assert by_epochs[6] < BASE and by_epochs[7] == BASE  # round(1.4 · 5) = 7 warm-up steps
    sched = build_schedule(ScheduleConfig(name="onecycle", warmup={"steps": 3}), BASE, SPE, EPOCHS)
    assert sched.momentum(10) is not None  # the wrapper keeps the inner momentum curve


def test_every_schedule_has_working_defaults():
    """O6: each registered schedule builds from defaults and gives a finite positive LR at every step."""
    for name in SCHEDULES.names():
        sched = build_schedule(ScheduleConfig(name=name), BASE, SPE, EPOCHS, monitor_mode="min")
        curve = schedule_curve(sched, BASE, TOTAL, monitor="val_loss")
        assert all(math.isfinite(v) and v >= 0 for v in curve["lr"]), name
        assert max(curve["lr"]) <= BASE * (1 + 1e-9), name
        assert any(v > 0 for v in curve["lr"]), name


def test_plateau_is_drawn_with_a_flat_metric():
    """O6: drawing plateau assumes the metric never improves: first decay after patience + 1 epochs."""
    sched = build_schedule(ScheduleConfig(name="plateau", patience=2), BASE, SPE, EPOCHS, monitor_mode="min")
    assert isinstance(sched, ReduceOnPlateau) and sched.reactive
    lrs = schedule_curve(sched, BASE, TOTAL, monitor="val_loss")["lr"]
    assert lrs[4 * SPE - 1] == BASE and math.isclose(lrs[4 * SPE], BASE * 0.1)


def test_schedule_value_errors_name_the_field():
    """O6: impossible settings are one-line RecipeErrors naming the field."""
    with pytest.raises(RecipeError, match="schedule.base_lr"):
        build_schedule(ScheduleConfig(name="cyclic", base_lr=0.5), BASE, SPE, EPOCHS)
    with pytest.raises(RecipeError, match="schedule.min_lr"):
        build_schedule(ScheduleConfig(name="cosine", min_lr=1.0), BASE, SPE, EPOCHS)
    with pytest.raises(RecipeError, match="schedule.pct_start"):
        build_schedule(ScheduleConfig(name="onecycle", pct_start=0.01), BASE, 1, 3)
