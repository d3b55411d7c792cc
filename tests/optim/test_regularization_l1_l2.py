"""L1 / L2 regularization and weight decay (L4), checked against their gradients and updates."""
from __future__ import annotations

import torch
from torch import nn

from trainlab.losses import penalized_parameters, weight_penalty
from trainlab.optim.optimizers import build_optimizer, param_groups
from trainlab.recipe import OptimConfig


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 8),
                         nn.LayerNorm(8), nn.Linear(8, 3))


def test_no_weight_decay_on_biases_and_norms_by_default():
    """L4: weights are decayed; biases and BatchNorm/LayerNorm parameters are not (unless asked)."""
    net = small_net()
    groups = param_groups(net, 0.01, decay_norm_and_bias=False)
    decayed = {id(p) for g in groups if g["weight_decay"] == 0.01 for p in g["params"]}
    free = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    weights = {id(net[0].weight), id(net[3].weight), id(net[5].weight)}
    others = {id(p) for p in net.parameters()} - weights
    assert decayed == weights and free == others
    everything = param_groups(net, 0.01, decay_norm_and_bias=True)
    assert len(everything) == 1 and len(everything[0]["params"]) == len(list(net.parameters()))
    opt = build_optimizer(OptimConfig(name="sgd", lr=0.1, weight_decay=0.01), net)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.01]


def test_weight_penalty_gradient_is_l1_sign_plus_l2_w():
    """L4: ∂/∂w [λ1 Σ|w| + (λ2/2) Σw²] = λ1·sgn(w) + λ2·w (S2 §4), on conv and linear weights only."""
    net = small_net()
    params = penalized_parameters(net)
    assert {id(p) for p in params} == {id(net[0].weight), id(net[3].weight), id(net[5].weight)}
    l1, l2 = 0.03, 0.2
    penalty = weight_penalty(params, l1, l2)
    expected = sum(l1 * w.abs().sum() + 0.5 * l2 * (w**2).sum() for w in params)
    assert torch.allclose(penalty, expected)
    grads = torch.autograd.grad(penalty, params)
    for w, g in zip(params, grads):
        assert torch.allclose(g, l1 * torch.sign(w) + l2 * w, atol=1e-7)


def test_coupled_l2_in_the_loss_equals_sgd_weight_decay():
    """L4: loss.l2 (penalty added to the loss) and SGD's weight_decay are the same update."""
    torch.manual_seed(1)
    x, y = torch.randn(32, 5, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)
    lam = 0.1

    def train(use_penalty: bool) -> torch.Tensor:
        torch.manual_seed(2)
        net = nn.Linear(5, 1, bias=False).double()
        opt = build_optimizer(OptimConfig(name="sgd", lr=0.05, momentum=0.9,
                                          weight_decay=0.0 if use_penalty else lam), net)
        for _ in range(10):
            loss = ((net(x) - y) ** 2).mean()
            if use_penalty:
                loss = loss + weight_penalty([net.weight], 0.0, lam)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return net.weight.detach()

    assert torch.allclose(train(True), train(False), rtol=1e-10)


def test_l1_leaves_more_weights_near_zero_than_l2():
    """L4: on the same sparse regression, L1 drives irrelevant weights to ~0; L2 only shrinks them."""
    torch.manual_seed(0)
    n, d = 200, 40
    x = torch.randn(n, d)
    w_true = torch.zeros(d)
    w_true[:4] = torch.tensor([2.0, -1.5, 1.0, 0.5])
    y = x @ w_true + 0.3 * torch.randn(n)
    lam, lr = 0.05, 0.02

    def train(l1: float, l2: float) -> torch.Tensor:
        torch.manual_seed(1)
        net = nn.Linear(d, 1, bias=False)
        opt = torch.optim.SGD(net.parameters(), lr=lr)
        for _ in range(400):
            loss = ((net(x).squeeze(1) - y) ** 2).mean() + weight_penalty([net.weight], l1, l2)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return net.weight.detach().squeeze(0)

    w_l1, w_l2 = train(lam, 0.0), train(0.0, lam)
    near_zero = lambda w: int((w.abs() < 2 * lr * lam).sum())  # noqa: E731 - within one L1 step of 0
    assert near_zero(w_l1) >= 30, w_l1
    assert near_zero(w_l1) > near_zero(w_l2) + 15, (near_zero(w_l1), near_zero(w_l2))
    assert (w_l1[:4] - w_true[:4]).abs().max() < 0.2  # the true weights survive
