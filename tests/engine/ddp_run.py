"""One torchrun worker for test_distributed.py: `trainlab fit` through the real CLI, with a test hook.

    torchrun --standalone --nproc-per-node 2 ddp_run.py MODE K FIT_ARGS [-- FIT_ARGS ...]

FIT_ARGS are `trainlab fit` arguments; several groups separated by ``--`` are trained one after
the other in the same processes (one torchrun start-up for several runs).
MODE ``plain``     no hook;
MODE ``kill``      every rank SIGKILLs itself right after optimizer step K (every machine loses power);
MODE ``die``       rank 1 SIGKILLs itself right after optimizer step K; rank 0 must fail with one line;
MODE ``mismatch``  rank r trains with optim.lr = 0.01 * (r + 1): the recipe hash check must refuse it.
The exit code is the CLI's of the last run (3 if a kill point was never reached).
"""
from __future__ import annotations

import os
import signal
import sys

import trainlab.api
from trainlab.cli import main as cli_main
from trainlab.engine.callbacks import Callback


class Killer(Callback):
    def __init__(self, k: int, ranks: tuple[int, ...]):
        self.k, self.ranks = k, ranks

    def on_batch_end(self, trainer, batch, outputs, loss):
        if trainer.state.step == self.k and trainer.at_step_boundary and trainer.dist.rank in self.ranks:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    mode, k, *rest = sys.argv[1:]
    rank = int(os.environ["RANK"])
    if mode in ("kill", "die"):
        ranks = (0, 1) if mode == "kill" else (1,)
        real = trainlab.api.build_components

        def with_killer(recipe, callbacks=(), dist=None):
            return real(recipe, [*callbacks, Killer(int(k), ranks)], dist=dist)

        trainlab.api.build_components = with_killer
    groups, group = [], []
    for arg in rest:
        if arg == "--":
            groups.append(group)
            group = []
        else:
            group.append(arg)
    groups.append(group)
    code = 0
    for args in groups:
        if mode == "mismatch":
            args = [*args, f"optim.lr={0.01 * (rank + 1)}"]
        code = cli_main(["fit", *args])
        if code:
            break
    sys.exit(3 if mode in ("kill", "die") and code == 0 and rank in ((0, 1) if mode == "kill" else (1,)) else code)


if __name__ == "__main__":
    main()
