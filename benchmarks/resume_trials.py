"""Kill-and-resume trials: SIGKILL `trainlab fit` at random moments, resume, compare weights.

Each trial starts a real `trainlab fit` process, kills it with SIGKILL after a random delay (so the
kill lands anywhere: start-up, mid-step, mid-epoch, between epochs, inside a checkpoint write),
runs `trainlab fit --resume` until the run completes (killing it again with probability 1/3), and
compares checkpoints/last.safetensors with an uninterrupted run's, bit for bit. Half of the trials
use 2 loader workers with per-sample augmentation.

    python benchmarks/resume_trials.py [--trials 20] [--seed 0]

Last line: ``bitwise equal = <equal>/<trials>``.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
BASE = ["train.threads=1", "train.epochs=3", "train.checkpoint_every_steps=5", "train.progress=false",
        "run.tensorboard=false", "run.plots=false", "model.width=8", "model.dropout=0.3",
        "train.ema.decay=0.9", "--quiet"]
AUGMENT = ["data.workers=2", "data.augment=[{name: rotate, degrees: 10}]"]


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")


def fit(args: list[str], kill_after: float | None) -> int:
    p = subprocess.Popen([sys.executable, "-m", "trainlab", "fit", *args], env=env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        try:
            p.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
    _, err = p.communicate()
    if p.returncode not in (0, -signal.SIGKILL):
        sys.exit(f"unexpected exit {p.returncode}: {err}")
    return p.returncode


def weights(run: Path):
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(run / "checkpoints" / "last.safetensors").items() if k.startswith("model.")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import torch

    rng = random.Random(a.seed)
    tmp = Path(tempfile.mkdtemp(prefix="trainlab-resume-"))
    refs, durations = {}, {}
    for name, extra in (("w0", []), ("w2", AUGMENT)):
        t0 = time.perf_counter()
        fit([f"run.dir={tmp / name}", *BASE, *extra], None)
        durations[name] = time.perf_counter() - t0
        refs[name] = weights(tmp / name)
    equal = 0
    for i in range(a.trials):
        variant = "w2" if i % 2 else "w0"
        extra = AUGMENT if variant == "w2" else []
        run = tmp / f"trial{i}"
        delay = rng.uniform(0.3, durations[variant])
        kills = 1
        first = [f"run.dir={run}", *BASE, *extra]
        code = fit(first, delay)
        while code != 0:
            again = rng.uniform(0.3, durations[variant]) if rng.random() < 1 / 3 else None
            kills += again is not None
            # Killed before the run directory held its recipe: a user simply runs fit again.
            started = (run / "recipe.yaml").exists()
            code = fit(["--resume", str(run), "--quiet"] if started else first, again)
        got = weights(run)
        same = got.keys() == refs[variant].keys() and all(torch.equal(got[k], refs[variant][k]) for k in got)
        equal += same
        print(f"trial {i:2d} ({variant}): killed after {delay:5.2f} s, {kills} kill(s): "
              f"{'bitwise equal' if same else 'DIFFERENT'}", flush=True)
    print(f"bitwise equal = {equal}/{a.trials}")


if __name__ == "__main__":
    main()
