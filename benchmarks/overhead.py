"""Per-epoch cost of trainlab's trainer against a minimal hand-written PyTorch loop.

Both train the same model (the default digits-cnn recipe's CNN, same initial weights), on the same
data (the training split, batch 64, reshuffled every epoch), with the same optimizer settings, and
both validate once per epoch. They run interleaved in one process, epoch after epoch, so machine
noise hits both alike. trainlab runs with the callbacks a user gets (metrics.jsonl, checkpoints
written durably, the epoch table); the bare trainer (no callbacks) is reported too.

    python benchmarks/overhead.py [--repeats 12]

Last line: ``overhead = <trainlab epoch time / hand-written epoch time>`` (goal <= 1.05 on CPU).
"""
from __future__ import annotations

import argparse
import copy
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from trainlab.api import build_components  # noqa: E402
from trainlab.engine.callbacks import Checkpointer, MetricsLogger, ProgressPrinter  # noqa: E402
from trainlab.recipe import load_recipe  # noqa: E402


def hand_written_epoch(model, opt, x, y, xv, yv, batch_size, gen, smoothing):
    """The loop a practitioner writes by hand: shuffle, step, then validate."""
    model.train()
    perm = torch.randperm(len(x), generator=gen)
    for i in range(0, len(x) - 1, batch_size):
        idx = perm[i : i + batch_size]
        out = model(x[idx])
        loss = F.cross_entropy(out, y[idx], label_smoothing=smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(xv)
        val_loss = F.cross_entropy(out, yv).item()
        val_acc = (out.argmax(1) == yv).float().mean().item()
    return val_loss, val_acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=12, help="timed epochs per side (after 2 warm-up epochs)")
    args = ap.parse_args()
    epochs = args.repeats + 2
    recipe = load_recipe("digits-cnn", {"train.epochs": epochs * 2, "train.early_stop": None,
                                        "schedule.name": "none", "run.tensorboard": False})
    tmp = Path(tempfile.mkdtemp(prefix="trainlab-overhead-"))

    trainer = build_components(recipe)
    bare = build_components(recipe)
    sink = io.StringIO()
    sink.isatty = lambda: False
    trainer.add_callbacks([MetricsLogger(tmp / "metrics.jsonl"), ProgressPrinter(live=False, stream=sink),
                           Checkpointer(tmp, None)])
    trainer._emit("on_fit_start")

    # The hand-written side: the same network and initial weights, plain tensors, AdamW.
    model = copy.deepcopy(trainer.model)
    cfg = recipe.optim
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x, y = trainer.bundle.train.inputs, trainer.bundle.train.targets
    xv, yv = trainer.bundle.val.inputs, trainer.bundle.val.targets
    gen = torch.Generator().manual_seed(recipe.seed)
    bs, smoothing = recipe.data.batch_size, recipe.loss.label_smoothing

    raw_t, tl_t, bare_t = [], [], []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        hand_written_epoch(model, opt, x, y, xv, yv, bs, gen, smoothing)
        t1 = time.perf_counter()
        trainer.train_epoch()
        t2 = time.perf_counter()
        bare.train_epoch()
        t3 = time.perf_counter()
        if epoch >= 2:
            raw_t.append(t1 - t0)
            tl_t.append(t2 - t1)
            bare_t.append(t3 - t2)
    ratios = [b / a for a, b in zip(raw_t, tl_t)]
    bare_ratios = [b / a for a, b in zip(raw_t, bare_t)]
    print(f"epochs timed per side: {len(raw_t)} (steps per epoch: {len(trainer.train_loader)}, "
          f"threads: {torch.get_num_threads()})")
    print(f"hand-written loop : median {statistics.median(raw_t) * 1000:7.1f} ms/epoch")
    print(f"trainlab (bare)   : median {statistics.median(bare_t) * 1000:7.1f} ms/epoch  "
          f"ratio {statistics.median(bare_ratios):.3f}")
    print(f"trainlab (as run) : median {statistics.median(tl_t) * 1000:7.1f} ms/epoch  "
          f"ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    print(f"overhead = {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
