"""Smaller and faster models from a finished run (T8): pruning and int8 quantization, each measured
against the run's own model on its test split.

``prune_run`` writes a new, normal run (evaluate, predict and export work on it): without
fine-tuning, a copy of the run whose checkpoints hold the pruned weights and whose summary holds
their metrics; with ``epochs``, a fit of the run's recipe starting from the pruned weights, the
zeros kept by a callback after every optimizer step. ``quantize_run`` converts the model with
torch.ao (:mod:`trainlab.models.quantization`), writes it as TorchScript beside the run and
compares accuracy, CPU latency per batch and size on disk with the float model.
"""
from __future__ import annotations

import io
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from .engine.callbacks import Callback
from .errors import RunError
from .run import Run, check_writable_target, open_run

LATENCY_REPEATS = 20


def evaluate_model(model: torch.nn.Module, run: Run, split: str = "test", device: str = "cpu") -> dict[str, Any]:
    """Metrics of ``model`` (any module taking the run's inputs) on ``split`` of ``run``'s data,
    rebuilt from its recipe and seed as `trainlab evaluate` does."""
    from .data import build_data
    from .engine.trainer import eval_loader
    from .optim.optimizers import train_batch_size

    recipe, task = run.recipe(), run.task()
    bundle = build_data(recipe, statistics=False)
    dev = torch.device(device)
    batch = task.eval_batch_size(train_batch_size(recipe, len(bundle.train)))
    loaders = {name: eval_loader(bundle.split(name), batch, recipe, dev, task) for name in task.eval_splits(split)}
    with torch.no_grad():
        return task.evaluate(model, loaders, split, dev, False)


def batch_latency(model: torch.nn.Module, x: torch.Tensor, repeats: int = LATENCY_REPEATS) -> float:
    """Median seconds of one forward pass of batch ``x`` on the CPU (after two warm-up passes)."""
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            t0 = time.perf_counter()
            model(x)
            if i >= 2:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def training_batch(run: Run, n: int = 64) -> torch.Tensor:
    """The first ``n`` training inputs of ``run``'s data, unaugmented, as the model takes them."""
    from .data import build_data
    from .engine.trainer import eval_loader

    recipe, task = run.recipe(), run.task()
    bundle = build_data(recipe, statistics=False)
    loader = eval_loader(bundle.train, n, recipe, torch.device("cpu"), task)
    return next(iter(loader.batches(0)))["input"]


# ------------------------------------------------------------------------------------- pruning
class KeepPruned(Callback):
    """Keeps the pruned weights at zero while fine-tuning (after every optimizer step)."""

    name = "keep_pruned"

    def on_fit_start(self, trainer) -> None:
        from .models.pruning import KeepZeros

        self.keep = KeepZeros(trainer.model)

    def on_batch_end(self, trainer, batch, outputs, loss) -> None:
        if trainer.at_step_boundary:
            self.keep.apply()


def _profile_counts(model: torch.nn.Module, info) -> tuple[int, int, int]:
    """(parameters, non-zero parameters, MACs weighted by each layer's share of non-zero weights)."""
    from .models.layers import weight_layers
    from .models.profile import example_input, profile_network

    prof = profile_network(model.net if hasattr(model, "net") else model, example_input(info))
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    density = {id(m): float((m.weight != 0).float().mean()) for m in weight_layers(model) if m.weight is not None}
    names = {name: m for name, m in (model.net if hasattr(model, "net") else model).named_modules()}
    effective = 0
    for row in prof.rows:
        m = names.get(row.name)
        effective += row.macs * density.get(id(m), 1.0) if m is not None else row.macs
    return params, nonzero, int(effective)


def prune_run(run: Run, amount: float, structured: bool = False, epochs: int = 0, out: str | Path | None = None,
              force: bool = False, quiet: bool = True) -> dict[str, Any]:
    """Prune ``run``'s best model and write the pruned run to ``out`` (default ``<run>-pruned<pct>``);
    returns the table: per-layer sparsity, parameters, MACs and test metrics before and after."""
    from safetensors.torch import save_file

    from .engine.checkpoint import load_checkpoint, save_checkpoint, with_prefix
    from .models.pruning import check_amount, prune_model, sparsity

    check_amount(amount)
    if epochs < 0:
        raise RunError(f"--epochs: expected 0 or more fine-tuning epochs, got {epochs}")
    target = Path(out) if out else run.dir.with_name(f"{run.dir.name}-pruned{round(amount * 100)}")
    if target.resolve() == run.dir.resolve():
        raise RunError(f"--out {str(target)!r}: is the run being pruned; choose another folder")
    check_writable_target(target, force)
    model, task, recipe, info, _ = run.load_model("best")
    before = evaluate_model(model, run)
    counts_before = _profile_counts(model, info)
    prune_model(model, amount, structured)
    layers = sparsity(model)
    if epochs:
        from .api import fit

        start = target.with_name(f"{target.name}.start.safetensors")
        save_file({k: v.contiguous() for k, v in model.net.state_dict().items()}, str(start))
        new = fit(run.recipe_path, {"model.weights": str(start), "train.epochs": epochs, "run.dir": str(target)},
                  force=force, quiet=quiet, callbacks=[KeepPruned()])
        model = new.load_model("best")[0]
    else:
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(run.dir, target,
                        ignore=shutil.ignore_patterns("tensorboard", "eval-*.json", ".trainlab.lock"))
        new = open_run(target)
        weights = with_prefix(model.state_dict(), "model")
        for which in ("best", "last"):
            path = new.checkpoints / f"{which}.safetensors"
            if path.exists():
                tensors, state = load_checkpoint(path)
                if not all(k in tensors for k in weights):
                    raise RunError(f"checkpoint {path}: its model tensors do not match the run's model")
                tensors.update(weights)
                save_checkpoint(path, tensors, state)
    after = evaluate_model(model, new)
    counts_after = _profile_counts(model, info)
    table = {
        "amount": amount, "structured": structured, "fine_tune_epochs": epochs, "run": str(new.dir),
        "layers": [{"name": s.name, "params": s.params, "zeros": s.zeros, "sparsity": round(s.sparsity, 4)}
                   for s in layers],
        "before": {"params": counts_before[0], "nonzero_params": counts_before[1], "macs": counts_before[2],
                   **_scalars(before)},
        "after": {"params": counts_after[0], "nonzero_params": counts_after[1], "macs": counts_after[2],
                  **_scalars(after)},
    }
    from .atomic import write_json

    if not epochs:
        summary = new.summary()
        summary["test"] = {**(summary.get("test") or {}), **after}
        summary["pruned"] = {k: table[k] for k in ("amount", "structured", "fine_tune_epochs")}
        summary["pruned"]["from"] = str(run.dir)
        write_json(new.summary_path, summary)
    write_json(new.dir / "prune.json", table)
    return table


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    from .tasks.base import scalar_metrics

    return {k: v for k, v in scalar_metrics(metrics).items() if k != "n"}


