"""Per-epoch cost of the live report.html (issue 21, V5) on `trainlab fit digits-mlp`.

Two trainers of the same recipe run interleaved in one process, in blocks of a few epochs, so that
machine noise hits both alike: one with the callbacks `trainlab fit` installs (the live report
included), one with the same callbacks but the live report. Each block waits for its own files
(checkpoints, metrics.jsonl, report.html) to reach the disk. Also timed: rendering the page alone.

    python benchmarks/live_report.py [--repeats 8] [--block 3]

Last line: ``live report overhead = <epoch time with / epoch time without>``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trainlab.api import build_components, standard_callbacks  # noqa: E402
from trainlab.recipe import load_recipe  # noqa: E402
from trainlab.report.html import render_report  # noqa: E402
from trainlab.report.live import LiveReport  # noqa: E402
from trainlab.run import Run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=8, help="timed blocks per side (after one warm-up block)")
    ap.add_argument("--block", type=int, default=3, help="epochs per block")
    args = ap.parse_args()
    epochs = (args.repeats + 1) * args.block
    recipe = load_recipe("digits-mlp", {"train.epochs": epochs, "train.early_stop": None, "run.tensorboard": False})
    sides = {}
    for name in ("with", "without"):
        folder = Path(tempfile.mkdtemp(prefix=f"trainlab-live-{name}-"))
        (folder / "checkpoints").mkdir()
        trainer = build_components(recipe)
        cbs = standard_callbacks(recipe, Run(folder), quiet=True)
        if name == "without":
            cbs = [cb for cb in cbs if not isinstance(cb, LiveReport)]
        trainer.add_callbacks(cbs)
        trainer._emit("on_fit_start")
        sides[name] = (trainer, folder)
    times = {name: [] for name in sides}
    for block in range(args.repeats + 1):
        for name, (trainer, _) in sides.items():
            t0 = time.perf_counter()
            for _ in range(args.block):
                trainer.train_epoch()
            trainer.writer.flush()
            if block:
                times[name].append((time.perf_counter() - t0) / args.block)
    trainer, folder = sides["with"]
    live_text = next(cb for cb in trainer.callbacks if isinstance(cb, LiveReport)).recipe_text
    t0 = time.perf_counter()
    for _ in range(20):
        render_report(Run(folder), recipe, trainer.task, trainer.state.history, None, (), None, live_text)
    render_ms = (time.perf_counter() - t0) / 20 * 1000
    for trainer, _ in sides.values():
        trainer.close()
    ratios = [a / b for a, b in zip(times["with"], times["without"])]
    print(f"blocks timed per side: {args.repeats} x {args.block} epochs (digits-mlp, {len(trainer.train_loader)} "
          "steps per epoch)")
    for name in sides:
        print(f"{name:>8} live report: median {statistics.median(times[name]) * 1000:7.1f} ms/epoch")
    per_epoch = (statistics.median(times["with"]) - statistics.median(times["without"])) * 1000
    print(f"rendering the page after {epochs} epochs: {render_ms:.2f} ms; "
          f"difference of medians {per_epoch:+.1f} ms/epoch")
    print(f"live report overhead = {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
