"""Multi-task learning (K7, M14, L6): one shared trunk, several named heads, one weighted loss.

The recipe's ``heads`` list names the per-image targets the heads predict (the data set declares
them in ``info.extra["targets"]`` and derives them from each batch's annotations, after
augmentation: shapes gives ``class``, ``count``, ``center``, ``overlap``), the kind of each
(``multiclass``: softmax scores; ``binary``: one logit; ``regression``: real values) and its loss
from the registry (default cross_entropy, bce, mse by kind). The model is ``model.name=multitask``:
a zoo trunk ending in shared features, one small head each (:mod:`trainlab.models.heads`).

The loss (L6) is ``Σ_i w_i · L_i`` with ``w_i = loss.weights[name]`` (1 where not named):
Loss1 + λ·Loss2 + γ·Loss3. With ``loss.uncertainty`` each head also has a learned log-variance
``s_i`` (a model parameter: trained by the optimizer, saved in checkpoints) and the loss is
``Σ_i exp(−s_i) · w_i · L_i + s_i`` (Kendall, Gal & Cipolla 2018). Kendall's regression form
is ``L/(2σ²) + log σ = ½ (exp(−s) L + s)`` with ``s = log σ²``; the form used here is twice that
for every head, which has the same minimiser and the same relative weights (the factor 2 acts as
a learning-rate factor), and ``exp(−s_i)`` is the weight the head has learned.

Metrics, per head ``h`` (train and validation): ``h_loss`` (its unweighted loss), ``h_acc``
(multiclass, binary, and regression of an integer target such as a count: rounded predictions),
``h_mae`` (regression: mean absolute error over its outputs); ``loss`` is the weighted total.
Every ``doctor.every`` training batches the step also measures the norm of the gradient that each
weighted head loss sends into the shared features (``torch.autograd.grad`` w.r.t. the trunk's
output: a backward pass through the small heads only, no parameter gradients touched); the
epoch's mean is ``train_trunkgrad_<h>``, from which the doctor's ``head_dominance`` rule tells
when one head drives the shared trunk.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from ..errors import RecipeError
from ..registry import DATASETS, LOSSES, MODELS, TASKS
from .base import Task, check_class_weights

DEFAULT_LOSS = {"multiclass": "cross_entropy", "binary": "bce", "regression": "mse"}
ELEMENTWISE = ("mse", "mae", "smooth_l1")
KIND_LOSSES = {"regression": ELEMENTWISE, "binary": ("bce", *ELEMENTWISE),
               "multiclass": ("cross_entropy", "focal", "bce", *ELEMENTWISE)}
GRAD_EVERY = 10  # batches between trunk-gradient measurements without a doctor section


class Head:
    """One head as the task uses it: name, kind, outputs, loss name and criterion, weight."""

    def __init__(self, cfg, target: dict[str, Any], recipe, info):
        self.name, self.kind = cfg.name, cfg.kind
        self.integer = bool(target.get("integer"))
        self.classes = list(target.get("classes") or [])
        self.outputs = len(self.classes) if cfg.kind == "multiclass" else int(target.get("dim", 1))
        self.loss_name = cfg.loss or DEFAULT_LOSS[cfg.kind]
        self.weight = float(recipe.loss.weights.get(cfg.name, 1.0))
        field = f"heads.{cfg.name}.loss"
        entry = LOSSES.get(self.loss_name, field)
        if self.loss_name not in KIND_LOSSES[cfg.kind]:
            raise RecipeError(f"{field}: {self.loss_name!r} does not fit a {cfg.kind} head "
                              f"(use {', '.join(KIND_LOSSES[cfg.kind])})")
        loss_cfg = recipe.loss.model_copy(update={
            "name": self.loss_name,
            "pos_weight": cfg.pos_weight if cfg.pos_weight is not None else recipe.loss.pos_weight,
            "beta": cfg.beta if cfg.beta is not None else recipe.loss.beta,
            # class weights and ignored values belong to the class head, not to a count or a centre
            "class_weights": recipe.loss.class_weights if cfg.kind == "multiclass" else None,
            "ignore_index": None,
        })
        if cfg.kind == "multiclass":
            check_class_weights(loss_cfg.class_weights, self.classes)
        if self.loss_name == "bce" and isinstance(loss_cfg.pos_weight, list) \
                and len(loss_cfg.pos_weight) not in (1, self.outputs):
            raise RecipeError(f"loss.pos_weight: {len(loss_cfg.pos_weight)} values, head {cfg.name!r} has "
                              f"{self.outputs} output{'s' if self.outputs != 1 else ''}; give one value or set "
                              f"heads.{cfg.name}.pos_weight")
        self.criterion = entry.fn(loss_cfg, info)

    def metric_names(self) -> list[str]:
        names = [f"{self.name}_loss"]
        if self.kind != "regression" or self.integer:
            names.append(f"{self.name}_acc")
        if self.kind == "regression":
            names.append(f"{self.name}_mae")
        return names

    def headline(self) -> str:
        """The metric the per-epoch table shows for this head."""
        return f"{self.name}_mae" if self.kind == "regression" and not self.integer else f"{self.name}_acc"

    @torch.no_grad()
    def counts(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(correct predictions, summed absolute error) of a batch, as tensors (no sync)."""
        out = out.detach().float()
        if self.kind == "multiclass":
            return (out.argmax(1) == y).sum(), out.new_zeros(())
        yy = y.float().reshape(out.shape)
        if self.kind == "binary":
            return ((out > 0) == (yy > 0.5)).all(1).sum(), out.new_zeros(())
        correct = (out.round() == yy).all(1).sum() if self.integer else out.new_zeros(())
        return correct, (out - yy).abs().sum()

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        out = out.float()
        if self.kind == "multiclass":
            return torch.softmax(out, 1)
        if self.kind == "binary":
            return torch.sigmoid(out).squeeze(1)
        return out.squeeze(1) if self.outputs == 1 else out


