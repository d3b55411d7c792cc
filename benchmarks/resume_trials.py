"""Kill-and-resume trials: stop `trainlab fit` at random moments, resume, compare weights.

Three kinds of trial, each ending in a comparison of checkpoints/last.safetensors with an
uninterrupted run's, bit for bit:

- SIGKILL: a real `trainlab fit` is killed after a random delay (so the kill lands anywhere:
  start-up, mid-step, mid-epoch, between epochs, inside a checkpoint write), then
  `trainlab fit --resume` runs until the run completes (killed again with probability 1/3). Half
  of the trials use 2 loader workers with per-sample augmentation.
- SIGTERM (preemption): the same with SIGTERM, sent to the main process as Kubernetes does, at a
  random moment after a checkpoint of the run (while it trains). It must exit 143 with one line
  saying how to resume (or end at once, -15, when the signal comes after training ended, where
  there is nothing to save; the resume then finishes). Each trial lists the exit codes of its
  stopped processes.
- concurrent writers: a run SIGKILLed at a random moment is resumed by 7 `trainlab fit --resume`
  processes started together, 4 with train.epochs=3 and 3 with train.epochs=4. Each must exit 0
  (it trained, or found the run finished) or 2 with one line naming the process that holds the
  run, and no epoch may be trained by two of them (their printed tables); afterwards
  recipe.yaml's train.epochs must be the number of epochs in the checkpoint, whose weights must
  be an uninterrupted run's of that many epochs. (These runs keep a constant LR: a cosine
  schedule is drawn over train.epochs, so a 3-epoch run resumed to 4 is no 4-epoch run.) Before
  the run lock, every trial failed: epochs trained by two writers at once.

    python benchmarks/resume_trials.py [--trials 20] [--sigterm-trials 10] [--writer-trials 5] [--seed 0]

Last line: ``bitwise equal = <equal>/<trials>`` over all trials.
"""
from __future__ import annotations

import argparse
import json
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
WRITERS = ["train.epochs=3"] * 4 + ["train.epochs=4"] * 3
CONSTANT = ["schedule.name=none"]


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")


def start(args: list[str], stdout=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trainlab", "fit", *args], env=env(),
                            stdout=stdout, stderr=subprocess.PIPE, text=True)


def trained_epochs(table: str) -> list[int]:
    """The epochs of the rows of a fit's printed table (the lines after its header)."""
    lines = table.splitlines()
    head = next((i for i, line in enumerate(lines) if line.split()[:1] == ["epoch"]), len(lines))
    return [int(line.split()[0]) for line in lines[head + 1:] if line.split()[:1] and line.split()[0].isdigit()]


def mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def fit(args: list[str], stop_after: float | None, sig: int = signal.SIGKILL, training: Path | None = None) -> int:
    """Exit code of `trainlab fit ARGS`, sent ``sig`` after ``stop_after`` seconds if still running;
    with ``training`` (a run), the seconds count from its next checkpoint, once training is under way."""
    before = mtime(training / "checkpoints" / "last.json") if training else None
    p = start(args)
    if training is not None and stop_after is not None:
        while p.poll() is None and mtime(training / "checkpoints" / "last.json") == before:
            time.sleep(0.01)
    if stop_after is not None:
        try:
            p.wait(timeout=stop_after)
        except subprocess.TimeoutExpired:
            p.send_signal(sig)
    _, err = p.communicate()
    expected = {0, -sig}
    if sig == signal.SIGTERM:
        expected.add(143)
    if p.returncode not in expected:
        sys.exit(f"unexpected exit {p.returncode}: {err}")
    if p.returncode == 143:
        lines = [line for line in err.splitlines() if line.strip()]
        if len(lines) != 1 or "stopped by SIGTERM" not in lines[0] or "trainlab fit --resume" not in lines[0]:
            sys.exit(f"SIGTERM: expected one line saying how to resume, got: {err}")
    return p.returncode


def weights(run: Path):
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(run / "checkpoints" / "last.safetensors").items() if k.startswith("model.")}


def same(a, b) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def stop_and_resume(run: Path, first: list[str], window: tuple[float, float], rng: random.Random,
                    sig: int) -> tuple[float, list[int]]:
    """Stop a fresh fit with ``sig`` at a random moment of ``window`` (seconds after its start),
    resume until it completes (stopping it again with probability 1/3); returns (first delay, the
    exit codes of the stopped processes)."""
    during = run if sig == signal.SIGTERM else None  # preemption while training: there is a step to finish
    delay = rng.uniform(*window)
    code = fit(first, delay, sig, during)
    stopped = []
    while code != 0:
        stopped.append(code)
        again = rng.uniform(*window) if rng.random() < 1 / 3 else None
        # Stopped before the run directory held its recipe: a user simply runs fit again.
        started = (run / "recipe.yaml").exists()
        code = fit(["--resume", str(run), "--quiet"] if started else first, again, sig, during)
    return delay, stopped


