"""Optimizers (O1–O4) step by step against the update rules of the notes, written out here.

Each test runs several steps of the registered optimizer on the quadratic f(x) = ½xᵀAx − bᵀx
(float64, so that the comparison can be tight) and replays the same steps with the formula.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainlab.errors import RecipeError
from trainlab.optim.optimizers import build_optimizer
from trainlab.recipe import OptimConfig, load_recipe

STEPS = 6
A = torch.tensor([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.1]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
X0 = torch.tensor([0.7, -0.3, 2.0], dtype=torch.float64)


def grad(x: torch.Tensor) -> torch.Tensor:
    return A @ x - B


class Point(nn.Module):
    def __init__(self):
        super().__init__()
        self.x = nn.Parameter(X0.clone().unsqueeze(0))  # 2-D so that it counts as a weight (decayed)


def run_optimizer(steps: int = STEPS, **cfg) -> list[torch.Tensor]:
    """Trajectory x_1..x_steps of the registered optimizer ``cfg['name']`` on the quadratic."""
    model = Point()
    opt = build_optimizer(OptimConfig(**cfg), model)
    out = []
    for _ in range(steps):
        model.x.grad = grad(model.x.detach()[0]).unsqueeze(0)
        opt.step()
        out.append(model.x.detach()[0].clone())
    return out


def close(traj, ref):
    assert len(traj) == len(ref)
    for t, (a, b) in enumerate(zip(traj, ref), 1):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), (t, a, b)


def test_sgd_plain_and_gd_full_batch_rule():
    """O1: (mini-batch) SGD and GD take x_{t+1} = x_t − α∇f(x_t)."""
    lr = 0.1
    x, ref = X0.clone(), []
    for _ in range(STEPS):
        x = x - lr * grad(x)
        ref.append(x)
    close(run_optimizer(name="sgd", lr=lr), ref)
    close(run_optimizer(name="gd", lr=lr), ref)


def test_momentum_both_forms_of_the_notes_match_torch():
    """O2: v = ρv + ∇f, x −= αv (form 1) and v = ρv − α∇f, x += v (form 2) give one trajectory."""
    lr, rho = 0.05, 0.9
    x1, v1, form1 = X0.clone(), torch.zeros(3, dtype=torch.float64), []
    x2, v2, form2 = X0.clone(), torch.zeros(3, dtype=torch.float64), []
    for _ in range(STEPS):
        v1 = rho * v1 + grad(x1)
        x1 = x1 - lr * v1
        form1.append(x1)
        v2 = rho * v2 - lr * grad(x2)
        x2 = x2 + v2
        form2.append(x2)
    close(form2, form1)
    close(run_optimizer(name="sgd", lr=lr, momentum=rho), form1)


def test_momentum_dampening():
    """O2: with dampening d, v = ρv + (1 − d)g; torch starts the buffer at v_1 = g_1."""
    lr, rho, d = 0.05, 0.8, 0.3
    x, v, ref = X0.clone(), None, []
    for _ in range(STEPS):
        g = grad(x)
        v = g.clone() if v is None else rho * v + (1 - d) * g
        x = x - lr * v
        ref.append(x)
    close(run_optimizer(name="sgd", lr=lr, momentum=rho, dampening=d), ref)


def test_nesterov_matches_the_notes_code():
    """O2: Nesterov as written in the notes (S3): V = ρV − α dw; w −= ρ·old_V − (1 + ρ)·V."""
    lr, rho = 0.05, 0.9
    w, V, ref = X0.clone(), torch.zeros(3, dtype=torch.float64), []
    for _ in range(STEPS):
        dw = grad(w)
        old_v = V
        V = rho * V - lr * dw
        w = w - (rho * old_v - (1 + rho) * V)
        ref.append(w)
    close(run_optimizer(name="sgd", lr=lr, momentum=rho, nesterov=True), ref)
    plain = run_optimizer(name="sgd", lr=lr, momentum=rho)
    assert not torch.allclose(plain[-1], ref[-1])  # Nesterov really differs from heavy-ball momentum


def test_adagrad_rule():
    """O3: AdaGrad: G += g², x −= α g / (√G + ε)."""
    lr, eps = 0.5, 1e-7
    x, G, ref = X0.clone(), torch.zeros(3, dtype=torch.float64), []
    for _ in range(STEPS):
        g = grad(x)
        G = G + g * g
        x = x - lr * g / (G.sqrt() + eps)
        ref.append(x)
    close(run_optimizer(name="adagrad", lr=lr, eps=eps), ref)


def test_adadelta_rule():
    """O3: Adadelta (Zeiler): E[g²] and E[Δx²] running averages, Δx = √(E[Δx²]+ε)/√(E[g²]+ε)·g."""
    lr, rho, eps = 1.0, 0.9, 1e-4
    x = X0.clone()
    eg2, edx2, ref = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), []
    for _ in range(STEPS):
        g = grad(x)
        eg2 = rho * eg2 + (1 - rho) * g * g
        dx = (edx2 + eps).sqrt() / (eg2 + eps).sqrt() * g
        edx2 = rho * edx2 + (1 - rho) * dx * dx
        x = x - lr * dx
        ref.append(x)
    close(run_optimizer(name="adadelta", lr=lr, rho=rho, eps=eps), ref)


@pytest.mark.parametrize("momentum,centered", [(0.0, False), (0.5, False), (0.0, True), (0.5, True)])
def test_rmsprop_rule(momentum, centered):
    """O3: RMSProp (notes): s = a·s + (1 − a)g², x −= α g / (√s + ε); with momentum and centered."""
    lr, a, eps = 0.01, 0.9, 1e-7
    x, ref = X0.clone(), []
    s, gbar, buf = (torch.zeros(3, dtype=torch.float64) for _ in range(3))
    for _ in range(STEPS):
        g = grad(x)
        s = a * s + (1 - a) * g * g
        if centered:
            gbar = a * gbar + (1 - a) * g
            denom = (s - gbar * gbar).sqrt() + eps
        else:
            denom = s.sqrt() + eps
        if momentum:
            buf = momentum * buf + g / denom
            x = x - lr * buf
        else:
            x = x - lr * g / denom
        ref.append(x)
    close(run_optimizer(name="rmsprop", lr=lr, alpha=a, eps=eps, momentum=momentum, centered=centered), ref)


def adam_reference(lr, b1, b2, eps, amsgrad=False, wd=0.0, decoupled=False):
    """The notes' Adam (S3) with bias correction; optional coupled / decoupled weight decay."""
    w = X0.clone()
    m1, m2, vmax = (torch.zeros(3, dtype=torch.float64) for _ in range(3))
    ref = []
    for t in range(1, STEPS + 1):
        dw = grad(w)
        if wd and decoupled:
            w = w * (1 - lr * wd)
        elif wd:
            dw = dw + wd * w
        m1 = b1 * m1 + (1 - b1) * dw
        m2 = b2 * m2 + (1 - b2) * dw * dw
        if amsgrad:
            vmax = torch.maximum(vmax, m2)
        m1_unbias = m1 / (1 - b1**t)
        m2_unbias = (vmax if amsgrad else m2) / (1 - b2**t)
        w = w - lr * m1_unbias / (m2_unbias.sqrt() + eps)
        ref.append(w)
    return ref


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_with_bias_correction(amsgrad):
    """O4: Adam = momentum + RMSProp with bias correction m/(1 − β1^t), v/(1 − β2^t) (S3 code)."""
    lr, b1, b2, eps = 0.1, 0.8, 0.95, 1e-7
    close(run_optimizer(name="adam", lr=lr, betas=(b1, b2), eps=eps, amsgrad=amsgrad),
          adam_reference(lr, b1, b2, eps, amsgrad))


