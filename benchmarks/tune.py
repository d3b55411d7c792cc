"""Pruning in hyper-parameter search (T6): 20 trials with a pruner vs 20 without, side by side.

Both searches tune the same recipe over the same space with the same seeded TPE sampler (so their
first 10, random, trials sample the same points); one stops poor trials early on the per-epoch
validation accuracy (Optuna's median pruner by default, or Hyperband), the other trains every
trial to the end. Printed: the best validation accuracy each found, the epochs trained, the wall
time and CPU time (this process, one torch thread), and the time pruning saved. The two searches run
one after the other in this process: on a shared machine their wall times can differ by the load of
the moment, which the CPU times and the epochs trained do not.

    python benchmarks/tune.py [--trials 20] [--epochs 10] [--pruner median|hyperband] [--recipe digits-cnn]

Last line: ``pruned search: best val accuracy X vs Y, wall time -Z% (A s vs B s), CPU time -W% (...)``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

SPACE = {
    "optim.lr": {"type": "loguniform", "low": 1e-4, "high": 0.05},
    "optim.weight_decay": {"type": "loguniform", "low": 1e-6, "high": 1e-2},
    "model.width": {"type": "int", "low": 8, "high": 64, "step": 8},
    "model.dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
}


def search(recipe: str, folder: Path, trials: int, epochs: int, pruner: str) -> dict:
    from trainlab.tune import results, run_workers, start

    overrides = [f"train.epochs={epochs}", "train.early_stop=null", "run.tensorboard=false", "run.plots=false",
                 "train.progress=false", "doctor.enabled=false", "train.threads=1", f"run.dir={folder}"]
    t0, c0 = time.perf_counter(), time.process_time()
    start(recipe, SPACE, trials, overrides, pruner=pruner)
    run_workers(folder, 1, say=lambda line: None)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    r = results(folder, plots=False)
    r["wall_s"], r["cpu_s"] = wall, cpu
    r["epochs_trained"] = sum(t["epochs"] for t in r["trials"])
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--pruner", default="median", choices=("median", "hyperband"))
    p.add_argument("--recipe", default="digits-cnn")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        # One untimed epoch first: imports and first-call costs would otherwise fall on the first search.
        from trainlab import fit

        fit(args.recipe, ["train.epochs=1", "run.tensorboard=false", "run.plots=false", "train.progress=false",
                          "doctor.enabled=false", "train.threads=1", f"run.dir={Path(tmp) / 'warm-up'}"], quiet=True)
        rows = {}
        for name in (args.pruner, "none"):
            rows[name] = search(args.recipe, Path(tmp) / name, args.trials, args.epochs, name)
            r = rows[name]
            print(f"{name:>9}: {r['finished']} trials ({r['complete']} complete, {r['pruned']} pruned), "
                  f"{r['epochs_trained']} epochs trained, best val accuracy {r['best']['value']:.4f} "
                  f"(trial {r['best']['number']}), wall {r['wall_s']:.1f} s, CPU {r['cpu_s']:.1f} s", flush=True)
    a, b = rows[args.pruner], rows["none"]
    saved = 1 - a["wall_s"] / b["wall_s"]
    saved_cpu = 1 - a["cpu_s"] / b["cpu_s"]
    print(json.dumps({k: {"best": v["best"]["value"], "wall_s": round(v["wall_s"], 2), "cpu_s": round(v["cpu_s"], 2), "epochs": v["epochs_trained"],
                          "pruned": v["pruned"]} for k, v in rows.items()}))
    print(f"pruned search: best val accuracy {a['best']['value']:.4f} vs {b['best']['value']:.4f}, wall time "
          f"{-100 * saved:+.0f}% ({a['wall_s']:.1f} s vs {b['wall_s']:.1f} s), CPU time {-100 * saved_cpu:+.0f}% "
          f"({a['cpu_s']:.1f} s vs {b['cpu_s']:.1f} s); {args.trials} trials of "
          f"{args.epochs} epochs, {args.recipe}, {args.pruner} pruner)")


if __name__ == "__main__":
    main()
