"""One writer per run: an advisory lock on a file in the run folder.

``fit``, ``fit --resume`` and ``fit --force`` hold it while they write the run; a second writer
gets a RunError naming the process that holds it. The lock is ``fcntl.flock`` (Linux, macOS), so
the operating system releases it when the holding process dies, SIGKILL included: a killed run
never leaves a stale lock. The file itself stays (it is empty of meaning once unlocked, and
deleting a lock file another process may have opened would let two writers in). On a platform
without ``fcntl`` (Windows) the lock is a no-op: one writer per run is then the user's business.

DataLoader workers are forked while the lock is held; each child closes its copy of the
descriptor at once, or an orphaned worker of a SIGKILLed run would keep the lock alive until it
noticed its parent was gone.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from .errors import RunError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux or macOS
    fcntl = None

LOCK_NAME = ".trainlab.lock"

_held: dict[int, Path] = {}  # descriptor -> run folder of each lock this process holds


def _close_in_child() -> None:
    for fd in list(_held):
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


def lock_path(folder: str | Path) -> Path:
    return Path(folder) / LOCK_NAME


def _describe(text: str) -> str:
    """'pid 1234 on host, trainlab fit --resume, since 12:00:03' from the holder's note."""
    try:
        note = json.loads(text)
        return f"pid {note['pid']} on {note['host']}, trainlab {note['command']}, since {note['since']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its note yet"


def _busy(folder: Path, fd: int) -> RunError:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode(errors="replace")
    except OSError:
        text = ""
    return RunError(f"run {folder} is being written by another trainlab process ({_describe(text)}); "
                    "wait for it to end or stop it (the lock is released when it exits)")


def _try_lock(fd: int, shared: bool = False) -> bool:
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks (ENOLCK on some network mounts): unlocked, as on Windows
        return True
    return True


class RunLock:
    """The held lock of one run folder; :meth:`release` (or the process's end) frees it."""

    def __init__(self, folder: Path, fd: int | None):
        self.folder = folder
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _held.pop(fd, None)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(folder: str | Path, command: str) -> RunLock:
    """Lock the existing ``folder`` for this process, writing trainlab ``command`` and the process
    id into the lock file for the next writer's error; a RunError if another process holds it or
    the folder cannot be written."""
    folder = Path(folder)
    if fcntl is None:
        return RunLock(folder, None)
    path = lock_path(folder)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise RunError(f"cannot write {path} ({err.strerror or err}): the run folder must be writable "
                       "to train into it") from None
    # A few tries: another command's holder() check takes the lock for a moment.
    for wait in (0.0, 0.05, 0.1, 0.2):
        time.sleep(wait)
        if _try_lock(fd):
            break
    else:
        err = _busy(folder, fd)
        os.close(fd)
        raise err
    _held[fd] = folder.resolve()
    note = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(note) + "\n").encode(), 0)
    except OSError:
        pass  # the note is only for the next writer's message; the lock is what counts
    return RunLock(folder, fd)


def holder(folder: str | Path) -> str | None:
    """The error line if another process holds ``folder``'s lock, else None (also when this
    process holds it); creates nothing: a check before the slow part of a command, while
    :func:`acquire` decides."""
    folder = Path(folder)
    path = lock_path(folder)
    if fcntl is None or not path.is_file() or folder.resolve() in _held.values():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if _try_lock(fd, shared=True):  # shared: two checks at once do not see each other
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return str(_busy(folder, fd))
    finally:
        os.close(fd)
