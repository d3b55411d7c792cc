"""Remedies (X9): what the doctor does to a run when the recipe says ``doctor.auto=true``.

- NaN/inf loss, or NaN/inf weights when an epoch ends (checked after its last step, before
  validation, and again before the Checkpointer and at the end of training): restore the last good
  in-memory state (model, optimizer, EMA), multiply the LR by ``doctor.rollback_lr_factor`` (halve
  it) and go on with the next batch; after ``doctor.max_rollbacks`` rollbacks, restore it once
  more and stop the run. So neither validation nor a checkpoint ever sees NaN weights.
- Overfitting (the rule's criterion): restore the weights of the best epoch and stop.
- Plateau (the rule's criterion, counted from the last action): with Adam/AdamW, switch once to
  SGD with momentum 0.9 (the notes: Adam converges fast, SGD fine-tunes better); otherwise, or
  after that, multiply the LR by ``doctor.plateau_lr_factor``.

The last good state is copied in memory (a rollback costs no disk access) at fit start, every
``doctor.snapshot_every`` healthy sampled steps, at each epoch end with finite weights, and
whenever the trainer's optimizer object changes (``optim.switch``), so a rollback never brings
back an optimizer that was replaced. LR changes scale each parameter group's base LR, so the
schedule keeps shaping it, and they survive a resume through the optimizer state in the checkpoint.
Every action is logged with ``trainer.log_event`` (metrics.jsonl, report.md) and recorded in the
doctor history.
"""
from __future__ import annotations

import copy
from typing import Any

import torch

from .rules import fit_measure, initial_loss, num, overfit_onset, plateau_window, plural, within_divergence

ADAM_FAMILY = ("adam", "adamw", "nadam", "radam", "adamax")
SGD_MOMENTUM = 0.9
# Adam's and SGD-with-momentum's customary learning rates (1e-3 and 1e-2) differ by this factor.
SWITCH_LR_FACTOR = 10.0


def scale_base_lr(optimizer: torch.optim.Optimizer, factor: float) -> tuple[float, float]:
    """Multiply every group's base LR (``initial_lr``, which the schedule multiplies); returns the
    first group's (old, new) base LR."""
    old = optimizer.param_groups[0]["initial_lr"]
    for group in optimizer.param_groups:
        group["initial_lr"] *= factor
    return old, optimizer.param_groups[0]["initial_lr"]


def _record(trainer, history, event: str, message: str, action: str, step: int, epoch: int, **data: Any) -> None:
    """Log a remedy as a trainer event (metrics.jsonl, report.md) and in the doctor history
    (``history.actions``: ``{"action", "step", "epoch", **data}``, which the rules read)."""
    trainer.log_event(event, message, **data)
    history.actions.append({"action": action, "step": step, "epoch": epoch, **data})


