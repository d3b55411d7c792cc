"""Adam → SGD during training (O5): the SWATS estimate and the switch decision.

The notes (S0 Q13, S2 §7) advise starting with Adam, which converges fast, and finishing with
SGD + momentum, which tends to generalize better. ``optim.switch`` makes the switch either before
a fixed epoch (``at_epoch``) or when SWATS's criterion fires (``auto``; Keskar & Socher 2017,
"Improving Generalization Performance by Switching from Adam to SGD"):

    p_k = the step Adam took,  g_k = the gradient it was computed from
    γ_k = p_kᵀp_k / (−p_kᵀg_k)            SGD step size whose projection on p_k equals p_k
    λ_k = β2·λ_{k−1} + (1 − β2)·γ_k       its running average, Λ_k = λ_k / (1 − β2^k)
    switch when k ≥ min_steps and |Λ_k − γ_k| < tolerance·Λ_k

(the paper's ε is absolute; a relative tolerance does not depend on the scale of the LR). Steps
whose update points uphill (p_kᵀg_k ≥ 0) say nothing about a descent step size and are skipped.
After the switch SGD runs with momentum ρ and LR (1 − ρ)·Λ, so that its steady step on a constant
gradient, lr/(1 − ρ), equals Λ, as in the paper. With ``switch.lr`` given that LR is used
instead; with ``at_epoch`` and no ``lr`` the SWATS estimate tracked so far is used. Either way the
LR is the new base that the schedule keeps multiplying.

This module is the pure part: :class:`Swats` holds the estimate (λ, k), the criterion and the
choice of the LR, and its state; it touches no trainer. The callback that feeds it Adam's steps,
switches the trainer's optimizer, logs the switch (``trainer.log_event``) and checkpoints this state
under the name ``optimizer_switch`` is :class:`trainlab.engine.optimizer_switch.OptimizerSwitch`:
optim sits below the engine and does not import it. ``Trainer.restore`` rebuilds the switched
optimizer, so a resumed run continues exactly.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class Swats:
    """The SWATS estimate of an SGD learning rate from Adam's steps, and when to switch to it.

    ``cfg`` is the recipe's ``optim.switch`` section (:class:`trainlab.recipe.SwitchConfig`),
    ``beta2`` Adam's second-moment decay, which also averages γ_k.
    """

    def __init__(self, cfg, beta2: float):
        self.cfg = cfg
        self.beta2 = beta2
        self.switched = False
        self.lr: float | None = None  # LR chosen at the switch
        self.lam = 0.0
        self.k = 0
        self.last_gamma: float | None = None
        self.track = cfg.auto or cfg.lr is None

    def estimate(self) -> float | None:
        """Λ_k, the bias-corrected running average of γ_k (None before the first usable step)."""
        if self.k == 0:
            return None
        return self.lam / (1 - self.beta2**self.k)

    def observe_step(self, update: list[torch.Tensor], grads: list[torch.Tensor]) -> float | None:
        """Add one Adam step (``update`` = θ_after − θ_before) to the estimate; returns γ_k."""
        if not update:
            return None
        # Both dot products in float64, read back together: one device synchronization per step.
        pg_t = torch.stack([(u * g).sum(dtype=torch.float64) for u, g in zip(update, grads)]).sum()
        pp_t = torch.stack([(u * u).sum(dtype=torch.float64) for u in update]).sum()
        pg, pp = torch.stack([pg_t, pp_t]).tolist()
        if not pg < 0:
            return None
        gamma = pp / -pg
        self.k += 1
        self.lam = self.beta2 * self.lam + (1 - self.beta2) * gamma
        self.last_gamma = gamma
        return gamma

    def criterion(self, gamma: float) -> bool:
        big = self.estimate()
        return self.k >= self.cfg.min_steps and abs(big - gamma) < self.cfg.tolerance * big

    def switch_lr(self, schedule_factor: Callable[[], float], base_lr: float) -> tuple[float, str]:
        """The SGD LR to switch to and where it comes from: ``switch.lr`` if given, else (1 − ρ)·Λ
        divided by the schedule's current factor (``schedule_factor()``, asked only then: the LR is
        the new base that the schedule keeps multiplying), else ``base_lr`` (``optim.lr``) when no
        step has been estimated yet."""
        cfg = self.cfg
        estimate = self.estimate()
        if cfg.lr is not None:
            return cfg.lr, "optim.switch.lr"
        if estimate is not None:
            factor = schedule_factor()
            return (1 - cfg.momentum) * estimate / (factor if factor > 1e-12 else 1.0), "SWATS estimate"
        return base_lr, "optim.lr (no SWATS estimate yet)"

    def state_dict(self) -> dict[str, Any]:
        return {"switched": self.switched, "lr": self.lr, "lam": self.lam, "k": self.k,
                "last_gamma": self.last_gamma}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.switched, self.lr = bool(state["switched"]), state["lr"]
        self.lam, self.k, self.last_gamma = float(state["lam"]), int(state["k"]), state["last_gamma"]
