"""trainlab lr-find [RECIPE] [key=value ...] [--out lrfind.png]: Smith's LR range test."""
from __future__ import annotations

GUIDE = """batch size and LR go together: the LR found holds for this batch size. If you change
data.batch_size by a factor k, scale the LR by about k (linear scaling rule, with warm-up) and run
the test again. Very large batches give a smooth loss but tend to settle in sharp minima; very small
ones make the loss noisy; 32-256 is the usual range on a single device."""


def add_arguments(p):
    p.epilog = GUIDE
    p.add_argument("recipe", nargs="?", help="built-in recipe name or YAML path (default: digits-cnn)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides parsed as YAML")
    p.add_argument("--out", default="lrfind.png",
                   help="PNG file to write (default: lrfind.png); missing folders are created")
    p.add_argument("--start-lr", type=float, default=1e-7, help="first LR of the sweep (default 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last LR of the sweep (default 10)")
    p.add_argument("--steps", type=int, default=100, help="mini-batches in the sweep (default 100)")
    p.add_argument("--smoothing", type=float, default=0.9, help="EMA factor of the loss (default 0.9)")
    p.add_argument("--diverge", type=float, default=4.0,
                   help="stop when the smoothed loss exceeds this multiple of its minimum (default 4)")


def run(args) -> int:
    from ..api import build_components
    from ..optim.lr_finder import check_range_test_options, lr_range_test
    from ..recipe import load_recipe
    from ..report.optim_plots import plot_lr_find
    from .fit import split_recipe_and_overrides
    from .outputs import check_output, make_parent

    recipe_arg, overrides = split_recipe_and_overrides(args.recipe, args.overrides)
    out = check_output(args.out, "--out")
    # before the data and model are built
    check_range_test_options(args.start_lr, args.end_lr, args.steps, args.smoothing, args.diverge)
    recipe = load_recipe(recipe_arg, overrides)
    trainer = build_components(recipe)
    try:
        result = lr_range_test(trainer, args.start_lr, args.end_lr, args.steps, args.smoothing, args.diverge)
    finally:
        trainer.close()
    batch = trainer.train_loader.batch_size
    title = f"LR range test: {recipe.name} ({recipe.optim.name}, batch {batch})"
    plot_lr_find(result, title, make_parent(out, "--out"))
    if result.suggested is None:
        print(f"lr-find {recipe.name}: no suggested lr, {result.stop_reason} after {len(result.lrs)} steps; "
              f"lower --start-lr; plot: {out}")
        return 1
    steep = f", steepest descent at {result.steepest_lr:.2g}" if result.steepest_lr else ""
    print(f"lr-find {recipe.name} ({recipe.optim.name}, batch {batch}): suggested lr {result.suggested:.2g} "
          f"(lowest smoothed loss at {result.min_loss_lr:.2g} / 10{steep}; {len(result.lrs)} steps, "
          f"{result.stop_reason}); set optim.lr={result.suggested:.2g}, and rescale it with the batch size; "
          f"plot: {out}")
    return 0