def concurrent_writers(run: Path, first: list[str], duration: float, rng: random.Random) -> tuple[dict[int, int], str]:
    """SIGKILL a fresh fit at random, then resume it with WRITERS at once; returns (exit code
    counts, a problem or '')."""
    while True:
        fit(first, rng.uniform(0.3, duration))
        if (run / "recipe.yaml").exists():
            break
    procs = [start(["--resume", str(run), extra], stdout=subprocess.PIPE) for extra in WRITERS]
    codes: dict[int, int] = {}
    trained: list[int] = []
    for p in procs:
        out, err = p.communicate()
        codes[p.returncode] = codes.get(p.returncode, 0) + 1
        trained += trained_epochs(out)
        lines = [line for line in err.splitlines() if line.strip()]
        if p.returncode == 2 and not (len(lines) == 1 and "being written by another trainlab process" in lines[0]):
            return codes, f"a refused writer did not name the holder: {err.strip()}"
        if p.returncode not in (0, 2):
            return codes, f"exit {p.returncode}: {err.strip()}"
    if 0 not in codes:
        return codes, "no writer trained the run"
    twice = sorted({e for e in trained if trained.count(e) > 1})
    if twice:
        return codes, f"epoch(s) {twice} trained by two writers at once"
    if list((run / "checkpoints").glob(".*.tmp-*")):
        return codes, "temporary files left behind"
    return codes, ""


def recipe_epochs(run: Path) -> int:
    import yaml

    return yaml.safe_load((run / "recipe.yaml").read_text())["train"]["epochs"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20, help="SIGKILL trials")
    ap.add_argument("--sigterm-trials", type=int, default=10)
    ap.add_argument("--writer-trials", type=int, default=5, help="concurrent-writer trials")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    rng = random.Random(a.seed)
    tmp = Path(tempfile.mkdtemp(prefix="trainlab-resume-"))
    refs, durations, training = {}, {}, {}
    for name, extra in (("w0", []), ("w2", AUGMENT), ("c3", CONSTANT), ("c4", [*CONSTANT, "train.epochs=4"])):
        if name.startswith("c") and not a.writer_trials:
            continue
        t0 = time.perf_counter()
        fit([f"run.dir={tmp / name}", *BASE, *extra], None)
        durations[name] = time.perf_counter() - t0
        training[name] = json.loads((tmp / name / "summary.json").read_text())["train_time_s"]
        refs[name] = weights(tmp / name)
    equal = total = 0
    for kind, n, sig in (("sigkill", a.trials, signal.SIGKILL), ("sigterm", a.sigterm_trials, signal.SIGTERM)):
        ok = 0
        for i in range(n):
            variant = "w2" if i % 2 else "w0"
            run = tmp / f"{kind}{i}"
            first = [f"run.dir={run}", *BASE, *(AUGMENT if variant == "w2" else [])]
            # SIGKILL anywhere; SIGTERM within the training time after a checkpoint (a preemption)
            window = (0.3, durations[variant]) if sig == signal.SIGKILL else (0.0, training[variant])
            delay, stopped = stop_and_resume(run, first, window, rng, sig)
            good = same(weights(run), refs[variant])
            ok += good
            how = f"{len(stopped)} stop(s), exit {', '.join(map(str, stopped))}" if stopped else "finished first"
            print(f"{kind} trial {i:2d} ({variant}): stopped after {delay:5.2f} s, {how}: "
                  f"{'bitwise equal' if good else 'DIFFERENT'}", flush=True)
        if n:
            print(f"{kind}: bitwise equal = {ok}/{n}", flush=True)
        equal, total = equal + ok, total + n
    ok = 0
    for i in range(a.writer_trials):
        run = tmp / f"writers{i}"
        codes, problem = concurrent_writers(run, [f"run.dir={run}", *BASE, *CONSTANT], durations["c3"], rng)
        if not problem:
            epochs = json.loads((run / "checkpoints" / "last.json").read_text())["epoch"]
            if recipe_epochs(run) != epochs:
                problem = f"recipe.yaml says {recipe_epochs(run)} epochs, the checkpoint holds {epochs}"
            elif not same(weights(run), refs[f"c{epochs}"]):
                problem = f"weights differ from the uninterrupted {epochs}-epoch run's"
        ok += not problem
        exits = ", ".join(f"{n} x exit {c}" for c, n in sorted(codes.items()))
        print(f"writers trial {i:2d}: {len(WRITERS)} concurrent resumes ({exits}): "
              f"{problem or 'recipe and checkpoint agree, bitwise equal'}", flush=True)
    if a.writer_trials:
        print(f"concurrent writers: consistent and bitwise equal = {ok}/{a.writer_trials}", flush=True)
    equal, total = equal + ok, total + a.writer_trials
    print(f"bitwise equal = {equal}/{total}")


if __name__ == "__main__":
    main()
