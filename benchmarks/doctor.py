"""Cost of the training doctor: step time with the default monitoring over step time without.

Two trainers are built from the same recipe and seed; one carries the Doctor callback with the
default ``doctor.*`` options (sampling every 10 steps, liveness hooks, input statistics, rules at
each epoch end). Their epochs are interleaved (plain, doctor, plain, doctor, ...) so that both see
the same machine load, and each epoch's training steps are timed from the epoch start to the last
batch end (validation excluded; the doctor's epoch-end rules and doctor.json write are timed
separately and reported as a second ratio over the whole epoch).

    PYTHONPATH=src python benchmarks/doctor.py [--recipe digits-cnn] [--repeats 12]

Last line: ``doctor overhead = <median step-time ratio>`` (goal <= 1.05).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def account_doctor_time() -> dict[str, float]:
    """Wrap the Doctor's per-step events and its hook statistics with timers (epoch-end work is
    excluded: it is timed by the epoch ratio). Returns the running total in seconds."""
    from trainlab.doctor import monitors

    spent = {"s": 0.0}

    def timed(fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent["s"] += time.perf_counter() - t0
        return wrapper

    for name in ("on_epoch_start", "on_after_backward", "on_batch_end"):
        setattr(monitors.Doctor, name, timed(getattr(monitors.Doctor, name)))
    for name in ("unit_alive", "channel_moments"):
        setattr(monitors, name, timed(getattr(monitors, name)))
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="digits-cnn")
    parser.add_argument("--repeats", type=int, default=20, help="timed epochs per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed epochs per variant first")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch

    from trainlab.api import build_components
    from trainlab.doctor import Doctor
    from trainlab.engine.callbacks import Callback
    from trainlab.recipe import load_recipe
    from trainlab.run import Run

    if args.threads:
        torch.set_num_threads(args.threads)
    total = args.repeats + args.warmup
    recipe = load_recipe(args.recipe, {"train.epochs": total, "train.early_stop": None, "run.tensorboard": False,
                                       "run.plots": False, "train.progress": False})

    class Start(Callback):
        def on_epoch_start(self, trainer):
            self.t0 = time.perf_counter()

    class End(Callback):
        def on_batch_end(self, trainer, batch, outputs, loss):
            self.t1 = time.perf_counter()

        def on_epoch_end(self, trainer, record):
            self.t2 = time.perf_counter()

    tmp = Path(tempfile.mkdtemp())
    spent = account_doctor_time()
    variants = {}
    for name in ("plain", "doctor"):
        start, end = Start(), End()
        cbs = [start]
        if name == "doctor":
            run = Run(tmp / "run")
            run.dir.mkdir(parents=True)
            cbs.append(Doctor(recipe.doctor, run, quiet=True))
        cbs.append(end)
        trainer = build_components(recipe, cbs)
        for cb in trainer.callbacks:
            cb.on_fit_start(trainer)
        variants[name] = (trainer, start, end, [], [])

    for i in range(total):
        for name, (trainer, start, end, steps, epochs) in variants.items():
            trainer.train_epoch()
            if i >= args.warmup:
                steps.append((end.t1 - start.t0) / len(trainer.train_loader))
                epochs.append(end.t2 - start.t0)

    print(f"recipe {args.recipe}: {len(variants['plain'][0].train_loader)} steps per epoch, {args.repeats} timed "
          f"epochs per variant (interleaved), torch threads {torch.get_num_threads()}")
    med = {}
    for name, (trainer, _, _, steps, epochs) in variants.items():
        med[name] = (statistics.median(steps), statistics.median(epochs))
        print(f"  {name:<7} step {1e3 * med[name][0]:.3f} ms (min {1e3 * min(steps):.3f}, max {1e3 * max(steps):.3f})"
              f"   epoch incl. validation {1e3 * med[name][1]:.1f} ms")
    n_steps = sum(len(v[0].train_loader) for v in [variants["doctor"]]) * total
    own = spent["s"] / n_steps
    print(f"  the doctor's own time (callback events and hooks, measured inside them): {1e6 * own:.1f} us per step "
          f"= {100 * own / med['plain'][0]:.1f}% of a plain step")
    ratios = [d / p for p, d in zip(variants["plain"][3], variants["doctor"][3])]
    print(f"  per-pair step ratio: median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, "
          f"max {max(ratios):.3f}")
    print(f"  epoch ratio (with the doctor's epoch-end rules and doctor.json write): "
          f"{med['doctor'][1] / med['plain'][1]:.3f}")
    print(f"doctor overhead = {med['doctor'][0] / med['plain'][0]:.3f}")


if __name__ == "__main__":
    main()
