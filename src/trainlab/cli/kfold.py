"""trainlab kfold RECIPE [RECIPE ...] --folds K [key=value ...] [--metric NAME] [--force]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("recipes", nargs="+", metavar="RECIPE",
                   help="built-in recipe names or YAML paths; key=value overrides may follow")
    p.add_argument("--folds", type=int, required=True, help="number of folds K (>= 2)")
    p.add_argument("--metric", default=None,
                   help="validation metric to report and rank by (default: the task's score, accuracy for "
                        "classification, miou for segmentation; e.g. loss, macro_f1)")
    p.add_argument("--force", action="store_true", help="reuse a non-empty output folder (run.dir)")


def run(args) -> int:
    from ..kfold import cross_validate, format_report

    recipes = [r for r in args.recipes if "=" not in r]
    overrides = [r for r in args.recipes if "=" in r]
    result = cross_validate(recipes, args.folds, overrides, metric=args.metric, force=args.force,
                            progress=print)
    print(format_report(result))
    return 0
