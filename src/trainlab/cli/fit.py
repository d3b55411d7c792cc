"""trainlab fit [RECIPE] [key=value ...] [--resume RUN] [--force]"""
from __future__ import annotations

import sys


def add_arguments(p):
    p.add_argument("recipe", nargs="?", help="built-in recipe name or YAML path (default: digits-cnn)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides parsed as YAML, e.g. optim.lr=0.01 train.early_stop=null")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its last checkpoint "
                   "(a finished run is left as it is, with one line saying so)")
    p.add_argument("--force", action="store_true", help="reuse a non-empty run.dir, replacing its run files")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")


def split_recipe_and_overrides(recipe, overrides):
    """argparse puts a leading key=value into the recipe slot; move it back."""
    if recipe is not None and "=" in recipe:
        return None, [recipe, *overrides]
    return recipe, list(overrides)


def run(args) -> int:
    from ..api import fit
    from ..engine.trainer import Interrupted

    recipe, overrides = split_recipe_and_overrides(args.recipe, args.overrides)
    try:
        run = fit(recipe, overrides, resume=args.resume, force=args.force, quiet=args.quiet)
    except Interrupted as err:
        # Exit 128 + the signal, as a shell reports it: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP; a job
        # scheduler that sees 143 knows the run was preempted and can be resumed.
        how = "interrupted" if err.signal_name == "SIGINT" else f"stopped by {err.signal_name}"
        print(f"trainlab fit: {how} at {err}; checkpoint saved. "
              f"Resume with: trainlab fit --resume {err.run_dir}", file=sys.stderr)
        return err.exit_code
    return 0 if run else 1
