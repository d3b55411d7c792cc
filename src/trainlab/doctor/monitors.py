"""Monitors: cheap statistics gathered while training, and the Doctor callback that runs them.

Per step the doctor only checks that the loss is finite (a float comparison on the CPU; on an
accelerator a flag tensor is accumulated and read at sampled steps, so there is no extra sync).
Every ``doctor.every`` steps (an interval that doubles after each ``doctor.max_samples``
samples), and on the first batch of each epoch, it samples:

- the gradient norm of every parameter-holding module (grouped by module, in forward order) and
  the global norm, before clipping;
- the update/weight ratio ``||W_after - W_before|| / ||W_before||`` of every module;
- NaN/inf in weights (the weight norms are computed for the ratio anyway);
- liveness of units that can die (ReLU, ReLU6, Hardtanh: no gradient below their floor) through
  forward hooks that exist only during sampled batches.

The inputs of the first ``doctor.input_batches`` batches are summarized after the model's
Normalize stage (what the net actually sees). Train/validation curves come from the trainer's
epoch records. Everything is appended to a :class:`~trainlab.doctor.history.DoctorHistory`.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any

import torch
from torch import nn

from ..data.statistics import channel_moments, mean_std
from ..engine.callbacks import Callback, unprinted_events
from ..models.layers import is_weight_layer
from .findings import Finding, share_remedies, sort_findings
from .history import DoctorHistory
from .rules import QUICK, gradient_spikes, initial_loss, within_divergence

WRITE_EVERY_S = 10.0
# Activations whose units can die: the output is flat (zero gradient) everywhere below a floor, so a
# unit whose input stays there never learns again. nn.ReLU6 is an nn.Hardtanh. Leaky ReLU, PReLU,
# RReLU, ELU, SELU, GELU, SiLU, Mish keep a gradient below zero and cannot die; Hardswish is
# negative (with gradient) just below zero, so "never positive" does not mean dead; Maxout takes
# the max of linear pieces and always passes a gradient to one of them.
LIVENESS = (nn.ReLU, nn.Hardtanh)
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.RReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU,
               nn.Mish, nn.Hardswish, nn.Sigmoid, nn.Tanh, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Softsign,
               nn.LogSigmoid, nn.Tanhshrink)
MIXING = ("mixup", "cutmix")  # batch transforms that turn targets into blended soft labels


def liveness_floor(module: nn.Module) -> float | None:
    """The output value below which ``module`` passes no gradient (0 for ReLU and ReLU6, ``min_val``
    for Hardtanh), or None for an activation whose units cannot die."""
    if isinstance(module, nn.Hardtanh):
        return float(module.min_val)
    if isinstance(module, nn.ReLU):
        return 0.0
    return None


# ------------------------------------------------------------------------------ pure statistics
def tensor_norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The L2 norm of each tensor, as 0-dim tensors on its device (no synchronization).

    Public ops rather than the private ``torch._foreach_norm``: the doctor calls this on sampled
    steps only (one in ``doctor.every``), where a launch per tensor costs nothing measurable."""
    return [torch.linalg.vector_norm(t) for t in tensors]


def group_norms(norms: list[float], group_of: list[int], n_groups: int) -> list[float]:
    """Norm of each group from the norms of its tensors: ``sqrt(sum of their squares)``.

    ``norms``: the L2 norm of each of P tensors; ``group_of``: P group indices. Returns n_groups
    floats (an empty group is 0; a NaN/inf member makes its group NaN/inf). The monitors take all
    per-tensor norms (:func:`tensor_norms`) with one device sync, then group them here.
    """
    squares = [0.0] * n_groups
    for v, g in zip(norms, group_of):
        squares[g] += v * v
    return [math.sqrt(v) if v == v else v for v in squares]


