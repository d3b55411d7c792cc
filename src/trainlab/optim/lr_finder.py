"""The LR range test (O9): Smith's sweep to find a learning rate before training.

Train for ``steps`` mini-batches while the LR grows geometrically from ``start_lr`` to ``end_lr``
(lr_i = start · (end/start)^(i/(steps−1))), record the loss, smooth it with a bias-corrected
exponential moving average (the same v_t/(1 − β^t) as the weight EMA of O8) and stop when the
smoothed loss exceeds ``diverge`` times its minimum or a loss is not finite. The suggestion is
the LR at the minimum of the smoothed loss divided by 10 (the rule of thumb of Smith 2017 and
fast.ai: the minimum is already at the edge of stability); the LR of steepest descent of the
smoothed loss against log(lr) is reported as well.

The sweep uses its own optimizer of the recipe's kind and restores the model's weights, buffers,
gradients and the global random state afterwards, so the trainer it is given is left as it was.
Gradient accumulation is ignored (one batch per step); clipping and weight penalties apply.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import RecipeError


@dataclass
class RangeTestResult:
    lrs: list[float] = field(default_factory=list)  # LR of each step taken
    losses: list[float] = field(default_factory=list)  # raw mini-batch loss at that LR
    smoothed: list[float] = field(default_factory=list)  # bias-corrected EMA of the losses
    stop_reason: str = ""
    min_loss_lr: float | None = None
    steepest_lr: float | None = None

    @property
    def suggested(self) -> float | None:
        """The LR to train with: the LR of the lowest smoothed loss divided by 10."""
        return None if self.min_loss_lr is None else self.min_loss_lr / 10


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float | None, float | None]:
    """(LR of the lowest smoothed loss, LR of the steepest descent in log(lr)) of a sweep."""
    if len(smoothed) < 3:
        return None, None
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    logs = [math.log(lr) for lr in lrs]
    # Central differences of the loss against log(lr), up to the minimum: past it the loss rises.
    slopes = [(smoothed[i + 1] - smoothed[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(1, max(best, 2))]
    steepest = lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)] if slopes else None
    return lrs[best], steepest


def check_range_test_options(start_lr: float, end_lr: float, steps: int, smoothing: float, diverge: float) -> None:
    """Raise a RecipeError naming the first option out of range.

    Each test is written so that NaN fails it (NaN compares false with everything), and the LRs
    and ``diverge`` must be finite.
    """
    if not 0 < start_lr < end_lr < math.inf:
        raise RecipeError(f"lr-find: start_lr ({start_lr}) must be positive and below end_lr ({end_lr}), "
                          "both finite")
    if steps < 5:
        raise RecipeError(f"lr-find: steps must be at least 5 (got {steps})")
    if not 0 <= smoothing < 1:
        raise RecipeError(f"lr-find: smoothing must be in [0, 1) (got {smoothing})")
    if not 1 < diverge < math.inf:
        raise RecipeError(f"lr-find: diverge must be a finite number above 1 (got {diverge})")


def lr_range_test(trainer, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100,
                  smoothing: float = 0.9, diverge: float = 4.0) -> RangeTestResult:
    """Run the range test on ``trainer``'s model and training split; the trainer is left untouched.

    ``trainer`` comes from :func:`trainlab.api.build_components`; nothing is written to disk.
    """
    from ..rng import generator
    from .optimizers import build_optimizer

    check_range_test_options(start_lr, end_lr, steps, smoothing, diverge)

    model, recipe = trainer.model, trainer.recipe
    saved_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if trainer.device.type == "cuda" else None
    was_training = model.training
    optimizer = build_optimizer(recipe.optim, model)
    result = RangeTestResult(stop_reason=f"reached end_lr {end_lr:g}")
    ratio = end_lr / start_lr
    best = math.inf
    avg = 0.0
    try:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        epoch, batches = 0, trainer.train_loader.batches(0)
        for i in range(steps):
            batch = next(batches, None)
            if batch is None:
                epoch += 1
                batches = trainer.train_loader.batches(epoch)
                batch = next(batches)
            lr = start_lr * ratio ** (i / (steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = trainer.to_device(batch)
            if trainer.batch_transform is not None:
                batch = trainer.batch_transform(batch, generator(recipe.seed, "lr_find", i, device=trainer.device))
            _, loss, total = trainer.compute_loss(batch)
            total.backward()
            trainer.clip_gradients()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = float(loss.detach())
            if not math.isfinite(value):
                result.stop_reason = f"loss not finite at lr {lr:.3g}"
                break
            avg = smoothing * avg + (1 - smoothing) * value  # bias-corrected EMA, as in O8
            smooth = avg / (1 - smoothing ** (i + 1))
            result.lrs.append(lr)
            result.losses.append(value)
            result.smoothed.append(smooth)
            best = min(best, smooth)
            if smooth > diverge * best:
                result.stop_reason = f"loss diverged at lr {lr:.3g} ({diverge:g}x its minimum)"
                break
    finally:
        with torch.no_grad():
            model.load_state_dict(saved_state)
        for p, grad in zip(model.parameters(), saved_grads):
            p.grad = grad
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        model.train(was_training)
    result.min_loss_lr, result.steepest_lr = suggest(result.lrs, result.smoothed)
    return result
