"""trainlab baseline RECIPE [key=value ...] [--pca K] [--run RUN]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("recipe", nargs="+", metavar="RECIPE",
                   help="built-in recipe name or YAML path (a classification recipe); key=value overrides may follow")
    p.add_argument("--pca", type=int, default=None, metavar="K",
                   help="reduce the flattened inputs to K principal components (fitted on the training split)")
    p.add_argument("--run", default=None, metavar="RUN",
                   help="a finished run of the recipe whose test metrics stand for the network (same split); "
                        "without it the command trains the recipe first (an ordinary run; run.dir names it)")


def run(args) -> int:
    from ..baseline import compare, format_result
    from ..errors import RecipeError

    recipes = [r for r in args.recipe if "=" not in r]
    overrides = [r for r in args.recipe if "=" in r]
    if len(recipes) != 1:
        raise RecipeError(f"baseline: give one recipe (got {len(recipes)})")
    result = compare(recipes[0], overrides, pca=args.pca, run=args.run, progress=print)
    print(format_result(result))
    return 0
