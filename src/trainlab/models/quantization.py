"""Quantization (T8): int8 weights and activations through PyTorch's own path (torch.ao), no
hand-written kernels.

- ``dynamic``: linear and recurrent layers get int8 weights; activations are quantized on the fly
  per batch (``quantize_dynamic``). No calibration; convolutions stay float.
- ``static``: the network is traced (FX graph mode), observers record the activation ranges over
  calibration batches, then every supported layer runs in int8 (``prepare_fx`` / ``convert_fx``
  with the x86 backend's default configuration).
- ``qat``: quantization-aware training: fake-quantize modules in the traced graph during a few
  epochs of fine-tuning, then the same conversion.

torch's eager int8 kernels run on the CPU only, so the quantized model does too.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..errors import RecipeError

METHODS = ("dynamic", "static", "qat")


def check_method(method: str) -> str:
    """``method`` is one the installed torch supports (RecipeError naming it otherwise)."""
    if method not in METHODS:
        raise RecipeError(f"--method: unknown quantization method {method!r}; known: {', '.join(METHODS)}")
    try:
        import torch.ao.quantization as tq  # noqa: F401
        if method != "dynamic":
            from torch.ao.quantization import quantize_fx  # noqa: F401
    except ImportError as err:
        raise RecipeError(f"--method {method}: the installed torch {torch.__version__} has no such "
                          f"quantization path ({err})") from None
    if "x86" not in torch.backends.quantized.supported_engines and method != "dynamic":
        raise RecipeError(f"--method {method}: the installed torch has no x86 quantized engine "
                          f"(engines: {', '.join(torch.backends.quantized.supported_engines)})")
    return method


def _quiet():
    # torch.ao's FX path warns that it is in maintenance mode on every call; the warning is about
    # torch's roadmap, not about this model
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")
    return ctx


def quantize_dynamic(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with int8 linear and recurrent layers (weights int8, activations
    quantized per batch)."""
    from torch.ao.quantization import quantize_dynamic as qd

    ctx = _quiet()
    try:
        return qd(copy.deepcopy(model).eval().cpu(), {nn.Linear, nn.LSTM, nn.GRU}, dtype=torch.qint8)
    finally:
        ctx.__exit__(None, None, None)


def _parts(model: nn.Module) -> tuple[nn.Module | None, nn.Module]:
    """(input stage, network) of a trainlab model: the input stage (normalization, whitening:
    shape-dependent code) stays out of the traced graph and runs in float before the first
    quantized layer; a bare network is traced whole."""
    stage, net = getattr(model, "input", None), getattr(model, "net", None)
    if isinstance(stage, nn.Module) and isinstance(net, nn.Module):
        return stage, net
    return None, model


def _traced(method: str, run: Callable[[], nn.Module]) -> nn.Module:
    ctx = _quiet()
    try:
        torch.backends.quantized.engine = "x86"
        return run()
    except (torch.fx.proxy.TraceError, TypeError, NotImplementedError, AttributeError) as err:
        raise RecipeError(f"--method {method}: this architecture cannot be traced for graph-mode quantization "
                          f"({str(err).splitlines()[0][:120]}); try --method dynamic") from None
    finally:
        ctx.__exit__(None, None, None)


def quantize_static(model: nn.Module, example: torch.Tensor, batches: Iterable[torch.Tensor]) -> nn.Module:
    """A copy of ``model`` in int8 after calibrating its activation ranges on ``batches`` (inputs
    as the model takes them)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    def run() -> nn.Module:
        q = copy.deepcopy(model).eval().cpu()
        stage, net = _parts(q)
        first = (lambda x: stage(x)) if stage is not None else (lambda x: x)
        with torch.no_grad():
            prepared = prepare_fx(net, get_default_qconfig_mapping("x86"), (first(example),))
            for x in batches:
                prepared(first(x))
        converted = convert_fx(prepared)
        if stage is None:
            return converted
        q.net = converted
        return q

    return _traced("static", run)


def quantize_qat(model: nn.Module, example: torch.Tensor, train: Callable[[nn.Module], None]) -> nn.Module:
    """A copy of ``model`` trained with fake quantization by ``train(model_copy)`` (a few epochs of
    fine-tuning the caller runs on the copy, which takes the inputs ``model`` takes), then
    converted to int8."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx

    def run() -> nn.Module:
        q = copy.deepcopy(model).train().cpu()
        stage, net = _parts(q)
        with torch.no_grad():
            ex = stage(example) if stage is not None else example
        prepared = prepare_qat_fx(net, get_default_qat_qconfig_mapping("x86"), (ex,))
        if stage is None:
            train(prepared)
            return convert_fx(prepared.eval())
        q.net = prepared
        train(q)
        q.net = convert_fx(q.net.eval())
        return q.eval()

    return _traced("qat", run)
