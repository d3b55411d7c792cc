"""What the monitors recorded: a compact, JSON-able history the rules read.

It is saved in the run (``doctor.json`` under ``"history"``) and in checkpoints, so that
``trainlab doctor RUN`` and a resumed run apply the rules to exactly the numbers seen in training.
Per-step numbers are stored as columns (one list per quantity) of the sampled steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import RunError

VERSION = 1
STEP_COLUMNS = ("step", "epoch", "loss", "lr", "grad_norm", "layer_grad", "update_ratio")


def _round(v: float, digits: int = 5) -> float | None:
    """5 significant digits (the rules compare ratios, and the file stays small); None for NaN/inf,
    which is how JSON stores them, so a history read back from disk equals the one in memory."""
    if v is None or not math.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")


@dataclass
class DoctorHistory:
    every: int = 10
    finished: bool = False
    # Parameter-holding modules in forward order: {"name", "type", "params", "weight"}; "weight"
    # marks linear/conv layers, the ones gradient-flow rules compare.
    layers: list[dict[str, Any]] = field(default_factory=list)
    # Monitored outputs of activations whose units can die, in forward order:
    # {"name", "type", "units", "floor"} (a unit is dead when never above its floor).
    activations: list[dict[str, Any]] = field(default_factory=list)
    activation_types: list[str] = field(default_factory=list)  # every activation class in the net
    data: dict[str, Any] = field(default_factory=dict)  # task, train_samples, num_classes, class_counts, ...
    inputs: dict[str, Any] | None = None  # statistics of the net's input over the first batches
    optimizer: str = ""
    steps: dict[str, list] = field(default_factory=lambda: {k: [] for k in STEP_COLUMNS})
    nonfinite: list[dict[str, Any]] = field(default_factory=list)  # {"step","epoch","what","layers",...}
    liveness: list[dict[str, Any]] = field(default_factory=list)  # {"epoch","batches","dead":[...]}
    actions: list[dict[str, Any]] = field(default_factory=list)  # remedies applied (doctor.auto)
    # Findings as first reported during training: {"code","severity","message","epoch","step","layers",
    # "reported_epoch"}; the final diagnosis lists those the rules no longer find as resolved.
    reported: list[dict[str, Any]] = field(default_factory=list)

    # ---------------------------------------------------------------------------- recording
    def add_step(self, step: int, epoch: int, loss: float, lr: float, grad_norm: float,
                 layer_grad: list[float], update_ratio: list[float]) -> None:
        s = self.steps
        s["step"].append(step)
        s["epoch"].append(epoch)
        s["loss"].append(_round(loss))
        s["lr"].append(_round(lr))
        s["grad_norm"].append(_round(grad_norm))
        s["layer_grad"].append([_round(v, 4) for v in layer_grad])
        s["update_ratio"].append([_round(v, 4) for v in update_ratio])

    def weight_layers(self) -> list[int]:
        return [i for i, layer in enumerate(self.layers) if layer.get("weight")]

    # ------------------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION, "every": self.every, "finished": self.finished, "layers": self.layers,
            "activations": self.activations, "activation_types": self.activation_types, "data": self.data,
            "inputs": self.inputs, "optimizer": self.optimizer, "steps": self.steps,
            "nonfinite": self.nonfinite, "liveness": self.liveness, "actions": self.actions,
            "reported": self.reported,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "doctor history") -> DoctorHistory:
        if not isinstance(d, dict) or d.get("version") != VERSION:
            raise RunError(f"{source}: not a trainlab doctor history (version {d.get('version') if isinstance(d, dict) else None!r})")
        steps = d.get("steps") or {}
        h = cls(
            every=int(d.get("every", 10)), finished=bool(d.get("finished", False)),
            layers=list(d.get("layers", [])), activations=list(d.get("activations", [])),
            activation_types=list(d.get("activation_types", [])), data=dict(d.get("data", {})),
            inputs=d.get("inputs"), optimizer=d.get("optimizer", ""),
            steps={k: list(steps.get(k, [])) for k in STEP_COLUMNS},
            nonfinite=list(d.get("nonfinite", [])), liveness=list(d.get("liveness", [])),
            actions=list(d.get("actions", [])), reported=list(d.get("reported", [])),
        )
        lengths = {len(v) for v in h.steps.values()}
        if len(lengths) > 1:
            raise RunError(f"{source}: step columns have different lengths {sorted(lengths)} (file damaged?)")
        return h
