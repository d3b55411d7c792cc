"""The input stage and the model wrapper every trainlab model is built in."""
from __future__ import annotations

import torch
from torch import nn

from ..registry import MODELS


class Normalize(nn.Module):
    """(x − mean) / std with the training split's statistics, stored as buffers (D1).

    Living in the model, the statistics are saved with the weights, reused by evaluate and
    predict, and exported with the model; inputs can stay uint8 until they reach the device.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, kind: str = "image"):
        super().__init__()
        shape = (1, -1, 1, 1) if kind == "image" else (1, -1)
        self.register_buffer("mean", mean.detach().float().reshape(shape).clone())
        self.register_buffer("std", std.detach().float().reshape(shape).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and self.mean.dim() == 4:
            return (x.float() - self.mean.flatten()) / self.std.flatten()
        return (x.float() - self.mean) / self.std


class Whiten(nn.Module):
    """``(x − μ) Wᵀ`` on inputs flattened to D features, reshaped back (D2, PCA or ZCA).

    μ and W are fitted on the normalized training split (:mod:`trainlab.data.whiten`) and kept as
    buffers, so they travel with the weights like the normalization statistics.
    """

    def __init__(self, mean: torch.Tensor, matrix: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("matrix", matrix.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        return ((flat - self.mean) @ self.matrix.T).reshape(x.shape)


class TrainlabModel(nn.Module):
    """``net(input_stage(x))``: the input stage is fixed; ``net`` is the registered architecture."""

    def __init__(self, input_stage: nn.Module, net: nn.Module):
        super().__init__()
        self.input = input_stage
        self.net = net

    def forward(self, x, *args, **kwargs):
        # a detector takes its targets too: net(input(x), targets)
        return self.net(self.input(x), *args, **kwargs)


def init_biases(net: nn.Module, value: float) -> None:
    """Set every conv and linear bias to ``value`` (a large negative value kills ReLU units, X3)."""
    from .layers import weight_layers

    for m in weight_layers(net):
        if m.bias is not None:
            nn.init.constant_(m.bias, value)


def build_model(
    recipe, info, mean: torch.Tensor | None = None, std: torch.Tensor | None = None, whiten=None, *,
    load_weights: bool = True,
) -> TrainlabModel:
    """Build the recipe's architecture for ``info`` behind its input stage, initialized per ``model``.

    Order: the architecture's own init → ``model.init`` (I1, I2) → ``model.zero_init_residual``
    (I3) → ``model.bias_init`` → ``model.weights`` (I4; skipped with ``load_weights=False``, as when
    a run's checkpoint is about to be loaded). The input stage is Normalize, followed by a
    :class:`Whiten` stage with ``data.whiten`` (``whiten`` is the fitted (mean, matrix), or None when
    the weights will be loaded from a checkpoint); token sequences skip normalization: the input
    stage is the identity when ``info.kind == "sequence"``. Call with torch's global generator
    already seeded: initialization draws from it.
    """
    from .init import init_weights, zero_init_residual
    from .init import load_weights as load_file
    from .layers import activation_gain

    cfg = recipe.model
    entry = MODELS.get(cfg.name, "model.name")
    check_compatible(entry, recipe, info)
    net = entry.fn(cfg, info)
    if cfg.init != "default":
        gain = activation_gain(cfg.activation, entry.meta.get("auto_activation", "relu"))
        init_weights(net, cfg.init, gain, cfg.init_fan)
    if cfg.zero_init_residual:
        zero_init_residual(net, cfg.name)
    if cfg.bias_init is not None:
        init_biases(net, cfg.bias_init)
    if cfg.weights and load_weights:
        report = load_file(net, cfg.weights)
        print(report.line())
    if info.kind == "sequence":
        return TrainlabModel(nn.Identity(), net)
    c = info.input_shape[0]
    mean = torch.zeros(c) if mean is None else mean
    std = torch.ones(c) if std is None else std
    stage: nn.Module = Normalize(mean, std, info.kind)
    if getattr(recipe.data, "whiten", None):
        d = 1
        for n in info.input_shape:
            d *= n
        w_mean, w_matrix = whiten if whiten is not None else (torch.zeros(d), torch.eye(d))
        stage = nn.Sequential(stage, Whiten(w_mean, w_matrix))
    return TrainlabModel(stage, net)


def check_compatible(entry, recipe, info) -> None:
    """The model, the task and the data set agree (a Char-RNN needs the sequence task, and so on)."""
    from ..errors import RecipeError

    tasks = entry.meta.get("tasks")
    if tasks and recipe.task not in tasks:
        raise RecipeError(f"model.name: {entry.name} is built for task {' or '.join(tasks)}, "
                          f"the recipe's task is {recipe.task!r}")
    wanted = info.extra.get("task")
    if wanted and wanted != recipe.task:
        raise RecipeError(f"data.name: {recipe.data.name!r} is a data set for task {wanted!r}, "
                          f"the recipe's task is {recipe.task!r}")
