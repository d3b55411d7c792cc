"""T3: one writer per run. `fit`, `fit --resume` and `fit --force` hold an advisory lock
(fcntl.flock on RUN/.trainlab.lock) while they write the run; a second writer gets exit 2 and one
line naming the process that holds it, and changes nothing. The OS releases the lock when its
process dies, SIGKILL included, even while forked loader workers outlive it.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, assert_user_error, cli_env, run_cli

import trainlab
from trainlab import lock
from trainlab.errors import RunError

pytestmark = pytest.mark.skipif(lock.fcntl is None, reason="the run lock needs fcntl (Linux, macOS)")

KILLER = Path(__file__).with_name("kill_run.py")


def digest(folder: Path) -> dict[str, str]:
    """The run's files (the lock file aside: its holder writes its own note there)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != lock.LOCK_NAME}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run stopped after its first of two epochs (resumable with train.epochs=2)."""
    run = trainlab.fit(None, [*FAST, "train.epochs=1", f"run.dir={tmp_path_factory.mktemp('lock') / 'run'}"],
                       quiet=True)
    return run.dir


def test_a_second_writer_in_the_same_process_is_refused(tmp_path):
    held = lock.acquire(tmp_path, "fit")
    try:
        with pytest.raises(RunError) as err:
            lock.acquire(tmp_path, "fit --resume")
        assert f"run {tmp_path} is being written by another trainlab process (pid {os.getpid()}" in str(err.value)
        assert "trainlab fit, since" in str(err.value)
        assert lock.holder(tmp_path) is None  # this process's own lock is no obstacle to its checks
    finally:
        held.release()
    lock.acquire(tmp_path, "fit").release()  # released: free again


@pytest.mark.slow
def test_other_writers_get_one_line_naming_the_holder_and_change_nothing(interrupted, tmp_path):
    """T3: while a process holds the run, `fit --resume` (with another train.epochs) and
    `fit --force` into it exit 2 with one line naming that process; nothing in the run changes."""
    before = digest(interrupted)
    probe = subprocess.Popen([sys.executable, "-c", "import sys, trainlab.lock as l; "
                              f"l.acquire({str(interrupted)!r}, 'fit'); print('held', flush=True); sys.stdin.read()"],
                             env=cli_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert probe.stdout.readline().strip() == "held"
        needle = f"is being written by another trainlab process (pid {probe.pid} on "
        assert_user_error(run_cli("fit", "--resume", interrupted, "train.epochs=3", "--quiet"), needle, "trainlab fit")
        assert_user_error(run_cli("fit", *FAST, f"run.dir={interrupted}", "--force", "--quiet"), needle)
        assert digest(interrupted) == before
    finally:
        probe.stdin.close()
        probe.wait(timeout=60)
    # the holder gone, the run resumes
    assert trainlab.fit(resume=interrupted, overrides=["train.epochs=2"], quiet=True).epochs()[-1]["epoch"] == 2


@pytest.mark.slow
def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    """T3: a real fit SIGKILLed mid-epoch (two loader workers): the lock is free at once, and the
    resume that takes it continues the run."""
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, str(KILLER), str(run), "mid", "3", *FAST, "data.workers=2",
                        "data.augment=[{name: rotate, degrees: 10}]", "data.batch_size=64"],
                       env=cli_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert lock.holder(run) is None
    lock.acquire(run, "fit --resume").release()
    assert trainlab.fit(resume=run, quiet=True).summary()["epochs_run"] == 2


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    """The lock's descriptor is closed in a forked child (DataLoader workers are forked): the
    parent's death frees the run even while the child lives."""
    code = ("import os, signal, time, trainlab.lock as l; l.acquire(%r, 'fit'); pid = os.fork()\n"
            "if pid == 0: [os.dup2(os.open(os.devnull, os.O_RDWR), fd) for fd in (1, 2)]; time.sleep(30); os._exit(0)\n"
            "print(pid, flush=True); os.kill(os.getpid(), signal.SIGKILL)" % str(tmp_path))
    p = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=60)
    child = int(p.stdout.strip())
    try:
        os.kill(child, 0)  # still alive
        assert lock.holder(tmp_path) is None
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_folder_holding_only_a_lock_file_is_a_new_run(tmp_path):
    """A run killed while it was being created leaves the lock file: the folder is reused without --force."""
    lock.acquire(tmp_path / "", "fit").release()
    assert (tmp_path / ".trainlab.lock").exists()
    run = trainlab.fit(None, [*FAST, "train.epochs=1", f"run.dir={tmp_path}"], quiet=True)
    assert run.summary()["epochs_run"] == 1