# -------------------------------------------------------------------------------- quantization
def _script_bytes(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    """The model traced on ``example`` as a TorchScript file: the form both the float and the int8
    model are deployed in, so their sizes compare like for like."""
    import warnings

    with warnings.catch_warnings():  # torch.jit's deprecation notices
        warnings.simplefilter("ignore")
        buf = io.BytesIO()
        torch.jit.save(torch.jit.trace(model, example, check_trace=False), buf)
    return buf.getvalue()


def _load_script(data: bytes) -> torch.nn.Module:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(io.BytesIO(data))


def quantize_run(run: Run, method: str, calibration_batches: int = 8, epochs: int = 1,
                 out: str | Path | None = None) -> dict[str, Any]:
    """Quantize ``run``'s best model with ``method`` (dynamic, static, qat); returns the table:
    test metrics, CPU latency per batch and size of the float and the int8 model; writes the int8
    model as TorchScript to ``out`` (default ``RUN/quantized-<method>.pt``) and the table beside it."""
    from .models.profile import example_input
    from .models.quantization import check_method, quantize_dynamic, quantize_qat, quantize_static

    check_method(method)
    if calibration_batches < 1:
        raise RunError(f"--calibration-batches: expected 1 or more, got {calibration_batches}")
    model, task, recipe, info, _ = run.load_model("best")
    model = model.cpu().eval()
    if task.name != "classification":
        raise RunError(f"run {run.dir} is a run of the {task.name} task; quantize measures the accuracy of "
                       "classification runs")
    path = Path(out) if out else run.dir / f"quantized-{method}.pt"
    if path.is_dir():
        raise RunError(f"--out {str(path)!r}: is a folder; expected a file name")
    example = example_input(info, 8)
    if method == "dynamic":
        q = quantize_dynamic(model)
    elif method == "static":
        q = quantize_static(model, example, _train_inputs(run, calibration_batches))
    else:
        q = quantize_qat(model, example, lambda m: _fine_tune(m, run, epochs))
    batch = training_batch(run, 64)
    float_metrics, int8_metrics = evaluate_model(model, run), evaluate_model(q, run)
    from .atomic import write_bytes, write_json

    data, float_data = _script_bytes(q, batch), _script_bytes(model, batch)
    write_bytes(path, data)
    # both timed as the TorchScript files they are deployed as, with torch's thread count of now
    table = {
        "method": method, "file": str(path), "batch": int(batch.shape[0]),
        "float": {**_scalars(float_metrics), "latency_s": batch_latency(_load_script(float_data), batch),
                  "bytes": len(float_data)},
        "int8": {**_scalars(int8_metrics), "latency_s": batch_latency(_load_script(data), batch), "bytes": len(data)},
    }
    write_json(path.with_suffix(".json"), table)
    return table


def _train_inputs(run: Run, batches: int):
    """Up to ``batches`` unaugmented training batches (inputs only): static calibration data."""
    from .data import build_data
    from .engine.trainer import eval_loader
    from .optim.optimizers import train_batch_size

    recipe, task = run.recipe(), run.task()
    bundle = build_data(recipe, statistics=False)
    loader = eval_loader(bundle.train, train_batch_size(recipe, len(bundle.train)), recipe, torch.device("cpu"), task)
    for i, b in enumerate(loader.batches(0)):
        if i >= batches:
            return
        yield b["input"]


def _fine_tune(model: torch.nn.Module, run: Run, epochs: int) -> None:
    """Quantization-aware fine-tuning: ``epochs`` passes over the training split (the run's
    augmentations and loss, SGD at a tenth of its learning rate: the weights are already trained)."""
    from .data import build_data
    from .data.loader import BatchLoader
    from .data.transforms import build_transforms
    from .engine.trainer import loader_hooks

    recipe, task = run.recipe(), run.task()
    bundle = build_data(recipe, statistics=False)
    loader = BatchLoader(bundle.train, train_batch_size_of(recipe, len(bundle.train)), seed=recipe.seed, shuffle=True,
                         transform=build_transforms(recipe.data.augment, bundle.info, recipe.data.forbid),
                         **loader_hooks(task))
    opt = torch.optim.SGD(model.parameters(), lr=recipe.optim.lr * 0.1, momentum=0.9)
    model.train()
    for epoch in range(1, epochs + 1):
        for b in loader.batches(epoch):
            _, loss = task.step(model, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()


def train_batch_size_of(recipe, n: int) -> int:
    from .optim.optimizers import train_batch_size

    return min(train_batch_size(recipe, n), n)