class MultiTaskMeter:
    """Per-head sums of one epoch (or one evaluation), kept as tensors until summarized."""

    def __init__(self, heads: list[Head]):
        self.heads = heads
        self.loss_sum: Any = 0.0
        self.n = 0
        self.batches = 0
        self.part: dict[str, dict[str, Any]] = {h.name: {"loss": 0.0, "correct": 0.0, "abs": 0.0} for h in heads}
        self.grad_sum: Any = 0.0  # (H,) summed trunk-gradient norms of the measured batches
        self.grad_n = 0
        self.log_vars: torch.Tensor | None = None  # the learned s_i (loss.uncertainty), as last seen

    def update(self, outputs: dict[str, Any], batch: dict[str, Any], loss: torch.Tensor) -> None:
        n = len(batch["target"])
        self.loss_sum = self.loss_sum + loss.detach().float() * n
        self.n += n
        self.batches += 1
        for h in self.heads:
            p = self.part[h.name]
            correct, abs_err = h.counts(outputs["heads"][h.name], batch["targets"][h.name])
            p["loss"] = p["loss"] + outputs["losses"][h.name].detach() * n
            p["correct"], p["abs"] = p["correct"] + correct, p["abs"] + abs_err
        if "trunk_grad" in outputs:
            self.grad_sum = self.grad_sum + outputs["trunk_grad"]
            self.grad_n += 1
        if "log_vars" in outputs:
            self.log_vars = outputs["log_vars"].detach()

    def compute(self, with_grads: bool = False) -> dict[str, Any]:
        n = max(self.n, 1)
        out: dict[str, Any] = {"loss": float(self.loss_sum) / n}
        for h in self.heads:
            p = self.part[h.name]
            out[f"{h.name}_loss"] = float(p["loss"]) / n
            if h.kind != "regression" or h.integer:
                out[f"{h.name}_acc"] = float(p["correct"]) / n
            if h.kind == "regression":
                out[f"{h.name}_mae"] = float(p["abs"]) / (n * h.outputs)
        if with_grads and self.grad_n:
            for h, g in zip(self.heads, torch.as_tensor(self.grad_sum).tolist()):
                out[f"trunkgrad_{h.name}"] = g / self.grad_n
        if self.log_vars is not None:
            # the weight each head has learned, exp(−s_i) · w_i (L6 with uncertainty weighting)
            for h, s in zip(self.heads, self.log_vars.float().tolist()):
                out[f"weight_{h.name}"] = h.weight * math.exp(-s)
        out["n"] = self.n
        return out

    # the training meter is checkpointed: exact resume continues the epoch's sums
    def state(self) -> dict[str, Any]:
        return {"loss_sum": float(self.loss_sum), "n": self.n, "batches": self.batches,
                "part": {k: {m: float(v) for m, v in p.items()} for k, p in self.part.items()},
                "grad_sum": [float(v) for v in torch.as_tensor(self.grad_sum).reshape(-1).tolist()]
                if self.grad_n else [], "grad_n": self.grad_n}

    def load(self, state: dict[str, Any]) -> None:
        if set(state["part"]) != set(self.part):
            raise ValueError(f"heads {sorted(state['part'])} differ from the recipe's {sorted(self.part)}")
        self.loss_sum, self.n, self.batches = float(state["loss_sum"]), int(state["n"]), int(state["batches"])
        self.part = {k: {m: float(v) for m, v in p.items()} for k, p in state["part"].items()}
        self.grad_n = int(state["grad_n"])
        self.grad_sum = torch.tensor(state["grad_sum"], dtype=torch.float32) if self.grad_n else 0.0