def test_adam_first_step_is_lr_sized_thanks_to_bias_correction():
    """O4: with bias correction the first step is ≈ α·sign(g) however small (1 − β) is."""
    first = run_optimizer(1, name="adam", lr=0.01)[0]
    assert torch.allclose((first - X0).abs(), torch.full((3,), 0.01, dtype=torch.float64), rtol=1e-5)


def test_adam_defaults_are_the_notes_starting_point():
    """O4: defaults β1 0.9, β2 0.999, lr 1e-3 (S3: "a great starting point")."""
    cfg = OptimConfig()
    assert cfg.name == "adam" and cfg.betas == (0.9, 0.999) and cfg.lr == 1e-3
    opt = build_optimizer(cfg, Point())
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_adam_coupled_and_adamw_decoupled_weight_decay():
    """O4/L4: Adam adds wd·w to the gradient (coupled L2); AdamW shrinks w by (1 − α·wd) (decoupled)."""
    lr, wd = 0.1, 0.3
    coupled = run_optimizer(name="adam", lr=lr, weight_decay=wd)
    decoupled = run_optimizer(name="adamw", lr=lr, weight_decay=wd)
    close(coupled, adam_reference(lr, 0.9, 0.999, 1e-8, wd=wd))
    close(decoupled, adam_reference(lr, 0.9, 0.999, 1e-8, wd=wd, decoupled=True))
    assert not torch.allclose(coupled[-1], decoupled[-1], atol=1e-4)


def test_bad_optimizer_options_are_one_line_recipe_errors():
    """O2: Nesterov without momentum is refused with the field named."""
    with pytest.raises(RecipeError, match=r"optim \(sgd\).*[Nn]esterov"):
        build_optimizer(OptimConfig(name="sgd", nesterov=True), Point())
    with pytest.raises(RecipeError, match="optim.name"):
        build_optimizer(OptimConfig(name="adamm"), Point())


def test_gd_trains_on_the_whole_split_each_step():
    """O1: optim.name=gd makes every step use the whole training split (one step per epoch)."""
    from trainlab.api import build_components

    recipe = load_recipe("digits-mlp", ["optim.name=gd", "optim.nesterov=false", "optim.momentum=0",
                                        "data.subset=200", "model.width=8", "model.depth=1"])
    trainer = build_components(recipe)
    assert trainer.train_loader.batch_size == len(trainer.bundle.train) == 200
    assert len(trainer.train_loader) == 1 and trainer.steps_per_epoch == 1
    assert math.isclose(trainer.optimizer.param_groups[0]["lr"], recipe.optim.lr)
