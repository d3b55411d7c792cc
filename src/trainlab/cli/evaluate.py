"""trainlab evaluate RUN [--split val|test] [--checkpoint best|last] [--json FILE]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("run", help="run directory written by trainlab fit")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--json", metavar="FILE", help="also write the metrics to FILE; missing folders are created")


def run(args) -> int:
    from ..atomic import write_json
    from ..run import open_run
    from .outputs import check_output, make_parent

    run = open_run(args.run)
    # Checked before the evaluation, which rebuilds the data and runs the model over a split.
    out = check_output(args.json, "--json", suffix=None) if args.json else None
    m = run.evaluate(args.split, args.checkpoint)
    print(f"{args.split} split, {args.checkpoint} checkpoint (epoch {m.get('epoch')}), {m['n']} samples")
    for key, value in m.items():
        if isinstance(value, float):
            print(f"  {key:<18} {value:.4f}")
    for line in run.task().describe_metrics(m):  # the task's per-class tables
        print(line)
    if out is not None:
        write_json(make_parent(out, "--json"), m)
    print(f"\nwritten: {args.json or run.dir / f'eval-{args.split}-{args.checkpoint}.json'}")
    return 0
