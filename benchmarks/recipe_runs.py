"""A built-in recipe run as a user runs it, for the quality benchmarks (segmentation.py, detection.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def run_recipe(name: str, overrides: list[str], folder: Path) -> dict:
    """`trainlab fit NAME --quiet` as a whole process in ``folder/NAME``: its summary, its epoch
    records and the process's wall time (start-up, training, evaluation, plots, report)."""
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run_dir = folder / name
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "trainlab", "fit", name, "--quiet", f"run.dir={run_dir}",
                           "--force", *overrides], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"trainlab fit {name} failed:\n{proc.stderr}")
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"summary": summary, "epochs": [r for r in records if "event" not in r], "wall": wall, "dir": run_dir}
