"""trainlab verify RUN A B: the distance between two inputs' embeddings and the same/different
decision at the threshold chosen on the run's validation split (its equal error rate, or a target
false acceptance rate)."""
from __future__ import annotations

POINTS = ("eer", "far1e-2", "far1e-3")


def add_arguments(p):
    p.add_argument("run", help="run directory of an embedding run (task: embedding)")
    p.add_argument("a", help="first image file or .npy array (one sample)")
    p.add_argument("b", help="second image file or .npy array (one sample)")
    p.add_argument("--at", choices=POINTS, default="eer",
                   help="operating point whose validation threshold decides: the equal error rate (default) "
                        "or a false acceptance rate of 1e-2 or 1e-3")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")


def run(args) -> int:
    from ..errors import RunError, TrainlabError
    from ..run import embed_inputs, open_run
    from ..tasks.embedding import row_distances

    run = open_run(args.run)
    loaded = run.load_model(args.checkpoint)[:4]
    a, la = embed_inputs(run, [args.a], model=loaded)
    b, lb = embed_inputs(run, [args.b], model=loaded)
    if len(a) != 1 or len(b) != 1:
        raise TrainlabError(f"expected one sample in each of A and B, got {len(a)} in {args.a!r} and {len(b)} "
                            f"in {args.b!r}")
    verification = (run.summary().get("val") or {}).get("verification")
    if not verification:
        raise RunError(f"run {run.dir} has no validation verification thresholds in summary.json (it needs a "
                       "validation split)")
    threshold = verification["thresholds"][args.at]
    metric = verification["distance"]
    d = float(row_distances(a, b, metric)[0])
    same = d <= threshold
    print(f"{la[0]} vs {lb[0]}: {metric} distance {d:.4f}; {'same identity' if same else 'different identities'} "
          f"(threshold {threshold:.4f} at the validation {args.at.upper().replace('FAR', 'FAR ')})")
    return 0
