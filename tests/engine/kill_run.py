"""Start a training run and SIGKILL it at a chosen point (used by test_resume.py).

    python kill_run.py RUN_DIR MODE K [key=value ...]

MODE ``mid``   kills right after optimizer step K, before that step's checkpoint could be written;
MODE ``epoch`` kills when epoch K (0-based) starts, after the previous epoch's checkpoint;
MODE ``save``  kills halfway through writing the K-th checkpoint file (a test-only slow writer).
The process dies by SIGKILL: no handler, no clean-up, exactly like a machine losing power.
"""
from __future__ import annotations

import os
import signal
import sys

import trainlab
from trainlab import atomic
from trainlab.engine.callbacks import Callback


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Killer(Callback):
    def __init__(self, mode: str, k: int):
        self.mode, self.k = mode, k

    def on_batch_end(self, trainer, batch, outputs, loss):
        if self.mode == "mid" and trainer.state.step == self.k and trainer.at_step_boundary:
            die()

    def on_epoch_start(self, trainer):
        if self.mode == "epoch" and trainer.state.epoch == self.k:
            die()


def main() -> None:
    run_dir, mode, k, *overrides = sys.argv[1:]
    k = int(k)
    if mode == "save":
        real = atomic.write_file
        calls = {"n": 0}

        def slow_then_killed(path, fill):
            if str(path).endswith(".safetensors"):
                calls["n"] += 1
                if calls["n"] == k:
                    tmp = atomic.temporary(path)
                    fill(tmp)
                    os.truncate(tmp, tmp.stat().st_size // 2)
                    die()
            real(path, fill)

        atomic.write_file = slow_then_killed
    trainlab.fit(None, [f"run.dir={run_dir}", *overrides], quiet=True, callbacks=[Killer(mode, k)])
    sys.exit(3)  # the kill point was never reached: the test must notice


if __name__ == "__main__":
    main()