def _clone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _checked_tensors(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Parameters and normalization running statistics: what a NaN step spoils. Other buffers
    are left out, since some hold inf on purpose (attention masks)."""
    out = [(n, p.detach()) for n, p in model.named_parameters()]
    out += [(n, b) for n, b in model.named_buffers() if n.rsplit(".", 1)[-1] in ("running_mean", "running_var")]
    return [(n, t) for n, t in out if t.is_floating_point() and t.numel()]


def _weights_finite(model: torch.nn.Module) -> bool:
    tensors = [t for _, t in _checked_tensors(model)]
    if not tensors:
        return True
    # Norms rather than elementwise checks: weights whose norm overflows float32 (elements near
    # 1e19) count as blown up too, since the next forward pass overflows; one device sync.
    return bool(torch.stack([torch.linalg.vector_norm(t) for t in tensors]).isfinite().all())


def _nonfinite_modules(model: torch.nn.Module) -> list[str]:
    """Names of the modules holding a NaN/inf parameter or running statistic, in model order."""
    out: list[str] = []
    for name, t in _checked_tensors(model):
        module = name.rsplit(".", 1)[0] if "." in name else ""
        if module not in out and not bool(torch.isfinite(t).all()):
            out.append(module)
    return out


class Remedies:
    """State of the automatic remedies: the in-memory snapshots and what was already done."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.rollbacks = 0
        self.samples = 0
        self.last_action_epoch = 0
        self.stopped = False
        self.switched = False
        self._snap: dict[str, Any] | None = None
        self._best: dict[str, Any] | None = None
        self._opt = None  # the optimizer object the snapshot's optimizer state belongs to
        self._best_at_start: tuple[Any, Any] = (None, None)  # trainer's (best_value, best_epoch)

    # ------------------------------------------------------------------------------ snapshots
    def snapshot(self, trainer) -> None:
        """Copy the state a rollback returns to (model, optimizer, EMA) into memory."""
        opt = trainer.optimizer
        self._snap = {
            "step": trainer.state.step,
            "optimizer": getattr(opt, "trainlab_name", None),
            "model": _clone_state(trainer.model.state_dict()),
            "optim": copy.deepcopy(opt.state_dict()),
            "ema": _clone_state(trainer.ema.state_tensors()) if trainer.ema is not None else None,
            "ema_steps": trainer.ema.steps if trainer.ema is not None else 0,
        }
        self._opt = opt

    def track_optimizer(self, trainer) -> None:
        """Follow a replaced optimizer (``optim.switch``: Adam -> SGD, or a user's callback).

        A rollback must return to the optimizer the run now uses: restoring the state of the old
        one would silently undo the switch (the switch callback still believes it happened). So a
        new optimizer object means a fresh snapshot; if the weights are already non-finite, the
        old snapshot's weights are kept and only its optimizer part becomes the new optimizer's.
        """
        opt = trainer.optimizer
        if opt is self._opt:
            return
        if self._snap is None or _weights_finite(trainer.model):
            self.snapshot(trainer)
            return
        self._snap["optimizer"] = getattr(opt, "trainlab_name", None)
        self._snap["optim"] = copy.deepcopy(opt.state_dict())
        self._opt = opt

    def sampled(self, trainer) -> None:
        """A sampled step with finite loss, gradients and weights."""
        self.samples += 1
        if self.samples % self.cfg.snapshot_every == 0:
            self.snapshot(trainer)

    # ------------------------------------------------------------------------------- NaN
    def _restore(self, trainer, lr_factor: float) -> tuple[dict[str, Any], float, float]:
        """Load the snapshot into the model, optimizer and EMA; scale the base LR by ``lr_factor``.

        Returns (snapshot, the live base LR before, the base LR after) of the first group.
        """
        snap = self._snap
        live = [g["initial_lr"] for g in trainer.optimizer.param_groups]
        if snap["optimizer"] != getattr(trainer.optimizer, "trainlab_name", None):
            # Only for a snapshot older than an optimizer change track_optimizer did not see.
            trainer.switch_optimizer(snap["optimizer"])
            live_bases = [g["initial_lr"] for g in trainer.optimizer.param_groups]
        else:
            live_bases = live
        opt = trainer.optimizer
        trainer.model.load_state_dict(snap["model"])
        # A deep copy: load_state_dict may keep the given tensors, which the next steps then modify.
        opt.load_state_dict(copy.deepcopy(snap["optim"]))
        for group, base in zip(opt.param_groups, live_bases):
            group["initial_lr"] = base * lr_factor
        trainer.schedule.apply(opt, trainer.state.step)
        if trainer.ema is not None and snap["ema"] is not None:
            trainer.ema.load_state(snap["ema"], snap["ema_steps"])
        self._opt = opt
        return snap, live[0], opt.param_groups[0]["initial_lr"]

    def rollback(self, trainer, history, step: int, what: str = "loss", when: str | None = None) -> bool:
        """Restore the last good state and lower the LR; once out of rollbacks, restore it and stop.

        ``what`` is the non-finite quantity ("loss" or "weights"), ``when`` where it was found
        (default: at step ``step``). False when there is nothing to restore (no snapshot, or the
        run is already stopping).
        """
        st = trainer.state
        if self._snap is None or self.stopped:
            return False
        exhausted = self.rollbacks >= self.cfg.max_rollbacks
        snap, old, new = self._restore(trainer, 1.0 if exhausted else self.cfg.rollback_lr_factor)
        if exhausted:
            # Stop with the last good weights rather than leave NaN in the run's checkpoint.
            self.stopped = True
            subject = "the loss is" if what == "loss" else f"the {what} are"
            where = f" ({when})" if when else ""
            reason = (f"doctor: {subject} still non-finite{where} after {plural(self.rollbacks, 'rollback')} "
                      f"(doctor.max_rollbacks={self.cfg.max_rollbacks}); restored the state of step {snap['step']} "
                      f"and stopped at step {step}")
            trainer.request_stop(reason)
            _record(trainer, history, "doctor_stop", reason, "stop", step, st.epoch + 1, code="nan_loss",
                    to_step=snap["step"], cause=what)
            return True
        self.rollbacks += 1
        message = (f"{what} non-finite {when or f'at step {step}'}: rolled back to the state of step "
                   f"{snap['step']}, base lr {num(old)} -> {num(new)} "
                   f"(rollback {self.rollbacks} of {self.cfg.max_rollbacks})")
        _record(trainer, history, "doctor_rollback", message, "rollback", step, st.epoch + 1, code="nan_loss",
                to_step=snap["step"], lr=new, cause=what)
        return True

    def repair_weights(self, trainer, history, when: str) -> bool:
        """Roll back (a rollback like any other: it counts towards ``max_rollbacks``) if the weights
        or normalization statistics are NaN/inf. True if the state was restored."""
        if _weights_finite(trainer.model):
            return False
        st = trainer.state
        if not any(e["what"] == "weights" for e in history.nonfinite):
            history.nonfinite.append({"step": st.step, "epoch": st.epoch + (1 if st.batch else 0), "what": "weights",
                                      "layers": _nonfinite_modules(trainer.model)})
        return self.rollback(trainer, history, st.step, what="weights", when=when)

    def epoch_start(self, trainer) -> None:
        self._best_at_start = (trainer.state.best_value, trainer.state.best_epoch)

    def repair_after_validation(self, trainer, history, record: dict[str, Any]) -> bool:
        """The last guard before the Checkpointer: weights that became NaN/inf after the epoch's
        last step (changed by another callback) are rolled back, too late for this epoch's
        validation. Its numbers stay in the record, marked ``"rolled_back": true``, but the epoch
        no longer counts as best (the weights about to be saved are not the ones validated), so
        best.safetensors keeps the previous best."""
        if not self.repair_weights(trainer, history, f"at the end of epoch {record['epoch']}"):
            return False
        st = trainer.state
        record["rolled_back"] = True
        if st.improved:
            st.best_value, st.best_epoch = self._best_at_start
            st.improved = False
        return True

    # -------------------------------------------------------------------------- epoch end
    def epoch_end(self, trainer, history, epochs) -> None:
        st = trainer.state
        epoch = st.epoch  # epochs done, i.e. the 1-based number of the epoch that just ended
        if st.improved:
            self._best = {"epoch": epoch, "model": _clone_state(trainer.model.state_dict())}
        if self._good_epoch(history, epochs) and _weights_finite(trainer.model):
            self.snapshot(trainer)
        if self.stopped:
            return
        onset = overfit_onset(epochs, self.cfg, fit_measure(history))
        if onset is not None:
            self._stop_overfitting(trainer, history, onset)
            return
        window = plateau_window(history, epochs, self.cfg, after_epoch=self.last_action_epoch)
        if window is not None:
            self._treat_plateau(trainer, history, window)

    def _good_epoch(self, history, epochs) -> bool:
        """The epoch's mean training loss is finite and has not diverged from the initial loss."""
        if not epochs:
            return False
        return within_divergence(epochs[-1].get("train_loss"), initial_loss(history, epochs), self.cfg)

    def _stop_overfitting(self, trainer, history, onset: dict[str, Any]) -> None:
        st = trainer.state
        self.stopped = True
        restored = ""
        if self._best is not None:
            trainer.model.load_state_dict(self._best["model"])
            restored = f"; restored the weights of epoch {self._best['epoch']} (best {trainer.monitor})"
        if onset["measure"] == "loss":
            worse = (f"validation loss {pct_rise(epochs_val(trainer, st.epoch), onset['best_value'])} above its "
                     f"minimum at epoch {onset['best_epoch']}")
        else:
            worse = (f"validation {onset['measure']} {num(epochs_val(trainer, st.epoch, onset['measure']))} below "
                     f"its maximum {num(onset['best_value'])} at epoch {onset['best_epoch']}")
        reason = f"doctor: overfitting from epoch {onset['onset']} ({worse}){restored}"
        trainer.request_stop(reason)
        _record(trainer, history, "doctor_stop", reason, "stop_restore_best", st.step, st.epoch, code="overfitting",
                restored_epoch=self._best["epoch"] if self._best else None)

    def _treat_plateau(self, trainer, history, window: dict[str, Any]) -> None:
        st = trainer.state
        opt = trainer.optimizer
        name = getattr(opt, "trainlab_name", trainer.recipe.optim.name)
        where = f"plateau in epochs {window['first_epoch']}-{window['last_epoch']}"
        if (self.cfg.switch_to_sgd and not self.switched and name in ADAM_FAMILY
                and trainer.recipe.optim.switch is None):
            base = opt.param_groups[0]["initial_lr"]
            lr = self.cfg.switch_lr if self.cfg.switch_lr is not None else base * SWITCH_LR_FACTOR
            trainer.switch_optimizer("sgd", lr=lr, momentum=SGD_MOMENTUM)
            self.switched = True
            self.snapshot(trainer)  # a rollback must restore an SGD state from now on
            message = (f"{where} with {name}: switched to SGD (momentum {SGD_MOMENTUM}, base lr {num(lr)}) "
                       "to fine-tune, as the notes advise after Adam's fast start")
            _record(trainer, history, "doctor_switch_optimizer", message, "switch_optimizer", st.step, st.epoch,
                    code="plateau", to="sgd", lr=lr)
        else:
            old, new = scale_base_lr(opt, self.cfg.plateau_lr_factor)
            trainer.schedule.apply(opt, st.step)
            message = f"{where}: base lr {num(old)} -> {num(new)} (doctor.plateau_lr_factor={self.cfg.plateau_lr_factor})"
            _record(trainer, history, "doctor_lr_decay", message, "lr_decay", st.step, st.epoch, code="plateau",
                    lr=new)
        self.last_action_epoch = st.epoch

    # ----------------------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        return {"rollbacks": self.rollbacks, "samples": self.samples, "last_action_epoch": self.last_action_epoch,
                "stopped": self.stopped, "switched": self.switched}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rollbacks = int(state.get("rollbacks", 0))
        self.samples = int(state.get("samples", 0))
        self.last_action_epoch = int(state.get("last_action_epoch", 0))
        self.stopped = bool(state.get("stopped", False))
        self.switched = bool(state.get("switched", False))


def epochs_val(trainer, epoch: int, measure: str = "loss") -> float | None:
    """Validation ``measure`` (the loss by default) of epoch ``epoch`` (1-based) from the trainer's history."""
    for r in reversed(trainer.state.history):
        if "event" not in r and r.get("epoch") == epoch:
            return r.get(f"val_{measure}")
    return None


def pct_rise(value: float | None, best: float) -> str:
    if value is None or not best:
        return "risen"
    return f"{100 * (value / best - 1):.0f}%"