def unit_peak(output: torch.Tensor) -> torch.Tensor:
    """The largest value of each unit over a batch: (F,) of (N, F), (C,) of (N, C, *spatial).

    Running maxima of these over an epoch's sampled batches tell which units ever fired
    (:func:`alive_from_peak`); a unit of a conv layer is a channel.
    """
    x = output.detach()
    if x.dim() < 2:
        x = x.reshape(1, -1)
    return x.amax(dim=[0, *range(2, x.dim())])


def alive_from_peak(peak: torch.Tensor) -> torch.Tensor:
    """Units whose peak is positive. NaN counts as alive: a network full of NaN has blown up
    (nan_loss); its ReLUs did not die."""
    return ~(peak <= 0)


def unit_alive(output: torch.Tensor) -> torch.Tensor:
    """Which units of an activation output were positive anywhere in the batch.

    ``output``: (N, F) features or (N, C, *spatial) maps. Returns (F,) or (C,) bool: a unit of a
    conv layer is a channel, alive if positive at any position of any sample. A NaN output counts
    as alive: a network full of NaN has blown up (nan_loss), its ReLUs did not die.
    """
    return alive_from_peak(unit_peak(output))


def mixed_labels(batch_augment) -> list[str]:
    """Names of the ``data.batch_augment`` entries that blend labels (mixup, cutmix) and can apply
    (probability above 0): with them, training accuracy and loss are of soft targets."""
    from ..data.transforms import parse_spec

    out = []
    for i, spec in enumerate(batch_augment or ()):
        name, opts = parse_spec(spec, f"data.batch_augment[{i}]")
        if name in MIXING and float(opts.get("p", 1.0)) > 0 and name not in out:
            out.append(name)
    return out


