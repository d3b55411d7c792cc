"""T3: preemption. SIGTERM (Kubernetes, SLURM, spot instances) and SIGHUP stop a run the way the
first Ctrl-C does: the step is finished, a checkpoint saved, and the CLI exits 128 + the signal's
number (143, 129) with one line saying how to resume; the resumed run ends bit for bit where an
uninterrupted one does. `train.checkpoint_every_minutes` bounds the work a hard kill loses.

The signals are real (tests/engine/signal_run.py sends them to the real CLI at a chosen step).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST, cli_env, run_cli
from safetensors.torch import load_file

import trainlab
from trainlab.engine.callbacks import Callback
from trainlab.engine.checkpoint import load_checkpoint
from trainlab.engine.trainer import Interrupted

SIGNAL_RUN = Path(__file__).with_name("signal_run.py")
# Small, with what must be restored exactly: dropout (global RNG), BatchNorm, AdamW, a per-step
# cosine schedule and weight EMA.
BASE = ["train.threads=1", "train.epochs=2", "train.progress=false", "run.tensorboard=false", "run.plots=false",
        "model.width=8", "model.dropout=0.3", "train.ema.decay=0.9", "data.batch_size=96"]
AUGMENT = ["data.workers=2", "data.augment=[{name: rotate, degrees: 10}]"]


def model_weights(run: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(run / "checkpoints" / "last.safetensors").items() if k.startswith("model.")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The final weights of the run never stopped."""
    run = trainlab.fit(None, [*BASE, f"run.dir={tmp_path_factory.mktemp('ref') / 'run'}"], quiet=True)
    return model_weights(run.dir)


def signalled(name: str, step: int, run: Path, *extra: str, group: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SIGNAL_RUN), name, str(step), "group" if group else "self",
                           f"run.dir={run}", *BASE, *extra, "--quiet"],
                          env=cli_env(), capture_output=True, text=True, timeout=300, start_new_session=group)


def assert_stopped(proc, name: str, code: int, run: Path, step: int) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert f"stopped by {name} at epoch 1, batch {step}; checkpoint saved" in lines[0], lines[0]
    assert lines[0].endswith(f"Resume with: trainlab fit --resume {run}"), lines[0]
    _, state = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert (state["epoch"], state["batch"], state["step"]) == (0, step, step)  # the step it was in, finished


@pytest.mark.slow
@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_stop_signal_saves_exits_128_plus_n_and_resumes_exactly(name, code, reference, tmp_path):
    """T3: SIGTERM / SIGHUP mid-epoch: finish the step, save, exit 143 / 129 with one line; the
    resume (`trainlab fit --resume`) ends with the uninterrupted run's weights, bit for bit."""
    run = tmp_path / "run"
    assert_stopped(signalled(name, 5, run), name, code, run, 5)
    if name == "SIGTERM":
        proc = run_cli("fit", "--resume", run, "--quiet")
        assert proc.returncode == 0, proc.stderr
    else:  # the CLI's resume is covered above; in-process is quicker
        trainlab.fit(resume=run, quiet=True)
    got = model_weights(run)
    assert got.keys() == reference.keys() and all(torch.equal(got[k], reference[k]) for k in got)


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_with_loader_workers(tmp_path):
    """T3: SLURM's scancel signals every process of the job, loader workers included, from a process
    that is not their parent: the workers must leave it to the main process, which saves and exits 143."""
    run = tmp_path / "run"
    assert_stopped(signalled("SIGTERM", 5, run, *AUGMENT, group=True), "SIGTERM", 143, run, 5)


