"""Run the real `trainlab fit` CLI and send it a signal at a chosen optimizer step (test_preemption.py).

    python signal_run.py SIGNAL STEP TARGET [fit arguments ...]

SIGNAL is a name (SIGTERM, SIGHUP, SIGINT); right after optimizer step STEP the process sends it to
itself (TARGET ``self``) or has another process send it to its whole process group (TARGET
``group``: what SLURM's scancel and a terminal's Ctrl-C do, loader workers included, from a process
that is not their parent; start this script in a session of its own). The signal is real and goes
through trainlab's handler; only the moment is chosen, so that the test knows which step the
checkpoint must hold. Exits with the CLI's exit code.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import trainlab.api
from trainlab.cli import main
from trainlab.engine.callbacks import Callback


class Sender(Callback):
    def __init__(self, signum: int, step: int, group: bool):
        self.signum, self.step, self.group = signum, step, group

    def on_batch_end(self, trainer, batch, outputs, loss):
        if trainer.state.step == self.step and trainer.at_step_boundary:
            self.step = -1  # once
            if self.group:  # sent by another process, as a scheduler does, and waited for
                code = f"import os; os.killpg({os.getpgid(0)}, {int(self.signum)})"
                subprocess.run([sys.executable, "-c", code], start_new_session=True, check=True)
            else:
                os.kill(os.getpid(), self.signum)


def main_() -> None:
    name, step, target, *args = sys.argv[1:]
    sender = Sender(getattr(signal, name), int(step), target == "group")
    real = trainlab.api.build_components

    def with_sender(recipe, callbacks=()):
        return real(recipe, [*callbacks, sender])

    trainlab.api.build_components = with_sender
    sys.exit(main(["fit", *args]))


if __name__ == "__main__":
    main_()
