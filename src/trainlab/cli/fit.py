"""trainlab fit [RECIPE] [key=value ...] [--resume RUN] [--force]"""
from __future__ import annotations

import os
import sys


def add_arguments(p):
    p.add_argument("recipe", nargs="?", help="built-in recipe name or YAML path (default: digits-cnn)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides parsed as YAML, e.g. optim.lr=0.01 train.early_stop=null")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its last checkpoint "
                   "(a finished run is left as it is, with one line saying so)")
    p.add_argument("--force", action="store_true", help="reuse a non-empty run.dir, replacing its run files")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                   help="under torchrun: how long a process waits for another before the run fails "
                   "(default 300); a process that dies is noticed at once")


def split_recipe_and_overrides(recipe, overrides):
    """argparse puts a leading key=value into the recipe slot; move it back."""
    if recipe is not None and "=" in recipe:
        return None, [recipe, *overrides]
    return recipe, list(overrides)


def torchrun_rank() -> int:
    """This process's rank under torchrun (0 otherwise)."""
    import os

    try:
        return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    except ValueError:
        return 0


def run(args) -> int:
    from ..api import fit
    from ..engine.trainer import Interrupted
    from ..errors import TrainlabError

    if args.dist_timeout is not None and not args.dist_timeout > 0:
        raise TrainlabError(f"--dist-timeout: expected a positive number of seconds, got {args.dist_timeout:g}")
    recipe, overrides = split_recipe_and_overrides(args.recipe, args.overrides)
    rank = torchrun_rank()
    try:
        run = fit(recipe, overrides, resume=args.resume, force=args.force, quiet=args.quiet,
                  dist_timeout=args.dist_timeout)
    except Interrupted as err:
        if rank:  # rank 0 says it for the run
            return err.exit_code
        # Exit 128 + the signal, as a shell reports it: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP; a job
        # scheduler that sees 143 knows the run was preempted and can be resumed.
        how = "interrupted" if err.signal_name == "SIGINT" else f"stopped by {err.signal_name}"
        again = "torchrun ... -m trainlab fit" if torchrun_rank() or "WORLD_SIZE" in os.environ else "trainlab fit"
        print(f"trainlab fit: {how} at {err}; checkpoint saved. "
              f"Resume with: {again} --resume {err.run_dir}", file=sys.stderr)
        return err.exit_code
    except TrainlabError as err:
        if rank and getattr(err, "every_rank", False):  # rank 0 prints the same line
            return err.exit_code
        raise
    return 0 if run else 1
