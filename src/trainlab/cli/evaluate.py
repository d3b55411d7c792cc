"""trainlab evaluate RUN [--split val|test] [--checkpoint best|last]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("run", help="run directory written by trainlab fit")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--json", metavar="FILE", help="also write the metrics to FILE")


def run(args) -> int:
    from pathlib import Path

    from ..atomic import write_json
    from ..errors import RunError
    from ..run import open_run

    run = open_run(args.run)
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise RunError(f"--json: folder {str(Path(args.json).parent)!r} does not exist")
    m = run.evaluate(args.split, args.checkpoint)
    names = m["class_names"]
    print(f"{args.split} split, {args.checkpoint} checkpoint (epoch {m.get('epoch')}), {m['n']} samples")
    for key, value in m.items():
        if isinstance(value, float):
            print(f"  {key:<18} {value:.4f}")
    if "per_class" not in m:  # tasks without a class table (sequence): the scalars above are all
        if args.json:
            write_json(args.json, m)
        print(f"\nwritten: {args.json or run.dir / f'eval-{args.split}-{args.checkpoint}.json'}")
        return 0
    pc = m["per_class"]
    width = max(5, max(len(n) for n in names))
    print(f"\n  {'class':<{width}} precision  recall      F1  support")
    for i, name in enumerate(names):
        print(f"  {name:<{width}} {pc['precision'][i]:9.4f} {pc['recall'][i]:7.4f} {pc['f1'][i]:7.4f} "
              f"{pc['support'][i]:8d}")
    print(f"\nconfusion matrix (rows true, columns predicted):")
    for name, row in zip(names, m["confusion"]):
        print(f"  {name:<{width}} " + " ".join(f"{v:4d}" for v in row))
    out = args.json or str(run.dir / f"eval-{args.split}-{args.checkpoint}.json")
    if args.json:
        write_json(args.json, m)
    print(f"\nwritten: {out}")
    return 0
