"""The default recipe as a new user runs it: `trainlab fit` on digits, timed as a whole process.

    python benchmarks/digits.py [--seeds 0 1 2]

Prints, per seed, the test accuracy and the process wall time (start-up, training, evaluation,
plots and report included); last line ``digits test accuracy = <mean>`` (goal >= 0.98 in < 60 s).
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

SRC = Path(__file__).resolve().parents[1] / "src"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    accs, walls = [], []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "trainlab", "fit", "--quiet", f"seed={seed}",
                                   f"run.dir={tmp}/run"], env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"trainlab fit failed:\n{proc.stderr}")
            summary = json.loads((Path(tmp) / "run" / "summary.json").read_text())
        acc = summary["test"]["accuracy"]
        accs.append(acc)
        walls.append(wall)
        print(f"seed {seed}: test accuracy {acc:.4f}, epochs {summary['epochs_run']}, "
              f"training {summary['train_time_s']:.1f} s, process {wall:.1f} s")
    print(f"process wall time = {statistics.mean(walls):.1f} s (max {max(walls):.1f})")
    print(f"digits test accuracy = {statistics.mean(accs):.4f}")


if __name__ == "__main__":
    main()
