"""Adam → SGD during training (O5), as a callback.

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

The switch is logged with ``trainer.log_event``; the callback's state (switched or not, λ, k) is
checkpointed, and ``Trainer.restore`` rebuilds the switched optimizer, so a resumed run continues
exactly.
"""
from __future__ import annotations

from typing import Any

import torch

from ..engine.callbacks import Callback


class OptimizerSwitch(Callback):
    name = "optimizer_switch"

    def __init__(self, cfg, beta2: float):
        self.cfg = cfg
        self.beta2 = beta2
        self.switched = False
        self.lr: float | None = None  # LR chosen at the switch
        self.lam = 0.0
        self.k = 0
        self.last_gamma: float | None = None
        self.track = cfg.auto or cfg.lr is None
        # Copies taken before each Adam step (reused buffers, filled by one fused copy per step):
        # the parameters that have a gradient, their gradients and their values.
        self._params: list[torch.Tensor] | None = None
        self._grads: list[torch.Tensor] | None = None
        self._before: list[torch.Tensor] | None = None
        self._pending = False

    # ---------------------------------------------------------------------------- SWATS estimate
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
        pg_t = torch.stack([t.sum(dtype=torch.float64) for t in torch._foreach_mul(update, grads)]).sum()
        pp_t = torch.stack([t.sum(dtype=torch.float64) for t in torch._foreach_mul(update, update)]).sum()
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

    # -------------------------------------------------------------------------------- events
    def on_after_backward(self, trainer) -> None:
        if self.switched or not self.track:
            return
        # Adam leaves a parameter without gradient unchanged, so it adds nothing to either product.
        params = [p for p in trainer.params if p.grad is not None]
        if self._params is None or len(params) != len(self._params) or any(
            a is not b for a, b in zip(params, self._params)
        ):
            self._params = params
            self._grads = [torch.empty_like(p.grad) for p in params]
            self._before = [torch.empty_like(p) for p in params]
        with torch.no_grad():
            torch._foreach_copy_(self._grads + self._before, [p.grad for p in params] + [p.detach() for p in params])
        self._pending = True

    def on_batch_end(self, trainer, batch, outputs, loss) -> None:
        if not self._pending or not trainer.at_step_boundary:
            return
        self._pending = False
        with torch.no_grad():
            update = torch._foreach_sub([p.detach() for p in self._params], self._before)
        gamma = self.observe_step(update, self._grads)
        if self.cfg.auto and gamma is not None and self.criterion(gamma):
            self.switch(trainer, "SWATS criterion")

    def on_epoch_start(self, trainer) -> None:
        at = self.cfg.at_epoch
        if not self.switched and at is not None and trainer.state.epoch + 1 >= at:
            self.switch(trainer, f"epoch {at}" + (" (auto criterion had not fired)" if self.cfg.auto else ""))

    # -------------------------------------------------------------------------------- switch
    def switch(self, trainer, reason: str) -> None:
        cfg = self.cfg
        estimate = self.estimate()
        if cfg.lr is not None:
            lr, source = cfg.lr, "optim.switch.lr"
        elif estimate is not None:
            factor = trainer.schedule.factor(trainer.state.step)
            lr = (1 - cfg.momentum) * estimate / (factor if factor > 1e-12 else 1.0)
            source = "SWATS estimate"
        else:
            lr, source = trainer.recipe.optim.lr, "optim.lr (no SWATS estimate yet)"
        old = getattr(trainer.optimizer, "trainlab_name", trainer.recipe.optim.name)
        trainer.switch_optimizer(cfg.to, lr, cfg.momentum)
        self.switched, self.lr = True, lr
        self._params = self._grads = self._before = None
        self._pending = False
        trainer.log_event(
            "optimizer_switch",
            f"{old} -> {cfg.to} at epoch {trainer.state.epoch + 1}, step {trainer.state.step} ({reason}); "
            f"lr {lr:.4g} from {source}, momentum {cfg.momentum}",
            **{"from": old, "to": cfg.to, "lr": lr, "momentum": cfg.momentum, "reason": reason,
               "lr_source": source, "swats_estimate": estimate, "swats_steps": self.k},
        )

    # --------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"switched": self.switched, "lr": self.lr, "lam": self.lam, "k": self.k,
                "last_gamma": self.last_gamma}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.switched, self.lr = bool(state["switched"]), state["lr"]
        self.lam, self.k, self.last_gamma = float(state["lam"]), int(state["k"]), state["last_gamma"]
