"""trainlab evaluate RUN [--split val|test] [--checkpoint best|last] [--json FILE]
trainlab evaluate RUN --bias-variance [--target-error E] [--checkpoint best|last] [--json FILE]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("run", help="run directory written by trainlab fit")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--json", metavar="FILE", help="write the metrics to FILE (missing folders are created) instead of "
                   "RUN/eval-SPLIT-CHECKPOINT.json: the run is then only read, so it may be read-only")
    p.add_argument("--bias-variance", action="store_true",
                   help="evaluate the train, val and test splits and read the errors as high bias, high variance, "
                        "both or neither, with the remedies (written to RUN/bias-variance-CHECKPOINT.json)")
    p.add_argument("--target-error", type=float, default=None, metavar="E",
                   help="with --bias-variance: the reachable error (0 to 1; default the recipe's eval.target_error)")


def run(args) -> int:
    import os

    from ..atomic import write_json
    from ..errors import RunError
    from ..run import open_run
    from .outputs import check_output, make_parent

    run = open_run(args.run)
    if args.bias_variance or args.target_error is not None:
        return bias_variance(run, args)
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


def bias_variance(run, args) -> int:
    """E6: train, val and test error of the checkpoint side by side, with the notes' reading."""
    import math
    import os

    from ..atomic import write_json
    from ..errors import DataError, RecipeError, RunError
    from ..evaluate.bias_variance import errors_from_metrics, read_bias_variance
    from .outputs import check_output, make_parent

    if not args.bias_variance:
        raise RecipeError("--target-error: only with --bias-variance")
    if args.target_error is not None and not (math.isfinite(args.target_error) and 0.0 <= args.target_error < 1.0):
        raise RecipeError(f"--target-error: expected an error in [0, 1), got {args.target_error}")
    recipe = run.recipe()
    task = run.task(recipe)
    if task.quality is None:
        raise RunError(f"--bias-variance: task {recipe.task!r} reports no score to turn into an error")
    out = check_output(args.json, "--json", suffix=None) if args.json else None
    target = out if out is not None else run.dir / f"bias-variance-{args.checkpoint}.json"
    if out is None and not os.access(run.dir, os.W_OK):
        raise RunError(f"cannot write {target} (the run folder is read-only); pass --json FILE to write it elsewhere")
    metrics = {}
    for split in ("train", "val", "test"):
        try:
            metrics[split] = run.evaluate(split, args.checkpoint, write=False)
        except DataError:  # an empty split: the reading needs train and val; test is optional
            if split != "test":
                raise
            metrics[split] = None
    errors = errors_from_metrics(*(metrics[s] for s in ("train", "val", "test")), task.quality)
    if errors is None:
        raise RunError(f"--bias-variance: no {task.quality} on the train and val splits of {run.dir}")
    goal = recipe.eval.target_error if args.target_error is None else args.target_error
    reading = read_bias_variance(*errors, target_error=goal, margin=recipe.eval.bias_variance_margin)
    print(f"{args.checkpoint} checkpoint, error = 1 − {task.quality}")
    for line in reading.lines():
        print(line)
    if reading.remedies:
        print("remedies (the notes', in order):")
        for i, r in enumerate(reading.remedies, 1):
            print(f"  {i}. {r}")
    payload = {"checkpoint": args.checkpoint, "score": task.quality, "train_error": reading.train_error,
               "val_error": reading.val_error, "test_error": reading.test_error, "target_error": reading.target_error,
               "margin": reading.margin, "avoidable_bias": reading.avoidable_bias, "variance": reading.variance,
               "verdict": reading.verdict, "mismatch": reading.mismatch, "remedies": list(reading.remedies)}
    path = make_parent(out, "--json") if out is not None else target
    try:
        write_json(path, payload)
    except OSError as err:
        raise RunError(f"cannot write {path} ({err.strerror or err})") from None
    print(f"\nwritten: {path}")
    return 0
