"""trainlab ensemble RUN [RUN ...] [--method mean|vote|weighted] [--split test] [--snapshots] [--out FILE]"""
from __future__ import annotations

from pathlib import Path


def add_arguments(p):
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="classification run directories of one class list and data set (a bagging/boosting run "
                        "stands for its members)")
    p.add_argument("--method", default="mean", help="mean: average the probabilities; vote: majority vote (ties: "
                   "higher mean probability, then lower class index); weighted: average weighted by each member's "
                   "validation accuracy")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--snapshots", action="store_true",
                   help="the members are the one RUN's snapshot checkpoints (train.snapshots=true)")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="write the metrics here (default ensemble-METHOD-SPLIT.json in the current folder); the "
                        "runs are only read")


def run(args) -> int:
    from ..atomic import write_json
    from ..ensemble import METHODS, evaluate_ensemble, format_table
    from ..errors import RecipeError
    from ..run import open_run
    from .outputs import check_output, make_parent

    if args.method not in METHODS:  # before any run is read
        raise RecipeError(f"--method: unknown method {args.method!r}; known: {', '.join(METHODS)}")
    out = check_output(args.out or f"ensemble-{args.method}-{args.split}.json", "--out", suffix=".json")
    for path in args.runs:  # the runs are only read: no file of theirs is replaced
        if out.is_file() and out.resolve().is_relative_to(Path(path).resolve()):
            raise RecipeError(f"--out {str(out)!r}: is a file of run {path}; write the ensemble's JSON elsewhere")
    result = evaluate_ensemble(args.runs, args.method, args.split, args.checkpoint, args.snapshots)
    lines = format_table(result)
    for line in lines[: lines.index("")]:  # the scalar metrics, then the task's per-class tables
        print(line)
    for line in open_run(args.runs[0]).task().describe_metrics(result):
        print(line)
    for line in lines[lines.index(""):]:
        print(line)
    write_json(make_parent(out, "--out"), result)
    print(f"\nwritten: {out}")
    return 0
