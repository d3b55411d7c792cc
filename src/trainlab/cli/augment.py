"""trainlab augment [RECIPE] [key=value ...] [--n 16] [--epoch 0] --out grid.png"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("recipe", nargs="?", help="built-in recipe name or YAML path (default: digits-cnn)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides parsed as YAML, e.g. 'data.augment=[hflip, mosaic]'")
    p.add_argument("--n", type=int, default=16,
                   help="number of samples in the grid (default 16; at most the training split)")
    p.add_argument("--epoch", type=int, default=0, help="epoch whose order and augmentation to show (default 0)")
    p.add_argument("--out", required=True, help="PNG file to write; missing folders are created")


def run(args) -> int:
    from ..data.preview import write_grid
    from ..errors import RecipeError
    from ..recipe import check_names, load_recipe
    from .fit import split_recipe_and_overrides
    from .outputs import check_output

    check_output(args.out, "--out")
    if args.n < 1:
        raise RecipeError(f"--n: expected at least 1 sample, got {args.n}")
    if args.epoch < 0:
        raise RecipeError(f"--epoch: expected 0 or more, got {args.epoch}")
    source, overrides = split_recipe_and_overrides(args.recipe, args.overrides)
    recipe = load_recipe(source, overrides)
    check_names(recipe)
    path, count = write_grid(recipe, args.out, args.n, args.epoch)
    ops = ", ".join(str(s if isinstance(s, str) else s.get("name")) for s in recipe.data.augment) or "none"
    mix = ", ".join(str(s if isinstance(s, str) else s.get("name")) for s in recipe.data.batch_augment) or "none"
    print(f"wrote {path} ({count} samples of {recipe.data.name}; augment: {ops}; batch_augment: {mix})")
    return 0