class _SignalDuringValidation(Callback):
    def on_validation_end(self, trainer, metrics):
        if trainer.state.epoch == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, to this (pytest's) process


def test_a_signal_during_validation_stops_before_the_next_epoch(tmp_path):
    """T3: a SIGTERM that arrives while an epoch is being validated stops the run at that epoch's
    end (its checkpoint is the resume point) instead of training one more batch first."""
    run = tmp_path / "run"
    missed = []  # what reaches the handler in place before the fit (pytest must not die of it)

    def outside(signum, frame):
        missed.append(signum)

    previous = signal.signal(signal.SIGTERM, outside)
    try:
        with pytest.raises(Interrupted) as err:
            trainlab.fit(None, [*FAST, "train.epochs=3", f"run.dir={run}"], quiet=True,
                         callbacks=[_SignalDuringValidation()])
        assert signal.getsignal(signal.SIGTERM) is outside  # trainlab's handler is gone with the fit
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert missed == [] and err.value.signum == signal.SIGTERM and err.value.exit_code == 143
    assert err.value.run_dir == run
    _, state = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert (state["epoch"], state["batch"]) == (1, 0)


class _Saves(Callback):
    """Records the optimizer step of every last.safetensors handed to the writer."""

    def __init__(self):
        self.steps: list[int] = []

    def on_fit_start(self, trainer):
        submit = trainer.writer.submit

        def recording(path, data):
            if Path(path).name == "last.safetensors":
                self.steps.append(trainer.state.step)
            submit(path, data)

        trainer.writer.submit = recording


def test_checkpoint_every_minutes_bounds_the_work_a_hard_kill_loses(tmp_path):
    """T3: with `train.checkpoint_every_minutes`, last.safetensors is saved at the first step
    boundary that long after the last save; without it (or with an hour), only at epoch ends."""
    def saves(name: str, minutes: float) -> tuple[list[int], int]:
        rec = _Saves()
        run = trainlab.fit(None, [*FAST, "train.epochs=1", f"run.dir={tmp_path / name}",
                                  f"train.checkpoint_every_minutes={minutes}"], quiet=True, callbacks=[rec])
        return rec.steps, run.epochs()[-1]["step"]

    every, steps = saves("often", 0.000001)  # due at every step
    assert every == [*range(1, steps + 1), steps]  # each step, then the epoch end
    hourly, _ = saves("hourly", 60)
    assert hourly == [steps]  # the epoch end only


def test_checkpoint_every_minutes_is_a_positive_number_that_a_resume_may_change():
    from trainlab.api import check_resume_overrides
    from trainlab.errors import RecipeError
    from trainlab.recipe import load_recipe

    assert load_recipe("digits-mlp", {"train.checkpoint_every_minutes": 30}).train.checkpoint_every_minutes == 30
    with pytest.raises(RecipeError, match="checkpoint_every_minutes"):
        load_recipe("digits-mlp", {"train.checkpoint_every_minutes": 0})
    check_resume_overrides({"train.checkpoint_every_minutes": 5})


class _Boom(Exception):
    pass


class _DieDuringLastValidation(Callback):
    def on_validation_end(self, trainer, metrics):
        if trainer.state.epoch == 1:  # the last epoch: its final step's checkpoint is already taken
            raise _Boom


def test_the_lr_of_an_epoch_resumed_at_its_last_step_is_the_real_one(tmp_path):
    """T3/O6 (issue, point 7): a checkpoint taken on an epoch's final step, then a kill before the
    epoch record: the resumed record logs the LR that step used (cosine: not the 0 of the end)."""
    full = trainlab.fit(None, [*FAST, f"run.dir={tmp_path / 'full'}"], quiet=True)
    records = full.epochs()
    steps = records[0]["step"]
    run = tmp_path / "cut"
    with pytest.raises(_Boom):
        trainlab.fit(None, [*FAST, f"run.dir={run}", f"train.checkpoint_every_steps={steps}"], quiet=True,
                     callbacks=[_DieDuringLastValidation()])
    state = json.loads((run / "checkpoints" / "last.json").read_text())
    assert (state["epoch"], state["batch"], state["step"]) == (1, steps, 2 * steps)
    resumed = trainlab.fit(resume=run, quiet=True)
    got = resumed.epochs()
    assert [r["epoch"] for r in got] == [1, 2]
    assert got[-1]["lr"] == records[-1]["lr"] > 0
