"""Start `trainlab tune` and SIGKILL it in the middle of trial K (used by test_tune.py).

    python tune_kill.py K STEP ARGS...

ARGS are `trainlab tune`'s. When the run of trial K (folder trial-000K) reaches optimizer step
STEP, the process dies by SIGKILL: no handler, no clean-up, the study's trial left RUNNING.
"""
from __future__ import annotations

import os
import signal
import sys

import trainlab.api
from trainlab.cli import main
from trainlab.engine.callbacks import Callback


class Killer(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, trainer, batch, outputs, loss):
        if trainer.state.step >= self.step and trainer.at_step_boundary:
            os.kill(os.getpid(), signal.SIGKILL)


def run() -> None:
    k, step, *args = sys.argv[1:]
    real = trainlab.api.fit

    def fit(recipe=None, overrides=None, **kw):
        if str(recipe.run.dir).endswith(f"trial-{int(k):04d}"):
            kw["callbacks"] = [*kw.get("callbacks", []), Killer(int(step))]
        return real(recipe, overrides, **kw)

    trainlab.api.fit = fit  # trainlab.tune imports fit from trainlab.api when a worker starts
    sys.exit(main(["tune", *args]))


if __name__ == "__main__":
    run()
