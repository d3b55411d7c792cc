"""Per-epoch cost of trainlab's trainer against a minimal hand-written PyTorch loop.

Both train the same model (the default digits-cnn recipe's CNN, same initial weights), on the same
data (the training split, batch 64, reshuffled every epoch), with the same optimizer settings, and
both validate once per epoch. They run interleaved in one process, in blocks of a few epochs, so
machine noise hits both alike. trainlab runs with the callbacks a user gets (metrics.jsonl,
checkpoints written durably, the doctor, the epoch table), and each block waits for its own
checkpoint writes to reach the disk; the bare trainer (no callbacks) is reported too.

    python benchmarks/overhead.py [--repeats 8] [--block 3]

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

from trainlab.api import build_components, standard_callbacks  # noqa: E402
from trainlab.engine.callbacks import ProgressPrinter  # noqa: E402
from trainlab.recipe import load_recipe  # noqa: E402
from trainlab.run import Run  # noqa: E402


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
    ap.add_argument("--repeats", type=int, default=8, help="timed blocks per side (after one warm-up block)")
    ap.add_argument("--block", type=int, default=3, help="epochs per block")
    args = ap.parse_args()
    epochs = (args.repeats + 1) * args.block
    recipe = load_recipe("digits-cnn", {"train.epochs": epochs * 2, "train.early_stop": None,
                                        "schedule.name": "none", "run.tensorboard": False})
    tmp = Path(tempfile.mkdtemp(prefix="trainlab-overhead-"))
    (tmp / "checkpoints").mkdir()

    # trainlab as `trainlab fit` runs it: metrics.jsonl, checkpoints, the doctor, the epoch table.
    trainer = build_components(recipe)
    sink = io.StringIO()
    sink.isatty = lambda: False
    cbs = standard_callbacks(recipe, Run(tmp), quiet=True)
    trainer.add_callbacks(cbs[:-1] + [ProgressPrinter(live=False, stream=sink), cbs[-1]])
    trainer._emit("on_fit_start")
    bare = build_components(recipe)  # the loop alone, no callbacks

    # The hand-written side: the same network and initial weights, plain tensors, AdamW.
    model = copy.deepcopy(trainer.model)
    cfg = recipe.optim
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x, y = trainer.bundle.train.inputs, trainer.bundle.train.targets
    xv, yv = trainer.bundle.val.inputs, trainer.bundle.val.targets
    gen = torch.Generator().manual_seed(recipe.seed)
    bs, smoothing = recipe.data.batch_size, recipe.loss.label_smoothing

    raw_t, tl_t, bare_t = [], [], []
    for block in range(args.repeats + 1):
        t0 = time.perf_counter()
        for _ in range(args.block):
            hand_written_epoch(model, opt, x, y, xv, yv, bs, gen, smoothing)
        t1 = time.perf_counter()
        for _ in range(args.block):
            trainer.train_epoch()
        trainer.writer.flush()  # the block pays for its own checkpoint writes
        t2 = time.perf_counter()
        for _ in range(args.block):
            bare.train_epoch()
        t3 = time.perf_counter()
        if block:
            raw_t.append((t1 - t0) / args.block)
            tl_t.append((t2 - t1) / args.block)
            bare_t.append((t3 - t2) / args.block)
    trainer.close()
    ratios = [b / a for a, b in zip(raw_t, tl_t)]
    bare_ratios = [b / a for a, b in zip(raw_t, bare_t)]
    print(f"blocks timed per side: {len(raw_t)} x {args.block} epochs (steps per epoch: "
          f"{len(trainer.train_loader)}, threads: {torch.get_num_threads()})")
    print(f"hand-written loop : median {statistics.median(raw_t) * 1000:7.1f} ms/epoch")
    print(f"trainlab (bare)   : median {statistics.median(bare_t) * 1000:7.1f} ms/epoch  "
          f"ratio {statistics.median(bare_ratios):.3f}")
    print(f"trainlab (as run) : median {statistics.median(tl_t) * 1000:7.1f} ms/epoch  "
          f"ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    print(f"overhead = {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