# ------------------------------------------------------------------------------------ the callback
class Doctor(Callback):
    """Monitors a fit, applies the rules each epoch, prints new findings once, writes doctor.json.

    With ``doctor.auto`` it also treats the run (see :mod:`trainlab.doctor.remedies`).
    """

    name = "doctor"

    def __init__(self, cfg, run=None, quiet: bool = False, plots: bool = False, stream=None):
        from .remedies import Remedies

        self.cfg = cfg
        self.run = run
        self.quiet = quiet
        self.plots = plots
        self.stream = stream or sys.stdout
        self.history = DoctorHistory(every=cfg.every)
        self.findings: list[Finding] = []
        self.reported: set[str] = set()
        self.remedies = Remedies(cfg) if cfg.auto else None
        self._hooks: list[Any] = []
        self._order_hooks: list[Any] = []
        self._input_hook = None
        self._sampling = False
        self._alive: dict[str, torch.Tensor] = {}  # running peak of each unit over the epoch's samples
        # activation name -> the parameter-holding modules seen to feed it, in first-seen order
        self._producers: dict[str, list[str | None]] = {}
        self._last_producer: str | None = None
        self._live_batches = 0
        self._order: list[str] | None = None
        self._params: list[torch.nn.Parameter] = []
        self._group_index: list[int] | None = None
        self._pending: dict[str, Any] | None = None
        self._input_acc: list[Any] | None = None
        self._bad: torch.Tensor | None = None
        self._bad_open = False
        self._hooks_ok = True
        self._last_clean_step = 0
        self._written = -math.inf

    # ----------------------------------------------------------------------------- set-up
    def on_fit_start(self, trainer):
        model = trainer.model
        self._device = next(iter(model.parameters()), torch.empty(0)).device
        self._cpu = self._device.type == "cpu"
        # hooks on a compiled graph would recompile it; DDP's wrapper (torchrun) runs the model as it is
        self._hooks_ok = trainer.forward_model in (model, getattr(trainer, "ddp", None))
        h = self.history
        if not h.data:
            h.every = self.cfg.every
            h.optimizer = getattr(trainer.optimizer, "trainlab_name", trainer.recipe.optim.name)
            h.activation_types = sorted({type(m).__name__ for m in model.modules() if isinstance(m, ACTIVATIONS)})
            h.data = self._data_facts(trainer)
        self._relus = [(n, m, liveness_floor(m)) for n, m in model.named_modules() if isinstance(m, LIVENESS)]
        self._activation_names = {a["name"] for a in h.activations}
        if h.layers:
            self._build_groups(model, [layer["name"] for layer in h.layers])
        if h.inputs is None and self.cfg.input_batches > 0 and self._hooks_ok:
            stage = getattr(model, "input", None)
            if isinstance(stage, nn.Module):
                self._input_hook = stage.register_forward_hook(lambda m, i, out: self._input_seen(m, out))
            else:
                self._input_hook = model.register_forward_pre_hook(lambda m, args: self._input_seen(m, args[0]))
        if not self._hooks_ok and not self.quiet:
            off = ["liveness (dead_relu)"] if self._relus else []
            if h.inputs is None and self.cfg.input_batches > 0:
                off.append("input statistics (unnormalized_inputs)")
            if off:
                print(f"doctor: warning: train.compile=true: monitors off ({' and '.join(off)}): their forward "
                      "hooks would recompile the graph", file=self.stream, flush=True)
        if self.remedies is not None:
            self.remedies.snapshot(trainer)

    @staticmethod
    def _data_facts(trainer) -> dict[str, Any]:
        info = trainer.task.model_info(trainer.bundle.info)  # the classes the model predicts
        train = trainer.bundle.train
        facts: dict[str, Any] = {
            "task": trainer.recipe.task, "mixed_labels": mixed_labels(trainer.recipe.data.batch_augment),
            # the score the rules judge fit and variance by, as the task declares it
            "quality": trainer.task.quality or "accuracy", "quality_words": trainer.task.quality_words,
            "quality_judges_fit": trainer.task.quality_judges_fit,
            "labels_per_sample": trainer.task.labels_per_sample,
            "train_samples": len(train), "num_classes": info.num_classes, "class_names": list(info.class_names),
            "parameters": sum(p.numel() for p in trainer.model.parameters()),
            "batch_size": trainer.train_loader.batch_size, "steps_per_epoch": trainer.steps_per_epoch,
            # whether the final evaluation uses the best epoch's weights (api.finish), which handles
            # over-fitting (rules.kept_best_weights)
            "monitor": trainer.monitor,
            "restore_best": trainer.recipe.train.early_stop is None or trainer.recipe.train.early_stop.restore_best,
            "moment_warmup_steps": moment_warmup_steps(trainer.optimizer),
            "overfit_measure": trainer.task.overfit_measure,
        }
        targets = getattr(train, "targets", None)
        if trainer.task.labels_per_sample and isinstance(targets, torch.Tensor) and targets.dim() == 1 and not targets.is_floating_point():
            counts = torch.bincount(targets.long().cpu(), minlength=info.num_classes)
            facts["class_counts"] = counts.tolist()
        return facts

    def _build_groups(self, model: nn.Module, order: list[str]) -> None:
        """Parameters grouped by the module that holds them, modules in ``order`` (forward order)."""
        holders = {name: m for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}
        names = [n for n in order if n in holders] + [n for n in holders if n not in order]
        seen: set[int] = set()
        params, index, layers = [], [], []
        for name in names:
            mod = holders[name]
            own = [p for p in mod.parameters(recurse=False) if p.requires_grad and id(p) not in seen]
            if not own:
                continue
            seen.update(id(p) for p in own)
            for p in own:
                params.append(p)
                index.append(len(layers))
            layers.append({"name": name, "type": type(mod).__name__, "params": sum(p.numel() for p in own),
                           "weight": is_weight_layer(mod)})
        self._params = params
        self._group_index = index
        if not self.history.layers:
            self.history.layers = layers

    # ---------------------------------------------------------------------------- hooks
    def _arm(self, trainer) -> None:
        """Register the sampled-batch hooks (liveness, and forward order on the first sample)."""
        if self._hooks or not self._hooks_ok:
            return
        for name, mod, floor in self._relus:
            self._hooks.append(mod.register_forward_hook(self._live_hook(name, floor)))
        if self._relus:
            for name, mod in trainer.model.named_modules():
                if any(True for _ in mod.parameters(recurse=False)):
                    self._hooks.append(mod.register_forward_hook(self._producer_hook(name)))
        if self._group_index is None and not self._order_hooks:
            self._order = []
            for name, mod in trainer.model.named_modules():
                if any(True for _ in mod.parameters(recurse=False)):
                    self._order_hooks.append(mod.register_forward_hook(self._order_hook(name)))

    def _disarm(self) -> None:
        if not self._hooks and not self._order_hooks:
            return
        for handle in self._hooks + self._order_hooks:
            handle.remove()
        self._hooks.clear()
        self._order_hooks.clear()

    def _order_hook(self, name: str):
        def hook(module, args, output):
            if module.training and self._order is not None and name not in self._order:
                self._order.append(name)
        return hook

    def _producer_hook(self, name: str):
        def hook(module, args, output):
            self._last_producer = name
        return hook

    def _live_hook(self, name: str, floor: float):
        """Running peak of each unit of one activation module over the sampled batches.

        A module applied more than once is told apart by what feeds it (the parameter-holding
        module run last before it): ResNet's block ReLU after ``bn1`` and after the sum (``bn2``)
        are different units, ``name`` and ``name#2``; a detection head shared by the pyramid levels
        feeds its ReLU from the same norm layer at every level, and a unit is dead only if it is
        never positive at any level (its weights get gradient from every level)."""
        def hook(module, args, output):
            if not module.training or not isinstance(output, torch.Tensor):
                return
            producers = self._producers.setdefault(name, [])
            if self._last_producer not in producers:
                producers.append(self._last_producer)
            k = producers.index(self._last_producer)
            key = name if k == 0 else f"{name}#{k + 1}"
            peak = unit_peak(output)
            if floor:
                peak = peak - floor  # alive = above the floor, i.e. a positive shifted peak
            seen = self._alive.get(key)
            if seen is None:
                self._alive[key] = peak
                if key not in self._activation_names:
                    self._activation_names.add(key)
                    self.history.activations.append({"name": key, "type": type(module).__name__,
                                                     "units": int(peak.numel()), "floor": floor})
            elif seen.shape == peak.shape:
                self._alive[key] = torch.maximum(seen, peak)
        return hook

    def _input_seen(self, module, x) -> None:
        if not module.training or not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
            return
        s, sq, n, lo, hi = channel_moments(x)
        acc = self._input_acc
        if acc is None:
            self._input_acc = [s, sq, n, lo, hi, 1]
        elif acc[0].shape == s.shape:
            acc[0], acc[1], acc[2] = acc[0] + s, acc[1] + sq, acc[2] + n
            acc[3], acc[4], acc[5] = torch.minimum(acc[3], lo), torch.maximum(acc[4], hi), acc[5] + 1
        if self._input_acc[5] >= self.cfg.input_batches:
            self._finish_inputs()

    def _finish_inputs(self) -> None:
        if self._input_hook is not None:
            self._input_hook.remove()
            self._input_hook = None
        if self._input_acc is None:
            return
        s, sq, n, lo, hi, batches = self._input_acc
        lo, hi = float(lo), float(hi)
        mean, std = mean_std(s, sq, n)
        total = n * len(mean)
        all_mean = float(s.sum() / total)
        all_std = math.sqrt(max(float(sq.sum() / total) - all_mean**2, 0.0))
        many = len(mean) > 64  # flat inputs with many features: keep a summary, not every feature
        self.history.inputs = {
            "batches": batches, "channels": len(mean), "mean": all_mean, "std": all_std, "min": lo, "max": hi,
            "channel_mean": None if many else [round(float(v), 5) for v in mean],
            "channel_std": None if many else [round(float(v), 5) for v in std],
            "worst_abs_mean": float(mean.abs().max()), "max_std": float(std.max()), "min_std": float(std.min()),
        }
        self._input_acc = None

    # ---------------------------------------------------------------------------- events
    def on_epoch_start(self, trainer):
        if self.remedies is not None:
            self.remedies.track_optimizer(trainer)  # optim.switch replaces it here (at_epoch)
            self.remedies.epoch_start(trainer)
        self._alive.clear()
        self._live_batches = 0
        self._sampling = True  # the first batch of every epoch is sampled, so each epoch has liveness
        self._arm(trainer)

    def on_after_backward(self, trainer):
        if not self._sampling:
            return
        if self._group_index is None:
            self._build_groups(trainer.model, self._order or [])
            for handle in self._order_hooks:
                handle.remove()
            self._order_hooks.clear()
            self._order = None
        params = self._params
        with torch.no_grad():
            grads = [p.grad for p in params]
            present = [i for i, g in enumerate(grads) if g is not None]  # parameters this step reached
            norms = tensor_norms([grads[i] for i in present])
            self._pending = {"present": present, "grad_norms": norms,
                             "before": [p.detach().clone() for p in params]}

    def on_batch_end(self, trainer, batch, outputs, loss):
        self._last_producer = None
        if self.remedies is not None and trainer.at_step_boundary:
            self.remedies.track_optimizer(trainer)  # optim.switch's SWATS criterion replaces it here
        if not self._cpu:  # no sync: the flag is read with the next sample
            bad = ~torch.isfinite(loss.detach())
            self._bad = bad if self._bad is None else self._bad | bad
        if trainer.at_step_boundary and self._sampling:
            self._live_batches += 1
            if self._pending is not None:
                self._finish_sample(trainer, loss)
        if self._cpu:
            value = loss.detach().item()
            if not math.isfinite(value):
                self._nonfinite_loss(trainer, value)
            else:
                self._bad_open = False
        if not trainer.at_step_boundary:
            return
        st = trainer.state
        if self.remedies is not None and (st.batch >= len(trainer.train_loader) or st.stop_reason):
            # The epoch ends after this step: validation and the checkpoints must not see NaN
            # weights (a NaN loss in the middle of an accumulation group, or a finite loss whose
            # step overflowed, leaves them there without a NaN loss at a step boundary).
            when = f"after the last step of epoch {st.epoch + 1}"
            if self.remedies.repair_weights(trainer, self.history, when):
                self._pending = None
        # Decide for the next step now, so that its forward runs with the hooks in place. Past
        # max_samples the interval doubles (and again after as many more), so that a long run's
        # history stays bounded while every sample already taken is kept.
        stride = self.cfg.every << min(len(self.history.steps["step"]) // self.cfg.max_samples, 20)
        self._sampling = trainer.state.step % stride == 0
        if self._sampling:
            self._arm(trainer)
        else:
            self._disarm()

    def _finish_sample(self, trainer, loss) -> None:
        pending, self._pending = self._pending, None
        st = trainer.state
        n = len(self.history.layers)
        with torch.no_grad():
            before = pending["before"]
            delta = [p.detach() - b for p, b in zip(self._params, before)]
            parts = [*pending["grad_norms"], *tensor_norms([*delta, *before]), loss.detach().reshape(())]
            if self._bad is not None:
                parts.append(self._bad)
            parts = [v if v.dtype == torch.float32 else v.float() for v in parts]
            values = torch.stack(parts).tolist()  # the sample's one device sync
        p, g = len(self._params), len(pending["grad_norms"])
        index = self._group_index
        grads = group_norms(values[:g], [index[i] for i in pending["present"]], n)
        moved = group_norms(values[g:g + p], index, n)
        before = group_norms(values[g + p:g + 2 * p], index, n)
        tail = values[g + 2 * p:]  # the loss, then the accelerator's non-finite-loss flag
        loss_value = tail[0]
        global_norm = math.sqrt(sum(g * g for g in grads)) if all(math.isfinite(g) for g in grads) else math.nan
        ratio = [m / b if b > 0 else (0.0 if m == 0 else math.inf) for m, b in zip(moved, before)]
        lr = trainer.optimizer.param_groups[0]["lr"]
        self.history.add_step(st.step, st.epoch + 1, loss_value, lr, global_norm, grads, ratio)
        names = [layer["name"] for layer in self.history.layers]
        seen_nonfinite = len(self.history.nonfinite)
        if len(tail) > 1:
            if tail[1] > 0:
                self._bad = None
                self._nonfinite_loss(trainer, loss_value, since=self._last_clean_step)
            else:
                self._bad_open = False
                self._last_clean_step = st.step
        bad_grads = [names[i] for i, g in enumerate(grads) if not math.isfinite(g)]
        # NaN/inf weights after the step make the update NaN/inf (before it, the weights' norm).
        bad_weights = [names[i] for i, (m, b) in enumerate(zip(moved, before))
                       if not (math.isfinite(m) and math.isfinite(b))]
        for what, layers in (("gradients", bad_grads), ("weights", bad_weights)):
            if layers and not any(e["what"] == what for e in self.history.nonfinite):
                self.history.nonfinite.append({"step": st.step, "epoch": st.epoch + 1, "what": what,
                                               "layers": layers})
        healthy = not bad_grads and not bad_weights and math.isfinite(loss_value)
        if healthy and self.remedies is not None:
            # A finite state that has already diverged is no state to roll back to.
            healthy = within_divergence(loss_value, initial_loss(self.history, _epochs(trainer)), self.cfg)
        if self.remedies is not None and healthy:
            self.remedies.sampled(trainer)
        if len(self.history.nonfinite) != seen_nonfinite or (
                "exploding_gradients" not in self.reported
                and gradient_spikes(self.history, self.cfg, start=len(self.history.steps["step"]) - 1)):
            self._report(trainer, done=False, codes=QUICK)

    def _nonfinite_loss(self, trainer, value: float, since: int | None = None) -> None:
        """A NaN/inf loss: record the first of each episode, and roll back when allowed."""
        st = trainer.state
        if not self._bad_open:
            entry = {"step": st.step, "epoch": st.epoch + 1, "what": "loss", "value": str(value)}
            if since is not None:
                entry["since_step"] = since
            self.history.nonfinite.append(entry)
            self._bad_open = True
            self._report(trainer, done=False, codes=QUICK)
        if self.remedies is not None and trainer.at_step_boundary:
            if self.remedies.rollback(trainer, self.history, st.step):
                self._bad_open = False
                self._pending = None

    def on_epoch_end(self, trainer, record):
        if self._alive:
            names = [a["name"] for a in self.history.activations]
            present = [k for k in names if k in self._alive]
            values = torch.stack([(~alive_from_peak(self._alive[k])).float().mean() for k in present]).tolist()
            dead = dict(zip(present, values))
            self.history.liveness.append({"epoch": record["epoch"], "batches": self._live_batches,
                                          "dead": [round(dead[k], 4) if k in dead else None for k in names]})
        if self._input_hook is not None and self._input_acc is not None:
            self._finish_inputs()  # an epoch shorter than doctor.input_batches
        if self.remedies is not None:
            # Normally repaired before validation (on_batch_end); this catches weights changed since.
            self.remedies.repair_after_validation(trainer, self.history, record)
            self.remedies.epoch_end(trainer, self.history, _epochs(trainer))
        self._report(trainer, done=False)
        # doctor.json is for people and `trainlab doctor` while a run goes on (a resume reads the
        # history from the checkpoint), so during training it is refreshed at most every WRITE_EVERY_S.
        if time.monotonic() - self._written >= WRITE_EVERY_S:
            self._write(trainer)
        lines = unprinted_events(trainer)  # logged by remedies after the progress row was printed
        if not self.quiet:
            for line in lines:
                print(line, file=self.stream, flush=True)

    def on_interrupt(self, trainer):
        self._disarm()
        if self.remedies is not None and trainer.at_step_boundary:  # the Checkpointer saves after this
            self.remedies.repair_weights(trainer, self.history, "at the interruption")
        self._write(trainer)

    def on_fit_end(self, trainer):
        self._disarm()
        if self.remedies is not None:
            self.remedies.repair_weights(trainer, self.history, "at the end of training")
        self._finish_inputs()
        self.history.finished = True
        self._report(trainer, done=True)
        self._write(trainer)
        if self.run is not None and self.plots:
            from .report import plot_doctor

            plot_doctor(self.run, self.history, _epochs(trainer), self.findings, self.cfg)
        if not self.quiet:
            from .report import format_table

            print(format_table(self.findings, title="doctor"), file=self.stream, flush=True)

    # ---------------------------------------------------------------------------- output
    def _report(self, trainer, done: bool, codes: tuple[str, ...] | None = None) -> None:
        """Apply the rules (all, or only ``codes``); print each finding the first time its code appears."""
        from .rules import diagnose

        self.history.data.update(best_epoch=trainer.state.best_epoch, stop_reason=trainer.state.stop_reason)
        found = diagnose(self.history, _epochs(trainer), self.cfg, done=done, codes=codes)
        if codes is not None:
            found = [f for f in self.findings if f.code not in codes] + found
        self.findings = share_remedies(sort_findings(found))
        st = trainer.state
        for f in self.findings:
            if f.code not in self.reported:
                self.reported.add(f.code)
                # Kept in the history, so the final diagnosis (and `trainlab doctor RUN`) lists
                # the finding as resolved if the rules stop finding it.
                self.history.reported.append({
                    "code": f.code, "severity": f.severity, "message": f.message, "epoch": f.epoch, "step": f.step,
                    "layers": list(f.layers), "reported_epoch": st.epoch + (1 if st.batch else 0)})
                if not self.quiet:
                    print(f"doctor [{f.severity}] {f.code}: {f.message}", file=self.stream, flush=True)

    def _write(self, trainer) -> None:
        if self.run is None:
            return
        from ..atomic import write_json
        from ..errors import RunError

        path = self.run.dir / "doctor.json"
        try:
            write_json(path, {"findings": [f.to_dict() for f in self.findings], "history": self.history.to_dict()})
        except OSError as err:  # a full disk: one line naming the file, not a traceback
            raise RunError(f"could not write {path}: {err.strerror or err}") from None
        self._written = time.monotonic()

    # ---------------------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        state = {"history": self.history.to_dict(), "reported": sorted(self.reported)}
        if self.remedies is not None:
            state["remedies"] = self.remedies.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = DoctorHistory.from_dict(state["history"], "checkpoint doctor state")
        self.reported = set(state.get("reported", []))
        if self.remedies is not None and "remedies" in state:
            self.remedies.load_state_dict(state["remedies"])


def moment_warmup_steps(optimizer: torch.optim.Optimizer) -> int:
    """Steps until an Adam-family optimizer's first-moment average spans its horizon, 1/(1 - β1)
    (10 for β1 = 0.9), after which m/sqrt(v) reflects the gradients' consistency rather than the
    bias correction; 0 for optimizers without moment estimates (SGD, RMSprop's one average is
    not bias-corrected)."""
    betas = optimizer.param_groups[0].get("betas") if optimizer.param_groups else None
    if not betas or not 0 <= betas[0] < 1:
        return 0
    return math.ceil(1 / (1 - betas[0]) - 1e-9)  # 1/(1 - 0.9) is 10.000000000000002


def _epochs(trainer) -> list[dict[str, Any]]:
    return [r for r in trainer.state.history if "event" not in r]
