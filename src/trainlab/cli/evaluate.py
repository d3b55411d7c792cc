"""trainlab evaluate RUN [--split val|test] [--checkpoint best|last] [--json FILE]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("run", help="run directory written by trainlab fit")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--json", metavar="FILE", help="write the metrics to FILE (missing folders are created) instead of "
                   "RUN/eval-SPLIT-CHECKPOINT.json: the run is then only read, so it may be read-only")


def run(args) -> int:
    import os

    from ..atomic import write_json
    from ..errors import RunError
    from ..run import open_run
    from .outputs import check_output, make_parent

    run = open_run(args.run)
    # Checked before the evaluation, which rebuilds the data and runs the model over a split.
    out = check_output(args.json, "--json", suffix=None) if args.json else None
    if out is None and not os.access(run.dir, os.W_OK):  # a read-only run is evaluated with --json
        raise RunError(f"cannot write {run.dir / f'eval-{args.split}-{args.checkpoint}.json'} (the run folder is "
                       "read-only); pass --json FILE to write the metrics elsewhere")
    # Evaluating reads the run only: the metrics go to --json, or beside the checkpoints without it.
    m = run.evaluate(args.split, args.checkpoint, write=False)
    print(f"{args.split} split, {args.checkpoint} checkpoint (epoch {m.get('epoch')}), {m['n']} samples")
    for key, value in m.items():
        if isinstance(value, float):
            print(f"  {key:<18} {value:.4f}")
    for line in run.task().describe_metrics(m):  # the task's per-class tables
        print(line)
    target = make_parent(out, "--json") if out is not None else run.dir / f"eval-{args.split}-{args.checkpoint}.json"
    try:
        write_json(target, m)
    except OSError as err:
        hint = "" if out is not None else "; pass --json FILE to write the metrics elsewhere"
        raise RunError(f"cannot write {target} ({err.strerror or err}){hint}") from None
    print(f"\nwritten: {target}")
    return 0
