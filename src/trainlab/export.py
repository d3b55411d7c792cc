"""Static graphs (M13, S3 "frameworks"): a trained run's model as TorchScript, torch.export or ONNX.

PyTorch builds its graph anew at every forward (dynamic); a static graph is captured once and can
be optimized, saved and run without the Python code that made it. Each export here is reloaded
from the file and checked against the eager model on the same inputs; the largest absolute
difference is reported, and a difference above tolerance fails the export. The batch dimension is
left free, and the check uses a different batch size than the capture to show it.
"""
from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import write_bytes
from .errors import RecipeError, TrainlabError

FORMATS = ("torchscript", "exported", "onnx")
SUFFIX = {"torchscript": ".pt", "exported": ".pt2", "onnx": ".onnx"}


class ParityError(TrainlabError):
    """The exported model's outputs differ from the eager model's beyond tolerance."""

    exit_code = 1


@dataclass
class ExportResult:
    format: str
    path: Path
    max_abs_diff: float
    tolerance: float
    batch_sizes: tuple[int, int]

    def line(self) -> str:
        return (f"{self.format}: wrote {self.path}; parity with eager on batches of {self.batch_sizes[0]} and "
                f"{self.batch_sizes[1]}: max |export - eager| = {self.max_abs_diff:.3g} (tolerance {self.tolerance:.1g})")


def example_batch(model, info, batch: int, seed: int = 0) -> torch.Tensor:
    """Inputs in the data's stored scale: token ids for text, mean + std·noise around the statistics otherwise."""
    from .rng import generator

    g = generator("export", seed)
    if info.kind == "sequence" and len(info.input_shape) == 1:
        return torch.randint(0, info.num_classes, (batch, *info.input_shape), generator=g)
    x = torch.randn((batch, *info.input_shape), generator=g)
    mean, std = getattr(model.input, "mean", None), getattr(model.input, "std", None)
    if mean is not None and mean.dim() == x.dim():
        x = mean + std * x
    return x


def _to_torchscript(model, x, path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export; still widely deployed
        traced = torch.jit.trace(model, (x,), check_trace=False)
        traced.save(str(path))
        loaded = torch.jit.load(str(path))
    return lambda inp: loaded(inp)


def _to_exported(model, x, path: Path):
    import io

    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        # Recurrent layers re-assign their flat weight list during tracing: harmless, but noisy.
        warnings.simplefilter("ignore", UserWarning)
        program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()  # through a buffer: torch.export.save insists on a .pt2 file name otherwise
    torch.export.save(program, buffer)
    path.write_bytes(buffer.getvalue())
    loaded = torch.export.load(io.BytesIO(path.read_bytes())).module()
    return lambda inp: loaded(inp)


def _to_onnx(model, x, path: Path):
    import importlib.util

    try:
        import onnxruntime as ort
    except ImportError:
        raise TrainlabError("--format onnx: needs onnx and onnxruntime; install trainlab[onnx]") from None
    kwargs = dict(input_names=["input"], output_names=["output"])
    if importlib.util.find_spec("onnxscript") is not None:
        torch.onnx.export(model, (x,), str(path), dynamo=True,
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), **kwargs)
    else:
        # Without onnxscript only the TorchScript-based exporter is available; it is deprecated
        # but produces the same ONNX graph for these models.
        axes = {"input": {0: "batch"}, "output": {0: "batch"}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), dynamo=False, dynamic_axes=axes, **kwargs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda inp: torch.from_numpy(session.run(None, {name: inp.numpy()})[0])


EXPORTERS = {"torchscript": _to_torchscript, "exported": _to_exported, "onnx": _to_onnx}


def export_model(model: torch.nn.Module, info, fmt: str, out: str | Path, batch: int = 4,
                 tolerance: float = 1e-4) -> ExportResult:
    """Export ``model`` (eval mode, on the CPU) to ``out`` and check parity with the eager model.

    Parity: max |export(x) − model(x)| over two batches (``batch`` and ``batch + 3`` samples) must
    be at most ``tolerance`` · max(1, max |model(x)|); otherwise :class:`ParityError`.
    """
    if fmt not in FORMATS:
        raise RecipeError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(out)
    if path.parent and not path.parent.exists():
        raise TrainlabError(f"--out: folder {str(path.parent)!r} does not exist")
    model = model.cpu().eval()
    x = example_batch(model, info, batch, seed=0)
    # Captured into a temporary folder, then written to --out durably (trainlab.atomic): a full
    # disk or a read-only folder is one line naming --out, and never leaves a torn file there.
    with tempfile.TemporaryDirectory(prefix="trainlab-export-") as tmp:
        staged = Path(tmp) / path.name
        run = EXPORTERS[fmt](model, x, staged)
        try:
            write_bytes(path, staged.read_bytes())
            for extra in sorted(Path(tmp).iterdir()):  # ONNX external data of a large model, beside it
                if extra != staged:
                    write_bytes(path.parent / extra.name, extra.read_bytes())
        except OSError as err:
            raise TrainlabError(f"--out {str(path)!r}: cannot write ({err.strerror or err})") from None
    worst, scale = 0.0, 1.0
    sizes = (batch, batch + 3)
    with torch.no_grad():
        for seed, n in enumerate(sizes):
            inp = example_batch(model, info, n, seed=seed)
            ref = model(inp).float()
            got = run(inp).float()
            if got.shape != ref.shape:
                raise ParityError(f"{fmt}: output shape {list(got.shape)} differs from eager {list(ref.shape)}")
            worst = max(worst, float((got - ref).abs().max()))
            scale = max(scale, float(ref.abs().max()))
    result = ExportResult(fmt, path, worst, tolerance * scale, sizes)
    if worst > tolerance * scale:
        raise ParityError(f"{fmt}: parity check failed: max |export - eager| = {worst:.3g} > {tolerance * scale:.3g}")
    return result
