"""Benchmark: smaller and faster models (T8) on a built-in data set, measured side by side.

1. Distillation: a teacher (`--teacher-model`, resnet18 by default) is trained once; the student
   recipe (digits-cnn at a smaller width, or shapes-cnn) is trained alone and with
   `distill.teacher=<teacher>` for each seed; prints test accuracy of both and the gain (goal:
   >= 0.5 points on the mean).
2. Pruning: the student trained alone (first seed) pruned at 50% and 80% (global magnitude) and
   fine-tuned `--fine-tune` epochs with the zeros kept: test accuracy before and after, and CPU
   latency per batch (dense kernels: unstructured zeros do not make it faster; 50% structured
   channels are reported too).
3. int8: static quantization of the same student: accuracy change (goal: within 1 point) and CPU
   latency per batch (goal: >= 1.5x faster).

    python benchmarks/compression.py [--data digits|shapes] [--seeds 3] [--out DIR]

The last line is ``int8 speed-up = <float latency / int8 latency>``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import trainlab  # noqa: E402
from trainlab.compress import batch_latency, prune_run, quantize_run, training_batch  # noqa: E402
from trainlab.run import open_run  # noqa: E402

QUIET = {"train.progress": False, "run.plots": False, "run.tensorboard": False}
SETUPS = {
    # data: (student recipe and overrides, teacher recipe and overrides)
    # Students keep their best epoch by validation accuracy, alone and distilled alike: a distilled
    # student copies the teacher's confident logits, so its cross-entropy at T = 1 (val_loss) rises
    # while its accuracy still improves, and a val_loss monitor keeps an early, worse epoch.
    "digits": (("digits-cnn", {"model.width": 16, "model.depth": 1, "model.dropout": 0.0,
                               "train.early_stop.monitor": "val_accuracy"}),
               # no label smoothing for the teacher: a smoothed teacher's soft targets lose the
               # similarities between classes that distillation passes on (Müller et al. 2019)
               ("digits-cnn", {"model.name": "resnet18", "optim.lr": 0.001, "train.epochs": 20,
                               "loss.label_smoothing": 0.0})),
    "shapes": (("shapes-cnn", {"model.width": 8, "train.early_stop.monitor": "val_accuracy"}),
               ("shapes-cnn", {"model.name": "resnet18", "optim.lr": 0.001, "loss.label_smoothing": 0.0})),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=sorted(SETUPS), default="digits")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--teacher-model", default=None, help="override the teacher's model.name")
    ap.add_argument("--temperature", type=float, default=2.0, help="distill.temperature (default 2)")
    ap.add_argument("--alpha", type=float, default=0.5, help="distill.alpha (default 0.5)")
    ap.add_argument("--fine-tune", type=int, default=5, help="fine-tuning epochs after pruning (default 5)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="trainlab-compress-"))
    (student, s_over), (teacher, t_over) = SETUPS[args.data]
    if args.teacher_model:
        t_over = {**t_over, "model.name": args.teacher_model}
    t_dir = folder / "teacher"
    if (t_dir / "summary.json").exists():  # a teacher from an earlier run of this script into --out
        t_run = open_run(t_dir)
    else:
        t_run = trainlab.fit(teacher, quiet=True, force=True, **QUIET, **t_over, **{"run.dir": str(t_dir)})
    print(f"teacher {t_over['model.name']}: test accuracy {t_run.summary()['test']['accuracy']:.4f}")

    alone, distilled = [], []
    for seed in range(args.seeds):
        a = trainlab.fit(student, quiet=True, force=True, **QUIET, **s_over,
                         **{"seed": seed, "run.dir": str(folder / f"alone-{seed}")})
        d = trainlab.fit(student, quiet=True, force=True, **QUIET, **s_over,
                         **{"seed": seed, "run.dir": str(folder / f"distilled-{seed}"), "distill.teacher": str(t_run.dir),
                            "distill.temperature": args.temperature, "distill.alpha": args.alpha})
        alone.append(a.summary()["test"]["accuracy"])
        distilled.append(d.summary()["test"]["accuracy"])
        print(f"seed {seed}: student alone {alone[-1]:.4f}, distilled {distilled[-1]:.4f}")
    gain = 100 * (statistics.mean(distilled) - statistics.mean(alone))
    print(f"distillation gain = {gain:+.2f} points (mean of {args.seeds} seeds; goal >= 0.5)")

    base = open_run(folder / "alone-0")
    batch = training_batch(base, 64)
    dense = batch_latency(base.load_model()[0], batch)
    for amount, structured in ((0.5, False), (0.8, False), (0.5, True)):
        t = prune_run(base, amount, structured, epochs=args.fine_tune, out=folder / f"pruned-{amount}-{structured}",
                      force=True)
        m = open_run(t["run"]).load_model()[0]
        print(f"pruned {100 * amount:.0f}% {'structured' if structured else 'global'} + {args.fine_tune} epochs: test accuracy "
              f"{t['before']['accuracy']:.4f} -> {t['after']['accuracy']:.4f}, latency {1000 * dense:.2f} -> "
              f"{1000 * batch_latency(m, batch):.2f} ms per batch of 64 (dense kernels)")
    q = quantize_run(base, "static", out=folder / "int8.pt")
    print(f"int8 (static): test accuracy {q['float']['accuracy']:.4f} -> {q['int8']['accuracy']:.4f} "
          f"({100 * (q['int8']['accuracy'] - q['float']['accuracy']):+.2f} points), {q['float']['bytes']} -> "
          f"{q['int8']['bytes']} bytes")
    print(f"int8 speed-up = {q['float']['latency_s'] / q['int8']['latency_s']:.2f}")


if __name__ == "__main__":
    main()
