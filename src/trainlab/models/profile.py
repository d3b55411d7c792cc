"""Per-layer output shapes, parameters and multiply-accumulates of a network (M12, S4 2.1).

The network runs once on the ``meta`` device (shapes without arithmetic, so a 224x224 VGG costs
nothing) under torch's FLOP counter. A convolution with C_in·k² inputs per output and
C_out·H'·W' outputs does C_in/groups·k²·C_out·H'·W' MACs (S4 2.1: 3x32x32 in, ten 5x5 filters,
padding 2 → 10x32x32 out, 760 parameters, 75 · 10,240 = 768K MACs); a linear layer in·out;
attention its two matrix products. Element-wise work (norms, activations, pooling, additions) is
not counted, as usual. Recurrent layers are counted from their gate formula, because torch's
fused CPU kernels hide their matrix products.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


@dataclass
class LayerRow:
    name: str
    kind: str
    output: tuple[int, ...]
    params: int
    macs: int


@dataclass
class Profile:
    rows: list[LayerRow]
    input_shape: tuple[int, ...]
    params: int
    trainable: int
    macs: int
    activation_bytes: int  # forward outputs of the rows, what backward keeps (upper bound, float32)
    extra: dict[str, Any] = field(default_factory=dict)


def rnn_macs(m: nn.RNNBase, batch: int, steps: int) -> int:
    """MACs of a recurrent layer: per step, layer and direction, gates·H·(D + H)."""
    gates = GATES[m.mode]
    dirs = 2 if m.bidirectional else 1
    total = 0
    for layer in range(m.num_layers):
        d_in = m.input_size if layer == 0 else m.hidden_size * dirs
        total += dirs * gates * m.hidden_size * (d_in + m.hidden_size)
    return total * batch * steps


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for item in out:
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


def profile_network(net: nn.Module, example: torch.Tensor) -> Profile:
    """Profile ``net`` on ``example`` (one batch); ``net`` and ``example`` on the same device.

    Rows are the modules that ran without any of their children running (the leaves of the
    executed graph), in execution order; a module called twice gets two rows.
    """
    from torch.utils.flop_counter import FlopCounterMode

    names = {m: n for n, m in net.named_modules()}
    calls: list[tuple[nn.Module, Any]] = []
    stack: list[list[bool]] = []

    def pre(module, args):
        if stack:
            stack[-1][0] = True  # the parent ran a child
        stack.append([False])

    def post(module, args, out):
        ran_child = stack.pop()[0]
        if not ran_child:
            calls.append((module, out, args))

    handles = []
    for m in net.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    was_training = net.training
    net.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            net(example)
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    per_module = counter.get_flop_counts()
    rows: list[LayerRow] = []
    total_macs = counter.get_total_flops() // 2
    act_bytes = 0
    for module, out, args in calls:
        qual = names.get(module, "")
        name = qual or type(module).__name__
        tensor = _first_tensor(out)
        shape = tuple(tensor.shape) if tensor is not None else ()
        params = sum(p.numel() for p in module.parameters())
        if isinstance(module, nn.RNNBase):
            x = args[0]
            batch, steps = (x.shape[0], x.shape[1]) if module.batch_first else (x.shape[1], x.shape[0])
            counted = sum(per_module.get(_counter_key(net, qual), {}).values()) // 2
            macs = rnn_macs(module, batch, steps)
            total_macs += macs - counted  # replace whatever the counter saw with the formula
        else:
            macs = sum(per_module.get(_counter_key(net, qual), {}).values()) // 2
        if tensor is not None:
            act_bytes += tensor.numel() * 4
        rows.append(LayerRow(name, type(module).__name__, shape, params, int(macs)))
    params = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return Profile(rows, tuple(example.shape), params, trainable, int(total_macs), act_bytes)


def _counter_key(net: nn.Module, name: str) -> str:
    """FlopCounterMode names modules by class of the root followed by the dotted path."""
    root = type(net).__name__
    return root if not name else f"{root}.{name}"


def example_input(info, batch: int = 1, device: str | torch.device = "cpu") -> torch.Tensor:
    """A batch shaped like the data's samples: token ids for sequences of tokens, floats otherwise."""
    shape = (batch, *info.input_shape)
    if info.kind == "sequence" and len(info.input_shape) == 1:
        return torch.zeros(shape, dtype=torch.long, device=device)
    return torch.zeros(shape, device=device)


def profile_model(recipe, info, batch: int = 1) -> Profile:
    """Build the recipe's network for ``info`` on the meta device and profile it.

    Falls back to the CPU (zeros as input) for an operation without a meta implementation.
    """
    from ..registry import MODELS

    entry = MODELS.get(recipe.model.name, "model.name")
    try:
        with torch.device("meta"):
            net = entry.fn(recipe.model, info)
            return profile_network(net, example_input(info, batch, "meta"))
    except (NotImplementedError, RuntimeError):
        net = entry.fn(recipe.model, info)
        return profile_network(net, example_input(info, batch))


def human(n: float, unit: str = "") -> str:
    """1234567 → '1.23M'."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}{unit}"
    return f"{n:g}{unit}"


def format_profile(profile: Profile, title: str = "") -> str:
    """The profile as a text table with totals."""
    header = ("layer", "type", "output", "params", "MACs")
    body = [(r.name, r.kind, "x".join(map(str, r.output)), f"{r.params:,}", f"{r.macs:,}") for r in profile.rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    widths[0] = min(widths[0], 48)

    def fmt(cells):
        name = cells[0] if len(cells[0]) <= widths[0] else "…" + cells[0][-(widths[0] - 1):]
        return (f"{name:<{widths[0]}}  {cells[1]:<{widths[1]}}  {cells[2]:<{widths[2]}}  "
                f"{cells[3]:>{widths[3]}}  {cells[4]:>{widths[4]}}")

    lines = [title] if title else []
    lines += [fmt(header), "-" * (sum(widths) + 8)]
    lines += [fmt(b) for b in body]
    lines.append("-" * (sum(widths) + 8))
    batch = profile.input_shape[0]
    lines.append(f"input {'x'.join(map(str, profile.input_shape[1:]))} (batch {batch})")
    lines.append(f"parameters: {profile.params:,} ({human(profile.params)}; {human(profile.params * 4, 'B')} "
                 f"as float32); trainable {profile.trainable:,}")
    lines.append(f"MACs: {profile.macs:,} ({human(profile.macs)}; FLOPs ~ 2 x MACs) for the batch")
    lines.append(f"activation memory: {human(profile.activation_bytes, 'B')} of layer outputs as float32 "
                 f"(what backward keeps, at most)")
    return "\n".join(lines)


__all__ = ["LayerRow", "Profile", "example_input", "format_profile", "human", "profile_model", "profile_network",
           "rnn_macs"]
