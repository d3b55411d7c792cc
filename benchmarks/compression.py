"""Benchmark: smaller and faster models (T8) on a built-in data set, measured side by side.

1. Distillation: a teacher (`--teacher-model`, resnet18 by default) is trained once on the whole
   training split; the student (a cnn) is trained alone and with `distill.teacher=<teacher>` for each
   seed, both for the same number of epochs and keeping their best epoch by validation accuracy;
   prints test accuracy of both and the gain (goal: >= 0.5 points on the mean).
   Both data sets in the setting of Hinton et al. 2015, section 5 ("soft targets as regularizers"):
   students see `--subset` labelled training images, the teacher was trained on the whole split.
   - digits: student cnn width 32 on 150 images, 300 epochs. On the whole digits split every cnn
     that can follow the teacher is already at its accuracy (99.3%, 2 of 270 test images wrong), so
     there is no gap to close (`--subset 0 --epochs 100` measures it anyway).
   - shapes: student cnn width 8 on 300 images, 150 epochs (`--subset 0 --epochs 60`: the whole
     split, where the student alone comes within a point of the teacher).
   Students run every epoch (no early stop): a distilled student learns more slowly (the soft loss's
   gradient is about (z_student - z_teacher) / classes per logit), and cut short it loses to the
   student alone.
2. Pruning: the student trained alone (first seed) pruned at 50% and 80% (global magnitude) and
   fine-tuned `--fine-tune` epochs with the zeros kept: test accuracy before and after, and CPU
   latency per batch (dense kernels: unstructured zeros do not make it faster; 50% structured
   channels are reported too).
3. int8: static quantization of the same student: accuracy change (goal: within 1 point) and CPU
   latency per batch (goal: >= 1.5x faster).

    python benchmarks/compression.py [--data digits|shapes] [--seeds 3] [--subset N] [--epochs N] [--out DIR]

A finished run in `--out` whose recipe is the one this call would train (the teacher, a student;
its run.dir and train.threads aside) is read, not trained again, so an interrupted call goes on
where it stopped.
The last line is ``int8 speed-up = <float latency / int8 latency>``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

import trainlab  # noqa: E402
from trainlab.compress import batch_latency, prune_run, quantize_run, training_batch  # noqa: E402
from trainlab.recipe import load_recipe  # noqa: E402
from trainlab.run import open_run  # noqa: E402

QUIET = {"train.progress": False, "run.plots": False, "run.tensorboard": False}
# every epoch runs; the best one by validation accuracy is kept, alone and distilled alike: a distilled
# student's cross-entropy at T = 1 (val_loss) rises as it copies the teacher's confident logits
STUDENT = {"train.early_stop.monitor": "val_accuracy", "train.early_stop.patience": 1000}
SETUPS = {
    # data: (student recipe, its overrides, default labelled subset, default epochs), (teacher recipe, overrides)
    "digits": (("digits-cnn", {"model.width": 32, "model.depth": 2, "model.dropout": 0.0, **STUDENT}, 150, 300),
               # no label smoothing for the teacher: a smoothed teacher's soft targets lose the
               # similarities between classes that distillation passes on (Müller et al. 2019)
               ("digits-cnn", {"model.name": "resnet18", "optim.lr": 0.001, "train.epochs": 20,
                               "loss.label_smoothing": 0.0})),
    "shapes": (("shapes-cnn", {"model.width": 8, **STUDENT}, 300, 150),
               ("shapes-cnn", {"model.name": "resnet18", "optim.lr": 0.001, "loss.label_smoothing": 0.0})),
}


def fit_once(recipe: str, overrides: dict, run_dir: Path):
    """The run of ``recipe`` with ``overrides`` in ``run_dir``: a finished run of exactly that recipe
    found there (trained there, or copied there from another folder) is opened, not trained again;
    anything else there is replaced."""
    overrides = {**QUIET, **overrides, "run.dir": str(run_dir)}
    if (run_dir / "summary.json").exists():
        done = open_run(run_dir)
        found, wanted = done.recipe().model_dump(), load_recipe(recipe, overrides).model_dump()
        for recipe_dict in (found, wanted):  # where and on how many threads it ran are not the recipe
            recipe_dict["run"].pop("dir"), recipe_dict["train"].pop("threads")
        if found == wanted:
            return done
    return trainlab.fit(recipe, quiet=True, force=True, **overrides)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=sorted(SETUPS), default="digits")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--teacher-model", default=None, help="override the teacher's model.name")
    ap.add_argument("--temperature", type=float, default=4.0, help="distill.temperature (default 4)")
    ap.add_argument("--alpha", type=float, default=0.9, help="distill.alpha (default 0.9)")
    ap.add_argument("--subset", type=int, default=None,
                    help="labelled training images the students see (digits 150, shapes 300; 0: the whole split)")
    ap.add_argument("--epochs", type=int, default=None, help="students' epochs (digits 300, shapes 150)")
    ap.add_argument("--fine-tune", type=int, default=5, help="fine-tuning epochs after pruning (default 5)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the latencies (default: torch's)")
    args = ap.parse_args()
    threads = args.threads or torch.get_num_threads()
    folder = args.out or Path(tempfile.mkdtemp(prefix="trainlab-compress-"))
    (student, s_over, subset, epochs), (teacher, t_over) = SETUPS[args.data]
    subset = subset if args.subset is None else args.subset
    s_over = {**s_over, "train.epochs": epochs if args.epochs is None else args.epochs,
              **({"data.subset": subset} if subset else {})}
    if args.teacher_model:
        t_over = {**t_over, "model.name": args.teacher_model}
    t_run = fit_once(teacher, t_over, folder / "teacher")
    print(f"teacher {t_over['model.name']} (whole training split): test accuracy "
          f"{t_run.summary()['test']['accuracy']:.4f}")
    print(f"students: {student} width {s_over['model.width']}, {s_over['train.epochs']} epochs, "
          f"{f'{subset} labelled training images' if subset else 'the whole training split'}; "
          f"distilled at T = {args.temperature:g}, alpha = {args.alpha:g}")

    alone, distilled = [], []
    for seed in range(args.seeds):
        a = fit_once(student, {**s_over, "seed": seed}, folder / f"alone-{seed}")
        d = fit_once(student, {**s_over, "seed": seed, "distill.teacher": str(t_run.dir),
                               "distill.temperature": args.temperature, "distill.alpha": args.alpha},
                     folder / f"distilled-{seed}")
        alone.append(a.summary()["test"]["accuracy"])
        distilled.append(d.summary()["test"]["accuracy"])
        print(f"seed {seed}: student alone {alone[-1]:.4f}, distilled {distilled[-1]:.4f}", flush=True)
    gain = 100 * (statistics.mean(distilled) - statistics.mean(alone))
    spread = 100 * statistics.stdev(d - a for d, a in zip(distilled, alone)) if args.seeds > 1 else 0.0
    print(f"distillation gain = {gain:+.2f} points (mean of {args.seeds} seeds, sd of the per-seed gain "
          f"{spread:.2f}; goal >= 0.5)")

    base = open_run(folder / "alone-0")
    batch = training_batch(base, 64)

    def latency(model) -> float:
        # fine-tuning (a fit) sets torch's thread count for its own run: every latency here is
        # measured on the same number of threads
        torch.set_num_threads(threads)
        return batch_latency(model, batch)

    dense = latency(base.load_model()[0])
    for amount, structured in ((0.5, False), (0.8, False), (0.5, True)):
        t = prune_run(base, amount, structured, epochs=args.fine_tune, out=folder / f"pruned-{amount}-{structured}",
                      force=True)
        m = open_run(t["run"]).load_model()[0]
        kind = "structured" if structured else "global"
        print(f"pruned {100 * amount:.0f}% {kind} + {args.fine_tune} epochs: test accuracy "
              f"{t['before']['accuracy']:.4f} -> {t['after']['accuracy']:.4f}, latency {1000 * dense:.2f} -> "
              f"{1000 * latency(m):.2f} ms per batch of 64 on {threads} threads (dense kernels)")
    torch.set_num_threads(threads)
    q = quantize_run(base, "static", out=folder / "int8.pt")
    print(f"int8 (static): test accuracy {q['float']['accuracy']:.4f} -> {q['int8']['accuracy']:.4f} "
          f"({100 * (q['int8']['accuracy'] - q['float']['accuracy']):+.2f} points), {q['float']['bytes']} -> "
          f"{q['int8']['bytes']} bytes")
    print(f"int8 speed-up = {q['float']['latency_s'] / q['int8']['latency_s']:.2f}")


if __name__ == "__main__":
    main()
