"""Adam → SGD during training (O5), as a callback.

The estimate, the criterion and the choice of the LR are :class:`trainlab.optim.switch.Swats` (see
that module for the SWATS formulas); this callback feeds it each Adam step from the trainer, makes
the switch (``trainer.switch_optimizer``) before a fixed epoch (``at_epoch``) or when the criterion
fires (``auto``), and logs it with ``trainer.log_event``. Its state (switched or not, the LR, λ, k)
is checkpointed under the name ``optimizer_switch``, and ``Trainer.restore`` rebuilds the switched
optimizer, so a resumed run continues exactly.
"""
from __future__ import annotations

import torch

from ..optim.switch import Swats
from .callbacks import Callback


class OptimizerSwitch(Swats, Callback):
    name = "optimizer_switch"

    def __init__(self, cfg, beta2: float):
        super().__init__(cfg, beta2)
        # Copies taken before each Adam step (reused buffers, filled by one fused copy per step):
        # the parameters that have a gradient, their gradients and their values.
        self._params: list[torch.Tensor] | None = None
        self._grads: list[torch.Tensor] | None = None
        self._before: list[torch.Tensor] | None = None
        self._pending = False

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
            for g, b, p in zip(self._grads, self._before, params):
                g.copy_(p.grad)
                b.copy_(p)
        self._pending = True

    def on_batch_end(self, trainer, batch, outputs, loss) -> None:
        if not self._pending or not trainer.at_step_boundary:
            return
        self._pending = False
        with torch.no_grad():
            update = [p.detach() - b for p, b in zip(self._params, self._before)]
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
        lr, source = self.switch_lr(lambda: trainer.schedule.factor(trainer.state.step), trainer.recipe.optim.lr)
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
