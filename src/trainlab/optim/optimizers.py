"""Optimizers by name (``optim.name``), built on torch.optim (O1–O4).

``gd`` is plain gradient descent: torch's SGD over the whole training split per step (its entry
carries ``full_batch=True``, which the trainer reads when it picks the batch size). ``sgd`` is
mini-batch SGD with optional momentum (v = ρv + g, x −= αv), dampening and Nesterov momentum.
``adagrad``, ``adadelta`` and ``rmsprop`` adapt a per-parameter step from the squared gradients;
``adam`` adds momentum and bias correction; ``adamw`` decouples the weight decay (L4).

Parameters are split into two groups: weights, which get ``optim.weight_decay``, and biases plus
normalization parameters, which by default do not (decaying a BatchNorm scale or a bias only fights
the normalization; ``optim.decay_norm_and_bias=true`` decays them too).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import RecipeError
from ..registry import OPTIMIZERS

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict]:
    """[{params: weights, weight_decay}, {params: biases and norm parameters, weight_decay: 0}]."""
    if decay_norm_and_bias or weight_decay == 0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, _NORMS) or name.endswith("bias") or p.dim() <= 1:
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def full_batch(recipe) -> bool:
    """True when each step should see the whole training split: ``data.batch_size: full`` or ``gd``."""
    if recipe.data.batch_size == "full":
        return True
    return bool(OPTIMIZERS.get(recipe.optim.name, "optim.name").meta.get("full_batch", False))


def train_batch_size(recipe, n_train: int) -> int:
    """The training batch size for ``n_train`` training samples: the whole split for 'full' or a
    full-batch optimizer, else ``data.batch_size`` capped at the split (one batch of the whole
    split when it asks for more, as Keras and torch's DataLoader do; issue 22)."""
    return n_train if full_batch(recipe) else min(recipe.data.batch_size, n_train)


def build_optimizer(cfg, model: nn.Module, name: str | None = None, lr: float | None = None) -> torch.optim.Optimizer:
    """The optimizer ``name`` (default ``cfg.name``) over ``model``'s parameter groups."""
    name = name or cfg.name
    entry = OPTIMIZERS.get(name, "optim.name")
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias)
    try:
        opt = entry.fn(groups, cfg, lr or cfg.lr)
    except ValueError as err:  # torch's own argument checks, e.g. Nesterov without momentum
        raise RecipeError(f"optim ({name}): {err}") from None
    for g in opt.param_groups:
        g.setdefault("initial_lr", g["lr"])
    opt.trainlab_name = name
    return opt


@OPTIMIZERS.register("sgd", help="mini-batch SGD with optional (Nesterov) momentum and dampening")
def sgd(groups, cfg, lr):
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, dampening=cfg.dampening, nesterov=cfg.nesterov)


@OPTIMIZERS.register("gd", help="full-batch gradient descent: SGD over the whole training split each step",
                     full_batch=True)
def gd(groups, cfg, lr):
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, dampening=cfg.dampening, nesterov=cfg.nesterov)


@OPTIMIZERS.register("adagrad", help="AdaGrad: step divided by the root of the summed squared gradients")
def adagrad(groups, cfg, lr):
    return torch.optim.Adagrad(groups, lr=lr, eps=cfg.eps)


@OPTIMIZERS.register("adadelta", help="Adadelta: RMS of past updates over RMS of gradients (lr 1.0 as in Zeiler)")
def adadelta(groups, cfg, lr):
    return torch.optim.Adadelta(groups, lr=lr, rho=cfg.rho, eps=cfg.eps)


@OPTIMIZERS.register("rmsprop", help="RMSProp: moving average of squared gradients (alpha, momentum, centered)")
def rmsprop(groups, cfg, lr):
    return torch.optim.RMSprop(groups, lr=lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum,
                               centered=cfg.centered)


@OPTIMIZERS.register("adam", help="Adam with bias correction (betas, eps, amsgrad); coupled weight decay")
def adam(groups, cfg, lr):
    return torch.optim.Adam(groups, lr=lr, betas=cfg.betas, eps=cfg.eps, amsgrad=cfg.amsgrad)


@OPTIMIZERS.register("adamw", help="Adam with decoupled weight decay")
def adamw(groups, cfg, lr):
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, eps=cfg.eps, amsgrad=cfg.amsgrad)