class MultiTaskTask(Task):
    name = "multitask"
    monitor = "val_loss"
    quality = None  # no single score judges a multi-task fit; each head has its own
    exportable = False  # the model returns a dict of head outputs

    def __init__(self, recipe, info):
        super().__init__(recipe, info)
        if "multitask" not in MODELS.get(recipe.model.name, "model.name").meta.get("tasks", ()):
            raise RecipeError(f"model.name: the multitask task needs model multitask (a zoo trunk in "
                              f"model.options.trunk with one head per recipe head), got {recipe.model.name!r}")
        targets = info.extra.get("targets") or {}
        image_targets = DATASETS.get(recipe.data.name, "data.name").meta.get("image_targets")
        if not targets or image_targets is None:
            raise RecipeError(f"data.name: the multitask task needs a data set with per-image targets for its "
                              f"heads (shapes); {recipe.data.name!r} has none")
        self.image_targets = image_targets
        # a head's loss is its own: a top-level name other than the default would silently do nothing
        # (the default is accepted because a saved recipe.yaml writes every field out)
        if recipe.loss.name != type(recipe.loss).model_fields["name"].default:
            raise RecipeError(f"loss.name: the multitask task takes each head's loss from heads.<head>.loss, not "
                              f"loss.name ({recipe.loss.name!r}); remove it")
        from ..data.transforms import parse_spec

        for i, spec in enumerate(recipe.data.batch_augment):
            name, _ = parse_spec(spec, f"data.batch_augment[{i}]")
            if name in ("mixup", "cutmix"):
                raise RecipeError(f"data.batch_augment[{i}]: {name} blends the images of two samples, and the heads' "
                                  "targets (a count, a centre) do not blend with them; remove it")
        self.heads: list[Head] = []
        for cfg in recipe.heads:
            if cfg.name not in targets:
                raise RecipeError(f"heads.{cfg.name}: the {recipe.data.name} data set has no target {cfg.name!r} "
                                  f"(its targets: {', '.join(targets)})")
            if cfg.kind != targets[cfg.name]["kind"]:
                raise RecipeError(f"heads.{cfg.name}.kind: {cfg.name!r} is a {targets[cfg.name]['kind']} target, "
                                  f"got {cfg.kind!r}")
            self.heads.append(Head(cfg, targets[cfg.name], recipe, info))
        self.uncertainty = recipe.loss.uncertainty
        self.grad_every = recipe.doctor.every if recipe.doctor is not None else GRAD_EVERY
        self.train_metrics = ("loss", *[m for h in self.heads for m in h.metric_names()],
                              *[f"trunkgrad_{h.name}" for h in self.heads])
        self.val_metrics = ("loss", *[m for h in self.heads for m in h.metric_names()])
        self.metrics = {m: "max" if m.endswith("_acc") else "min" for m in self.val_metrics}
        self._meter: MultiTaskMeter | None = None

    def model_info(self, info):
        return replace(info, extra={**info.extra, "heads": {h.name: h.outputs for h in self.heads},
                                    "uncertainty": self.uncertainty})

    # ---------------------------------------------------------------------------- batching
    def collate(self, samples):
        """{"input": (N, C, H, W), "target": (N,) image labels (the sampler's strata), "targets":
        {head target name: (N,) or (N, D)}} — the targets read off the augmented annotations."""
        from ..data.samples import collate

        batch = collate(samples)
        targets = self.image_targets(batch.pop("annotations"), batch["target"])
        batch.pop("semantic", None)
        return {"input": batch["input"], "target": batch["target"], "targets": targets}

    # ---------------------------------------------------------------------------- the step
    def terms(self, outputs: dict[str, Any], losses: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Each head's weighted loss ``w_i·L_i`` (``exp(−s_i)·w_i·L_i`` with uncertainty weighting)."""
        log_vars = outputs.get("log_vars")
        out = []
        for i, h in enumerate(self.heads):
            t = losses[h.name] * h.weight
            out.append(t if log_vars is None else torch.exp(-log_vars[i].float()) * t)
        return out

    def loss(self, outputs, batch):
        losses = {h.name: h.criterion(outputs["heads"][h.name], batch["targets"][h.name]) for h in self.heads}
        outputs["losses"] = losses
        terms = self.terms(outputs, losses)
        total = torch.stack(terms).sum()
        if outputs.get("log_vars") is not None:
            total = total + outputs["log_vars"].float().sum()
        outputs["terms"] = terms
        return total

    def step(self, model, batch):
        outputs = self.forward(model, batch)
        if not isinstance(outputs, dict) or "heads" not in outputs:
            raise RecipeError("model.name: the multitask task needs the multitask model (model.name=multitask)")
        total = self.loss(outputs, batch)
        trunk = outputs["trunk"]
        meter = self._meter
        if (model.training and torch.is_grad_enabled() and trunk.requires_grad and meter is not None
                and meter.batches % self.grad_every == 0):
            # the gradient each weighted head loss sends into the shared features; retain_graph keeps
            # the graph for the trainer's backward, and no parameter's .grad is touched
            norms = []
            for t in outputs["terms"]:
                (g,) = torch.autograd.grad(t, trunk, retain_graph=True, allow_unused=True)
                norms.append(torch.zeros((), device=trunk.device) if g is None else torch.linalg.vector_norm(g.float()))
            outputs["trunk_grad"] = torch.stack(norms).detach()
        return outputs, total

    # ------------------------------------------------------------------------------ metrics
    def train_meter(self):
        self._meter = MultiTaskMeter(self.heads)
        return self._meter

    def train_update(self, meter, outputs, batch, loss):
        meter.update(outputs, batch, loss)

    def train_summary(self, meter):
        out = meter.compute(with_grads=True)
        out.pop("n")
        out = {k: v for k, v in out.items() if not k.startswith("weight_")}
        return out

    def eval_meter(self):
        return MultiTaskMeter(self.heads)

    # ---------------------------------------------------------------------------- predictions
    def predict(self, outputs):
        """One dict per input: {head: class probabilities (C,) | positive probability | values}."""
        per_head = {h.name: h.predict(outputs["heads"][h.name]) for h in self.heads}
        n = len(next(iter(per_head.values())))
        return [{name: v[i] for name, v in per_head.items()} for i in range(n)]

    def prediction_lines(self, predictions, classes) -> list[str]:
        lines = []
        for p in predictions:
            parts = []
            for h in self.heads:
                v = p[h.name]
                if h.kind == "multiclass":
                    k = int(v.argmax())
                    parts.append(f"{h.name} {h.classes[k]} {float(v[k]):.4f}")
                elif h.kind == "binary":
                    parts.append(f"{h.name} p={float(v):.4f}")
                elif v.dim() == 0:
                    parts.append(f"{h.name} {float(v):.4f}")
                else:
                    parts.append(f"{h.name} (" + ", ".join(f"{float(x):.4f}" for x in v) + ")")
            lines.append(", ".join(parts))
        return lines

    # ------------------------------------------------------------------ what a user sees
    def table_columns(self):
        cols = [("train_loss", "train_loss"), ("val_loss", "val_loss")]
        return cols + [(f"val_{h.headline()}", h.headline()) for h in self.heads]

    def curves(self):
        out = [(f"{h.name}_loss", [f"train_{h.name}_loss", f"val_{h.name}_loss"]) for h in self.heads]
        out += [(h.headline(), [f"train_{h.headline()}", f"val_{h.headline()}"]) for h in self.heads]
        return out

    def _head_rows(self, m: dict[str, Any]) -> list[tuple[str, ...]]:
        rows = []
        for h in self.heads:
            learned = m.get(f"weight_{h.name}")
            weight = f"{h.weight:g}" if learned is None else f"{h.weight:g} (learned {learned:.3g})"
            acc = m.get(f"{h.name}_acc")
            mae = m.get(f"{h.name}_mae")
            rows.append((h.name, h.kind, h.loss_name, weight, f"{m.get(f'{h.name}_loss', float('nan')):.4f}",
                         "-" if acc is None else f"{acc:.4f}", "-" if mae is None else f"{mae:.4f}"))
        return rows

    def report_sections(self, summary):
        split = "test" if summary.get("test") else "val"
        m = summary.get(split) or {}
        if not m:
            return []
        rows = [f"## Heads ({split})", "", "| head | kind | loss | weight | head loss | accuracy | MAE |",
                "|---|---|---|---|---|---|---|"]
        rows += ["| " + " | ".join(r) + " |" for r in self._head_rows(m)]
        return rows + [""]

    def describe_metrics(self, m):
        header = ("head", "kind", "loss", "weight", "head loss", "accuracy", "MAE")
        rows = [header, *self._head_rows(m)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        return [""] + ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


@TASKS.register("multitask", help="shared trunk, named heads (multiclass, binary, regression), weighted or "
                "uncertainty-weighted loss, per-head metrics")
def multitask(recipe, info):
    return MultiTaskTask(recipe, info)
