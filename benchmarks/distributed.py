"""Data-parallel scaling (T7): 2 torchrun processes against 1, and the gradient all-reduce per step.

    python benchmarks/distributed.py [--recipe digits-cnn] [--epochs 4] [--rounds 2] [--device cpu]

Scaling: the same recipe and global batch trained by one process (`trainlab fit`) and by two
(`torchrun --nproc-per-node 2 -m trainlab fit`), alternating, ``--rounds`` times each, every process
on one thread (OMP_NUM_THREADS=1). An epoch's time is read from metrics.jsonl (training and
validation), the first epoch left out (start-up). Efficiency = (t1 / t2) / 2: 1.0 is perfect.

All-reduce: under torchrun, the recipe's model in DistributedDataParallel, timing blocks of
forward + backward with the gradients averaged (DDP's all-reduce) against blocks under no_sync
(none), alternated; the difference is the all-reduce's cost per step as training pays it (what
DDP overlaps with the backward pass is not counted). Also the bare all_reduce of a tensor the size
of the gradients, and trainlab's own per-step agreement (two integers, on the CPU).

``--device cuda`` does the same with NCCL; it needs one GPU per process (two GPUs).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

FAST = ["run.tensorboard=false", "run.plots=false", "train.progress=false", "doctor.enabled=false",
        "train.early_stop=null", "train.threads=1", "--quiet"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = e["MKL_NUM_THREADS"] = "1"
    return e


def torchrun(n: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n)]


def epoch_time(run: Path) -> float:
    times = [json.loads(line)["time_s"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "event" not in json.loads(line)]
    return statistics.median(times[1:])


def scaling(args) -> tuple[float, float]:
    overrides = [f"train.epochs={args.epochs}", f"train.device={args.device}", *FAST]
    t1, t2 = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for n, out in ((1, t1), (2, t2)):
                run = Path(tmp) / f"p{n}-{r}"
                cmd = ([sys.executable, "-m", "trainlab"] if n == 1 else [*torchrun(n), "-m", "trainlab"])
                subprocess.run([*cmd, "fit", args.recipe, f"run.dir={run}", *overrides], env=env(), check=True)
                out.append(epoch_time(run))
                print(f"  round {r + 1}: {n} process{'es' if n > 1 else ''}: {out[-1]:.3f} s/epoch", flush=True)
    return statistics.median(t1), statistics.median(t2)


def worker(args) -> None:
    """One rank of the all-reduce measurement (run under torchrun)."""
    import torch
    import torch.distributed as dist

    from trainlab.api import build_components
    from trainlab.engine import distributed as D
    from trainlab.recipe import load_recipe

    ctx = D.from_env()
    recipe = load_recipe(args.recipe, {"train.device": args.device, "train.threads": 1, "doctor.enabled": False})
    D.setup(ctx)
    trainer = build_components(recipe, dist=ctx)
    sync = "cuda" if trainer.device.type == "cuda" else None
    batches = [trainer.to_device(b) for b in trainer.train_loader.batches(0)]
    grads = sum(p.numel() for p in trainer.params)

    def block(no_sync: bool, steps: int) -> float:
        t0 = time.perf_counter()
        for i in range(steps):
            with trainer.ddp.no_sync() if no_sync else torch.enable_grad():
                _, _, total = trainer.compute_loss(batches[i % len(batches)])
                total.backward()
            trainer.optimizer.zero_grad(set_to_none=True)
        if sync:
            torch.cuda.synchronize()
        dist.barrier()
        return (time.perf_counter() - t0) / steps

    block(False, 5), block(True, 5)
    with_sync, without = [], []
    for _ in range(args.blocks):
        with_sync.append(block(False, args.steps))
        without.append(block(True, args.steps))
    flat = torch.zeros(grads, device=trainer.device)
    bare = []
    for i in range(args.steps * args.blocks + 5):
        t0 = time.perf_counter()
        dist.all_reduce(flat)
        if sync:
            torch.cuda.synchronize()
        if i >= 5:
            bare.append(time.perf_counter() - t0)
    agree = []
    for i in range(args.steps * args.blocks + 5):
        t0 = time.perf_counter()
        D.agree([0, 0])
        if i >= 5:
            agree.append(time.perf_counter() - t0)
    if ctx.main:
        print(json.dumps({"params": grads, "step_sync_ms": 1e3 * statistics.median(with_sync),
                          "step_nosync_ms": 1e3 * statistics.median(without),
                          "allreduce_ms": 1e3 * statistics.median(bare), "agree_ms": 1e3 * statistics.median(agree),
                          "backend": dist.get_backend()}))
    D.leave_together()
    D.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="digits-cnn")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is left out)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each side, alternated")
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    ap.add_argument("--steps", type=int, default=20, help="steps per timed block (all-reduce part)")
    ap.add_argument("--blocks", type=int, default=5, help="timed blocks of each kind (all-reduce part)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"{args.recipe} on {args.device}, one thread per process; the machine may be shared (timings noisy)")
    t1, t2 = scaling(args)
    efficiency = t1 / t2 / 2
    print(f"epoch time: 1 process {t1:.3f} s, 2 processes {t2:.3f} s; speed-up {t1 / t2:.2f}x")
    me = [a for a in sys.argv[1:] if a not in ("--worker",)]
    proc = subprocess.run([*torchrun(2), str(Path(__file__).resolve()), "--worker", *me], env=env(),
                          capture_output=True, text=True)
    if proc.returncode:  # the workers' own lines, not only torchrun's summary
        sys.exit("\n".join(line for line in proc.stderr.splitlines() if "elastic" not in line)[-4000:])
    m = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    print(f"per step ({m['backend']}, {m['params']:,} gradient values): forward+backward {m['step_sync_ms']:.2f} ms "
          f"with the all-reduce, {m['step_nosync_ms']:.2f} ms without (no_sync): all-reduce "
          f"{m['step_sync_ms'] - m['step_nosync_ms']:.2f} ms/step; bare all_reduce of the gradients "
          f"{m['allreduce_ms']:.3f} ms; trainlab's stop/save agreement {m['agree_ms']:.3f} ms")
    print(f"scaling efficiency (2 processes over 1) = {efficiency:.2f}")


if __name__ == "__main__":
    main()
