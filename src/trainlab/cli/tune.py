"""trainlab tune RECIPE [key=value ...] --space SPACE.yaml --trials N [--pruner median|hyperband|none]
[--metric NAME] [--storage URL] [--study NAME] [--workers N];  trainlab tune --resume TUNEDIR [--trials N]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("recipe", nargs="*", metavar="RECIPE",
                   help="built-in recipe name or YAML path; key=value overrides may follow (run.dir names the "
                        "tuning folder, default runs/tune-<name>-<time>)")
    p.add_argument("--space", metavar="SPACE.yaml",
                   help="search space: recipe key -> {type: loguniform|uniform|int|categorical, low, high | choices}")
    p.add_argument("--trials", type=int, help="finished (complete or pruned) trials to reach, over all workers")
    p.add_argument("--pruner", default="median", choices=("median", "hyperband", "none"),
                   help="stop poor trials early on the per-epoch validation metric (default median)")
    p.add_argument("--metric", default=None,
                   help="validation metric to optimise (default: the task's score, accuracy for classification)")
    p.add_argument("--storage", metavar="URL", default=None,
                   help="Optuna storage URL shared by several processes or machines (default: SQLite in the "
                        "tuning folder); an existing study of that name is joined")
    p.add_argument("--study", metavar="NAME", default=None, help="study name in the storage (default: the folder name)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--resume", metavar="TUNEDIR", default=None,
                   help="go on with an interrupted search (its finished trials are kept)")
    p.add_argument("--no-plots", action="store_true", help="do not draw the history and importance plots")


def run(args) -> int:
    from ..errors import RecipeError
    from ..tune import format_results, results, run_workers, set_trials, start

    if args.workers < 1:
        raise RecipeError(f"--workers: expected at least 1, got {args.workers}")
    if args.resume is not None:
        if args.recipe or args.space or args.storage or args.study or args.metric:
            raise RecipeError("--resume TUNEDIR takes its recipe, space, metric and storage from the folder; "
                              "give only --trials and --workers with it")
        from pathlib import Path

        folder = Path(args.resume)
        if args.trials is not None:
            set_trials(folder, args.trials)
        else:
            from ..tune import read_settings

            read_settings(folder)
    else:
        recipes = [r for r in args.recipe if "=" not in r]
        overrides = [r for r in args.recipe if "=" in r]
        if len(recipes) != 1:
            raise RecipeError(f"tune: give one recipe (got {len(recipes)}), or --resume TUNEDIR")
        if not args.space:
            raise RecipeError("--space: required (a YAML search space), e.g. --space space.yaml")
        if args.trials is None:
            raise RecipeError("--trials: required, e.g. --trials 20")
        folder = start(recipes[0], args.space, args.trials, overrides, metric=args.metric, pruner=args.pruner,
                       storage=args.storage, study=args.study)
        print(f"tuning folder: {folder}")
    codes = run_workers(folder, args.workers)
    print(format_results(results(folder, plots=not args.no_plots)))
    return max(codes)
