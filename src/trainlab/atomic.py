"""Durable file writes: temporary file in the same folder, flush, fsync, rename over the old one.

A process killed at any moment leaves either the old file or the new one, never a torn mix.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:  # a read-only folder: there is no temporary file to remove
        pass


def temporary(path: Path) -> Path:
    """The temporary file that becomes ``path`` (same folder, so the rename stays atomic)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _named(err: BaseException, path: Path) -> BaseException:
    """An OS error about the file being written named by ``path``, not by the temporary file (or
    by nothing: a full disk fails a write() that knows no file name), so that its one line says
    which file could not be written."""
    if not isinstance(err, OSError) or err.errno is None:
        return err
    named = OSError(err.errno, err.strerror or str(err), str(path))  # the errno's subclass: PermissionError...
    named.__cause__ = err
    return named


def _replace(path: str | Path, fill: Callable[[Path], None]) -> None:
    """Have ``fill(tmp)`` write and fsync the temporary file, rename it over ``path`` and fsync the
    folder; on any failure the temporary file is removed and an OS error names ``path``."""
    path = Path(path)
    tmp = temporary(path)
    try:
        fill(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        _discard(tmp)
        named = _named(err, path)
        if named is err:
            raise
        raise named from err
    _fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    _replace(path, fill)


def write_file(path: str | Path, fill: Callable[[Path], None]) -> None:
    """Replace ``path`` atomically and durably with the file that ``fill(tmp)`` writes at the
    temporary path ``tmp``: for writers that take a file name (``safetensors.torch.save_file``)."""
    def fill_synced(tmp: Path) -> None:
        fill(tmp)
        with open(tmp, "rb+") as f:  # opened for writing: Windows refuses to fsync a read-only handle
            os.fsync(f.fileno())

    _replace(path, fill_synced)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def jsonable(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by None, so that the file is standard JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Standard JSON text of ``obj``; NaN and infinities become null."""
    try:  # the common case, at the C encoder's speed
        return json.dumps(obj, indent=indent, allow_nan=False)
    except ValueError:  # a non-finite float somewhere: sanitize, then encode
        return json.dumps(jsonable(obj), indent=indent, allow_nan=False)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, dumps(obj) + "\n")
