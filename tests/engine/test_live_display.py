"""The live display of an interactive fit (T1, issue 22 point 1), read off a pseudo-terminal."""
from __future__ import annotations

import os
import re
import select
import subprocess
import sys

import pytest
from conftest import cli_env


def _screen(args: list[str], timeout: float = 240.0) -> str:
    """Everything `python -m trainlab ARGS` writes to a pseudo-terminal, escape codes removed."""
    import pty

    leader, follower = pty.openpty()
    env = {**cli_env(), "COLUMNS": "140", "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "trainlab", *args], stdin=follower, stdout=follower,
                            stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], timeout)
        if not ready:
            proc.kill()
            raise AssertionError("no output for too long")
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    os.close(leader)
    assert proc.returncode == 0, b"".join(chunks)[-2000:]
    text = b"".join(chunks).decode("utf-8", "replace")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][AB0-2]", "", text).replace("\r", "\n")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_live_display_shows_the_run_and_a_live_eta_without_warnings(tmp_path):
    """T1 (issue 22 point 1): an interactive fit shows no warning text inside its display, a
    run-level row (epoch k/N over the whole run), and an ETA that is not 0:00:00 while work
    remains, from the third epoch on too."""
    screen = _screen(["fit", "digits-cnn", "train.epochs=5", "data.batch_size=8", "train.threads=1",
                      "run.tensorboard=false", "run.plots=false", "doctor=null", f"run.dir={tmp_path / 'run'}"])
    assert "Warning" not in screen and "Converting a tensor" not in screen, screen[-3000:]
    runs = re.findall(r"run\s+(\d)/5[^\n]*?(\d+:\d\d:\d\d|-:--:--)", screen)
    assert {int(k) for k, _ in runs} >= {1, 3, 4}, screen[-3000:]
    # the whole run's ETA while epochs 3 and 4 are in progress: work remains, so it is not zero
    later = [eta for k, eta in runs if int(k) in (3, 4) and eta != "-:--:--"]
    assert later and any(eta != "0:00:00" for eta in later), runs
    epochs = re.findall(r"epoch (\d)\s[^\n]*?loss ([0-9.]+)", screen)
    assert {int(k) for k, _ in epochs} >= {3, 4}, screen[-3000:]
