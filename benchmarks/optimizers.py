"""Optimizers and LR schedules on digits at one fixed budget (O1–O6), side by side in one run.

Rows: Adam, SGD + momentum (constant LR), Adam → SGD at a fixed epoch and by the SWATS criterion,
and SGD + momentum with a cyclical LR (Smith's triangular cycle between max/4 and max, max taken
from the LR range test of digits-mlp, about 0.1) against the constant LR. Each row trains the
digits-mlp recipe for the same number of epochs with each seed (the seed also draws the split, so
rows are compared seed by seed on the same data). Reported: final test accuracy (last-epoch
weights: early stopping is off and the best checkpoint is not restored), mean ± std over seeds,
and the first epoch at which validation accuracy reaches 97%.

    PYTHONPATH=src python benchmarks/optimizers.py [--epochs 20] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trainlab.api import fit  # noqa: E402

SGD = ["optim.name=sgd", "optim.lr=0.05", "optim.momentum=0.9", "optim.nesterov=false"]
ADAM = ["optim.name=adam", "optim.lr=0.001"]


def configs(epochs: int) -> dict[str, list[str]]:
    switch_at = max(2, epochs // 3 + 1)
    return {
        "adam": ADAM,
        "sgd_momentum": SGD,
        "adam_to_sgd": ADAM + [f"optim.switch={{at_epoch: {switch_at}}}"],
        "adam_to_sgd_swats": ADAM + ["optim.switch={auto: true}"],
        "sgd_cyclic": SGD + ["optim.lr=0.1", "schedule.name=cyclic", "schedule.mode=triangular"],
    }


def run_one(name: str, overrides: list[str], seed: int, epochs: int, root: Path) -> dict:
    t0 = time.perf_counter()
    common = [f"seed={seed}", f"train.epochs={epochs}", "schedule.name=none",
              "train.early_stop={patience: 100000, restore_best: false}",
              f"run.dir={root / f'{name}-{seed}'}", "run.tensorboard=false", "run.plots=false", "train.threads=1"]
    run = fit("digits-mlp", common + overrides, quiet=True)
    rows = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    epochs_rows = [r for r in rows if "event" not in r]
    reach = next((r["epoch"] for r in epochs_rows if r.get("val_accuracy", 0) >= 0.97), None)
    switch = next((r for r in rows if r.get("event") == "optimizer_switch"), None)
    summary = json.loads(run.summary_path.read_text())
    return {"test_acc": summary["test"]["accuracy"], "epochs_to_97": reach, "wall_s": time.perf_counter() - t0,
            "switch_epoch": switch["epoch"] if switch else None, "switch_lr": switch["lr"] if switch else None}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:  # seed-major order: every row sees the same machine load per seed
            for name, overrides in configs(args.epochs).items():
                results.setdefault(name, []).append(run_one(name, overrides, seed, args.epochs, Path(tmp)))
    print(f"digits-mlp, {args.epochs} epochs, seeds {args.seeds}; final test accuracy (last epoch), "
          "first epoch with val accuracy >= 0.97")
    print(f"{'row':<20} {'test accuracy':>17} {'epochs to 97%':>22} {'switch (epoch, lr)':>26} {'wall s':>8}")
    for name, runs in results.items():
        m, s = mean_std([r["test_acc"] for r in runs])
        reach = [r["epochs_to_97"] for r in runs]
        reached = [e for e in reach if e is not None]
        reach_text = (f"{statistics.fmean(reached):.1f} ({len(reached)}/{len(runs)} reached)" if reached
                      else f"never (0/{len(runs)})")
        sw = [(r["switch_epoch"], r["switch_lr"]) for r in runs if r["switch_epoch"] is not None]
        sw_text = ", ".join(f"{e}/{lr:.3g}" for e, lr in sw) if sw else "-"
        wall = statistics.fmean(r["wall_s"] for r in runs)
        print(f"{name:<20} {m:>8.4f} ± {s:<6.4f} {reach_text:>22} {sw_text:>26} {wall:>8.1f}")
    for name in ("adam_to_sgd", "sgd_cyclic"):
        base = "adam" if name == "adam_to_sgd" else "sgd_momentum"
        diffs = [a["test_acc"] - b["test_acc"] for a, b in zip(results[name], results[base])]
        dm, ds = mean_std(diffs)
        print(f"paired difference {name} - {base}: {dm:+.4f} ± {ds:.4f} (per seed: "
              + ", ".join(f"{d:+.4f}" for d in diffs) + ")")
    adam = statistics.fmean(r["test_acc"] for r in results["adam"])
    switched = statistics.fmean(r["test_acc"] for r in results["adam_to_sgd"])
    print(f"adam_to_sgd_minus_adam_accuracy = {switched - adam:.4f}")


if __name__ == "__main__":
    main()
